"""The nightly job and its schedule."""

from datetime import timedelta

import dagster as dg

from assets.resources import SETTINGS

# Every asset of the flywheel. Steps run in one process: DuckDB takes one writer
# process at a time, and the work inside each step is already parallel (DuckDB threads).
nightly_job = dg.define_asset_job(
    name="nightly",
    selection=dg.AssetSelection.all(),
    description="The nightly flywheel: ingest the day's logs and everything downstream of them.",
    executor_def=dg.in_process_executor,
)


@dg.schedule(
    job=nightly_job,
    cron_schedule=SETTINGS.nightly_cron,
    execution_timezone=SETTINGS.timezone,
    default_status=dg.DefaultScheduleStatus.RUNNING,
)
def nightly_schedule(context: dg.ScheduleEvaluationContext) -> dg.RunRequest:
    """Run the nightly job for the day that ended before this tick (02:00 UTC by default)."""
    day = (context.scheduled_execution_time - timedelta(days=1)).date().isoformat()
    return dg.RunRequest(run_key=f"nightly-{day}", partition_key=day)
