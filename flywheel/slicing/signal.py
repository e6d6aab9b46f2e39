"""The failure signal: which logs of a day count as failures.

The default (:meth:`FailureSignal.default`) is negative user feedback (``feedback = -1``)
or, when the table ``log_scores`` exists, a hallucination score above 0.5 or a relevance
score below 0.5 (the champion model's score when the ``models`` registry names one,
else the mean over model versions). Only *trusted* scores count (``log_scores.trusted``:
the model passes the trust floor for the log's source, :mod:`flywheel.classifiers.trust`;
NULL, written before the flag existed, counts as trusted): a log whose scores are not
trusted falls back to its feedback, as before a model existed. A log with none of these
is *unknown*, not a success: rates are over the logs whose signal is known.

Any other signal is a SQL query returning ``(log_id, failed)`` — for example the labels
of an evaluation set loaded into a table (:meth:`FailureSignal.from_table`). A log with
several rows fails when any of them says so; a log with none is unknown.
"""

from __future__ import annotations

from dataclasses import dataclass

import duckdb

from flywheel import store

SIGNAL_TABLE = "slice_signal"
SCORES_TABLE = "slice_scores"


@dataclass(frozen=True)
class FailureSignal:
    """A named source of per-log failure flags.

    ``sql`` is ``None`` for the default signal, else a query with columns
    ``log_id`` and ``failed`` (BOOLEAN or 0/1; NULL for unknown).
    """

    name: str = "negative feedback or classifier scores"
    sql: str | None = None

    @classmethod
    def default(cls) -> "FailureSignal":
        return cls()

    @classmethod
    def from_sql(cls, name: str, sql: str) -> "FailureSignal":
        """Return a signal read from a query with columns ``log_id`` and ``failed``."""
        return cls(name=name, sql=sql)

    @classmethod
    def from_table(cls, table: str, column: str = "failed", *, log_id: str = "log_id",
                   name: str | None = None) -> "FailureSignal":
        """Return a signal read from a table (or view) of labels: ``column`` true = failure."""
        sql = f'SELECT "{log_id}" AS log_id, "{column}" AS failed FROM {table}'
        return cls(name=name or f"{table}.{column}", sql=sql)


def prepare(con: duckdb.DuckDBPyConnection, day: str, signal: FailureSignal) -> bool:
    """Create the temp tables ``slice_scores(log_id, hallucination, relevance)`` and
    ``slice_signal(log_id, failed)`` for the logs of ``day``. Returns whether scores exist.
    """
    has_scores = store.table_exists(con, "log_scores")
    if has_scores:
        con.execute(f"CREATE OR REPLACE TEMP TABLE {SCORES_TABLE} AS {_scores_sql(con)}", [day])
        has_scores = con.execute(f"SELECT count(*) FROM {SCORES_TABLE}").fetchone()[0] > 0
    else:
        con.execute(f"""CREATE OR REPLACE TEMP TABLE {SCORES_TABLE}
                        (log_id VARCHAR, hallucination DOUBLE, relevance DOUBLE)""")
    if signal.sql is None:
        con.execute(
            f"""CREATE OR REPLACE TEMP TABLE {SIGNAL_TABLE} AS
                SELECT l.log_id,
                       CASE WHEN l.feedback = -1 OR s.hallucination > 0.5 OR s.relevance < 0.5 THEN true
                            WHEN l.feedback IS NOT NULL OR s.hallucination IS NOT NULL
                                 OR s.relevance IS NOT NULL THEN false
                       END AS failed
                FROM logs l LEFT JOIN {SCORES_TABLE} s USING (log_id)
                WHERE l.day = ?""",
            [day],
        )
    else:
        con.execute(
            f"""CREATE OR REPLACE TEMP TABLE {SIGNAL_TABLE} AS
                SELECT l.log_id, bool_or(s.failed::BOOLEAN) AS failed
                FROM logs l LEFT JOIN ({signal.sql}) s USING (log_id)
                WHERE l.day = ?
                GROUP BY l.log_id""",
            [day],
        )
    return has_scores


def _scores_sql(con: duckdb.DuckDBPyConnection) -> str:
    """Return a query of the day's trusted hallucination and relevance scores, one row per log."""
    champion = ""
    if store.table_exists(con, "models"):
        columns = {r[0] for r in con.execute(
            "SELECT column_name FROM information_schema.columns WHERE table_name = 'models'").fetchall()}
        if {"version", "task", "status"} <= columns:
            champion = """
                , champions AS (SELECT task, version FROM models WHERE status = 'champion')
                , picked AS (
                    SELECT s.* FROM scored s
                    WHERE NOT EXISTS (SELECT 1 FROM champions c WHERE c.task = s.task)
                       OR s.model_version IN (SELECT version FROM champions c WHERE c.task = s.task)
                )"""
    source = "picked" if champion else "scored"
    trusted = ""
    if "trusted" in {r[0] for r in con.execute(
            "SELECT column_name FROM information_schema.columns WHERE table_name = 'log_scores'").fetchall()}:
        trusted = "WHERE coalesce(s.trusted, true)"
    return f"""
        WITH scored AS (
            SELECT s.log_id, s.task, s.model_version, s.score
            FROM log_scores s SEMI JOIN (SELECT log_id FROM logs WHERE day = ?) d USING (log_id)
            {trusted}
        ){champion}
        SELECT log_id,
               avg(score) FILTER (WHERE task = 'hallucination') AS hallucination,
               avg(score) FILTER (WHERE task = 'relevance') AS relevance
        FROM {source}
        GROUP BY log_id"""
