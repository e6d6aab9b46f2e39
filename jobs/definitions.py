"""The code location: every asset, check, job, schedule and resource of flywheel."""

import dagster as dg

from assets import annotations, ingest, queue, slicing
from assets.resources import FlywheelResource
from jobs.nightly import annotations_job, nightly_annotations_schedule, nightly_job, nightly_schedule
from jobs.sensors import inbox_sensor, landing_sensor

defs = dg.Definitions(
    assets=dg.load_assets_from_modules([ingest, slicing, queue, annotations]),
    jobs=[nightly_job, annotations_job],
    schedules=[nightly_schedule, nightly_annotations_schedule],
    sensors=[landing_sensor, inbox_sensor],
    resources={"flywheel": FlywheelResource()},
)
