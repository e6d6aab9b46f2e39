"""``log_scores``: the champion of each task scores every log of a day.

The day's logs are read from DuckDB as Arrow record batches (``settings.scoring_batch_rows``
rows each), turned into Polars frames without copying, scored by the champions together
(:class:`flywheel.classifiers.fast.FastScorer`: one tokenization and one pass of dense
features for both tasks, the linear models evaluated as sparse matrix products; the batch
split into chunks of at most ``CHUNK_ROWS`` rows, scored by one thread per core, which bounds
the memory), and the scores written back through Arrow (the scores' NumPy arrays without a
copy, the task and the model version as statement parameters).
Re-scoring a day replaces exactly that day's rows, in one transaction.

Every score is written with ``trusted``: whether the scoring model passes the trust floor
for the log's source (:mod:`flywheel.classifiers.trust`). Untrusted scores stay in the
table; the slices, the queue and the report leave them out.
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


CHUNK_ROWS = 10_000  # at most this many rows scored at once by one thread (the memory of a batch)


@dataclass
class ScoreReport:
    """What scoring one day did."""

    day: str
    logs: int = 0
    rows: dict[str, int] = field(default_factory=dict)  # task -> rows written
    versions: dict[str, str] = field(default_factory=dict)  # task -> model version that scored
    skipped: dict[str, str] = field(default_factory=dict)  # task -> why it has no scores
    trusted_rows: dict[str, int] = field(default_factory=dict)  # task -> rows written with trusted = true
    untrusted: dict[str, str] = field(default_factory=dict)  # task -> why (some of) its scores are not trusted
    problems: list[str] = field(default_factory=list)  # artifacts that failed to load
    mean_score: dict[str, float] = field(default_factory=dict)
    seconds: float = 0.0

    @property
    def total_rows(self) -> int:
        return sum(self.rows.values())

    def summary(self) -> dict:
        return {"day": self.day, "logs": self.logs, "rows": self.rows, "trusted_rows": self.trusted_rows,
                "versions": self.versions, "skipped": self.skipped, "untrusted": self.untrusted,
                "problems": self.problems, "mean_score": self.mean_score, "seconds": round(self.seconds, 2)}

    def markdown(self) -> str:
        lines = ["| task | model | rows | trusted rows | mean score | note |", "|---|---|---|---|---|---|"]
        for task in TASKS:
            note = self.skipped.get(task) or self.untrusted.get(task, "")
            lines.append(f"| {task} | {self.versions.get(task, '–')} | {self.rows.get(task, 0)} | "
                         f"{self.trusted_rows.get(task, 0)} | {self.mean_score.get(task, float('nan')):.4f} | "
                         f"{note.replace('|', '/')} |")
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
    day_sources = [r[0] for r in con.execute("SELECT DISTINCT source FROM logs WHERE day = ? ORDER BY 1",
                                             [day]).fetchall()] if active else []
    for task, scorer in active.items():
        if scorer.trust is None:
            continue
        reasons = [v.reason for v in map(scorer.trust.for_source, day_sources) if not v.trusted]
        if reasons and not scorer.trust.task.trusted:
            reasons.insert(0, scorer.trust.task.reason)
        if reasons:
            report.untrusted[task] = f"{scorer.version} not trusted for: " + "; ".join(reasons)
    scored_at = dt.datetime.now(dt.timezone.utc)
    sums = {task: 0.0 for task in active}
    trusted = {task: 0 for task in active}
    # DuckDB's own worker threads would compete with the scoring threads for the cores:
    # one thread reads and writes meanwhile (the inserts take half the CPU time that way)
    duckdb_threads = con.execute("SELECT current_setting('threads')").fetchone()[0]
    con.execute("SET threads = 1")
    try:
        con.execute("BEGIN TRANSACTION")
        try:
            con.execute("DELETE FROM log_scores WHERE day = ?", [day])
            if active and report.logs:
                sums, trusted = _score_into(con, settings, day, active, scored_at)
            con.execute("COMMIT")
        except Exception:
            con.execute("ROLLBACK")
            raise
    finally:
        con.execute(f"SET threads = {int(duckdb_threads)}")
    for task in active:
        report.rows[task] = report.logs
        report.trusted_rows[task] = trusted[task]
        report.mean_score[task] = round(sums[task] / report.logs, 4) if report.logs else float("nan")
    report.seconds = time.perf_counter() - started
    return report


def _score_into(con: duckdb.DuckDBPyConnection, settings: Settings, day: str, active: dict[str, Scorer],
                scored_at: dt.datetime) -> tuple[dict[str, float], dict[str, int]]:
    """Score the day's logs and insert the scores through ``con`` (inside its open
    transaction); return the sum of the scores and the number of trusted scores per task.

    Three things overlap: a second connection streams the logs (the next batch is read
    while the current one is scored), the batch is scored, and a writer thread inserts
    the previous batch's scores."""
    sums = {task: 0.0 for task in active}
    trusted = {task: 0 for task in active}
    threads = scoring_threads(settings)
    fast = FastScorer({task: scorer.pipeline for task, scorer in active.items()})
    reading = con.cursor()
    try:
        reader = reading.execute(
            "SELECT log_id, source, input, output, context FROM logs WHERE day = ?", [day]
        ).fetch_record_batch(settings.scoring_batch_rows)
        with ThreadPoolExecutor(max_workers=1) as writer:
            writes = []
            for batch in _prefetched(reader):
                batch_scores = score_frame(active, pl.from_arrow(batch), threads=threads, fast=fast)
                sources = batch.column("source")
                flags = {task: scorer.trusted(sources) for task, scorer in active.items()}
                for task in active:
                    sums[task] += float(np.sum(batch_scores[task]))
                    trusted[task] += int(flags[task].sum())
                writes.append(writer.submit(_insert, con, day, active, batch.column("log_id"), batch_scores,
                                            flags, scored_at))
                if len(writes) > 2:  # keep at most two batches of scores waiting
                    writes.pop(0).result()
            for write in writes:
                write.result()
    finally:
        reading.close()
    return sums, trusted


def _insert(con: duckdb.DuckDBPyConnection, day: str, active: dict[str, Scorer], log_ids: pa.Array,
            scores: dict[str, np.ndarray], trusted: dict[str, np.ndarray], scored_at: dt.datetime) -> None:
    """Insert one batch's scores of every task into ``log_scores`` (one statement per
    task; the log ids, the scores and the trusted flags are handed to DuckDB as Arrow
    arrays, the task and the model version as parameters)."""
    for task, scorer in active.items():
        table = pa.table({"log_id": log_ids, "score": pa.array(scores[task], type=pa.float64()),
                          "trusted": pa.array(trusted[task], type=pa.bool_())})
        view = f"_scores_batch_{id(table)}"
        con.register(view, table)
        try:
            con.execute(
                "INSERT INTO log_scores (log_id, day, task, model_version, score, scored_at, trusted) "
                f"SELECT log_id, ?::DATE, ?, ?, score, ?, trusted FROM {view}",
                [day, task, scorer.version, scored_at])
        finally:
            con.unregister(view)


def _prefetched(reader):
    """Yield the batches of an Arrow record batch reader, reading the next one in a
    background thread while the caller works on the current one."""
    def read_next():
        try:
            return reader.read_next_batch()
        except StopIteration:
            return None

    with ThreadPoolExecutor(max_workers=1) as io:
        pending = io.submit(read_next)
        while (batch := pending.result()) is not None:
            pending = io.submit(read_next)
            yield batch


def score_frame(scorers: dict[str, Scorer], frame: pl.DataFrame, *, threads: int = 1,
                fast: FastScorer | None = None) -> dict[str, np.ndarray]:
    """Return each scorer's scores of ``frame`` (task -> probabilities).

    The scorers' pipelines are evaluated together by a :class:`FastScorer` (``fast``, or
    one made here): tokens and dense features are computed once for all of them. The
    frame is split into chunks (``threads`` of them, more when a chunk would exceed
    ``CHUNK_ROWS``) scored by up to ``threads`` parallel threads (Polars, NumPy and SciPy
    release the GIL).
    """
    fast = fast or FastScorer({task: scorer.pipeline for task, scorer in scorers.items()})
    n = frame.height
    chunks = max(1, min(threads, n // MIN_PARALLEL_ROWS))
    chunks = max(chunks, -(-n // CHUNK_ROWS))
    if chunks == 1:
        return fast.score(frame)
    bounds = np.linspace(0, n, chunks + 1).astype(int)
    parts = [frame.slice(a, b - a) for a, b in zip(bounds[:-1], bounds[1:])]
    with ThreadPoolExecutor(max_workers=max(1, min(threads, chunks))) as pool:
        results = list(pool.map(fast.score, parts))
    return {task: np.concatenate([r[task] for r in results]) for task in scorers}
