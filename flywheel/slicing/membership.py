"""Which logs of a day are in which slice: the ``slice_membership`` table.

``slice_membership(day, log_id, slice_type, slice_value)`` gets one row per log and
slice it is in:

* source slices, ``slice_type`` = the column: ``source``, ``model``, ``prompt_version``,
  ``prompt_name`` (null values are in no slice);
* keyword slices, ``slice_type = 'keyword'``, ``slice_value`` = the rule name (see
  :mod:`flywheel.slicing.rules`), evaluated by DuckDB's ``regexp_matches`` on the day's
  *distinct* texts (one scan per rule, only over texts that match some rule at all);
* topic slices, ``slice_type = 'topic'``, ``slice_value`` = the topic id (``-1``: no
  known term), from :func:`flywheel.slicing.topics.assign_topics`.
"""

from __future__ import annotations

import duckdb

from flywheel.slicing.rules import Rule, RuleSet
from flywheel.slicing.topics import TopicModel, assign_topics

SOURCE_COLUMNS = ("source", "model", "prompt_version", "prompt_name")
SLICE_TYPES = SOURCE_COLUMNS + ("keyword", "topic")
TOPIC_TABLE = "slice_day_topics"


def _literal(text: str) -> str:
    return "'" + text.replace("'", "''") + "'"


def build_membership(con: duckdb.DuckDBPyConnection, day: str, rules: RuleSet,
                     model: TopicModel | None) -> dict[str, int]:
    """Replace the day's rows of ``slice_membership``; return the row count per slice type."""
    con.execute("DELETE FROM slice_membership WHERE day = ?", [day])
    _source_slices(con, day)
    _keyword_slices(con, day, rules.rules)
    if model is not None:
        assign_topics(con, day, model, TOPIC_TABLE)
        con.execute(
            f"""INSERT INTO slice_membership
                SELECT ?::DATE, log_id, 'topic', topic::VARCHAR FROM {TOPIC_TABLE}""",
            [day],
        )
        con.execute(f"DROP TABLE IF EXISTS {TOPIC_TABLE}")
    return dict(con.execute(
        "SELECT slice_type, count(*) FROM slice_membership WHERE day = ? GROUP BY 1 ORDER BY 1", [day]
    ).fetchall())


def _source_slices(con: duckdb.DuckDBPyConnection, day: str) -> None:
    columns = ", ".join(SOURCE_COLUMNS)
    con.execute(
        f"""INSERT INTO slice_membership
            SELECT ?::DATE, log_id, slice_type, slice_value
            FROM (UNPIVOT (SELECT log_id, {columns} FROM logs WHERE day = ?)
                  ON {columns} INTO NAME slice_type VALUE slice_value)
            WHERE slice_value IS NOT NULL""",
        [day, day],
    )


def _keyword_slices(con: duckdb.DuckDBPyConnection, day: str, rules: list[Rule]) -> None:
    """Insert the keyword slices: per text column, the rules that look at it."""
    for column in ("input", "output"):
        active = [r for r in rules if column in r.columns]
        if not active:
            continue
        combined = "(?i)(?:" + "|".join(r.body for r in active) + ")"
        cases = ", ".join(
            f"CASE WHEN regexp_matches(text, {_literal(r.pattern)}) THEN {_literal(r.name)} END" for r in active
        )
        con.execute(
            f"""INSERT INTO slice_membership
            WITH texts AS (
                SELECT DISTINCT {column} AS text FROM logs WHERE day = $day
            ),
            matched AS (
                SELECT text, list_filter([{cases}], x -> x IS NOT NULL) AS names
                FROM texts WHERE regexp_matches(text, {_literal(combined)})
            ),
            hits AS (
                SELECT l.log_id, unnest(m.names) AS name
                FROM logs l JOIN matched m ON l.{column} = m.text
                WHERE l.day = $day
            )
            SELECT $day::DATE, log_id, 'keyword', name FROM hits
            {"" if column == "input" else "ANTI JOIN (SELECT log_id, slice_value AS name FROM slice_membership WHERE day = $day AND slice_type = 'keyword') USING (log_id, name)"}""",
            {"day": day},
        )
