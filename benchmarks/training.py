"""Training benchmark: the `classifiers` step (``train_task`` of each task: load the labels,
evaluate, gate, register, refit) on a home holding ~N consensus labels per task.

The home is made once and cached (``benchmarks/.cache/training-N``): one demo day whose
size gives about N labels per task (the demo labels ~8.1% of a day's logs), written as
canonical JSON lines only, ingested, its inbox imported and consensus built, in a child
process (so that the peak memory printed is the training's own). Each run copies the
cached DuckDB file into a fresh temporary home and trains every task there once, timed.

    python -m benchmarks training --labels 81000

Prints one JSON line: ``total_seconds`` of ``train_all`` over the tasks (what the
`classifiers` asset runs), ``labels`` per task, seconds per stage of each task's training
(``stages``), the hold-out AUROC of each model (``auroc``), and ``peak_rss_mb`` of this
process (training only).
"""

from __future__ import annotations

import argparse
import os
import resource
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


def _warm_up(con) -> None:
    """Fit the pipeline once on a few hundred labelled logs (untimed): the compiled
    feature kernels load (or compile) before the clock starts."""
    from flywheel.classifiers.model import build_pipeline

    frame = con.execute("""SELECT l.input, l.output, l.context, c.value::INTEGER AS label
                           FROM consensus c JOIN logs l USING (log_id)
                           WHERE c.label = 'hallucination' AND c.value IS NOT NULL ORDER BY l.log_id LIMIT 400""").df()
    build_pipeline("hallucination", has_context=True).fit(frame, frame["label"])


def _cpu_seconds() -> float:
    usage = resource.getrusage(resource.RUSAGE_SELF)
    return usage.ru_utime + usage.ru_stime


def main(argv: list[str]) -> dict:
    parser = argparse.ArgumentParser(prog="python -m benchmarks training", description=__doc__)
    parser.add_argument("--labels", type=int, default=81_000, help="consensus labels per task (about)")
    parser.add_argument("--tasks", default="hallucination,relevance")
    args = parser.parse_args(argv)

    from flywheel import store
    from flywheel.classifiers import run
    from flywheel.settings import load

    cached = prepared_home(args.labels)
    tasks = [t for t in args.tasks.split(",") if t]
    labels, auroc, status, stages = {}, {}, {}, {}
    with tempfile.TemporaryDirectory(prefix="flywheel-training-") as tmp:
        home = Path(tmp) / "home"
        home.mkdir()
        shutil.copy2(cached / "flywheel.duckdb", home / "flywheel.duckdb")
        settings = load({"FLYWHEEL_HOME": str(home)})
        with store.connection(settings) as con:
            _warm_up(con)
            started, cpu_started = time.perf_counter(), _cpu_seconds()
            if hasattr(run, "train_all"):  # the classifiers asset's call: every task in one run
                reports = run.train_all(con, settings, tasks=tuple(tasks))
            else:
                reports = [run.train_task(con, settings, task) for task in tasks]
            total = round(time.perf_counter() - started, 2)
            cpu = round(_cpu_seconds() - cpu_started, 2)
            for report in reports:
                task = report.task
                labels[task] = report.positives + report.negatives
                auroc[task] = (report.metrics or {}).get("auroc")
                status[task] = report.status
                stages[task] = (report.metrics or {}).get("seconds")
                say(f"{task}: {labels[task]} labels: {report.message}")
    return {
        "benchmark": "training",
        "labels": labels,
        "total_seconds": total,
        "cpu_seconds": cpu,  # CPU time of the training (all threads): less affected by other work on the machine
        "load_average": round(os.getloadavg()[0], 2),
        "stages": stages,  # seconds per stage of fit_and_evaluate (absent before the refit existed)
        "auroc": auroc,
        "status": status,
        "peak_rss_mb": peak_rss_mb(),
        "ok": all(s in ("champion", "candidate") for s in status.values()),
    }
