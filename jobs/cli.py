"""The `flywheel` command line: what people do by hand.

Exit codes: 0 success, 1 a run or a step failed, 2 bad usage or settings.
"""

from __future__ import annotations

import os
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
        settings = flywheel_settings.load()
    except flywheel_settings.SettingsError as exc:
        _fail(str(exc), 2)
        raise  # unreachable
    # Runs read the settings again, possibly from another working directory: pin the home.
    os.environ["FLYWHEEL_HOME"] = str(settings.home)
    return settings


def _instance():
    """Return the Dagster instance runs are recorded in, so the UI shows them.

    DAGSTER_HOME wins; otherwise the repository's own dagster.yaml (a source checkout),
    else a throwaway instance.
    """
    import dagster as dg

    if not os.environ.get("DAGSTER_HOME") and (REPO_ROOT / "dagster.yaml").exists():
        os.environ["DAGSTER_HOME"] = str(REPO_ROOT)
    home = os.environ.get("DAGSTER_HOME")
    if home:
        if (Path(home) / "dagster.yaml").exists():
            os.chdir(home)  # our dagster.yaml's storage paths are relative to its folder
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
        _fail(f"{len(failed)} of {len(days) + 1} runs failed: {', '.join(failed)}", 1)


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


@app.command()
def status() -> None:
    """Print a summary: recent runs, ingested days, worst slices, labels and the queue."""
    from flywheel import store

    settings = _settings()
    if not settings.database_path.exists():
        _fail(f"no database at {settings.database_path}; run `flywheel demo` and `flywheel run --all` first", 1)
    instance = _instance()
    runs = instance.get_runs(limit=5)
    typer.echo("Recent runs:")
    for run in runs or []:
        partition = run.tags.get("dagster/partition", "")
        typer.echo(f"  {run.job_name:<20} {partition:<12} {run.status.value:<10} {run.run_id[:8]}")
    if not runs:
        typer.echo("  none recorded in this Dagster instance")
    with store.connection(settings, read_only=True) as con:
        def has(table: str) -> bool:
            return store.table_exists(con, table)

        days = con.execute(
            """SELECT f.day, sum(f.read), sum(f.accepted), sum(f.rejected), sum(f.duplicates),
                      count(*) FILTER (WHERE f.error IS NOT NULL)
               FROM ingest_files f GROUP BY 1 ORDER BY 1 DESC LIMIT 7"""
        ).fetchall()
        typer.echo("Ingested days (latest first): day, read, accepted, rejected, duplicates, unreadable files")
        for day, read, accepted, rejected, duplicates, unreadable in days:
            typer.echo(f"  {day}  {read:>8} {accepted:>8} {rejected:>6} {duplicates:>6} {unreadable:>3}")
        if has("worst_slices"):
            latest = con.execute("SELECT max(day) FROM worst_slices").fetchone()[0]
            worst = con.execute(
                """SELECT rank, slice_type || '=' || slice_value, failures, n_signal, failure_rate, rest_rate, q_value
                   FROM worst_slices WHERE day = ? ORDER BY rank LIMIT 5""", [latest]
            ).fetchall()
            typer.echo(f"Worst slices on {latest}:" if worst else "Worst slices: none significant")
            for rank, name, failures, n, rate, rest, q in worst:
                typer.echo(f"  {rank}. {name}: {failures}/{n} = {rate:.1%} (rest {rest:.1%}, q={q:.2g})")
        if has("consensus"):
            labels = con.execute(
                """SELECT label, count(*) FILTER (WHERE value = 1), count(*) FILTER (WHERE value IS NOT NULL),
                          count(*) FILTER (WHERE status = 'tie') FROM consensus GROUP BY 1 ORDER BY 1"""
            ).fetchall()
            typer.echo("Labels (consensus): " + (", ".join(
                f"{label} {pos}/{n} positive, {ties} ties" for label, pos, n, ties in labels) or "none yet"))
        if has("annotation_agreement"):
            kappas = con.execute(
                "SELECT label, round(avg(kappa), 2) FROM annotation_agreement GROUP BY 1 ORDER BY 1").fetchall()
            typer.echo("Agreement (mean pairwise kappa): " + (", ".join(f"{l} {k}" for l, k in kappas) or "n/a"))
        if has("annotation_queue"):
            queued, labelled = con.execute(
                """SELECT count(*), count(*) FILTER (WHERE log_id IN (SELECT log_id FROM annotations))
                   FROM annotation_queue"""
            ).fetchone()
            typer.echo(f"Annotation queue: {queued} items queued, {labelled} labelled so far")
        if has("models"):
            for row in con.execute("SELECT task, version, metrics FROM models WHERE status = 'champion'").fetchall():
                typer.echo(f"Champion {row[0]}: {row[1]} {row[2]}")
        else:
            typer.echo("Classifiers: none trained yet")


if __name__ == "__main__":  # pragma: no cover
    app()
