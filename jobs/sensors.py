"""Sensors: start the day's run when log files land for it."""

import hashlib
import json
from datetime import date

import dagster as dg

from assets.resources import SETTINGS
from flywheel.settings import load
from jobs.nightly import nightly_job


def landed_days(landing_dir) -> dict[str, str]:
    """Return, per day folder of the landing area, a signature of its files (names,
    sizes and modification times): a new or changed file changes the signature."""
    days: dict[str, str] = {}
    if not landing_dir.is_dir():
        return days
    for folder in sorted(landing_dir.iterdir()):
        try:
            day = date.fromisoformat(folder.name)
        except ValueError:
            continue
        if not folder.is_dir() or day.isoformat() < SETTINGS.start_date:
            continue
        files = sorted(f for f in folder.iterdir() if f.is_file() and not f.name.startswith("."))
        if files:
            stats = [(f.name, f.stat().st_size, int(f.stat().st_mtime)) for f in files]
            days[folder.name] = hashlib.sha1(repr(stats).encode()).hexdigest()[:12]
    return days


@dg.sensor(
    job=nightly_job,
    minimum_interval_seconds=60,
    default_status=dg.DefaultSensorStatus.RUNNING,
    description="Runs the nightly job for a day as soon as files land in (or change in) landing/YYYY-MM-DD/.",
)
def landing_sensor(context: dg.SensorEvaluationContext):
    """Request a run of each day whose landing files are new or changed since the last tick."""
    seen = json.loads(context.cursor) if context.cursor else {}
    current = landed_days(load().landing_dir)
    for day, signature in current.items():
        if seen.get(day) != signature:
            yield dg.RunRequest(run_key=f"landing-{day}-{signature}", partition_key=day)
    context.update_cursor(json.dumps(current))
