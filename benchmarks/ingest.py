"""Ingest benchmark: our `logs` ingestion of N canonical JSON-line records against bare
DuckDB `CREATE TABLE t AS SELECT * FROM read_json(...)` on the same file, in one process.

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
        started = time.perf_counter()
        with store.connection(settings) as con:
            report = ingest_day(con, settings, DAY)
        seconds = time.perf_counter() - started
        ours_peak = peak_rss_mb()

        say("baseline: CREATE TABLE t AS SELECT * FROM read_json(...) ...")
        started = time.perf_counter()
        con = duckdb.connect(str(Path(tmp) / "baseline.duckdb"))
        con.execute("CREATE TABLE t AS SELECT * FROM read_json(?)", [str(source)])
        baseline_rows = con.execute("SELECT count(*) FROM t").fetchone()[0]
        con.close()
        baseline_seconds = time.perf_counter() - started

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
        "peak_rss_mb": ours_peak,
    }
