"""Nightly benchmark: one whole night, through the real command line.

A fresh home gets one demo day of ``--rows`` logs in every format the demo writes, with
the demo's annotation files in the inbox; then ``flywheel run --day DAY`` runs in a child
process (ingest, import, learn, scores, slices, queue, report) exactly as a user runs it,
with no LLM endpoint (the judge and prompt steps are skipped). While it runs, the
resident memory of the whole process tree is sampled; afterwards the step timings are
read back from the run's Dagster instance.

The generated landing and inbox files are cached in benchmarks/.cache and hard-linked
into each fresh home, so only the first run pays for generating them.

The JSON line: ``seconds`` (wall time of ``flywheel run``), ``phases`` (seconds per
phase: ingest, import, classifiers, scoring, slicing, queue, report, judges, prompts),
``steps`` (seconds per Dagster step), ``rows`` (logs stored), ``labels`` (annotations
imported) and ``peak_rss_mb`` (the largest sum of RSS over the process tree).
"""

from __future__ import annotations

import argparse
import datetime as dt
import os
import shutil
import subprocess
import sys
import tempfile
import threading
import time
from collections import defaultdict
from pathlib import Path

from benchmarks.common import CACHE, say

# A fixed past day, inside the partitions (FLYWHEEL_START_DATE) and never "the future".
DAY = dt.date(2026, 1, 15)
REPO = Path(__file__).resolve().parents[1]
# Step keys whose group is not the phase name people think of.
PHASE_OF_GROUP = {"annotations": "import"}


def demo_files(rows: int, seed: int) -> Path:
    """Return a cached home holding only the generated demo day (landing, inbox, prompts)."""
    from flywheel.demo import DemoSpec, generate

    template = CACHE / f"nightly-{rows}-seed{seed}"
    if not (template / ".complete").exists():
        shutil.rmtree(template, ignore_errors=True)
        say(f"generating one demo day of {rows:,} logs in every format into {template} (once) ...")
        generate(template, DemoSpec(days=1, rows_per_day=rows, seed=seed, start=DAY), progress=say)
        (template / ".complete").write_text("")
    return template


def _tree_rss_bytes(root: int) -> int:
    """Return the summed resident memory of ``root`` and all its descendants (Linux /proc)."""
    total, stack, seen = 0, [root], set()
    while stack:
        pid = stack.pop()
        if pid in seen:
            continue
        seen.add(pid)
        try:
            with open(f"/proc/{pid}/statm") as f:
                total += int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")
            for task in os.listdir(f"/proc/{pid}/task"):
                with open(f"/proc/{pid}/task/{task}/children") as f:
                    stack.extend(int(c) for c in f.read().split())
        except (FileNotFoundError, ProcessLookupError, PermissionError):
            continue  # the process ended between two reads
    return total


def _watch_peak(process: subprocess.Popen, peak: list[int], interval: float = 0.1) -> None:
    while process.poll() is None:
        peak[0] = max(peak[0], _tree_rss_bytes(process.pid))
        time.sleep(interval)


def _step_seconds(dagster_home: Path) -> dict[str, float]:
    """Return the seconds spent per step key over every run recorded in ``dagster_home``."""
    import dagster as dg

    seconds: dict[str, float] = defaultdict(float)
    here = os.getcwd()
    os.chdir(dagster_home)  # dagster.yaml's storage paths are relative to its folder
    try:
        instance = dg.DagsterInstance.from_config(str(dagster_home))
        for run in instance.get_runs():
            for stat in instance.get_run_step_stats(run.run_id):
                if stat.start_time is not None and stat.end_time is not None:
                    seconds[stat.step_key] += stat.end_time - stat.start_time
    finally:
        os.chdir(here)
    return dict(seconds)


def _phases(steps: dict[str, float]) -> dict[str, float]:
    """Return the seconds per phase: the asset group of each step (its op's assets)."""
    from jobs.definitions import defs

    group_of_op: dict[str, str] = {}
    for assets_def in defs.resolve_asset_graph().assets_defs:
        groups = set(assets_def.group_names_by_key.values())
        if groups:
            group_of_op[assets_def.op.name] = sorted(groups)[0]
    phases: dict[str, float] = defaultdict(float)
    for step, secs in steps.items():
        group = group_of_op.get(step, step)
        phases[PHASE_OF_GROUP.get(group, group)] += secs
    return {name: round(secs, 2) for name, secs in sorted(phases.items())}


def main(argv: list[str]) -> dict:
    parser = argparse.ArgumentParser(prog="python -m benchmarks nightly")
    parser.add_argument("--rows", type=int, default=1_000_000, help="logs in the demo day")
    parser.add_argument("--seed", type=int, default=7)
    parser.add_argument("--keep", action="store_true", help="keep the home and print where it is")
    args = parser.parse_args(argv)
    template = demo_files(args.rows, args.seed)

    tmp = Path(tempfile.mkdtemp(prefix="flywheel-nightly-"))
    try:
        home, dagster_home = tmp / "home", tmp / "dagster"
        shutil.copytree(template, home, copy_function=os.link, ignore=shutil.ignore_patterns(".complete"))
        dagster_home.mkdir()
        shutil.copy(REPO / "dagster.yaml", dagster_home / "dagster.yaml")
        env = {k: v for k, v in os.environ.items() if not k.startswith(("OPENAI_", "FLYWHEEL_"))}
        env |= {"FLYWHEEL_HOME": str(home), "DAGSTER_HOME": str(dagster_home)}
        command = [sys.executable, "-c", "from jobs.cli import app; app()", "run", "--day", DAY.isoformat()]

        say(f"running: flywheel run --day {DAY} (home {home}) ...")
        peak = [0]
        started = time.perf_counter()
        process = subprocess.Popen(command, cwd=REPO, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
        watcher = threading.Thread(target=_watch_peak, args=(process, peak), daemon=True)
        watcher.start()
        output = process.communicate()[0]
        seconds = time.perf_counter() - started
        watcher.join()
        failed = [line.strip() for line in output.splitlines() if "failed" in line.lower()]
        if process.returncode != 0:
            # A failed night is still measured (its phases up to the failure), and says so.
            say(f"flywheel run failed ({process.returncode}):\n{output[-4000:]}")

        import duckdb

        with duckdb.connect(str(home / "flywheel.duckdb"), read_only=True) as con:
            rows = con.execute("SELECT count(*) FROM logs").fetchone()[0]
            labels = con.execute("SELECT count(*) FROM annotations").fetchone()[0]
            scores = con.execute("SELECT count(*) FROM log_scores").fetchone()[0]
        steps = _step_seconds(dagster_home)
        result = {
            "name": "nightly",
            "rows": rows,
            "labels": labels,
            "scores": scores,
            "seconds": round(seconds, 2),
            "phases": _phases(steps),
            # process start, imports, Dagster's own bookkeeping: the wall time outside steps
            "outside_steps_seconds": round(seconds - sum(steps.values()), 2),
            "steps": {k: round(v, 2) for k, v in sorted(steps.items())},
            "peak_rss_mb": round(peak[0] / 1e6, 1),
            "cores": os.cpu_count(),
            "ok": process.returncode == 0,
        }
        if failed:
            result["failed"] = failed
        if args.keep:
            say(f"kept: FLYWHEEL_HOME={home} DAGSTER_HOME={dagster_home}")
        return result
    finally:
        if not args.keep:
            shutil.rmtree(tmp, ignore_errors=True)
