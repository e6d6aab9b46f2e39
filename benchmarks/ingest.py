"""Ingest benchmark: our `logs` ingestion of N canonical JSON-line records against bare
DuckDB `CREATE TABLE t AS SELECT * FROM read_json(...)` on the same file, in one process,
with the same DuckDB thread count and memory limit.

The input (about 1 KB a record, from the demo generator) is written once to
benchmarks/.cache and reused. Both sides write into a fresh DuckDB file.
"""

from __future__ import annotations

import argparse
import tempfile
import time
from pathlib import Path

import duckdb

from benchmarks.common import CACHE, peak_rss_mb, say
from flywheel import store
from flywheel.demo import DemoSpec, iter_canonical_records, write_canonical_jsonl
from flywheel.ingest.loader import ingest_day
from flywheel.settings import load

DAY = "2026-01-01"


def input_file(rows: int, seed: int) -> Path:
    """Return the cached canonical JSON-lines file of ``rows`` demo records (made once)."""
    path = CACHE / f"canonical-{rows}-seed{seed}.jsonl"
    if not path.exists():
        CACHE.mkdir(parents=True, exist_ok=True)
        say(f"writing {rows:,} canonical records to {path} (once) ...")
        spec = DemoSpec(days=1, rows_per_day=rows, seed=seed)
        partial = path.with_suffix(".partial")
        write_canonical_jsonl(partial, iter_canonical_records(spec, 0, rows=rows))
        partial.rename(path)
    return path


def main(argv: list[str]) -> dict:
    parser = argparse.ArgumentParser(prog="python -m benchmarks ingest")
    parser.add_argument("--rows", type=int, default=1_000_000)
    parser.add_argument("--seed", type=int, default=7)
    args = parser.parse_args(argv)
    source = input_file(args.rows, args.seed)
    size_mb = source.stat().st_size / 1e6

    with tempfile.TemporaryDirectory() as tmp:
        home = Path(tmp) / "home"
        settings = load({"FLYWHEEL_HOME": str(home)})
        landing = settings.landing_for(DAY)
        landing.mkdir(parents=True)
        (landing / source.name).symlink_to(source)

        say(f"ours: ingesting {source.name} ({size_mb:,.0f} MB) ...")
        started, cpu_started = time.perf_counter(), time.process_time()
        with store.connection(settings) as con:
            threads, memory_limit = con.execute(
                "SELECT current_setting('threads'), current_setting('memory_limit')"
            ).fetchone()
            report = ingest_day(con, settings, DAY)
        seconds = time.perf_counter() - started
        cpu_seconds = time.process_time() - cpu_started
        ours_peak = peak_rss_mb()

        # The same file, in this process, with DuckDB's own defaults except the thread
        # count and memory limit, which are ours.
        say("baseline: CREATE TABLE t AS SELECT * FROM read_json(...) ...")
        started, cpu_started = time.perf_counter(), time.process_time()
        con = duckdb.connect(
            str(Path(tmp) / "baseline.duckdb"), config={"threads": threads, "memory_limit": memory_limit}
        )
        con.execute("CREATE TABLE t AS SELECT * FROM read_json(?)", [str(landing / source.name)])
        baseline_rows = con.execute("SELECT count(*) FROM t").fetchone()[0]
        con.close()
        baseline_seconds = time.perf_counter() - started
        baseline_cpu_seconds = time.process_time() - cpu_started

    return {
        "name": "ingest",
        "rows": report.total("read"),
        "accepted": report.total("accepted"),
        "rejected": report.total("rejected"),
        "file_mb": round(size_mb, 1),
        "seconds": round(seconds, 2),
        "rows_per_second": round(report.total("read") / seconds),
        "baseline_rows": baseline_rows,
        "baseline_seconds": round(baseline_seconds, 2),
        "ratio": round(seconds / baseline_seconds, 3),
        # CPU time of the whole process (all threads): steadier than wall time on a
        # shared machine.
        "cpu_seconds": round(cpu_seconds, 2),
        "baseline_cpu_seconds": round(baseline_cpu_seconds, 2),
        "cpu_ratio": round(cpu_seconds / baseline_cpu_seconds, 3),
        "threads": threads,
        "pii_mode": settings.pii_mode,
        "peak_rss_mb": ours_peak,
    }
