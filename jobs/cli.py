"""The `flywheel` command line: what people do by hand.

Exit codes: 0 success, 1 a run or a step failed, 2 bad usage or settings. Errors are
one line on stderr, starting with "error:".
"""

from __future__ import annotations

import contextlib
import json
import os
import re
import shutil
from datetime import date, datetime, timedelta, timezone
from pathlib import Path
from typing import Annotated, Optional

import typer

from flywheel import settings as flywheel_settings

app = typer.Typer(add_completion=False, no_args_is_help=True, help=__doc__)
REPO_ROOT = Path(__file__).resolve().parents[1]
INGEST_GROUP = "ingest"
# Step events and errors go to the Dagster UI; the terminal gets our one-line summaries.
QUIET = {"loggers": {"console": {"config": {"log_level": "CRITICAL"}}}}


def _fail(message: str, code: int = 1) -> None:
    typer.echo(f"error: {' '.join(str(message).split())}", err=True)
    raise typer.Exit(code)


def _settings(*, create: bool = False) -> flywheel_settings.Settings:
    """Return the settings; refuse a home that does not exist unless ``create`` (a typo in
    FLYWHEEL_HOME must not start a new, empty home)."""
    try:
        settings = flywheel_settings.load()
    except flywheel_settings.SettingsError as exc:
        _fail(str(exc), 2)
        raise  # unreachable
    if not create and not settings.home.is_dir():
        _fail(f"FLYWHEEL_HOME={settings.home} does not exist (a typo?); create a new home with "
              "`flywheel init` or `flywheel demo`", 2)
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


def _day(text: str | None, option: str = "--day") -> str | None:
    if text is None:
        return None
    try:
        return date.fromisoformat(text).isoformat()
    except ValueError:
        _fail(f"{option} {text!r} is not a date (YYYY-MM-DD)", 2)
        raise


@app.command()
def demo(
    days: Annotated[int, typer.Option(help="Number of days of logs.")] = 7,
    rows_per_day: Annotated[int, typer.Option(help="Log records per day.")] = 2000,
    seed: Annotated[int, typer.Option(help="Random seed (same seed, same files).")] = 7,
    start: Annotated[Optional[str], typer.Option(help="First day YYYY-MM-DD (default: DAYS days ago).")] = None,
) -> None:
    """Generate demo production logs and annotation files into FLYWHEEL_HOME."""
    from flywheel.demo import DemoSpec, generate

    settings = _settings(create=True)
    first = date.fromisoformat(_day(start, "--start")) if start else None
    spec = DemoSpec(days=days, rows_per_day=rows_per_day, seed=seed, start=first)
    summary = generate(settings.home, spec, progress=typer.echo)
    total = sum(sum(day.rows.values()) for day in summary.days)
    typer.echo(f"demo data written under {settings.home}: {len(summary.days)} days, {total} log records")


@app.command()
def init() -> None:
    """Create a new, empty home at FLYWHEEL_HOME (landing/, annotations/inbox/ and outbox/,
    the DuckDB tables); other commands refuse a home that does not exist."""
    from flywheel import store

    settings = _settings(create=True)
    existed = settings.home.is_dir()
    for folder in (settings.landing_dir, settings.annotations_inbox, settings.annotations_outbox):
        folder.mkdir(parents=True, exist_ok=True)
    with store.connection(settings):
        pass
    typer.echo(f"{'home already there' if existed else 'new home'}: {settings.home}; put log files in "
               f"{settings.landing_dir}/YYYY-MM-DD/ and run `flywheel run`")


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
    if sum(bool(x) for x in (all_days, day, start or end)) > 1:
        _fail("use one of --day, --start/--end, --all", 2)
    first_day, last_day = _partition_range()
    valid = (f"the days that can run go from {first_day} (FLYWHEEL_START_DATE) to {last_day} "
             "(the last day that has ended)")
    if all_days:
        days = _landing_days(settings)
        outside = [d for d in days if not first_day <= d <= last_day]
        if outside:
            typer.echo(f"warning: skipping landing folders outside the partitions: {', '.join(outside)}; {valid}",
                       err=True)
        return [d for d in days if first_day <= d <= last_day]
    if day:
        days = [_day(day)]
    elif start or end:
        if not (start and end):
            _fail("--start and --end go together", 2)
        first, last = date.fromisoformat(_day(start, "--start")), date.fromisoformat(_day(end, "--end"))
        if last < first:
            _fail(f"--end {last} is before --start {first}", 2)
        days = [(first + timedelta(days=i)).isoformat() for i in range((last - first).days + 1)]
    else:
        days = [(date.today() - timedelta(days=1)).isoformat()]
    outside = [d for d in days if not first_day <= d <= last_day]
    if outside:
        what = outside[0] if len(outside) == 1 else f"{outside[0]} .. {outside[-1]} ({len(outside)} days)"
        _fail(f"{what} cannot run: {valid}", 2)
    return days


def _partition_range() -> tuple[str, str]:
    """Return the first and last day of the daily partitions (the last is the latest day
    that has ended in FLYWHEEL_TIMEZONE)."""
    from assets.partitions import daily_partitions

    first = daily_partitions.get_first_partition_key()
    last = daily_partitions.get_last_partition_key()
    return first or "", last or ""


@app.command()
def run(
    day: Annotated[Optional[str], typer.Option(help="The day to run, YYYY-MM-DD (default: yesterday).")] = None,
    start: Annotated[Optional[str], typer.Option(help="First day of a range.")] = None,
    end: Annotated[Optional[str], typer.Option(help="Last day of a range (inclusive).")] = None,
    all_days: Annotated[bool, typer.Option("--all", help="Every day that has a landing folder.")] = False,
    allow_empty: Annotated[bool, typer.Option(
        "--allow-empty", help="Store a day whose landing folder is missing or empty as empty (else refused).")] = False,
) -> None:
    """Run the flywheel for one day, a range of days, or all landed days.

    In order: ingest every day; import the annotation inbox; train and align (the `learn`
    job); then the rest of the nightly job per day (scores, slices, queue, report). So
    a backfill ends with the classifiers trained and every day scored with them.
    """
    settings = _settings()
    days = _days(settings, day, start, end, all_days)
    if not days:
        _fail(f"no landing folders under {settings.landing_dir}; run `flywheel demo` first", 1)
    instance = _instance()
    from jobs.definitions import defs

    nightly = defs.resolve_job_def("nightly")
    daily_keys = sorted(nightly.asset_layer.executable_asset_keys, key=lambda k: k.to_user_string())
    ingest_keys = [k for k in daily_keys if _group(defs, k) == INGEST_GROUP]
    rest_keys = [k for k in daily_keys if k not in ingest_keys]
    failed: list[str] = []
    ingested: list[str] = []
    for i, partition in enumerate(days, 1):
        typer.echo(f"[ingest {i}/{len(days)}] {partition} ...")
        if _execute(nightly, instance, partition_key=partition, asset_selection=ingest_keys, label=f"ingest {partition}",
                    ops_config={"logs": {"config": {"allow_empty": True}}} if allow_empty else None).success:
            ingested.append(partition)
        else:
            failed.append(f"ingest {partition}")
    typer.echo("annotations: importing the inbox and rebuilding the consensus ...")
    imported = _execute(defs.resolve_job_def("import_annotations"), instance)
    if imported.success:
        _print_import(imported)
    else:
        failed.append("import_annotations")
    learn = defs.resolve_job_def("learn")
    if learn.asset_layer.executable_asset_keys:
        typer.echo("learn: classifiers, judges and prompts from the labels ...")
        if not _execute(learn, instance).success:
            failed.append("learn")
    for i, partition in enumerate(ingested, 1):
        typer.echo(f"[nightly {i}/{len(ingested)}] {partition}: scores, slices, queue, report ...")
        if not _execute(nightly, instance, partition_key=partition, asset_selection=rest_keys, label=partition).success:
            failed.append(partition)
    _print_where(settings)
    if failed:
        _fail(f"{len(failed)} runs failed: {', '.join(failed)}", 1)


def _group(defs, key) -> str | None:
    return defs.resolve_assets_def(key).group_names_by_key.get(key)


def _print_import(result) -> None:
    """Print what the import did with the labels, pending ones included (nothing is lost
    silently: labels whose logs are not ingested yet wait, and the line says so)."""
    (imported,) = result.asset_materializations_for_node("annotations")
    meta = {k: v.value for k, v in imported.metadata.items()}
    typer.echo(f"    labels: {meta.get('accepted', 0)} accepted, {meta.get('rejected', 0)} rejected, "
               f"{meta.get('duplicates', 0)} duplicates, {meta.get('pending_joined', 0)} pending labels "
               "joined their logs")
    waiting = meta.get("pending_waiting", 0)
    if waiting:
        typer.echo(f"    {waiting} labels wait for their logs (not ingested yet; table pending_annotations): "
                   "they join when the logs' day is ingested")
    unsettled = meta.get("unsettled_files") or []
    if unsettled:
        typer.echo(f"    still being written, left for the next import: {', '.join(map(str, unsettled))}")


def _execute(job, instance, *, partition_key: str | None = None, asset_selection=None,
             label: str | None = None, ops_config: dict | None = None):
    """Run ``job`` in this process; print its outcome and, for a failure, each failed
    step with its error in one line. Return the run's result (``.success``)."""
    from jobs import pool

    # Wait here, not inside Dagster: its wait for a slot ignores Ctrl-C and says nothing.
    pool.wait_for_slot(instance, say=lambda msg: typer.echo(f"    {msg}", err=True))
    result = job.execute_in_process(
        partition_key=partition_key,
        instance=instance,
        asset_selection=asset_selection,
        raise_on_error=False,
        run_config={**QUIET, "ops": ops_config} if ops_config else QUIET,
        tags=pool.run_tags(),
    )
    what = label or partition_key or job.name
    if result.success:
        typer.echo(f"    {what}: ok (run {result.run_id})")
        return result
    for event in result.all_events:
        if event.is_step_failure:
            typer.echo(f"    {failure_line(event)}", err=True)
    typer.echo(f"    {what}: FAILED (run {result.run_id})", err=True)
    return result


# Dagster's wrappers around the user's exception; the retry policy's own when retries ran out.
_WRAPPERS = ("DagsterExecutionStepExecutionError", "DagsterUserCodeExecutionError")
_RETRIES = ("RetryRequestedFromPolicy", "RetryRequested", "DagsterMaxRetriesExceededError")


def failure_line(event) -> str:
    """Return one line naming the failed step (the asset) and why it failed: the cause,
    not Dagster's wrapper nor its "Exceeded max_retries" (said as "after N attempts")."""
    error = event.step_failure_data.error
    attempts = None
    while error is not None and error.cause is not None and error.cls_name in _WRAPPERS + _RETRIES:
        if error.cls_name in _RETRIES:
            found = re.search(r"max_retries of (\d+)", error.message)
            attempts = int(found.group(1)) + 1 if found else attempts
        error = error.cause  # the user's exception, not Dagster's wrapper
    reason = " ".join(error.message.split()) if error else "unknown error"
    reason = re.sub(r"^dagster\._core\.(errors|definitions\.events)\.\w+: ", "", reason)  # Dagster's own class
    after = f" (after {attempts} attempts)" if attempts else ""
    return f"step {event.step_key} failed{after}: {reason}"


@contextlib.contextmanager
def _reading(settings: flywheel_settings.Settings):
    """Yield a read-only connection, waiting (and saying so) while another process writes
    the DuckDB file; fail with one line when it stays busy."""
    from flywheel import store

    try:
        with store.connection_when_free(settings, on_wait=lambda msg: typer.echo(msg, err=True)) as con:
            yield con
    except store.DatabaseBusy as exc:
        _fail(str(exc), 1)


def _print_where(settings: flywheel_settings.Settings) -> None:
    """Print where the results are and their headline counts (or, when the database cannot
    be read now, one line saying why: the runs themselves are done)."""
    import duckdb

    from flywheel import store

    try:
        with store.connection_when_free(settings, on_wait=lambda msg: typer.echo(msg, err=True)) as con:
            rows = con.execute("SELECT day, count(*) FROM logs GROUP BY day ORDER BY day").fetchall()
            rejected = con.execute("SELECT count(*) FROM rejected_logs").fetchone()[0]
            duplicates = con.execute("SELECT count(*) FROM duplicate_logs").fetchone()[0]
            labels = con.execute("SELECT count(*) FROM annotations").fetchone()[0]
            consensus = con.execute(
                "SELECT label, count(*) FILTER (WHERE value = 1), count(*) FROM consensus GROUP BY 1 ORDER BY 1"
            ).fetchall()
    except (store.DatabaseBusy, duckdb.Error) as exc:
        typer.echo(f"\nResults: {settings.database_path} (summary not shown: {' '.join(str(exc).split())})")
        return
    total = sum(n for _, n in rows)
    typer.echo("")
    typer.echo(f"Results: {settings.database_path}")
    typer.echo(f"  logs: {total} rows over {len(rows)} days; rejected_logs: {rejected}; duplicate_logs: {duplicates}")
    typer.echo(f"  annotations: {labels} labels; consensus: "
               + (", ".join(f"{label} {pos} of {n}" for label, pos, n in consensus) or "none yet"))
    typer.echo(f"  nightly reports (HTML): {settings.reports_dir}/; items to label: {settings.annotations_outbox}/")
    typer.echo(f"  query them: .venv/bin/python -c \"import duckdb; print(duckdb.connect('{settings.database_path}', read_only=True).sql('SELECT day, source, count(*) FROM logs GROUP BY ALL ORDER BY ALL'))\"")
    typer.echo("Summary: .venv/bin/flywheel status   UI: DAGSTER_HOME=$PWD .venv/bin/dagster dev   (then http://127.0.0.1:3000)")


def _latest_day(settings, table: str) -> str | None:
    from flywheel import store

    if settings.storage == "duckdb" and not settings.database_path.exists():
        return None
    with _reading(settings) as con:
        if not store.table_exists(con, table):
            return None
        latest = con.execute(f"SELECT max(day) FROM {table}").fetchone()[0]
    return latest.isoformat() if latest else None


@app.command()
def report(
    day: Annotated[Optional[str], typer.Option(help="The day, YYYY-MM-DD (default: the latest ingested day).")] = None,
) -> None:
    """Write the HTML report of a day to reports/YYYY-MM-DD.html and print its path."""
    from flywheel.report import write_report

    settings = _settings()
    day = _day(day) or _latest_day(settings, "logs")
    if day is None:
        _fail("no ingested day yet: run `flywheel run` first, or give --day", 1)
    with _reading(settings) as con:
        page = write_report(con, settings, day)
    empty = [name for name, status in page.chart_status().items() if status != "chart"]
    typer.echo(str(page.path))
    if empty:
        typer.echo(f"charts without data yet: {', '.join(empty)}", err=True)


@app.command("import-annotations")
def import_annotations(
    file: Annotated[Path, typer.Argument(help="An annotation file: canonical CSV/JSON lines, Label Studio, "
                                              "Argilla v2 or Langfuse score export, or a filled-in queue CSV.")],
) -> None:
    """Copy FILE into the annotations inbox, import it and rebuild the consensus."""
    settings = _settings()
    if not file.exists():
        _fail(f"{file}: no such file", 2)
    if not file.is_file():
        _fail(f"{file}: not a file", 2)
    try:
        with file.open("rb") as handle:
            handle.read(1)
    except OSError as exc:
        _fail(f"{file}: cannot be read ({exc.strerror or exc})", 2)
    inbox = settings.annotations_inbox
    inbox.mkdir(parents=True, exist_ok=True)
    target = inbox / file.name
    n = 1
    while target.exists():
        target = inbox / f"{file.stem}-{n}{file.suffix}"
        n += 1
    # Copied under a name the import skips, then renamed: the inbox never shows half a
    # copy. copy2 keeps the file's own modification time (the settle rule looks at it).
    partial = target.with_name(target.name + ".part")
    shutil.copy2(file, partial)
    os.replace(partial, target)
    typer.echo(f"copied {file} to {target}")
    instance = _instance()
    from jobs.definitions import defs

    from jobs import pool

    job = defs.resolve_job_def("import_annotations")
    pool.wait_for_slot(instance, say=lambda msg: typer.echo(msg, err=True))
    result = job.execute_in_process(
        instance=instance, raise_on_error=False,
        run_config=QUIET, tags=pool.run_tags(),
    )
    if not result.success:
        for event in result.all_events:
            if event.is_step_failure:
                typer.echo(f"    {failure_line(event)}", err=True)
        _fail(f"import failed (run {result.run_id})", 1)
    (imported,) = result.asset_materializations_for_node("annotations")
    meta = {k: v.value for k, v in imported.metadata.items()}
    typer.echo(f"imported: {meta.get('accepted', 0)} labels accepted, {meta.get('rejected', 0)} rejected, "
               f"{meta.get('duplicates', 0)} duplicates, {meta.get('pending', 0)} pending, "
               f"{meta.get('skipped', 0)} skipped (run {result.run_id})")
    if meta.get("pending"):
        typer.echo(f"{meta['pending']} labels wait for their logs (not ingested yet; table pending_annotations): "
                   "they join when the logs' day is ingested")
    unreadable = meta.get("unreadable_files") or []
    if unreadable:
        _fail(f"not an annotation file we can read: {', '.join(map(str, unreadable))} (see annotation_files.error)", 1)
    if meta.get("rejected"):
        typer.echo("rejected rows and their reasons: table rejected_annotations")


@app.command("export-queue")
def export_queue_command(
    day: Annotated[Optional[str], typer.Option(help="The day, YYYY-MM-DD (default: the latest queued day).")] = None,
) -> None:
    """Write a day's annotation queue to the outbox (Label Studio, Argilla, CSV); print the paths."""
    from flywheel.annotations.export import export_queue

    settings = _settings()
    day = _day(day) or _latest_day(settings, "annotation_queue")
    if day is None:
        _fail("no annotation queue yet: run `flywheel run` first", 1)
    with _reading(settings) as con:
        queued = con.execute("SELECT count(*) FROM annotation_queue WHERE day = ?::DATE", [day]).fetchone()[0]
        if not queued:
            _fail(f"no queue for {day}: run `flywheel run --day {day}` first", 1)
        paths = export_queue(con, settings, day)
    typer.echo(f"{queued} items queued on {day}:")
    for path in paths:
        typer.echo(str(path))


@app.command()
def status() -> None:
    """Print a summary: last run, ingested days, champion models, trusted judges, prompt
    versions, worst slices, labels and the queue."""

    settings = _settings()
    if settings.storage == "duckdb" and not settings.database_path.exists():
        _fail(f"no database at {settings.database_path}; run `flywheel demo` and `flywheel run --all` first", 1)
    instance = _instance()
    runs = instance.get_runs(limit=5)
    if runs:
        last = runs[0]
        stats = instance.get_run_stats(last.run_id)
        when = stats.end_time or stats.start_time or stats.launch_time
        at = datetime.fromtimestamp(when, timezone.utc).strftime("%Y-%m-%d %H:%M UTC") if when else "?"
        partition = last.tags.get("dagster/partition")
        typer.echo(f"Last run: {last.job_name}{' ' + partition if partition else ''} {last.status.value} "
                   f"at {at} (run {last.run_id})")
        typer.echo("Recent runs:")
        for past in runs:
            partition = past.tags.get("dagster/partition", "")
            typer.echo(f"  {past.job_name:<20} {partition:<12} {past.status.value:<10} {past.run_id[:8]}")
    else:
        typer.echo("Last run: none recorded in this Dagster instance")
    with _reading(settings) as con:
        for line in summary_lines(con, llm_configured=bool(settings.llm_base_url), settings=settings):
            typer.echo(line)


def summary_lines(con, *, llm_configured: bool = True, settings=None) -> list[str]:
    """Return the lines of `flywheel status` drawn from the tables (absent tables are skipped).
    ``llm_configured`` says whether an LLM endpoint is set, to explain an empty judge list;
    ``settings`` (default: read from the environment) give the classifiers' trust floor."""
    from flywheel import store

    def has(table: str) -> bool:
        return store.table_exists(con, table)

    out: list[str] = []
    if has("ingest_files"):
        days = con.execute(
            """SELECT f.day, sum(f.read), sum(f.accepted), sum(f.rejected), sum(f.duplicates),
                      count(*) FILTER (WHERE f.error IS NOT NULL)
               FROM ingest_files f GROUP BY 1 ORDER BY 1 DESC LIMIT 7"""
        ).fetchall()
        out.append("Ingested days (latest first): day, read, accepted, rejected, duplicates, unreadable files")
        out += [f"  {d}  {r:>8} {a:>8} {j:>6} {u:>6} {e:>3}" for d, r, a, j, u, e in days] or ["  none yet"]
    out.append("Champion models:")
    champions = con.execute(
        """SELECT task, version, trained_at, metrics::VARCHAR FROM models WHERE status = 'champion'
           ORDER BY task""").fetchall() if has("models") else []
    for task, version, trained_at, metrics in champions:
        out.append(f"  {task}: {version} (trained {trained_at:%Y-%m-%d %H:%M}) {_metrics_text(metrics)}")
    if not champions:
        out.append("  none yet (no classifier trained and promoted)")
    else:
        from flywheel.classifiers.registry import champion_trust
        from flywheel.classifiers.trust import describe

        out.append("Classifier trust (untrusted scores are kept in log_scores but not used by slices, queue, "
                   "prompt evaluation):")
        for task, version, trust in champion_trust(con, settings or flywheel_settings.load()):
            out += [f"  {line}" for line in describe(task, version, trust)]
    no_judges = "none yet" if llm_configured else "none (no LLM endpoint: set OPENAI_BASE_URL to run the judges)"
    if has("judge_alignment"):
        judges = con.execute(
            """SELECT criterion, prompt_version, kappa, n FROM judge_alignment WHERE trusted
               QUALIFY row_number() OVER (PARTITION BY criterion ORDER BY evaluated_at DESC) = 1
               ORDER BY criterion""").fetchall()
        out.append("Trusted judges: " + (", ".join(
            f"{c} (prompt {v}, kappa {k:.2f}, n={n})" for c, v, k, n in judges) or no_judges))
    else:
        out.append("Trusted judges: " + no_judges)
    if has("prompts"):
        prompts = con.execute(
            """SELECT name, version, created_at FROM prompts WHERE status = 'champion' ORDER BY name""").fetchall()
        out.append("Current prompts: " + (", ".join(f"{n} {v}" for n, v, _ in prompts) or "none registered yet"))
    else:
        out.append("Current prompts: none registered yet")
    if has("worst_slices"):
        latest = con.execute("SELECT max(day) FROM worst_slices").fetchone()[0]
        worst = con.execute(
            """SELECT rank, slice_type || '=' || slice_value, failures, n_signal, failure_rate, rest_rate, q_value
               FROM worst_slices WHERE day = ? ORDER BY rank LIMIT 5""", [latest]
        ).fetchall() if latest else []
        out.append(f"Worst slices on {latest}:" if worst else "Worst slices: none significantly worse than the rest")
        out += [f"  {rank}. {name}: {failures}/{n} = {rate:.1%} (rest {rest:.1%}, q={q:.2g})"
                for rank, name, failures, n, rate, rest, q in worst]
    if has("consensus"):
        labels = con.execute(
            """SELECT label, count(*) FILTER (WHERE value = 1), count(*) FILTER (WHERE value IS NOT NULL),
                      count(*) FILTER (WHERE status = 'tie') FROM consensus GROUP BY 1 ORDER BY 1"""
        ).fetchall()
        out.append("Labels (consensus): " + (", ".join(
            f"{label} {pos}/{n} positive, {ties} ties" for label, pos, n, ties in labels) or "none yet"))
    if has("pending_annotations"):
        waiting = con.execute("SELECT count(*), count(DISTINCT log_id) FROM pending_annotations").fetchone()
        if waiting[0]:
            out.append(f"Labels waiting for their logs: {waiting[0]} labels of {waiting[1]} log ids not ingested "
                       "yet (pending_annotations; they join when the day is ingested)")
    if has("annotation_agreement"):
        kappas = con.execute(
            "SELECT label, round(avg(kappa), 2) FROM annotation_agreement GROUP BY 1 ORDER BY 1").fetchall()
        out.append("Agreement (mean pairwise kappa): " + (", ".join(f"{lab} {k}" for lab, k in kappas) or "n/a"))
    if has("annotation_queue"):
        labelled_sql = ("count(*) FILTER (WHERE log_id IN (SELECT log_id FROM annotations))"
                        if has("annotations") else "0")
        queued, labelled = con.execute(f"SELECT count(*), {labelled_sql} FROM annotation_queue").fetchone()
        out.append(f"Annotation queue: {queued} items queued, {labelled} labelled so far")
    return out


def _metrics_text(metrics) -> str:
    try:
        values = json.loads(metrics) if isinstance(metrics, str) else (metrics or {})
    except ValueError:
        return str(metrics)
    keys = [k for k in ("auroc", "ap", "f1", "precision", "recall", "ece", "n_eval") if k in values]
    return " ".join(f"{k}={values[k]:.3f}" if isinstance(values[k], float) else f"{k}={values[k]}" for k in keys)


if __name__ == "__main__":  # pragma: no cover
    app()
