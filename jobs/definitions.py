"""The code location: every asset, check, job, schedule and resource of flywheel."""

import dagster as dg

from assets import annotations, classifiers, ingest, judges, prompts, queue, report, scoring, slicing
from assets.resources import FlywheelResource, LLMResource
from jobs.nightly import (
    annotations_job,
    automation_sensor,
    learn_job,
    nightly_annotations_schedule,
    nightly_job,
    nightly_schedule,
)
from jobs.sensors import inbox_sensor, landing_sensor

defs = dg.Definitions(
    assets=dg.load_assets_from_modules(
        # In the order of the graph: the daily path, then what learns from the labels.
        [ingest, scoring, slicing, queue, report, annotations, classifiers, judges, prompts]
    ),
    asset_checks=dg.load_asset_checks_from_modules([judges]),
    jobs=[nightly_job, learn_job, annotations_job],
    schedules=[nightly_schedule, nightly_annotations_schedule],
    sensors=[landing_sensor, inbox_sensor, automation_sensor],
    resources={"flywheel": FlywheelResource(), "llm": LLMResource()},
    # Runs of ad-hoc selections (the UI's Materialize, the automation sensor) also run their
    # steps in one process, as the jobs do: one DuckDB file takes one writing process.
    executor=dg.in_process_executor,
)
