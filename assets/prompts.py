"""The prompt refresh: `few_shot_examples` from approved logs, `prompt_candidates`
rendered from them, and `prompt_evals`, which promotes a candidate only when it wins."""

import dagster as dg

from assets.automation import LEARN_ON_NEW_LABELS
from assets.metadata import as_metadata, table_schema
from assets.resources import DUCKDB_POOL, RETRY, FlywheelResource, LLMResource, transient_retries
from flywheel import store
from flywheel.llm import NoEndpoint
from flywheel.prompts import evaluate_candidates, refresh_few_shot, render_candidates, written_out_losers
from flywheel.prompts.registry import lineage_markdown, templates_dir

PREVIEW_CHARS = 1500


@dg.asset(
    deps=["consensus", dg.AssetDep("slice_metrics", partition_mapping=dg.LastPartitionMapping())],
    pool=DUCKDB_POOL,
    retry_policy=RETRY,
    group_name="prompts",
    kinds={"duckdb", "scikit-learn"},
    owners=["team:flywheel"],
    automation_condition=LEARN_ON_NEW_LABELS,
    metadata={"dagster/column_schema": table_schema("few_shot_examples"), "dagster/table_name": "few_shot_examples"},
)
@transient_retries
def few_shot_examples(context: dg.AssetExecutionContext, flywheel: FlywheelResource) -> dg.MaterializeResult:
    """Per prompt name (with a template in prompts/templates/), k approved logs (consensus:
    not hallucinated and relevant, feedback not -1, no personal data, not in the evaluation
    set) chosen by maximal marginal relevance over TF-IDF vectors, worst slices first."""
    settings = flywheel.settings()
    with store.connection(settings) as con:
        report = refresh_few_shot(con, settings)
        total = con.execute("SELECT count(*) FROM few_shot_examples").fetchone()[0]
    for problem in report.problems:
        context.log.warning(problem)
    if not report.prompt_names:
        context.log.warning(f"no prompt templates in {templates_dir(settings)}: nothing to refresh")
    return dg.MaterializeResult(
        metadata={
            "dagster/row_count": total,
            "examples_table": dg.MetadataValue.md(report.markdown()),
            **as_metadata(report.summary()),
        }
    )


@dg.asset(
    deps=[few_shot_examples],
    pool=DUCKDB_POOL,
    retry_policy=RETRY,
    group_name="prompts",
    kinds={"duckdb", "python"},
    owners=["team:flywheel"],
    automation_condition=LEARN_ON_NEW_LABELS,
    metadata={"dagster/column_schema": table_schema("prompts"), "dagster/table_name": "prompts"},
)
@transient_retries
def prompt_candidates(context: dg.AssetExecutionContext, flywheel: FlywheelResource) -> dg.MaterializeResult:
    """Each template rendered with its few-shot examples, registered as a candidate prompt
    version (version = content hash) with its example ids and label hash. A template
    without a champion first becomes one, rendered without examples."""
    settings = flywheel.settings()
    with store.connection(settings) as con:
        report = render_candidates(con, settings)
        lineage = lineage_markdown(con)
        counts = dict(con.execute("SELECT status, count(*) FROM prompts GROUP BY 1 ORDER BY 1").fetchall())
    for problem in report.problems:
        context.log.warning(problem)
    previews = "\n\n".join(
        f"**{name}** `{row.version}`\n\n```text\n{row.text[:PREVIEW_CHARS]}\n```"
        for name, row in sorted(report.candidates.items()) if name in report.new
    )
    return dg.MaterializeResult(
        metadata={
            "dagster/row_count": sum(counts.values()),
            "candidates_table": dg.MetadataValue.md(report.markdown()),
            "registry": dg.MetadataValue.md(lineage),
            "new_candidates_text": dg.MetadataValue.md(previews or "no new candidate"),
            **as_metadata({
                "candidates": {n: r.version for n, r in sorted(report.candidates.items())},
                "new": report.new,
                "first_champions": report.first_champions,
                "unchanged": report.unchanged,
                "versions_by_status": counts,
                "problems": report.problems,
            }),
        }
    )


@dg.asset(
    deps=[prompt_candidates, "judge_alignment", "classifiers"],
    pool=DUCKDB_POOL,
    retry_policy=RETRY,
    group_name="prompts",
    kinds={"duckdb", "openai"},
    owners=["team:flywheel"],
    automation_condition=LEARN_ON_NEW_LABELS,
    output_required=False,
    metadata={"dagster/column_schema": table_schema("prompt_evals"), "dagster/table_name": "prompt_evals"},
    check_specs=[
        dg.AssetCheckSpec(
            "losing_candidate_not_written_out",
            asset="prompt_evals",
            blocking=True,
            description="The prompt files the application reads hold each name's champion, never a "
            "candidate that lost its evaluation.",
        )
    ],
)
@transient_retries
def prompt_evals(context: dg.AssetExecutionContext, flywheel: FlywheelResource, llm: LLMResource):
    """Candidate vs champion on each prompt's fixed evaluation set: replayed through the
    endpoint, scored by the classifier champions, the trusted judges and the assertions
    file, compared by paired one-sided tests; promoted (and written to prompts/<name>.txt
    and .json) only when significantly better. Skipped when no endpoint is configured."""
    settings = llm.apply(flywheel.settings())
    with store.connection(settings) as con:
        try:
            client = llm.client(settings, con, run_id=context.run_id)
        except NoEndpoint as exc:
            # No evaluation and no output; the published files are still checked.
            context.log.warning(f"prompt_evals skipped: {exc}")
            yield _check(written_out_losers(con, settings), [])
            return
        report = evaluate_candidates(con, settings, client)
        losers = written_out_losers(con, settings)
        lineage = lineage_markdown(con)
        total = con.execute("SELECT count(*) FROM prompt_evals").fetchone()[0]
    for problem in report.problems:
        context.log.warning(problem)
    samples = {n: e.samples for n, e in sorted(report.evaluations.items()) if e.samples}
    yield dg.MaterializeResult(
        metadata={
            "dagster/row_count": total,
            "comparison_table": dg.MetadataValue.md(report.markdown()),
            "registry": dg.MetadataValue.md(lineage),
            **as_metadata({
                "promoted": report.promoted,
                "not_promoted": report.rejected,
                "decisions": report.decisions(),
                "eval_ids": {n: e.eval_id for n, e in sorted(report.evaluations.items())},
                "reused_evaluations": sorted(n for n, e in report.evaluations.items() if e.reused),
                "skipped": report.skipped,
                "replay_samples": samples,
                "llm_usage": report.usage,
                "problems": report.problems,
            }),
        },
        check_results=[_check(losers, report.rejected)],
    )


def _check(losers: list[str], rejected: list[str]) -> dg.AssetCheckResult:
    return dg.AssetCheckResult(
        check_name="losing_candidate_not_written_out",
        asset_key="prompt_evals",
        passed=not losers,
        description="; ".join(losers) or "every published prompt is its name's champion",
        metadata={"problems": dg.MetadataValue.json(losers), "not_written_out": dg.MetadataValue.json(rejected)},
    )
