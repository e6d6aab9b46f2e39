"""An ingest killed at any point (kill -9 of a real `dagster asset materialize` or
`flywheel run` process) leaves the tables as they were before it, or as the finished
run leaves them, and run again it ends with the same tables as a clean run (#13).

The home holds a day already ingested from older files (the run replaces it) and a
later day sharing log ids with it (the run moves that day's copies to the duplicates),
so a kill can fall in every part of the work: reading, storing, moving duplicates,
the checks after the commit."""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import dagster as dg
import pytest

from assets.ingest import logs
from assets.resources import FlywheelResource
from flywheel import store
from flywheel.ingest.loader import ingest_day
from flywheel.settings import load
from tests.conftest import FIXTURES, ROOT, land

DAY, LATER = "2026-11-20", "2026-11-21"
TABLES = {
    "logs": "SELECT * EXCLUDE (ingested_at) FROM logs ORDER BY ALL",
    "rejected_logs": "SELECT * EXCLUDE (rejected_at) FROM rejected_logs ORDER BY ALL",
    "duplicate_logs": "SELECT * FROM duplicate_logs ORDER BY ALL",
    "duplicate_rows": "SELECT * EXCLUDE (ingested_at) FROM duplicate_rows ORDER BY ALL",
    "ingest_files": "SELECT * EXCLUDE (ingested_at) FROM ingest_files ORDER BY ALL",
}


def record(log_id: str, day: str = DAY, **fields) -> str:
    base = {"log_id": log_id, "ts": f"{day}T10:00:00Z", "source": "web", "input": f"question {log_id}",
            "output": f"answer {log_id} " + "words " * 30}
    base.update(fields)
    return json.dumps(base) + "\n"


def tables(settings) -> dict[str, list[tuple]]:
    with store.connection(settings, read_only=True) as con:
        return {name: con.execute(sql).fetchall() for name, sql in TABLES.items()}


@pytest.fixture(scope="module")
def start_home(tmp_path_factory) -> Path:
    """A home with DAY ingested from an older file, LATER ingested, and DAY's new files landed."""
    base = tmp_path_factory.mktemp("killed")
    settings = load({"FLYWHEEL_HOME": str(base / "home")})
    land(settings, DAY, "old.jsonl", "".join(record(f"old-{i}") for i in range(500)))
    land(settings, LATER, "later.jsonl", "".join(record(f"id-{i}", LATER) for i in range(0, 2000, 7)))
    with store.connection(settings) as con:
        ingest_day(con, settings, DAY)
        ingest_day(con, settings, LATER)
    (settings.landing_for(DAY) / "old.jsonl").unlink()
    lines = [record(f"id-{i}", latency_ms=i % 900) if i % 997 else "{broken\n" for i in range(80_000)]
    lines[123] = record("pii", input="mail me at ann@example.com")
    land(settings, DAY, "big.jsonl", "".join(lines))
    land(settings, DAY, "b.csv", "log_id,ts,input,output\n"
         + "".join(f"c-{i},{DAY}T11:00:00Z,q {i},a {i}\n" for i in range(5000)) + "c-x,oops\n")
    shutil.copy(FIXTURES / "logs" / "openai_chat.jsonl", settings.landing_for(DAY) / "c.jsonl")
    return settings.home


def copy_home(start_home: Path, to: Path):
    shutil.copytree(start_home, to / "home")
    (to / "dagster").mkdir()  # an instance of its own, without pool limits
    return load({"FLYWHEEL_HOME": str(to / "home")})


def materialize_logs(settings) -> None:
    with dg.instance_for_test() as instance:
        result = dg.materialize([logs], partition_key=DAY, instance=instance,
                                resources={"flywheel": FlywheelResource(home=str(settings.home))})
    assert result.success


@pytest.fixture(scope="module")
def states(start_home, tmp_path_factory):
    """The tables before any run, and after one clean run."""
    before = tables(load({"FLYWHEEL_HOME": str(start_home)}))
    clean = copy_home(start_home, tmp_path_factory.mktemp("clean"))
    materialize_logs(clean)
    after = tables(clean)
    assert before != after and len(after["logs"]) > 80_000
    return before, after


def kill_when(command: list[str], settings, tmp_path: Path, pattern: str, delay: float) -> str:
    """Start ``command``, kill -9 it ``delay`` seconds after a line of its output holds
    ``pattern``; return its output."""
    env = {**os.environ, "FLYWHEEL_HOME": str(settings.home), "DAGSTER_HOME": str(tmp_path / "dagster"),
           "PYTHONUNBUFFERED": "1"}
    proc = subprocess.Popen(command, cwd=ROOT, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    output = []
    try:
        for line in proc.stdout:
            output.append(line)
            if pattern in line:
                time.sleep(delay)
                os.kill(proc.pid, signal.SIGKILL)
                break
        proc.wait(timeout=120)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    assert proc.returncode == -signal.SIGKILL, "".join(output)[-3000:]
    return "".join(output)


MATERIALIZE = [str(Path(sys.executable).with_name("dagster")), "asset", "materialize", "-m", "jobs.definitions",
               "--select", "logs", "--partition", DAY]


@pytest.mark.parametrize("pattern, delay", [
    ("reading b.csv", 0.0),        # the day's rows deleted, the first file being read
    ("reading big.jsonl", 0.5),    # half-way through the large file
    ("reading c.jsonl", 0.0),      # the last file: then the duplicates move
])
def test_an_ingest_killed_at_any_point_and_run_again_ends_as_a_clean_run(start_home, states, tmp_path, pattern, delay):
    before, after = states
    settings = copy_home(start_home, tmp_path)
    kill_when(MATERIALIZE, settings, tmp_path, pattern, delay)
    # Killed: nothing half-done is visible (the day is replaced in one transaction).
    killed = tables(settings)
    assert killed in (before, after), {name: (len(killed[name]), len(before[name]), len(after[name])) for name in TABLES}
    materialize_logs(settings)
    assert tables(settings) == after


@pytest.mark.parametrize("point", ["ingest:before_commit", "ingest:after_commit"])
def test_an_ingest_that_dies_about_its_commit_and_runs_again_ends_as_a_clean_run(start_home, states, tmp_path, point):
    before, after = states
    settings = copy_home(start_home, tmp_path)
    env = {**os.environ, "FLYWHEEL_HOME": str(settings.home), "DAGSTER_HOME": str(tmp_path / "dagster"),
           "FLYWHEEL_CRASH_AT": point}
    proc = subprocess.run(MATERIALIZE, cwd=ROOT, env=env, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 137, proc.stdout[-2000:] + proc.stderr[-2000:]
    assert tables(settings) == (before if point == "ingest:before_commit" else after)
    materialize_logs(settings)
    assert tables(settings) == after


def test_flywheel_run_killed_during_its_ingest_and_run_again_ends_as_a_clean_run(start_home, states, tmp_path):
    before, after = states
    settings = copy_home(start_home, tmp_path)
    flywheel = str(Path(sys.executable).with_name("flywheel"))
    kill_when([flywheel, "run", "--day", DAY], settings, tmp_path, f"[ingest 1/1] {DAY}", 1.5)
    assert tables(settings) in (before, after)
    materialize_logs(settings)
    assert tables(settings) == after
