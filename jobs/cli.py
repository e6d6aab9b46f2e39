"""The `flywheel` command line: what people do by hand.

Exit codes: 0 success, 1 a run or a step failed, 2 bad usage or settings.
"""

from __future__ import annotations

import os
import sys
from datetime import date, timedelta
from pathlib import Path
from typing import Annotated, Optional

import typer

from flywheel import settings as flywheel_settings

app = typer.Typer(add_completion=False, no_args_is_help=True, help=__doc__)
REPO_ROOT = Path(__file__).resolve().parents[1]


def _fail(message: str, code: int = 1) -> None:
    typer.echo(f"error: {message}", err=True)
    raise typer.Exit(code)


def _settings() -> flywheel_settings.Settings:
    try:
        return flywheel_settings.load()
    except flywheel_settings.SettingsError as exc:
        _fail(str(exc), 2)
        raise  # unreachable


def _instance():
    """Return the Dagster instance runs are recorded in, so the UI shows them.

    DAGSTER_HOME wins; otherwise the repository's own dagster.yaml (a source checkout),
    else a throwaway instance.
    """
    import dagster as dg

    if not os.environ.get("DAGSTER_HOME") and (REPO_ROOT / "dagster.yaml").exists():
        os.environ["DAGSTER_HOME"] = str(REPO_ROOT)
        os.chdir(REPO_ROOT)  # dagster.yaml's storage paths are relative to the root
    if os.environ.get("DAGSTER_HOME"):
        return dg.DagsterInstance.get()
    return dg.DagsterInstance.ephemeral()


@app.command()
def demo(
    days: Annotated[int, typer.Option(help="Number of days of logs.")] = 7,
    rows_per_day: Annotated[int, typer.Option(help="Log records per day.")] = 2000,
    seed: Annotated[int, typer.Option(help="Random seed (same seed, same files).")] = 7,
    start: Annotated[Optional[str], typer.Option(help="First day YYYY-MM-DD (default: DAYS days ago).")] = None,
) -> None:
    """Generate demo production logs and annotation files into FLYWHEEL_HOME."""
    from flywheel.demo import DemoSpec, generate

    settings = _settings()
    try:
        first = date.fromisoformat(start) if start else None
    except ValueError:
        _fail(f"--start {start!r} is not a date (YYYY-MM-DD)", 2)
    spec = DemoSpec(days=days, rows_per_day=rows_per_day, seed=seed, start=first)
    summary = generate(settings.home, spec, progress=typer.echo)
    total = sum(sum(day.rows.values()) for day in summary.days)
    typer.echo(f"demo data written under {settings.home}: {len(summary.days)} days, {total} log records")


def _landing_days(settings: flywheel_settings.Settings) -> list[str]:
    if not settings.landing_dir.is_dir():
        return []
    days = []
    for child in sorted(settings.landing_dir.iterdir()):
        try:
            date.fromisoformat(child.name)
        except ValueError:
            continue
        if child.is_dir():
            days.append(child.name)
    return days


def _days(settings, day: str | None, start: str | None, end: str | None, all_days: bool) -> list[str]:
    if all_days:
        return _landing_days(settings)
    if day:
        return [day]
    if start or end:
        if not (start and end):
            _fail("--start and --end go together", 2)
        first, last = date.fromisoformat(start), date.fromisoformat(end)
        return [(first + timedelta(days=i)).isoformat() for i in range((last - first).days + 1)]
    return [(date.today() - timedelta(days=1)).isoformat()]


@app.command()
def run(
    day: Annotated[Optional[str], typer.Option(help="The day to run, YYYY-MM-DD (default: yesterday).")] = None,
    start: Annotated[Optional[str], typer.Option(help="First day of a range.")] = None,
    end: Annotated[Optional[str], typer.Option(help="Last day of a range (inclusive).")] = None,
    all_days: Annotated[bool, typer.Option("--all", help="Every day that has a landing folder.")] = False,
) -> None:
    """Materialize the nightly job for one day, a range of days, or all landed days."""
    settings = _settings()
    try:
        days = _days(settings, day, start, end, all_days)
    except ValueError as exc:
        _fail(f"bad date: {exc}", 2)
    if not days:
        _fail(f"no landing folders under {settings.landing_dir}; run `flywheel demo` first", 1)
    instance = _instance()
    from jobs.definitions import defs

    failed = []
    for i, partition in enumerate(days, 1):
        typer.echo(f"[{i}/{len(days)}] nightly run for {partition} ...")
        if not _execute(defs.resolve_job_def("nightly"), instance, partition_key=partition):
            failed.append(partition)
    typer.echo("annotations: importing the inbox and rebuilding the consensus ...")
    if not _execute(defs.resolve_job_def("import_annotations"), instance):
        failed.append("import_annotations")
    _print_where(settings)
    if failed:
        _fail(f"{len(failed)} of {len(days)} runs failed: {', '.join(failed)}", 1)


def _execute(job, instance, *, partition_key: str | None = None) -> bool:
    """Run ``job`` in this process; print its outcome and any failed step. Return success."""
    result = job.execute_in_process(
        partition_key=partition_key,
        instance=instance,
        raise_on_error=False,
        # Step events go to the Dagster UI; the terminal gets warnings and errors only.
        run_config={"loggers": {"console": {"config": {"log_level": "WARNING"}}}},
    )
    what = partition_key or job.name
    if result.success:
        typer.echo(f"    {what}: ok (run {result.run_id})")
        return True
    for event in result.all_events:
        if event.is_step_failure:
            error = event.step_failure_data.error
            typer.echo(f"    step {event.step_key} failed: {error.message.strip() if error else '?'}", err=True)
    typer.echo(f"    {what}: FAILED (run {result.run_id})", err=True)
    return False


def _print_where(settings: flywheel_settings.Settings) -> None:
    from flywheel import store

    with store.connection(settings, read_only=True) as con:
        rows = con.execute(
            """SELECT day, count(*) FROM logs GROUP BY day ORDER BY day"""
        ).fetchall()
        rejected = con.execute("SELECT count(*) FROM rejected_logs").fetchone()[0]
        duplicates = con.execute("SELECT count(*) FROM duplicate_logs").fetchone()[0]
        labels = con.execute("SELECT count(*) FROM annotations").fetchone()[0]
        consensus = con.execute(
            "SELECT label, count(*) FILTER (WHERE value = 1), count(*) FROM consensus GROUP BY 1 ORDER BY 1"
        ).fetchall()
    total = sum(n for _, n in rows)
    typer.echo("")
    typer.echo(f"Results: {settings.database_path}")
    typer.echo(f"  logs: {total} rows over {len(rows)} days; rejected_logs: {rejected}; duplicate_logs: {duplicates}")
    typer.echo(f"  annotations: {labels} labels; consensus: "
               + (", ".join(f"{label} {pos} of {n}" for label, pos, n in consensus) or "none yet"))
    typer.echo(f"  worst slices and charts: {settings.reports_dir}/; items to label: {settings.annotations_outbox}/")
    typer.echo(f"  query them: .venv/bin/python -c \"import duckdb; print(duckdb.connect('{settings.database_path}', read_only=True).sql('SELECT day, source, count(*) FROM logs GROUP BY ALL ORDER BY ALL'))\"")
    typer.echo("Open the UI: DAGSTER_HOME=$PWD .venv/bin/dagster dev   (then http://127.0.0.1:3000)")


def main() -> None:  # pragma: no cover - console entry point
    app()


if __name__ == "__main__":  # pragma: no cover
    sys.exit(app())
