"""The day's `annotation_queue`: the items most worth a person's time, exported to the outbox."""

import dagster as dg

from assets.metadata import as_metadata, table_schema
from assets.partitions import daily_partitions
from assets.resources import DUCKDB_POOL, RETRY, FlywheelResource, transient_retries
from flywheel import store
from flywheel.annotations.export import export_queue
from flywheel.annotations.queue import build_queue


@dg.asset(
    deps=["logs", "slice_metrics", "log_scores"],
    partitions_def=daily_partitions,
    pool=DUCKDB_POOL,
    retry_policy=RETRY,
    group_name="queue",
    kinds={"duckdb", "python"},
    owners=["team:flywheel"],
    metadata={
        "dagster/column_schema": table_schema("annotation_queue"),
        "dagster/table_name": "annotation_queue",
    },
)
@transient_retries
def annotation_queue(context: dg.AssetExecutionContext, flywheel: FlywheelResource) -> dg.MaterializeResult:
    """Items to label, mixed from the worst slices, uncertain classifier scores, judge
    and classifier disagreements, and a uniform random share; never an item queued or
    labelled before. Written to `annotations/outbox/` for Label Studio (tasks and labelling
    config), Argilla and as CSV."""
    settings = flywheel.settings()
    with store.connection(settings) as con:
        report = build_queue(con, settings, context.partition_key)
        files = export_queue(con, settings, context.partition_key)
    return dg.MaterializeResult(
        metadata={
            "dagster/row_count": report.queued,
            "queue": dg.MetadataValue.md(report.markdown()),
            "outbox_files": dg.MetadataValue.json([str(f) for f in files]),
            **as_metadata(report.summary()),
        }
    )
