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
    from assets.resources import transient_retries

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
    from assets.resources import transient_retries

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


# ---------------------------------------------------------------------------------------
# The DuckDB pool slot of a run that was killed
# ---------------------------------------------------------------------------------------

import json  # noqa: E402
import os  # noqa: E402
import signal  # noqa: E402
import socket  # noqa: E402
from pathlib import Path  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]
DAY = "2026-11-20"


def dagster_home(tmp_path) -> Path:
    """A Dagster instance folder like the repository's dagster.yaml (pool limit 1), with
    absolute paths so that this test process and the CLI's see the same storage."""
    folder = tmp_path / "dagster"
    folder.mkdir(exist_ok=True)
    (folder / "dagster.yaml").write_text(
        f"storage:\n  sqlite:\n    base_dir: {folder / 'storage'}\n"
        "concurrency:\n  pools:\n    default_limit: 1\ntelemetry:\n  enabled: false\n")
    return folder


def cli_env(settings, folder, **extra) -> dict[str, str]:
    return {**os.environ, "FLYWHEEL_HOME": str(settings.home), "DAGSTER_HOME": str(folder),
            "FLYWHEEL_INBOX_SETTLE_SECONDS": "0", **extra}


def start_cli(args, env, log: Path) -> subprocess.Popen:
    with open(log, "w") as out:
        return subprocess.Popen([sys.executable, "-m", "jobs.cli", *args], cwd=ROOT, env=env,
                                stdout=out, stderr=subprocess.STDOUT)


def land_many(settings, day: str, n: int) -> None:
    land(settings, day, "app.jsonl", "".join(
        json.dumps({"log_id": f"{day}-{i}", "ts": f"{day}T10:00:00Z", "input": f"question {i} about refunds",
                    "output": f"answer {i}", "source": ["web", "api"][i % 2], "feedback": [1, -1, 0][i % 3]}) + "\n"
        for i in range(n)))


def instance_at(folder: Path):
    return dg.DagsterInstance.from_config(str(folder))


def wait_until(condition, timeout: float, what: str):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = condition()
        if value:
            return value
        time.sleep(0.05)
    raise AssertionError(f"timed out waiting for {what}")


def claimed(instance) -> list:
    storage = instance.event_log_storage
    if "flywheel_duckdb" not in storage.get_concurrency_keys():
        return []
    return storage.get_concurrency_info("flywheel_duckdb").claimed_slots


def test_a_run_killed_while_holding_the_pool_slot_does_not_block_the_next_run(settings, tmp_path):
    folder = dagster_home(tmp_path)
    land_many(settings, DAY, 60_000)
    env = cli_env(settings, folder)
    victim = start_cli(["run", "--day", DAY], env, tmp_path / "victim.log")
    instance = instance_at(folder)
    slot = wait_until(lambda: claimed(instance), 120, "the first run to claim the pool slot")
    os.kill(victim.pid, signal.SIGKILL)
    victim.wait(timeout=30)
    assert claimed(instance) == slot  # the dead run keeps its slot

    again = subprocess.run([sys.executable, "-m", "jobs.cli", "run", "--day", DAY], cwd=ROOT, env=env,
                           capture_output=True, text=True, timeout=300)
    assert again.returncode == 0, again.stdout + again.stderr
    assert (f"freed the flywheel_duckdb pool slot of run {slot[0].run_id} (nightly): "
            f"its process (PID {victim.pid}) is gone") in again.stderr
    dead = instance_at(folder).get_run_by_id(slot[0].run_id)
    assert dead.status == dg.DagsterRunStatus.FAILURE
    assert claimed(instance_at(folder)) == []


@pytest.mark.parametrize("signum", [signal.SIGINT, signal.SIGTERM])
def test_a_run_waiting_for_a_live_run_says_so_and_stops_on_ctrl_c_or_sigterm(settings, tmp_path, signum):
    from dagster._core.storage.dagster_run import DagsterRun

    folder = dagster_home(tmp_path)
    land(settings, DAY, "app.jsonl", '{"log_id": "a", "ts": "2026-11-20T10:00:00Z", "input": "q", "output": "a"}\n')
    instance = instance_at(folder)
    holder = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(600)"])
    try:
        run = DagsterRun(job_name="nightly", run_id="0123abcd" + "0" * 28, status=dg.DagsterRunStatus.STARTED,
                         tags={"flywheel/pid": str(holder.pid), "flywheel/host": socket.gethostname(),
                               "dagster/partition": DAY})
        instance.add_run(run)
        instance.event_log_storage.initialize_concurrency_limit_to_default("flywheel_duckdb")  # limit 1
        assert instance.event_log_storage.claim_concurrency_slot("flywheel_duckdb", run.run_id, "logs").is_claimed
        log = tmp_path / "waiter.log"
        waiter = start_cli(["run", "--day", DAY], cli_env(settings, folder), log)
        wait_until(lambda: "waiting for the flywheel_duckdb pool slot" in log.read_text(), 60, "the wait message")
        assert (f"held by run 0123abcd (nightly {DAY}, step logs, PID {holder.pid}); Ctrl-C stops"
                in log.read_text())
        waiter.send_signal(signum)
        assert waiter.wait(timeout=30) != 0
        assert claimed(instance)[0].run_id == run.run_id  # the live run keeps its slot
    finally:
        holder.kill()
        holder.wait()
