"""The nightly `report`: a self-contained HTML page per day under `reports/`."""

import dagster as dg

from assets.partitions import daily_partitions
from assets.resources import DUCKDB_POOL, RETRY, FlywheelResource, transient_retries
from flywheel import store
from flywheel.report import write_report


@dg.asset(
    deps=["slice_metrics", "annotation_queue", "log_scores"],
    partitions_def=daily_partitions,
    # It only reads, but a DuckDB file cannot be opened while another process writes it.
    pool=DUCKDB_POOL,
    retry_policy=RETRY,
    group_name="report",
    kinds={"html", "python"},
    owners=["team:flywheel"],
)
@transient_retries
def report(context: dg.AssetExecutionContext, flywheel: FlywheelResource) -> dg.MaterializeResult:
    """The night's report, `reports/YYYY-MM-DD.html`: one page that opens without network,
    with charts (inline SVG) of slice metrics over time, the worst slices, classifier metrics
    over model versions, judge alignment, queue progress and prompt evaluations; a chart
    whose table is still empty says so."""
    settings = flywheel.settings()
    with store.connection(settings, read_only=True) as con:
        page = write_report(con, settings, context.partition_key)
    charts = page.chart_status()
    table = "\n".join(["| chart | |", "|---|---|", *(f"| {name} | {status} |" for name, status in charts.items())])
    return dg.MaterializeResult(
        metadata={
            "path": dg.MetadataValue.path(str(page.path)),
            "charts": dg.MetadataValue.md(table),
            "charts_with_data": sum(1 for status in charts.values() if status == "chart"),
            "summary": dg.MetadataValue.json({k: str(v) for k, v in page.summary.items()}),
            "size_bytes": page.path.stat().st_size,
        }
    )
