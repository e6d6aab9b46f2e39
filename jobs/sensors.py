"""Sensors: start the day's run when log files land for it, and the import when
annotation files arrive in the inbox."""

import hashlib
import json
from datetime import date

import dagster as dg

from assets.partitions import daily_partitions
from assets.resources import SETTINGS
from flywheel import store
from flywheel.settings import load
from flywheel.annotations import inbox_files
from jobs import pool
from jobs.nightly import annotations_job, nightly_job


def landed_days(landing_dir) -> dict[str, str]:
    """Return, per day folder of the landing area, a signature of its files (names,
    sizes and modification times): a new or changed file changes the signature."""
    days: dict[str, str] = {}
    if not landing_dir.is_dir():
        return days
    last = daily_partitions.get_last_partition_key() or ""
    for folder in sorted(landing_dir.iterdir()):
        try:
            day = date.fromisoformat(folder.name)
        except ValueError:
            continue
        if not folder.is_dir() or not SETTINGS.start_date <= day.isoformat() <= last:
            continue  # not a partition (yet): a run of it would fail
        files = _landing_files(folder)
        if files:
            days[folder.name] = _signature(files)
    return days


@dg.sensor(
    job=nightly_job,
    minimum_interval_seconds=60,
    default_status=dg.DefaultSensorStatus.RUNNING,
    description="Runs the nightly job for a day as soon as files land in (or change in) landing/YYYY-MM-DD/; "
    "one day at a time, and never a day whose files are unchanged since its last ingest.",
)
def landing_sensor(context: dg.SensorEvaluationContext):
    """Request a run of one day whose landing files are new or changed (oldest first).

    A day whose files were all ingested after they were last written (the same names as
    in `ingest_files`) is not run again: e.g. `dagster dev` after `flywheel run --all`.
    While a nightly run is queued or running, nothing is requested (one run at a time:
    they would only wait for the DuckDB pool in turn).
    """
    _free_dead_slots(context)
    seen = json.loads(context.cursor) if context.cursor else {}
    settings = load()
    current = landed_days(settings.landing_dir)
    changed = sorted(day for day, signature in current.items() if seen.get(day) != signature)
    if not changed:
        return
    if _nightly_in_progress(context):
        context.log.info("a nightly run is queued or running: the next day waits for it")
        return
    try:
        unchanged = ingested_unchanged(settings, changed)
    except store.DatabaseBusy as exc:
        context.log.info(f"cannot read the ingest records now: {exc}")
        return
    for day in changed:
        seen[day] = current[day]
        if day in unchanged:
            context.log.info(f"{day}: already ingested with the same files, not run again")
            continue
        context.update_cursor(json.dumps(seen, sort_keys=True))
        yield dg.RunRequest(run_key=f"landing-{day}-{current[day]}", partition_key=day)
        return  # one day per tick
    context.update_cursor(json.dumps(seen, sort_keys=True))


def ingested_unchanged(settings, days: list[str]) -> set[str]:
    """Return the days of ``days`` whose landing files are exactly the files of their last
    ingest (same names in `ingest_files`) and none written since that ingest."""
    if settings.storage == "duckdb" and not settings.database_path.exists():
        return set()
    with store.connection_when_free(settings, timeout=5) as con:
        if not store.table_exists(con, "ingest_files"):
            return set()
        recorded = con.execute(
            "SELECT day::VARCHAR, source_file, min(ingested_at) FROM ingest_files "
            "WHERE day::VARCHAR IN (SELECT unnest(?::VARCHAR[])) GROUP BY ALL", [days]
        ).fetchall()
    ingested: dict[str, dict[str, float]] = {}
    for day, source_file, at in recorded:
        ingested.setdefault(day, {})[source_file] = at.timestamp()
    unchanged = set()
    for day in days:
        files = _landing_files(settings.landing_for(day))
        by_name = {settings.source_name(f): f.stat().st_mtime for f in files}
        last = ingested.get(day, {})
        if files and set(by_name) == set(last) and all(by_name[n] < last[n] for n in by_name):
            unchanged.add(day)
    return unchanged


def _free_dead_slots(context: dg.SensorEvaluationContext) -> None:
    """Free the DuckDB pool slots of runs whose process is gone (see jobs/pool.py): queued
    runs would otherwise wait for them forever."""
    try:
        instance = context.instance
    except dg.DagsterInvariantViolationError:  # a sensor context built without an instance
        return
    pool.free_dead_runs(instance, say=context.log.warning)


def _nightly_in_progress(context: dg.SensorEvaluationContext) -> bool:
    try:
        instance = context.instance
    except dg.DagsterInvariantViolationError:  # a sensor context built without an instance
        return False
    busy = [dg.DagsterRunStatus.QUEUED, dg.DagsterRunStatus.NOT_STARTED, dg.DagsterRunStatus.STARTING,
            dg.DagsterRunStatus.STARTED]
    return bool(instance.get_runs(filters=dg.RunsFilter(job_name=nightly_job.name, statuses=busy), limit=1))


def _landing_files(folder) -> list:
    if not folder.is_dir():
        return []
    return sorted(f for f in folder.iterdir() if f.is_file() and not f.name.startswith("."))


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
