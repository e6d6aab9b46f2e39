"""Slices of the day's logs (`slices`) and their metrics with the worst slices
(`slice_metrics`), from one run of :func:`flywheel.slicing.slice_day`."""

import dagster as dg

from assets.metadata import as_metadata, table_schema
from assets.partitions import daily_partitions
from assets.resources import DUCKDB_POOL, RETRY, FlywheelResource, transient_retries
from flywheel import store
from flywheel.slicing.run import slice_day


@dg.multi_asset(
    specs=[
        dg.AssetSpec(
            "slices",
            deps=["logs"],
            group_name="slicing",
            kinds={"duckdb", "scikit-learn"},
            owners=["team:flywheel"],
            description="Which slice each log of the day belongs to: source, model, prompt version, "
            "keyword rules (slices.toml) and topics (TF-IDF + k-means, ids stable across nights).",
            metadata={"dagster/column_schema": table_schema("slice_membership"), "dagster/table_name": "slice_membership"},
        ),
        dg.AssetSpec(
            "slice_metrics",
            deps=["slices", "log_scores"],
            group_name="slicing",
            kinds={"duckdb", "python"},
            owners=["team:flywheel"],
            description="Per slice and day: volume, share, failure and negative-feedback rates with "
            "Wilson intervals, scores, latency, tokens, cost and changes; the worst slices ranked by "
            "a significance test, with a chart.",
            metadata={"dagster/column_schema": table_schema("slice_metrics"), "dagster/table_name": "slice_metrics"},
        ),
    ],
    check_specs=[
        dg.AssetCheckSpec(
            "drift",
            asset="slice_metrics",
            blocking=False,
            description="No slice's failure rate jumped significantly since the previous day.",
        )
    ],
    partitions_def=daily_partitions,
    pool=DUCKDB_POOL,
    retry_policy=RETRY,
)
@transient_retries
def slicing(context: dg.AssetExecutionContext, flywheel: FlywheelResource):
    settings = flywheel.settings()
    with store.connection(settings) as con:
        report = slice_day(con, settings, context.partition_key)
    for problem in report.rule_errors + report.config_problems:
        context.log.warning(problem)
    metadata = report.metadata()
    yield dg.MaterializeResult(
        asset_key="slices",
        metadata={
            "dagster/row_count": sum(report.membership_rows.values()),
            "membership_rows": dg.MetadataValue.json(metadata["membership_rows"]),
            "slices": dg.MetadataValue.json(metadata["slices"]),
            "rule_errors": dg.MetadataValue.json(metadata["rule_errors"]),
            "topic_model": metadata["topic_model"] or "none",
            "topics": dg.MetadataValue.json(report.topics),
        },
    )
    chart = {}
    if report.chart_path and report.chart_path.exists():
        chart["worst_slices_chart"] = dg.MetadataValue.path(str(report.chart_path))
        chart["worst_slices_image"] = dg.MetadataValue.md(
            f"![worst slices](data:image/png;base64,{_b64(report.chart_path)})"
        )
    yield dg.MaterializeResult(
        asset_key="slice_metrics",
        metadata={
            "dagster/row_count": sum(report.slice_counts.values()),
            "worst_slices_table": dg.MetadataValue.md(report.worst.markdown if report.worst else "no slice data"),
            "report": dg.MetadataValue.md(report.markdown),
            **chart,
            **as_metadata({k: v for k, v in metadata.items() if k not in ("membership_rows", "slices", "topic_model")}),
        },
        check_results=[
            dg.AssetCheckResult(
                check_name="drift",
                asset_key="slice_metrics",
                passed=not report.drift,
                severity=dg.AssetCheckSeverity.WARN,
                description=(
                    "failure rate jumped since the previous day: " + ", ".join(d.name for d in report.drift)
                    if report.drift else "no significant day-over-day jump"
                ),
                metadata={"drift": dg.MetadataValue.json([d.name for d in report.drift])},
            )
        ],
    )


def _b64(path) -> str:
    import base64

    return base64.b64encode(path.read_bytes()).decode("ascii")
