"""Ingest benchmark, in one of two modes.

Default: our `logs` ingestion of N canonical JSON-line records against bare DuckDB
`CREATE TABLE t AS SELECT * FROM read_json(...)` on the same file, in one process, with
the same DuckDB thread count and memory limit. The baseline runs twice, once before our
ingestion and once after it (each into a fresh file), so that neither side alone gets the
file warm in the page cache or a quieter moment of a shared machine: the JSON line has
both (`baseline_before_seconds`, `baseline_after_seconds`), and `baseline_seconds`,
`ratio` and `cpu_ratio` are against their mean.

`--format NAME` (a demo format: openai, openai_batch, otel, langfuse, csv, parquet,
canonical_jsonl_gz, ...): our ingestion of one demo day of N records written in that
format against our ingestion of the very same records as canonical JSON lines (the
accepted rows, exported from the `logs` table of an untimed run of the format without
the PII guardrail, so that they hold the same PII to scrub), in the same process: the
`ratio` is what the format costs over the canonical path. `--python-path` maps every
record of the format with the Python mappers (the fast paths of `flywheel.ingest.fast`
off), for the difference they make.

`--repeat N` (default 3) times each side N times, the two sides in turn (ours between
two baseline runs in the default mode), each run into a fresh DuckDB file: `ratio` and
`cpu_ratio` are the medians of the runs' own ratios (each against the baseline run or runs
next to it in time, so that a slower spell of a shared machine slows both), `seconds` and
`baseline_seconds` the medians of each side's runs; the JSON line has every run's figures
too (`runs`).

Inputs (from the demo generator) are written once to benchmarks/.cache and reused.
"""

from __future__ import annotations

import argparse
import os
import shutil
import statistics
import tempfile
import time
from datetime import date
from pathlib import Path

import duckdb

from benchmarks.common import CACHE, peak_rss_mb, say
from flywheel import pii, store
from flywheel.demo import FORMATS, DemoSpec, generate, iter_canonical_records, write_canonical_jsonl
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


def format_day(fmt: str, rows: int, seed: int) -> Path:
    """Return the cached landing folder of one demo day of ``rows`` records in ``fmt`` only."""
    folder = CACHE / f"format-{fmt}-{rows}-seed{seed}"
    if not (folder / ".complete").exists():
        shutil.rmtree(folder, ignore_errors=True)
        say(f"writing {rows:,} demo records as {fmt} to {folder} (once) ...")
        spec = DemoSpec(days=1, rows_per_day=rows, seed=seed, start=date.fromisoformat(DAY), format_shares={fmt: 1.0})
        generate(folder / "home", spec)
        (folder / ".complete").write_text("")
    return folder / "home" / "landing" / DAY


# The canonical fields of a stored log, as the canonical JSON-lines format spells them.
_CANONICAL_EXPORT = (
    "log_id, strftime(ts, '%Y-%m-%dT%H:%M:%S.%fZ') AS ts, source, input, output, context, model, "
    "prompt_name, prompt_version, feedback, messages, git_commit, session_id, user_id, latency_ms, "
    "prompt_tokens, completion_tokens, cost_usd, tags, metadata"
)


def _timed_ingest(home: Path, files: list[Path], *, fast_formats: bool = True,
                  pii_mode: str | None = None) -> tuple[object, float, float]:
    """Ingest ``files`` as the day DAY of a fresh home; return (report, seconds, cpu seconds).
    ``fast_formats=False``: every record of the non-canonical formats mapped in Python.
    ``pii_mode``: another FLYWHEEL_PII_MODE than the default."""
    settings = load({"FLYWHEEL_HOME": str(home), **({"FLYWHEEL_PII_MODE": pii_mode} if pii_mode else {})})
    landing = settings.landing_for(DAY)
    landing.mkdir(parents=True)
    for path in files:
        (landing / path.name).symlink_to(path)
    started, cpu_started = time.perf_counter(), time.process_time()
    with store.connection(settings) as con:
        report = ingest_day(con, settings, DAY, fast_formats=fast_formats)
    return report, time.perf_counter() - started, time.process_time() - cpu_started


def compare_format(fmt: str, rows: int, seed: int, *, fast_formats: bool = True, repeat: int = 1) -> dict:
    """Return the JSON result of ``--format``: ``fmt`` against the canonical path, each
    timed ``repeat`` times in turn (see the module's docstring)."""
    landing = format_day(fmt, rows, seed)
    files = sorted(p for p in landing.iterdir() if p.is_file())
    size_mb = sum(p.stat().st_size for p in files) / 1e6
    runs = []
    with tempfile.TemporaryDirectory() as tmp:
        # The records exported as they were written, PII included (a timed run's `logs`
        # hold them redacted): an untimed run without the PII guardrail. It runs first,
        # and the PII detectors scan a line once: one-time costs (imports, the phone
        # metadata) are paid before either side is timed.
        say("exporting the records as canonical JSON lines (an untimed run with FLYWHEEL_PII_MODE=off) ...")
        _timed_ingest(Path(tmp) / "export", files, fast_formats=fast_formats, pii_mode="off")
        pii.scan("warm-up: call +1 415 555 0134 or mail a@b.example")
        canonical = Path(tmp) / "canonical.jsonl"
        with duckdb.connect(str(Path(tmp) / "export" / "flywheel.duckdb"), read_only=True) as con:
            con.execute(f"COPY (SELECT {_CANONICAL_EXPORT} FROM logs ORDER BY source_file, source_line) "
                        f"TO '{canonical}' (FORMAT json)")
        shutil.rmtree(Path(tmp) / "export")
        canonical_mb = canonical.stat().st_size / 1e6
        for run in range(repeat):
            say(f"ours ({run + 1}/{repeat}): ingesting {rows:,} records as {fmt} ({size_mb:,.0f} MB) ...")
            report, seconds, cpu_seconds = _timed_ingest(Path(tmp) / "format", files, fast_formats=fast_formats)
            shutil.rmtree(Path(tmp) / "format")
            say(f"canonical ({run + 1}/{repeat}): ingesting the same {report.total('accepted'):,} records "
                "as canonical JSON lines ...")
            base_report, base_seconds, base_cpu = _timed_ingest(Path(tmp) / "canonical", [canonical])
            shutil.rmtree(Path(tmp) / "canonical")
            runs.append({"seconds": round(seconds, 2), "baseline_seconds": round(base_seconds, 2),
                         "ratio": round(seconds / base_seconds, 3), "cpu_seconds": round(cpu_seconds, 2),
                         "baseline_cpu_seconds": round(base_cpu, 2), "cpu_ratio": round(cpu_seconds / base_cpu, 3)})
    seconds = statistics.median(r["seconds"] for r in runs)
    return {
        "name": "ingest",
        "format": fmt,
        "fast_formats": fast_formats,
        "rows": report.total("read"),
        "accepted": report.total("accepted"),
        "rejected": report.total("rejected"),
        "file_mb": round(size_mb, 1),
        "seconds": round(seconds, 2),
        "rows_per_second": round(report.total("read") / seconds),
        "baseline": "the same records as canonical JSON lines, our ingest",
        "baseline_rows": base_report.total("accepted"),
        "baseline_file_mb": round(canonical_mb, 1),
        "baseline_seconds": round(statistics.median(r["baseline_seconds"] for r in runs), 2),
        "ratio": round(statistics.median(r["ratio"] for r in runs), 3),
        "cpu_seconds": round(statistics.median(r["cpu_seconds"] for r in runs), 2),
        "baseline_cpu_seconds": round(statistics.median(r["baseline_cpu_seconds"] for r in runs), 2),
        "cpu_ratio": round(statistics.median(r["cpu_ratio"] for r in runs), 3),
        "repeat": repeat,
        "runs": runs,
        "peak_rss_mb": peak_rss_mb(),
        # Other work on a shared machine slows either side: the 1, 5 and 15 minute load.
        "load_average": [round(x, 2) for x in os.getloadavg()],
    }


def main(argv: list[str]) -> dict:
    parser = argparse.ArgumentParser(prog="python -m benchmarks ingest")
    parser.add_argument("--rows", type=int, default=1_000_000)
    parser.add_argument("--seed", type=int, default=7)
    parser.add_argument("--format", choices=FORMATS, default=None,
                        help="a demo format, timed against the canonical path of the same records")
    parser.add_argument("--python-path", action="store_true",
                        help="with --format: map every record in Python (no fast path), to time the difference")
    parser.add_argument("--repeat", type=int, default=3,
                        help="time each side this many times, in turn (ratios: the median of the runs')")
    args = parser.parse_args(argv)
    if args.repeat < 1:
        parser.error("--repeat must be at least 1")
    if args.format:
        return compare_format(args.format, args.rows, args.seed, fast_formats=not args.python_path,
                              repeat=args.repeat)
    source = input_file(args.rows, args.seed)
    size_mb = source.stat().st_size / 1e6

    runs, bare = [], []
    with tempfile.TemporaryDirectory() as tmp:

        def fresh_home(name: str):
            settings = load({"FLYWHEEL_HOME": str(Path(tmp) / name)})
            landing = settings.landing_for(DAY)
            landing.mkdir(parents=True)
            (landing / source.name).symlink_to(source)
            return settings

        settings = fresh_home("settings")
        with store.connection(settings) as con:
            threads, memory_limit = con.execute(
                "SELECT current_setting('threads'), current_setting('memory_limit')"
            ).fetchone()

        def baseline() -> dict:
            database = Path(tmp) / f"baseline-{len(bare) + 1}.duckdb"
            result = _bare_read_json(database, source, threads=threads, memory_limit=memory_limit)
            database.unlink()
            return result

        bare.append(baseline())
        for run in range(args.repeat):
            settings = fresh_home(f"home-{run + 1}")
            say(f"ours ({run + 1}/{args.repeat}): ingesting {source.name} ({size_mb:,.0f} MB) ...")
            started, cpu_started = time.perf_counter(), time.process_time()
            with store.connection(settings) as con:
                report = ingest_day(con, settings, DAY)
            seconds = time.perf_counter() - started
            cpu_seconds = time.process_time() - cpu_started
            ours_peak = peak_rss_mb()
            shutil.rmtree(settings.home)
            bare.append(baseline())
            # Against the mean of the baseline runs just before and just after it.
            before, after = bare[-2], bare[-1]
            base_seconds = (before["seconds"] + after["seconds"]) / 2
            base_cpu = (before["cpu_seconds"] + after["cpu_seconds"]) / 2
            runs.append({"seconds": round(seconds, 2), "baseline_before_seconds": round(before["seconds"], 2),
                         "baseline_after_seconds": round(after["seconds"], 2), "ratio": round(seconds / base_seconds, 3),
                         "cpu_seconds": round(cpu_seconds, 2), "baseline_cpu_seconds": round(base_cpu, 2),
                         "cpu_ratio": round(cpu_seconds / base_cpu, 3)})

    seconds = statistics.median(r["seconds"] for r in runs)
    return {
        "name": "ingest",
        "rows": report.total("read"),
        "accepted": report.total("accepted"),
        "rejected": report.total("rejected"),
        "file_mb": round(size_mb, 1),
        "seconds": round(seconds, 2),
        "rows_per_second": round(report.total("read") / seconds),
        "baseline_rows": bare[-1]["rows"],
        "baseline_seconds": round(statistics.median(b["seconds"] for b in bare), 2),
        # The median of the runs' ratios, each against the baseline runs before and after it.
        "ratio": round(statistics.median(r["ratio"] for r in runs), 3),
        # CPU time of the whole process (all threads): steadier than wall time on a
        # shared machine.
        "cpu_seconds": round(statistics.median(r["cpu_seconds"] for r in runs), 2),
        "baseline_cpu_seconds": round(statistics.median(b["cpu_seconds"] for b in bare), 2),
        "cpu_ratio": round(statistics.median(r["cpu_ratio"] for r in runs), 3),
        "repeat": args.repeat,
        "runs": runs,
        "threads": threads,
        "pii_mode": settings.pii_mode,
        "peak_rss_mb": ours_peak,
    }


def _bare_read_json(database: Path, source: Path, *, threads, memory_limit) -> dict:
    """Time bare DuckDB `CREATE TABLE t AS SELECT * FROM read_json(...)` of ``source``
    into a fresh ``database``, with DuckDB's own defaults except the thread count and
    memory limit, which are ours; return its seconds, CPU seconds and rows."""
    say(f"baseline ({database.stem}): CREATE TABLE t AS SELECT * FROM read_json(...) ...")
    started, cpu_started = time.perf_counter(), time.process_time()
    con = duckdb.connect(str(database), config={"threads": threads, "memory_limit": memory_limit})
    con.execute("CREATE TABLE t AS SELECT * FROM read_json(?)", [str(source)])
    rows = con.execute("SELECT count(*) FROM t").fetchone()[0]
    con.close()
    return {"seconds": time.perf_counter() - started, "cpu_seconds": time.process_time() - cpu_started,
            "rows": rows}
