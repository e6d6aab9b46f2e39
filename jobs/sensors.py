"""Sensors: start the day's run when log files land for it, and the import when
annotation files arrive in the inbox."""

import hashlib
import json
from datetime import date

import dagster as dg

from assets.resources import SETTINGS
from flywheel.settings import load
from flywheel.annotations import inbox_files
from jobs.nightly import annotations_job, nightly_job


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
            days[folder.name] = _signature(files)
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


def _signature(paths) -> str:
    stats = [(p.name, p.stat().st_size, int(p.stat().st_mtime)) for p in paths]
    return hashlib.sha1(repr(stats).encode()).hexdigest()[:12]


@dg.sensor(
    job=annotations_job,
    minimum_interval_seconds=60,
    default_status=dg.DefaultSensorStatus.RUNNING,
    description="Imports annotation files (and rebuilds the consensus) when they arrive in annotations/inbox/.",
)
def inbox_sensor(context: dg.SensorEvaluationContext):
    """Request one import run when the inbox holds files not seen at the last tick."""
    files = inbox_files(load())
    if not files:
        context.update_cursor(None)
        return
    signature = _signature(files)
    if signature != context.cursor:
        context.update_cursor(signature)
        yield dg.RunRequest(run_key=f"inbox-{signature}")
