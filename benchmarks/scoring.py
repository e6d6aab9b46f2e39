"""Scoring benchmark: the champion classifiers of both tasks score one day of N logs
stored in DuckDB, end to end (`flywheel.classifiers.scoring.score_day`: load the champions
from the registry, read the day through Arrow, features, predict, write `log_scores`).

The logs are the slicing benchmark's cached DuckDB file (N demo logs ingested once, not
timed), copied into a fresh home. The champions are trained there first, not timed, by
the real training run (`train_all`) from three days of labelled demo logs (another seed,
earlier days). Prints logs per second (wall clock, and per CPU-second of this process,
which a machine shared with other work affects less) and the process's peak memory.
"""

from __future__ import annotations

import argparse
import json
import os
import datetime as dt
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from benchmarks.common import peak_rss_mb, say
from benchmarks.ingest import DAY
from benchmarks.slicing import ingested_database


def train_champions(settings, *, seed: int) -> dict[str, str]:
    """Land, ingest and label three days of demo logs in ``settings.home`` and train the
    classifiers there; return the champion version per task."""
    from flywheel import store
    from flywheel.annotations import build_consensus, import_inbox
    from flywheel.classifiers.run import train_all
    from flywheel.demo import DemoSpec, generate
    from flywheel.ingest.loader import ingest_day

    start = dt.date.fromisoformat(DAY) - dt.timedelta(days=10)
    summary = generate(settings.home, DemoSpec(days=3, rows_per_day=3000, seed=seed, start=start,
                                               annotation_rate=0.3))
    with store.connection(settings) as con:
        for day in summary.days:
            ingest_day(con, settings, day.day)
        import_inbox(con, settings)
        build_consensus(con)
        for report in train_all(con, settings):
            say(report.message)
        return dict(con.execute("SELECT task, version FROM models WHERE status = 'champion'").fetchall())


_SETUP = """
import json, sys, duckdb
con = duckdb.connect(sys.argv[1])
if sys.argv[3] == "distinct":
    # The same new word at the end of the question, the context and the answer: no text
    # repeats, and the grounding between them is unchanged in kind.
    con.execute(\"\"\"UPDATE logs SET input = input || ' ref' || log_id, output = output || ' ref' || log_id,
                                     context = context || ' ref' || log_id WHERE day = ?\"\"\", [sys.argv[2]])
print(json.dumps(con.execute(\"\"\"SELECT count(*), count(DISTINCT input), count(DISTINCT output),
                                       count(DISTINCT context) FROM logs WHERE day = ?\"\"\",
                             [sys.argv[2]]).fetchone()))
con.close()
"""


def prepare_day(database: Path, *, distinct: bool) -> tuple[int, int, int, int]:
    """With ``distinct``, make every input, output and context of the benchmark day
    distinct; return its (logs, distinct inputs, distinct outputs, distinct contexts).
    Runs in a child process (as the ingestion does): this is setup, and DuckDB's memory
    for it should not count in the peak memory of scoring."""
    done = subprocess.run([sys.executable, "-c", _SETUP, str(database), DAY, "distinct" if distinct else "-"],
                          check=True, capture_output=True, text=True)
    return tuple(json.loads(done.stdout.strip().splitlines()[-1]))


def main(argv: list[str]) -> dict:
    parser = argparse.ArgumentParser(prog="python -m benchmarks scoring")
    parser.add_argument("--rows", type=int, default=1_000_000)
    parser.add_argument("--seed", type=int, default=7, help="seed of the scored demo logs")
    parser.add_argument("--train-seed", type=int, default=11, help="seed of the labelled demo logs")
    parser.add_argument("--batch-rows", type=int, default=None, help="FLYWHEEL_SCORING_BATCH_ROWS")
    parser.add_argument("--threads", type=int, default=None, help="FLYWHEEL_SCORING_THREADS (0: one per core)")
    parser.add_argument("--distinct", action="store_true",
                        help="make every input, output and context distinct first (the demo repeats texts, "
                        "and scoring does its work once per distinct text): the worst case")
    args = parser.parse_args(argv)
    database = ingested_database(args.rows, args.seed)

    from flywheel import store
    from flywheel.classifiers.scoring import score_day
    from flywheel.settings import load

    with tempfile.TemporaryDirectory() as tmp:
        settings = load({"FLYWHEEL_HOME": str(Path(tmp) / "home")})
        changes = {k: v for k, v in (("scoring_batch_rows", args.batch_rows), ("scoring_threads", args.threads))
                   if v is not None}
        settings = settings.replace(**changes)
        settings.home.mkdir(parents=True)
        shutil.copy(database, settings.database_path)
        say("training the champions on labelled demo logs (not timed) ...")
        champions = train_champions(settings, seed=args.train_seed)
        say(f"champions: {champions}")
        if args.distinct:
            say("making every text distinct (not timed, in a child process) ...")
        rows, distinct_inputs, distinct_outputs, distinct_contexts = prepare_day(settings.database_path,
                                                                                 distinct=args.distinct)
        with store.connection(settings) as con:
            say(f"scoring {rows:,} logs of {DAY} with {len(champions)} champions ...")
            setup_peak = peak_rss_mb()
            started, cpu_started = time.perf_counter(), time.process_time()
            report = score_day(con, settings, DAY)
            seconds, cpu_seconds = time.perf_counter() - started, time.process_time() - cpu_started
            written = con.execute("SELECT count(*) FROM log_scores WHERE day = ?", [DAY]).fetchone()[0]
    say(f"scored in {seconds:.1f} s: {report.summary()}")
    return {
        "name": "scoring",
        "rows": rows,
        "distinct_share": {"input": round(distinct_inputs / rows, 3), "output": round(distinct_outputs / rows, 3),
                           "context": round(distinct_contexts / rows, 3)},
        "tasks": len(report.versions),
        "scores_written": written,
        "seconds": round(seconds, 2),
        "rows_per_second": round(rows / seconds),
        "scores_per_second": round(written / seconds),
        "cpu_seconds": round(cpu_seconds, 2),  # all threads; wall time on a busy machine can be longer
        "rows_per_cpu_second": round(rows / cpu_seconds),
        "load_average": [round(x, 2) for x in os.getloadavg()],
        "peak_rss_mb": peak_rss_mb(),
        "peak_rss_mb_before_scoring": setup_peak,  # training the champions
        "batch_rows": settings.scoring_batch_rows,
        "threads": settings.scoring_threads,
        "models": report.versions,
    }
