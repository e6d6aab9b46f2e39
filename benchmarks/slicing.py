"""Slicing benchmark: `slice_day` end to end (topic fit on the first night, source,
keyword and topic slices, metrics, mined keywords, worst slices, drift, report and
chart) on one day of N demo logs, after ingestion.

The canonical input is the ingest benchmark's cached file. Ingestion (`ingest_day`) runs
once per (rows, seed, schema) in a child process, so that neither its time nor its
memory counts; the ingested DuckDB file is cached in benchmarks/.cache and copied into a
fresh home for each run. The failure signal is the default one (negative feedback).
"""

from __future__ import annotations

import argparse
import hashlib
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from benchmarks.common import CACHE, peak_rss_mb, say
from benchmarks.ingest import DAY, input_file

ROOT = Path(__file__).resolve().parents[1]


def build_database(source: str, target: str) -> None:
    """Ingest ``source`` as day :data:`DAY` into the DuckDB file ``target`` (child process)."""
    from flywheel import store
    from flywheel.ingest.loader import ingest_day
    from flywheel.settings import load

    with tempfile.TemporaryDirectory() as tmp:
        settings = load({"FLYWHEEL_HOME": tmp})
        landing = settings.landing_for(DAY)
        landing.mkdir(parents=True)
        (landing / Path(source).name).symlink_to(source)
        with store.connection(settings) as con:
            report = ingest_day(con, settings, DAY)
            con.execute("CHECKPOINT")
        say(f"ingested {report.total('accepted'):,} rows")
        shutil.move(str(settings.database_path), target)


def ingested_database(rows: int, seed: int) -> Path:
    """Return the cached DuckDB file with the ingested day (made once, in a child process)."""
    from flywheel import store

    schema = hashlib.sha256(store.SCHEMA.encode()).hexdigest()[:10]
    path = CACHE / f"slicing-{rows}-seed{seed}-{schema}.duckdb"
    if not path.exists():
        source = input_file(rows, seed)
        say(f"ingesting {source.name} into {path.name} (once, not timed) ...")
        partial = path.with_suffix(".partial")
        partial.unlink(missing_ok=True)
        code = f"from benchmarks.slicing import build_database; build_database({str(source)!r}, {str(partial)!r})"
        subprocess.run([sys.executable, "-c", code], check=True, cwd=ROOT)
        partial.rename(path)
    return path


def main(argv: list[str]) -> dict:
    parser = argparse.ArgumentParser(prog="python -m benchmarks slicing")
    parser.add_argument("--rows", type=int, default=1_000_000)
    parser.add_argument("--seed", type=int, default=7)
    args = parser.parse_args(argv)
    database = ingested_database(args.rows, args.seed)

    from flywheel import store
    from flywheel.settings import load
    from flywheel.slicing import slice_day

    with tempfile.TemporaryDirectory() as tmp:
        settings = load({"FLYWHEEL_HOME": str(Path(tmp) / "home")})
        settings.home.mkdir(parents=True)
        shutil.copy(database, settings.database_path)
        with store.connection(settings) as con:
            rows = con.execute("SELECT count(*) FROM logs WHERE day = ?", [DAY]).fetchone()[0]
            say(f"slicing {rows:,} logs of {DAY} ...")
            started = time.perf_counter()
            report = slice_day(con, settings, DAY)
            seconds = time.perf_counter() - started
        peak = peak_rss_mb()

    return {
        "name": "slicing",
        "rows": rows,
        "seconds": round(seconds, 2),
        "rows_per_second": round(rows / seconds),
        "peak_rss_mb": peak,
        "stages": {k: round(v, 2) for k, v in report.seconds.items()},
        "membership_rows": sum(report.membership_rows.values()),
        "slices": report.slice_counts,
        "worst_slices": len(report.worst.rows) if report.worst else 0,
        "candidates": len(report.candidates),
        "topic_model": report.topic_model,
    }
