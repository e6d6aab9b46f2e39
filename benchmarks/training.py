"""Training benchmark: the `classifiers` step (``train_task`` of each task: load the labels,
evaluate, gate, register, refit) on a home holding ~N consensus labels per task.

The home is made once and cached (``benchmarks/.cache/training-N``): one demo day whose
size gives about N labels per task (the demo labels ~8.1% of a day's logs), written as
canonical JSON lines only, ingested, its inbox imported and consensus built, in a child
process (so that the peak memory printed is the training's own). Each run copies the
cached DuckDB file into a fresh temporary home and trains every task there once, timed.

    python -m benchmarks training --labels 81000

Prints one JSON line: ``seconds`` per task and in total, ``labels`` per task, the hold-out
AUROC of each model (``auroc``), and ``peak_rss_mb`` of this process (training only).
"""

from __future__ import annotations

import argparse
import datetime as dt
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from benchmarks.common import CACHE, peak_rss_mb, say

DAY = dt.date(2026, 2, 2)
LABELS_PER_LOG = 0.081  # what the demo labels of a day (annotation_rate 0.08, some twice)

_PREPARE = """
import sys
from pathlib import Path
from flywheel import store
from flywheel.annotations import build_consensus, import_inbox
from flywheel.demo import DemoSpec, generate
from flywheel.ingest.loader import ingest_day
from flywheel.settings import load
import datetime as dt

home, rows, day = Path(sys.argv[1]), int(sys.argv[2]), dt.date.fromisoformat(sys.argv[3])
settings = load({"FLYWHEEL_HOME": str(home)})
generate(home, DemoSpec(days=1, rows_per_day=rows, seed=11, start=day, format_shares={"canonical_jsonl": 1.0}),
         progress=lambda m: print(m, file=sys.stderr, flush=True))
with store.connection(settings) as con:
    ingest_day(con, settings, day.isoformat())
    import_inbox(con, settings)
    build_consensus(con)
"""


def prepared_home(labels: int) -> Path:
    """Return the cached home with about ``labels`` consensus labels per task (made once)."""
    home = CACHE / f"training-{labels}"
    if not (home / ".complete").exists():
        shutil.rmtree(home, ignore_errors=True)
        home.mkdir(parents=True)
        rows = int(round(labels / LABELS_PER_LOG))
        say(f"preparing {home}: one demo day of {rows:,} canonical logs, ingested and labelled (once) ...")
        subprocess.run([sys.executable, "-c", _PREPARE, str(home), str(rows), DAY.isoformat()], check=True)
        (home / ".complete").write_text("")
    return home


def main(argv: list[str]) -> dict:
    parser = argparse.ArgumentParser(prog="python -m benchmarks training", description=__doc__)
    parser.add_argument("--labels", type=int, default=81_000, help="consensus labels per task (about)")
    parser.add_argument("--tasks", default="hallucination,relevance")
    args = parser.parse_args(argv)

    from flywheel import store
    from flywheel.classifiers.run import train_task
    from flywheel.settings import load

    cached = prepared_home(args.labels)
    tasks = [t for t in args.tasks.split(",") if t]
    seconds, labels, auroc, status, stages = {}, {}, {}, {}, {}
    with tempfile.TemporaryDirectory(prefix="flywheel-training-") as tmp:
        home = Path(tmp) / "home"
        home.mkdir()
        shutil.copy2(cached / "flywheel.duckdb", home / "flywheel.duckdb")
        settings = load({"FLYWHEEL_HOME": str(home)})
        with store.connection(settings) as con:
            for task in tasks:
                started = time.perf_counter()
                report = train_task(con, settings, task)
                seconds[task] = round(time.perf_counter() - started, 2)
                labels[task] = report.positives + report.negatives
                auroc[task] = (report.metrics or {}).get("auroc")
                status[task] = report.status
                stages[task] = (report.metrics or {}).get("seconds")
                say(f"{task}: {seconds[task]} s, {labels[task]} labels: {report.message}")
    return {
        "benchmark": "training",
        "labels": labels,
        "seconds": seconds,
        "total_seconds": round(sum(seconds.values()), 2),
        "stages": stages,  # seconds per stage of fit_and_evaluate (absent before the refit existed)
        "auroc": auroc,
        "status": status,
        "peak_rss_mb": peak_rss_mb(),
        "ok": all(s in ("champion", "candidate") for s in status.values()),
    }
