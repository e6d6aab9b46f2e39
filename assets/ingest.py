"""The `logs` asset: one day of landing files into the `logs` table, with its checks."""

import dagster as dg

from assets.metadata import as_metadata, table_schema
from assets.partitions import daily_partitions
from assets.resources import DUCKDB_POOL, RETRY, FlywheelResource, transient_retries
from flywheel import quality, store
from flywheel.annotations.importer import join_pending
from flywheel.ingest.loader import EmptyLandingFolder, ingest_day, report_markdown, report_summary

QUALITY_DESCRIPTIONS = {
    "schema": "The logs table has the expected columns and types.",
    "required_fields": "log_id, ts, day, source, input and a non-empty output are present.",
    "unique_log_id": "No log_id twice in the day, nor in any other day.",
    "value_ranges": "Latency, tokens, cost and feedback are within their ranges.",
    "rejected_share": "The share of rejected records is below FLYWHEEL_MAX_REJECTED_SHARE.",
}


class LogsConfig(dg.Config):
    """Run configuration of the `logs` asset."""

    # A day whose landing folder is missing or empty is refused (it would replace the
    # stored day with nothing) unless this is set.
    allow_empty: bool = False


@dg.asset(
    partitions_def=daily_partitions,
    pool=DUCKDB_POOL,
    retry_policy=RETRY,
    group_name="ingest",
    kinds={"duckdb", "python"},
    owners=["team:flywheel"],
    metadata={"dagster/column_schema": table_schema("logs"), "dagster/table_name": "logs"},
    check_specs=[
        dg.AssetCheckSpec(name, asset="logs", blocking=True, description=text)
        for name, text in QUALITY_DESCRIPTIONS.items()
    ],
)
@transient_retries
def logs(context: dg.AssetExecutionContext, config: LogsConfig, flywheel: FlywheelResource) -> dg.MaterializeResult:
    """The day's production logs from every file in `landing/YYYY-MM-DD/`, normalized.

    Malformed records go to `rejected_logs`, repeated log ids to `duplicate_logs`; the
    per-file counts reconcile. Blocking data-quality checks (great-expectations) stop
    downstream assets on a bad day.
    """
    settings = flywheel.settings()
    day = context.partition_key
    with store.connection(settings) as con:
        # A day is replaced whole in one transaction, so a commit that lost a race with
        # another writer (lake mode) is safely run again.
        try:
            report = store.retry_conflicts(
                lambda: ingest_day(con, settings, day, progress=context.log.info, allow_empty=config.allow_empty)
            )
        except EmptyLandingFolder as exc:
            # Not transient: trying again changes nothing.
            raise dg.Failure(description=str(exc), allow_retries=False) from None
        if not report.files:
            context.log.warning(f"the landing folder of {day} holds 0 files: the day is stored empty")
        outcomes = quality.check_partition(con, day, max_rejected_share=settings.max_rejected_share)
        # Labels that arrived before these logs have waited in pending_annotations: they join now.
        pending = join_pending(con, settings)
    if pending.joined or pending.duplicates:
        context.log.info(f"{pending.joined} pending labels joined their logs; {pending.waiting} still wait")
    for f in report.unreadable:
        context.log.error(f"Unreadable file {f.source_file}: {f.error}")
    for f in report.partly_read:
        context.log.warning(f"File {f.source_file} broke off: {f.error}")
    summary = report_summary(report)
    return dg.MaterializeResult(
        metadata={
            "dagster/row_count": summary["accepted"],
            "files": dg.MetadataValue.md(report_markdown(report)),
            **as_metadata(summary),
        },
        check_results=[
            dg.AssetCheckResult(
                check_name=o.name,
                passed=o.passed,
                description=o.description,
                metadata=as_metadata(o.metadata),
            )
            for o in outcomes
        ],
    )
