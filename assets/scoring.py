"""The day's `log_scores`: every log scored by the champion classifier of each task."""

import dagster as dg

from assets.metadata import as_metadata, table_schema
from assets.partitions import daily_partitions
from assets.resources import DUCKDB_POOL, RETRY, FlywheelResource, transient_retries
from flywheel import store
from flywheel.classifiers.scoring import score_day


@dg.asset(
    deps=["logs", "classifiers"],
    partitions_def=daily_partitions,
    pool=DUCKDB_POOL,
    retry_policy=RETRY,
    group_name="scoring",
    kinds={"duckdb", "scikit-learn"},
    owners=["team:flywheel"],
    metadata={"dagster/column_schema": table_schema("log_scores"), "dagster/table_name": "log_scores"},
)
@transient_retries
def log_scores(context: dg.AssetExecutionContext, flywheel: FlywheelResource) -> dg.MaterializeResult:
    """Calibrated hallucination and relevance probabilities for every log of the day, from
    each task's champion (a former champion serves when the champion's artifact is missing
    or corrupt; a task without any gets no rows), each flagged `trusted` when the model
    passes the trust floor for the log's source. Replaces the day's rows."""
    settings = flywheel.settings()
    with store.connection(settings) as con:
        report = score_day(con, settings, context.partition_key)
    for problem in report.problems:
        context.log.error(problem)
    for task, why in report.skipped.items():
        context.log.warning(f"{task}: {why}: 0 rows")
    for task, why in report.untrusted.items():
        context.log.warning(f"{task}: scores written with trusted = false (slices and queue ignore them): {why}")
    return dg.MaterializeResult(
        metadata={
            "dagster/row_count": report.total_rows,
            "scores": dg.MetadataValue.md(report.markdown()),
            **as_metadata(report.summary()),
        }
    )
