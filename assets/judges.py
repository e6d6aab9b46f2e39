"""LLM judges: `judge_verdicts` from today's judge prompts, and their `judge_alignment`.

Both need an OpenAI-compatible endpoint (OPENAI_BASE_URL). Without one they log a
warning and materialize nothing (skipped), and the rest of the loop carries on.
"""

import dagster as dg

from assets.automation import LEARN_ON_NEW_LABELS
from assets.metadata import as_metadata, table_schema
from assets.resources import DUCKDB_POOL, RETRY, FlywheelResource, LLMResource, transient_retries
from flywheel import store
from flywheel.judges import align_judges, run_judges
from flywheel.judges.alignment import MAX_PARSE_FAILURE_SHARE
from flywheel.llm import NoEndpoint


def _no_endpoint(context: dg.AssetExecutionContext, asset: str, exc: Exception) -> None:
    context.log.warning(f"{asset} skipped: {exc}")


@dg.asset(
    deps=["consensus", "logs"],
    output_required=False,
    pool=DUCKDB_POOL,
    retry_policy=RETRY,
    group_name="judges",
    kinds={"duckdb", "openai", "python"},
    owners=["team:flywheel"],
    automation_condition=LEARN_ON_NEW_LABELS,
    metadata={"dagster/column_schema": table_schema("judge_verdicts"), "dagster/table_name": "judge_verdicts"},
)
@transient_retries
def judge_verdicts(context: dg.AssetExecutionContext, flywheel: FlywheelResource, llm: LLMResource):
    """Binary verdicts with a short reason per criterion (hallucination, relevance and the
    criteria of `judges/*.toml`), from prompts whose few-shot examples are re-drawn from
    the human consensus each run: every held-out alignment item, then a budget-limited
    sample of recent unlabelled logs. Every request is cached and costed in `llm_calls`;
    malformed answers are kept as parse failures (verdict NULL). Skipped when no endpoint
    is configured."""
    settings = llm.apply(flywheel.settings())
    with store.connection(settings) as con:
        try:
            client = llm.client(settings, con, run_id=context.run_id)
        except NoEndpoint as exc:
            _no_endpoint(context, "judge_verdicts", exc)
            return
        report = run_judges(client, con, settings)
        total = con.execute("SELECT count(*) FROM judge_verdicts").fetchone()[0]
    for problem in report.problems:
        context.log.warning(f"judge criteria: {problem}")
    answered = parse_failures = 0
    for counts in report.judged.values():
        for prefix in ("holdout_", "recent_"):
            answered += counts.get(prefix + "ok", 0) + counts.get(prefix + "parse_error", 0)
            parse_failures += counts.get(prefix + "parse_error", 0)
    if report.usage.get("budget"):
        context.log.warning(f"LLM budget spent: {report.usage['budget']} requests not sent")
    if report.usage.get("errors"):
        context.log.warning(f"{report.usage['errors']} LLM requests failed (see llm_calls.error); "
                            "they are asked again next run")
    yield dg.MaterializeResult(
        metadata={
            "dagster/row_count": total,
            "judged": dg.MetadataValue.md(report.judged_markdown()),
            "llm_requests": report.usage.get("requests", 0),
            "llm_paid": report.usage.get("paid", 0),
            "llm_cached": report.usage.get("cached", 0),
            "llm_errors": report.usage.get("errors", 0),
            "llm_budget_refused": report.usage.get("budget", 0),
            "llm_tokens": report.usage.get("tokens", 0),
            "llm_cost_usd": float(report.usage.get("cost_usd", 0.0)),
            "model": settings.llm_model,
            "answered": answered,
            "parse_failures": parse_failures,
            **as_metadata({"problems": report.problems or None}),
        }
    )


@dg.asset(
    deps=[judge_verdicts, "consensus"],
    output_required=False,
    pool=DUCKDB_POOL,
    retry_policy=RETRY,
    group_name="judges",
    kinds={"duckdb", "python"},
    owners=["team:flywheel"],
    automation_condition=LEARN_ON_NEW_LABELS,
    metadata={"dagster/column_schema": table_schema("judge_alignment"), "dagster/table_name": "judge_alignment"},
)
@transient_retries
def judge_alignment(context: dg.AssetExecutionContext, flywheel: FlywheelResource, llm: LLMResource):
    """Agreement of each judge's current prompt version with the human consensus on a
    held-out set: Cohen's kappa, true-positive and true-negative rates with counts, parse
    failures. A version is trusted when kappa >= FLYWHEEL_JUDGE_MIN_KAPPA on at least
    FLYWHEEL_JUDGE_MIN_ITEMS items; only trusted versions' verdicts are used downstream
    (annotation queue disagreements, prompt evaluation). Skipped when no endpoint is
    configured."""
    settings = llm.apply(flywheel.settings())
    if not settings.llm_base_url:
        _no_endpoint(context, "judge_alignment", NoEndpoint("OPENAI_BASE_URL is not set"))
        return
    with store.connection(settings) as con:
        report = align_judges(con, settings, model=settings.llm_model)
        total = con.execute("SELECT count(*) FROM judge_alignment").fetchone()[0]
    untrusted = [a for a in report.alignments if not a.trusted]
    for a in untrusted:
        context.log.warning(f"judge {a.criterion} ({a.prompt_version}) not trusted: {a.why}")
    summary = report.summary()
    yield dg.MaterializeResult(
        metadata={
            "dagster/row_count": total,
            "alignment": dg.MetadataValue.md(report.markdown()),
            "min_kappa": settings.judge_min_kappa,
            "min_items": settings.judge_min_items,
            **as_metadata({"trusted": summary["trusted"], "not_trusted": summary["not_trusted"]}),
            **as_metadata({
                f"kappa_{a.criterion}": a.kappa for a in report.alignments if a.kappa is not None
            }),
        }
    )


# The checks are separate from the assets so that a skipped asset (no endpoint) skips
# its check too instead of failing the step.


@dg.asset_check(
    asset=judge_verdicts,
    blocking=False,
    description=f"At most {MAX_PARSE_FAILURE_SHARE:.0%} of the judge answers of the latest run are malformed.",
)
def answers_parse(context: dg.AssetCheckExecutionContext) -> dg.AssetCheckResult:
    """Read the parse counts the latest `judge_verdicts` materialization recorded."""
    event = context.instance.get_latest_materialization_event(dg.AssetKey("judge_verdicts"))
    metadata = event.asset_materialization.metadata if event and event.asset_materialization else {}
    answered = metadata["answered"].value if "answered" in metadata else 0
    failures = metadata["parse_failures"].value if "parse_failures" in metadata else 0
    share = failures / answered if answered else 0.0
    return dg.AssetCheckResult(
        passed=share <= MAX_PARSE_FAILURE_SHARE,
        severity=dg.AssetCheckSeverity.WARN,
        description=f"{failures} of {answered} answers of the latest run were malformed",
        metadata={"parse_failures": failures, "answered": answered, "share": float(share)},
    )


@dg.asset_check(
    asset=judge_alignment,
    blocking=False,
    pool=DUCKDB_POOL,
    description="Every judge's current prompt version agrees with people (kappa at or above "
    "FLYWHEEL_JUDGE_MIN_KAPPA on enough held-out items); untrusted verdicts are not used downstream.",
)
def judges_trusted(flywheel: FlywheelResource) -> dg.AssetCheckResult:
    """Pass when the latest alignment of every criterion is trusted."""
    with store.connection(flywheel.settings()) as con:
        rows = con.execute(
            """
            SELECT criterion, prompt_version, trusted, kappa, n FROM judge_alignment
            QUALIFY row_number() OVER (PARTITION BY criterion ORDER BY evaluated_at DESC, prompt_version) = 1
            ORDER BY criterion
            """
        ).fetchall()
    untrusted = [f"{c} ({v}): kappa {k if k is None else round(k, 3)} on {n} items" for c, v, t, k, n in rows if not t]
    return dg.AssetCheckResult(
        passed=not untrusted,
        severity=dg.AssetCheckSeverity.WARN,
        description="not trusted: " + "; ".join(untrusted) if untrusted else "every judge is trusted",
        metadata={"not_trusted": dg.MetadataValue.json(untrusted), "criteria": len(rows)},
    )
