"""The human labels: `annotations` imported from the inbox, and their `consensus`."""

import dagster as dg

from assets.metadata import as_metadata, table_schema
from assets.resources import DUCKDB_POOL, RETRY, FlywheelResource, transient_retries
from flywheel import store
from flywheel.annotations import AGREEMENT_WARNING_THRESHOLD, build_consensus, import_inbox, report_markdown


@dg.asset(
    pool=DUCKDB_POOL,
    retry_policy=RETRY,
    group_name="annotations",
    kinds={"duckdb", "python"},
    owners=["team:flywheel"],
    metadata={"dagster/column_schema": table_schema("annotations"), "dagster/table_name": "annotations"},
)
@transient_retries
def annotations(context: dg.AssetExecutionContext, flywheel: FlywheelResource) -> dg.MaterializeResult:
    """Labels people gave, imported from every new file in `annotations/inbox/`
    (canonical CSV/JSON lines, Label Studio, Argilla v2, Langfuse score exports).

    Bad rows go to `rejected_annotations` with file, line and reason; files already
    imported add nothing; processed files move to `annotations/archive/`.
    """
    settings = flywheel.settings()
    with store.connection(settings) as con:
        report = import_inbox(con, settings, progress=context.log.info)
        total = con.execute("SELECT count(*) FROM annotations").fetchone()[0]
    return dg.MaterializeResult(
        metadata={
            "dagster/row_count": total,
            "files_table": dg.MetadataValue.md(report_markdown(report)),
            **as_metadata(report.summary()),
        }
    )


@dg.asset(
    deps=[annotations],
    pool=DUCKDB_POOL,
    retry_policy=RETRY,
    group_name="annotations",
    kinds={"duckdb", "python"},
    owners=["team:flywheel"],
    metadata={"dagster/column_schema": table_schema("consensus"), "dagster/table_name": "consensus"},
    check_specs=[
        dg.AssetCheckSpec(
            "agreement",
            asset="consensus",
            blocking=False,
            description=f"Annotators agree (kappa >= {AGREEMENT_WARNING_THRESHOLD}): the labels define 'good'.",
        )
    ],
)
@transient_retries
def consensus(context: dg.AssetExecutionContext, flywheel: FlywheelResource) -> dg.MaterializeResult:
    """One label per item and label name by majority of all annotators (ties are marked
    unresolved and left out of training), with Cohen's / Fleiss' kappa per label and
    annotator pair."""
    settings = flywheel.settings()
    with store.connection(settings) as con:
        report = build_consensus(con, threshold=AGREEMENT_WARNING_THRESHOLD)
        total = con.execute("SELECT count(*) FROM consensus").fetchone()[0]
    for warning in report.warnings:
        context.log.warning(warning)
    return dg.MaterializeResult(
        metadata={
            "dagster/row_count": total,
            "agreement_table": dg.MetadataValue.md(report.markdown()),
            **as_metadata(report.summary()),
        },
        check_results=[
            dg.AssetCheckResult(
                check_name="agreement",
                passed=not report.low_agreement,
                severity=dg.AssetCheckSeverity.WARN,
                description="; ".join(report.warnings) or "agreement at or above the threshold for every label",
                metadata={"low_agreement_labels": dg.MetadataValue.json(report.low_agreement)},
            )
        ],
    )
