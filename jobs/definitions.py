"""The code location: every asset, check, job, schedule and resource of flywheel."""

import dagster as dg

from assets import ingest
from assets.resources import FlywheelResource
from jobs.nightly import nightly_job, nightly_schedule
from jobs.sensors import landing_sensor

defs = dg.Definitions(
    assets=dg.load_assets_from_modules([ingest]),
    jobs=[nightly_job],
    schedules=[nightly_schedule],
    sensors=[landing_sensor],
    resources={"flywheel": FlywheelResource()},
)
