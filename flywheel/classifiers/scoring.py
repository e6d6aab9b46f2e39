"""``log_scores``: the champion of each task scores every log of a day.

The day's logs are read from DuckDB as Arrow record batches (``settings.scoring_batch_rows``
rows each), turned into Polars frames without copying, scored by the champions together
(:class:`flywheel.classifiers.fast.FastScorer`: one tokenization and one pass of dense
features for both tasks, the linear models evaluated as sparse matrix products; the batch
split over threads), and the scores written back through Arrow.
Re-scoring a day replaces exactly that day's rows, in one transaction.
"""

from __future__ import annotations

import datetime as dt
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field

import duckdb
import numpy as np
import polars as pl
import pyarrow as pa

from flywheel.classifiers.fast import FastScorer
from flywheel.classifiers.model import TASKS
from flywheel.classifiers.registry import MIN_PARALLEL_ROWS, Scorer, champion_scorer, scoring_threads
from flywheel.settings import Settings


@dataclass
class ScoreReport:
    """What scoring one day did."""

    day: str
    logs: int = 0
    rows: dict[str, int] = field(default_factory=dict)  # task -> rows written
    versions: dict[str, str] = field(default_factory=dict)  # task -> model version that scored
    skipped: dict[str, str] = field(default_factory=dict)  # task -> why it has no scores
    problems: list[str] = field(default_factory=list)  # artifacts that failed to load
    mean_score: dict[str, float] = field(default_factory=dict)
    seconds: float = 0.0

    @property
    def total_rows(self) -> int:
        return sum(self.rows.values())

    def summary(self) -> dict:
        return {"day": self.day, "logs": self.logs, "rows": self.rows, "versions": self.versions,
                "skipped": self.skipped, "problems": self.problems, "mean_score": self.mean_score,
                "seconds": round(self.seconds, 2)}

    def markdown(self) -> str:
        lines = ["| task | model | rows | mean score | note |", "|---|---|---|---|---|"]
        for task in TASKS:
            lines.append(f"| {task} | {self.versions.get(task, '–')} | {self.rows.get(task, 0)} | "
                         f"{self.mean_score.get(task, float('nan')):.4f} | {self.skipped.get(task, '')} |")
        return "\n".join(lines)


def score_day(con: duckdb.DuckDBPyConnection, settings: Settings, day: str, *, tasks=TASKS,
              scorers: dict[str, Scorer] | None = None) -> ScoreReport:
    """Score every log of ``day`` with each task's champion and replace the day's
    ``log_scores`` rows. A task without a usable champion gets no rows and a reason in
    ``ScoreReport.skipped``. ``scorers`` overrides the champions (benchmarks, tests)."""
    started = time.perf_counter()
    report = ScoreReport(day=day)
    report.logs = con.execute("SELECT count(*) FROM logs WHERE day = ?", [day]).fetchone()[0]
    active: dict[str, Scorer] = {}
    for task in tasks:
        scorer = (scorers or {}).get(task) or champion_scorer(con, settings, task)
        if scorer is None:
            report.skipped[task] = "no champion model yet (not enough labels, or none trained)"
            continue
        report.problems += scorer.problems
        active[task] = scorer
        report.versions[task] = scorer.version
    scored_at = dt.datetime.now(dt.timezone.utc)
    tables: list[tuple[str, str, pa.Table]] = []
    sums = {task: 0.0 for task in active}
    if active and report.logs:
        reader = con.execute(
            "SELECT log_id, input, output, context FROM logs WHERE day = ?", [day]
        ).fetch_record_batch(settings.scoring_batch_rows)
        threads = scoring_threads(settings)
        fast = FastScorer({task: scorer.pipeline for task, scorer in active.items()})
        for batch in reader:
            frame = pl.from_arrow(batch)
            batch_scores = score_frame(active, frame, threads=threads, fast=fast)
            for task, scorer in active.items():
                scores = batch_scores[task]
                sums[task] += float(np.sum(scores))
                tables.append((task, scorer.version, pa.table({
                    "log_id": batch.column("log_id"), "score": pa.array(scores, type=pa.float64())})))
    con.execute("BEGIN TRANSACTION")
    try:
        con.execute("DELETE FROM log_scores WHERE day = ?", [day])
        for task, version, table in tables:
            con.register("_scores_batch", table)
            con.execute(
                "INSERT INTO log_scores (log_id, day, task, model_version, score, scored_at) "
                "SELECT log_id, ?::DATE, ?, ?, score, ? FROM _scores_batch", [day, task, version, scored_at])
            con.unregister("_scores_batch")
        con.execute("COMMIT")
    except Exception:
        con.execute("ROLLBACK")
        raise
    for task in active:
        report.rows[task] = report.logs
        report.mean_score[task] = round(sums[task] / report.logs, 4) if report.logs else float("nan")
    report.seconds = time.perf_counter() - started
    return report


def score_frame(scorers: dict[str, Scorer], frame: pl.DataFrame, *, threads: int = 1,
                fast: FastScorer | None = None) -> dict[str, np.ndarray]:
    """Return each scorer's scores of ``frame`` (task -> probabilities).

    The scorers' pipelines are evaluated together by a :class:`FastScorer` (``fast``, or
    one made here): tokens and dense features are computed once for all of them. The
    frame is split into up to ``threads`` chunks scored in parallel threads (Polars,
    NumPy and SciPy release the GIL).
    """
    fast = fast or FastScorer({task: scorer.pipeline for task, scorer in scorers.items()})
    n = frame.height
    chunks = max(1, min(threads, n // MIN_PARALLEL_ROWS))
    if chunks == 1:
        return fast.score(frame)
    bounds = np.linspace(0, n, chunks + 1).astype(int)
    parts = [frame.slice(a, b - a) for a, b in zip(bounds[:-1], bounds[1:])]
    with ThreadPoolExecutor(max_workers=chunks) as pool:
        results = list(pool.map(fast.score, parts))
    return {task: np.concatenate([r[task] for r in results]) for task in scorers}
