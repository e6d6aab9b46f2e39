"""Crashes, other processes and errors (#13): what a failed step says, which errors are
tried again, a database held by another process, runs killed and run again."""

from __future__ import annotations

import subprocess
import sys
import time

import dagster as dg
import duckdb
import pytest
from typer.testing import CliRunner

from assets.resources import transient_retries
from flywheel import store
from jobs.cli import app, failure_line
from tests.conftest import land

HOLD_LOCK = r"""
import sys, duckdb
con = duckdb.connect(sys.argv[1])
print("locked", flush=True)
sys.stdin.readline()
"""


@pytest.fixture
def writer(settings):
    """Another process that holds the home's DuckDB file open for writing until released."""
    with store.connection(settings):
        pass  # the file and its tables
    process = subprocess.Popen([sys.executable, "-c", HOLD_LOCK, str(settings.database_path)],
                               stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
    assert process.stdout.readline().strip() == "locked"
    yield process
    if process.poll() is None:
        process.stdin.write("\n")
        process.stdin.flush()
        process.wait(timeout=30)


def failed_steps(result) -> list:
    return [e for e in result.all_events if e.is_step_failure]


def test_transient_errors_are_retried_and_the_failure_names_the_cause(settings, writer):
    attempts = []

    @dg.asset(retry_policy=dg.RetryPolicy(max_retries=1, delay=0))
    @transient_retries
    def locked_out():
        attempts.append(1)
        store.connect(settings).close()  # another process writes the file

    result = dg.materialize([locked_out], raise_on_error=False)
    assert not result.success and len(attempts) == 2  # tried again: a lock may be released
    (failure,) = failed_steps(result)
    line = failure_line(failure)
    assert line.startswith("step locked_out failed (after 2 attempts): ")
    assert "Could not set lock" in line and "max_retries" not in line


def test_permanent_errors_fail_at_once_with_their_cause(settings):
    attempts = []

    @dg.asset(retry_policy=dg.RetryPolicy(max_retries=2, delay=0))
    @transient_retries
    def broken():
        attempts.append(1)
        raise KeyError("no column 'frobnicate'")

    result = dg.materialize([broken], raise_on_error=False)
    assert not result.success and len(attempts) == 1
    (failure,) = failed_steps(result)
    assert failure_line(failure) == "step broken failed: KeyError: \"no column 'frobnicate'\""


def test_a_run_whose_step_cannot_succeed_fails_in_seconds_and_says_why(settings, monkeypatch, tmp_path):
    monkeypatch.setenv("FLYWHEEL_HOME", str(settings.home))
    monkeypatch.setenv("DAGSTER_HOME", str(tmp_path / "dagster"))
    (tmp_path / "dagster").mkdir()
    land(settings, "2026-11-20", "app.jsonl",
         '{"log_id": "a", "ts": "2026-11-20T10:00:00Z", "input": "q", "output": "a"}\n')
    monkeypatch.setenv("FLYWHEEL_DUCKDB_MEMORY_LIMIT", "lots")  # DuckDB cannot parse it: never transient
    started = time.monotonic()
    result = CliRunner().invoke(app, ["run", "--day", "2026-11-20"])
    took = time.monotonic() - started
    assert result.exit_code == 1
    steps = [line.strip() for line in result.output.splitlines() if line.strip().startswith("step ")]
    cause = "ParserException: Parser Error: Memory must have a number (e.g. 1GB)"
    assert steps[0] == f"step logs failed: {cause}"
    assert all(line.endswith(f"failed: {cause}") for line in steps), steps  # the import, learn, ... too
    assert took < 14  # no retry (the first would wait 15 s)
    assert "Traceback" not in result.output and "max_retries" not in result.output
    print(result.output)


# ---------------------------------------------------------------------------------------
# Reading while another process writes the DuckDB file
# ---------------------------------------------------------------------------------------


def cli_home(settings, monkeypatch, tmp_path):
    """Point the CLI at ``settings``' home, with one ingested day, and its own Dagster instance."""
    monkeypatch.setenv("FLYWHEEL_HOME", str(settings.home))
    monkeypatch.setenv("DAGSTER_HOME", str(tmp_path / "dagster"))
    (tmp_path / "dagster").mkdir(exist_ok=True)
    from flywheel.ingest.loader import ingest_day

    land(settings, "2026-11-20", "app.jsonl",
         '{"log_id": "a", "ts": "2026-11-20T10:00:00Z", "input": "q", "output": "a"}\n')
    with store.connection(settings) as con:
        ingest_day(con, settings, "2026-11-20")


def test_status_and_report_wait_for_a_writing_process_then_say_so_in_one_line(settings, monkeypatch, tmp_path):
    cli_home(settings, monkeypatch, tmp_path)
    holder = subprocess.Popen([sys.executable, "-c", HOLD_LOCK, str(settings.database_path)],
                              stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
    try:
        assert holder.stdout.readline().strip() == "locked"
        monkeypatch.setenv("FLYWHEEL_BUSY_TIMEOUT_SECONDS", "1")
        for command in (["status"], ["report", "--day", "2026-11-20"], ["export-queue", "--day", "2026-11-20"]):
            result = CliRunner().invoke(app, command)
            assert result.exit_code == 1, (command, result.output)
            assert result.exception is None or isinstance(result.exception, SystemExit), result.exception
            errors = [line for line in result.output.splitlines() if line.startswith("error:")]
            assert len(errors) == 1, result.output
            assert errors[0].startswith(f"error: {settings.database_path} is being written by PID {holder.pid} (")
            assert errors[0].endswith("; waited 1 s (FLYWHEEL_BUSY_TIMEOUT_SECONDS): try again when that run is done")
            assert "Traceback" not in result.output
    finally:
        holder.stdin.write("\n")
        holder.stdin.flush()
        holder.wait(timeout=30)


def test_status_waits_briefly_for_a_writer_that_finishes(settings, monkeypatch, tmp_path):
    cli_home(settings, monkeypatch, tmp_path)
    releaser = r"""
import sys, time, duckdb
con = duckdb.connect(sys.argv[1])
print("locked", flush=True)
time.sleep(4)
con.close()
"""
    holder = subprocess.Popen([sys.executable, "-c", releaser, str(settings.database_path)],
                              stdout=subprocess.PIPE, text=True)
    assert holder.stdout.readline().strip() == "locked"
    monkeypatch.setenv("FLYWHEEL_BUSY_TIMEOUT_SECONDS", "30")
    result = CliRunner().invoke(app, ["status"])
    holder.wait(timeout=30)
    assert result.exit_code == 0, result.output
    assert f"waiting up to 30 s for PID {holder.pid}" in result.output
    assert "Ingested days" in result.output


def test_the_end_of_run_summary_says_why_it_cannot_be_shown_instead_of_crashing(settings, writer, monkeypatch):
    from jobs.cli import _print_where

    monkeypatch.setenv("FLYWHEEL_BUSY_TIMEOUT_SECONDS", "0.5")
    lines = []
    monkeypatch.setattr("typer.echo", lambda message="", err=False: lines.append(str(message)))
    _print_where(settings.replace(busy_timeout_seconds=0.5))
    assert any(f"summary not shown: {settings.database_path} is being written by PID {writer.pid}" in line
               for line in lines), lines
