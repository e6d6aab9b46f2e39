"""The nightly job and its schedule."""

from datetime import timedelta

import dagster as dg

from assets.resources import SETTINGS

# Groups of the daily-partitioned assets, in the order a night runs them; the
# whole-history assets run in their own jobs or follow by automation conditions.
DAILY_GROUPS = ("ingest", "scoring", "slicing", "queue", "report")
# The whole-history assets that learn from the labels: classifiers, judges, prompts.
LEARN_GROUPS = ("classifiers", "judges", "prompts")

# Steps run in one process: DuckDB takes one writer process at a time, and the work
# inside each step is already parallel (DuckDB threads).
nightly_job = dg.define_asset_job(
    name="nightly",
    selection=dg.AssetSelection.groups(*DAILY_GROUPS),
    description="The nightly flywheel for one day: ingest the day's logs and the daily assets after them.",
    executor_def=dg.in_process_executor,
)

learn_job = dg.define_asset_job(
    name="learn",
    selection=dg.AssetSelection.groups(*LEARN_GROUPS),
    description="Train and register the classifiers, align the LLM judges and refresh the prompts "
    "from the labels so far (the automation sensor also runs these when their inputs change).",
    executor_def=dg.in_process_executor,
)

# Declarative automation: the whole-history assets carry automation conditions (eager:
# materialize when an upstream asset was updated); this sensor evaluates them.
automation_sensor = dg.AutomationConditionSensorDefinition(
    "automation",
    target=dg.AssetSelection.all(),
    default_status=dg.DefaultSensorStatus.RUNNING,
    minimum_interval_seconds=60,
    description="Requests runs of the assets whose automation conditions are true "
    "(classifiers, judges and prompts after new labels or new logs).",
)

annotations_job = dg.define_asset_job(
    name="import_annotations",
    selection=dg.AssetSelection.groups("annotations"),
    description="Import new annotation files from the inbox and rebuild the consensus.",
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


@dg.schedule(
    job=annotations_job,
    cron_schedule=SETTINGS.nightly_cron,
    execution_timezone=SETTINGS.timezone,
    default_status=dg.DefaultScheduleStatus.RUNNING,
)
def nightly_annotations_schedule(context: dg.ScheduleEvaluationContext) -> dg.RunRequest:
    """Import the inbox and rebuild the consensus every night too (the inbox sensor also
    does it as soon as files arrive)."""
    return dg.RunRequest(run_key=f"annotations-{context.scheduled_execution_time:%Y-%m-%d}")
