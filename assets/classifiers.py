"""The `classifiers`: hallucination and relevance models trained from the consensus labels,
gated against the champion, and registered with their model cards."""

import dagster as dg

from assets.automation import LEARN_ON_NEW_LABELS
from assets.metadata import as_metadata, table_schema
from assets.resources import DUCKDB_POOL, RETRY, FlywheelResource, transient_retries
from flywheel import store
from flywheel.classifiers.run import train_all


@dg.asset(
    deps=["consensus", "logs"],
    pool=DUCKDB_POOL,
    retry_policy=RETRY,
    group_name="classifiers",
    kinds={"duckdb", "scikit-learn"},
    owners=["team:flywheel"],
    automation_condition=LEARN_ON_NEW_LABELS,
    metadata={"dagster/column_schema": table_schema("models"), "dagster/table_name": "models"},
    check_specs=[
        dg.AssetCheckSpec(
            "champion_gate",
            asset="classifiers",
            blocking=True,
            description="Every newly trained model is at least as good as the champion on the same "
            "held-out labels (beyond the noise); a model that loses stays a candidate.",
        )
    ],
)
@transient_retries
def classifiers(context: dg.AssetExecutionContext, flywheel: FlywheelResource) -> dg.MaterializeResult:
    """Hallucination and relevance classifiers trained on `logs` joined with `consensus`:
    grouped hold-out, one grouped out-of-fold pass (CV metrics, threshold, calibration) and
    time-split evaluation, the served model refitted on every label, a model card per task
    with per-source metrics and trust verdicts (FLYWHEEL_CLASSIFIER_MIN_AUROC), skops
    artifacts under `models/classifiers/`, and the `models` registry. A task with too few
    labels (FLYWHEEL_MIN_LABELS_PER_CLASS) is skipped with a message."""
    settings = flywheel.settings()
    with store.connection(settings) as con:
        reports = train_all(con, settings)
        total = con.execute("SELECT count(*) FROM models").fetchone()[0]
    for report in reports:
        (context.log.warning if report.status in ("skipped", "candidate") else context.log.info)(report.message)
    blocked = [r for r in reports if r.blocked]
    cards = {f"model_card_{r.task}": dg.MetadataValue.md(r.card or f"**{r.task}**: {r.message}") for r in reports}
    return dg.MaterializeResult(
        metadata={
            "dagster/row_count": total,
            "tasks": dg.MetadataValue.md(_table(reports)),
            **cards,
            **as_metadata({"summary": [r.summary() for r in reports],
                           "trust": {r.task: (r.metrics or {}).get("trust") for r in reports if r.metrics}}),
        },
        check_results=[
            dg.AssetCheckResult(
                check_name="champion_gate",
                passed=not blocked,
                severity=dg.AssetCheckSeverity.ERROR,
                description="; ".join(r.message for r in blocked) if blocked else
                "no new model lost to its champion (" + "; ".join(f"{r.task}: {r.status}" for r in reports) + ")",
                metadata={"blocked": dg.MetadataValue.json([r.version for r in blocked])},
            )
        ],
    )


def _table(reports) -> str:
    lines = ["| task | status | version | positives | negatives | AUROC | AP | F1 | ECE | trusted | message |",
             "|---|---|---|---|---|---|---|---|---|---|---|"]
    for r in reports:
        m = r.metrics or {}
        trusted = "–" if "trusted" not in m else ("yes" if m["trusted"] else "no")
        cells = [r.task, r.status, r.version or "–", r.positives, r.negatives,
                 *(m.get(k, "–") if m.get(k) is not None else "–" for k in ("auroc", "ap", "f1", "ece")),
                 trusted, r.message.replace("|", "/")]
        lines.append("| " + " | ".join(str(c) for c in cells) + " |")
    return "\n".join(lines)
