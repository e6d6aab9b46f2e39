"""Data-quality checks of one ingested day of ``logs``.

The orchestration layer turns each :class:`CheckOutcome` into a blocking asset check, so
a bad partition stops the assets downstream of ingest.

Frame-level rules run through great-expectations 1.x on a pandas frame of the
partition's structural columns (ids, times, numbers, text lengths; never the long
texts): GE's SQL datasource through duckdb-engine does not work on DuckDB tables, and
the frame keeps a 1M-row day at about a second. Rules that need the whole table (the
declared schema, log ids seen on other days, rejected counts) are plain SQL.

great_expectations takes seconds to import, so it is imported only inside
:func:`_validate_frame`, never when this module is imported.
"""

from __future__ import annotations

import datetime as dt
import functools
import logging
import math
import warnings
from dataclasses import dataclass, field
from typing import Any

import duckdb
import numpy as np
import pandas as pd

from flywheel import store
from flywheel.ingest.records import MAX_VALUES

CHECK_NAMES = ("schema", "required_fields", "unique_log_id", "value_ranges", "rejected_share")

# Bounds of value_ranges: those the ingest rejects records beyond (a day passes unless
# its rows were stored some other way).
MAX_LATENCY_MS = MAX_VALUES["latency_ms"]
MAX_TOKENS = MAX_VALUES["prompt_tokens"]
MAX_COST_USD = MAX_VALUES["cost_usd"]
FEEDBACK_VALUES = (-1, 0, 1)
EXAMPLES = 5  # failing log_ids kept in metadata, per expectation

# The structural columns of a partition: what partition_frame returns.
FRAME_COLUMNS = (
    "log_id",
    "ts",
    "day",
    "source",
    "model",
    "feedback",
    "latency_ms",
    "prompt_tokens",
    "completion_tokens",
    "cost_usd",
    "input_len",
    "output_len",
    "context_len",
)

# The logs columns partition_frame reads (texts only through length()).
FRAME_SOURCE_COLUMNS = (
    *FRAME_COLUMNS[:10],
    "input",
    "output",
    "context",
)

EMPTY_NOTE = "empty partition: no rows to check (an empty day is not bad data)"


@dataclass(frozen=True)
class CheckOutcome:
    """The result of one check: ``metadata`` holds JSON-serializable observed values,
    failing counts and a few example failing log_ids."""

    name: str
    passed: bool
    description: str
    metadata: dict = field(default_factory=dict)


# ---------------------------------------------------------------------------------------
# The frame
# ---------------------------------------------------------------------------------------


def partition_frame(con: duckdb.DuckDBPyConnection, day: str) -> pd.DataFrame:
    """Return the structural columns of the ``logs`` rows of ``day`` (``YYYY-MM-DD``) as
    a pandas frame with the columns of :data:`FRAME_COLUMNS`; text columns appear as
    their lengths in characters."""
    return con.execute(
        """
        SELECT log_id, ts, day, source, model, feedback, latency_ms,
               prompt_tokens, completion_tokens, cost_usd,
               length(input) AS input_len, length(output) AS output_len,
               length(context) AS context_len
        FROM logs
        WHERE day = ?::DATE
        """,
        [day],
    ).df()


# ---------------------------------------------------------------------------------------
# great-expectations: one validation run for every frame rule
# ---------------------------------------------------------------------------------------


def _expectations(gxe: Any) -> list[tuple[str, Any]]:
    """Return (check name, expectation) pairs for all frame rules; ``gxe`` is the
    ``great_expectations.expectations`` module (passed in to keep the import lazy)."""
    required = [
        gxe.ExpectColumnValuesToNotBeNull(column=c)
        for c in ("log_id", "ts", "day", "source", "input_len", "output_len")
    ]
    return [
        ("schema", gxe.ExpectTableColumnsToMatchSet(column_set=list(FRAME_COLUMNS), exact_match=True)),
        *(("required_fields", e) for e in required),
        ("required_fields", gxe.ExpectColumnValueLengthsToBeBetween(column="log_id", min_value=1)),
        ("required_fields", gxe.ExpectColumnValuesToBeBetween(column="output_len", min_value=1)),
        ("unique_log_id", gxe.ExpectColumnValuesToBeUnique(column="log_id")),
        (
            "value_ranges",
            gxe.ExpectColumnValuesToBeBetween(column="latency_ms", min_value=0, max_value=MAX_LATENCY_MS),
        ),
        *(
            (
                "value_ranges",
                gxe.ExpectColumnValuesToBeBetween(column=c, min_value=0, max_value=MAX_TOKENS),
            )
            for c in ("prompt_tokens", "completion_tokens")
        ),
        (
            "value_ranges",
            gxe.ExpectColumnValuesToBeBetween(column="cost_usd", min_value=0, max_value=MAX_COST_USD),
        ),
        ("value_ranges", gxe.ExpectColumnValuesToBeInSet(column="feedback", value_set=list(FEEDBACK_VALUES))),
    ]


def _quiet_great_expectations() -> None:
    """Keep GE's info logging out of run logs (progress bars are off in the context)."""
    logging.getLogger("great_expectations").setLevel(logging.WARNING)


def _validate_frame(frame: pd.DataFrame) -> dict[str, list[dict]]:
    """Validate the frame against every frame rule in one GE run; return, per check
    name, one summary dict per expectation (see :func:`_summarize`)."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # GE and pandas deprecation chatter
        import great_expectations as gx
        import great_expectations.expectations as gxe
        from great_expectations.data_context.types.base import ProgressBarsConfig

        _quiet_great_expectations()
        context = gx.get_context(mode="ephemeral")
        context.variables.progress_bars = ProgressBarsConfig(globally=False)
        batch_definition = (
            context.data_sources.add_pandas("flywheel")
            .add_dataframe_asset("logs_partition")
            .add_batch_definition_whole_dataframe("whole_partition")
        )
        suite = context.suites.add(gx.ExpectationSuite(name="logs_partition"))
        for check, expectation in _expectations(gxe):
            expectation.meta = {"check": check}
            suite.add_expectation(expectation)
        validation = context.validation_definitions.add(
            gx.ValidationDefinition(name="logs_partition", data=batch_definition, suite=suite)
        )
        result = validation.run(
            batch_parameters={"dataframe": frame},
            # Row labels, not "unexpected_index_column_names": GE builds that list
            # for every failing row in Python (35 s when 1M rows fail).
            result_format={
                "result_format": "SUMMARY",
                "partial_unexpected_count": EXAMPLES,
                "return_unexpected_index_query": False,
            },
        )
    by_check: dict[str, list[dict]] = {name: [] for name in CHECK_NAMES}
    for r in result.results:
        by_check[r.expectation_config.meta["check"]].append(_summarize(r, frame))
    return by_check


def _summarize(r: Any, frame: pd.DataFrame) -> dict:
    """Return the JSON-serializable gist of one GE expectation result: its type, column,
    success, unexpected count, example values and example failing log_ids (looked up
    in ``frame`` by the row labels GE reports)."""
    config = r.expectation_config
    details = r.result or {}
    summary: dict[str, Any] = {
        "expectation": config.type,
        "column": config.kwargs.get("column"),
        "passed": bool(r.success),
    }
    if r.exception_info and r.exception_info.get("raised_exception"):
        summary["error"] = str(r.exception_info.get("exception_message"))
    if "unexpected_count" in details:
        summary["unexpected_count"] = int(details["unexpected_count"] or 0)
        summary["example_values"] = [_plain(v) for v in details.get("partial_unexpected_list") or []]
        positions = details.get("partial_unexpected_index_list") or []
        summary["example_log_ids"] = [_plain(v) for v in frame["log_id"].loc[positions]]
    if "observed_value" in details:
        summary["observed_value"] = _plain(details["observed_value"])
    return summary


def _plain(value: Any) -> Any:
    """Return value as a plain JSON type (numpy scalars, timestamps, NaN -> None)."""
    if isinstance(value, (list, tuple)):
        return [_plain(v) for v in value]
    if isinstance(value, dict):
        return {str(k): _plain(v) for k, v in value.items()}
    if value is pd.NA or value is pd.NaT:
        return None
    if isinstance(value, np.generic):
        value = value.item()
    if isinstance(value, (dt.date, dt.datetime)):  # pd.Timestamp too
        return value.isoformat()
    if isinstance(value, float) and math.isnan(value):
        return None
    if value is None or isinstance(value, (bool, int, float, str)):
        return value
    return str(value)


# ---------------------------------------------------------------------------------------
# SQL rules
# ---------------------------------------------------------------------------------------


@functools.cache
def expected_logs_columns() -> tuple[tuple[str, str], ...]:
    """Return (column, DuckDB type) of ``logs`` as flywheel.store's SCHEMA declares it,
    read from a scratch in-memory database (no hand-kept copy of the schema)."""
    scratch = duckdb.connect()
    try:
        scratch.execute(store.SCHEMA)
        return _logs_columns(scratch)
    finally:
        scratch.close()


def _logs_columns(con: duckdb.DuckDBPyConnection) -> tuple[tuple[str, str], ...]:
    """Return (column, type) of the ``logs`` table of the connection's current schema."""
    rows = con.execute(
        """
        SELECT column_name, data_type FROM information_schema.columns
        WHERE table_name = 'logs' AND table_catalog = current_database()
          AND table_schema = current_schema()
        ORDER BY ordinal_position
        """
    ).fetchall()
    return tuple((name, kind) for name, kind in rows)


def _schema_differences(con: duckdb.DuckDBPyConnection) -> dict:
    """Return the declared columns the table lacks, those with another type, and the
    extra columns (allowed: tables may be extended)."""
    expected = dict(expected_logs_columns())
    actual = dict(_logs_columns(con))
    return {
        "missing_columns": [c for c in expected if c not in actual],
        "type_mismatches": {
            c: {"expected": t, "actual": actual[c]}
            for c, t in expected.items()
            if c in actual and actual[c] != t
        },
        "extra_columns": [c for c in actual if c not in expected],
    }


def _other_day_duplicates(con: duckdb.DuckDBPyConnection, day: str) -> tuple[int, list[dict]]:
    """Return how many log_ids of ``day`` also exist on another day, and a few of them
    with that other day."""
    rows = con.execute(
        f"""
        SELECT count(*) OVER () AS n, log_id, other_day::VARCHAR
        FROM (
            SELECT log_id, min(day) AS other_day FROM logs
            WHERE day <> $day
              AND log_id IN (SELECT log_id FROM logs WHERE day = $day)
            GROUP BY log_id
        )
        ORDER BY log_id
        LIMIT {EXAMPLES}
        """,
        {"day": day},
    ).fetchall()
    if not rows:
        return 0, []
    return int(rows[0][0]), [{"log_id": r[1], "other_day": r[2]} for r in rows]


def _ingest_counts(con: duckdb.DuckDBPyConnection, day: str) -> tuple[int, int, str]:
    """Return (accepted, rejected, where the counts come from) for ``day``: the loader's
    per-file ledger ``ingest_files`` when it has rows for the day, else row counts of
    ``logs`` and ``rejected_logs``."""
    files, accepted, rejected = con.execute(
        "SELECT count(*), coalesce(sum(accepted), 0), coalesce(sum(rejected), 0) "
        "FROM ingest_files WHERE day = ?::DATE",
        [day],
    ).fetchone()
    if files:
        return int(accepted), int(rejected), "ingest_files"
    accepted, rejected = con.execute(
        "SELECT (SELECT count(*) FROM logs WHERE day = $day::DATE), "
        "(SELECT count(*) FROM rejected_logs WHERE day = $day::DATE)",
        {"day": day},
    ).fetchone()
    return int(accepted), int(rejected), "logs and rejected_logs rows"


# ---------------------------------------------------------------------------------------
# Outcomes
# ---------------------------------------------------------------------------------------


def _frame_outcome(name: str, results: list[dict], rows: int, extra: dict | None = None) -> CheckOutcome:
    """Return the outcome of a check made of GE expectations (plus extra metadata)."""
    failed = [r for r in results if not r["passed"]]
    examples = list(dict.fromkeys(i for r in failed for i in r.get("example_log_ids", [])))
    metadata = {
        "rows": rows,
        "failing_values": sum(r.get("unexpected_count", 0) for r in failed),
        "failed_expectations": [_label(r) for r in failed],
        "example_log_ids": examples[:EXAMPLES],
        "expectations": results,
        **(extra or {}),
    }
    if failed:
        description = f"{len(failed)} of {len(results)} expectations failed: " + "; ".join(
            f"{_label(r)} ({r.get('unexpected_count', 'n/a')} values)" for r in failed
        )
    else:
        description = f"all {len(results)} expectations passed on {rows:,} rows"
    return CheckOutcome(name, not failed, description, metadata)


def _label(result: dict) -> str:
    column = result.get("column")
    return f"{result['expectation']}({column})" if column else result["expectation"]


def _schema_outcome(diff: dict, results: list[dict], rows: int) -> CheckOutcome:
    """Return the schema check: the table's declared columns and types (``diff`` from
    :func:`_schema_differences`), and the frame's columns (GE)."""
    frame = _frame_outcome("schema", results, rows, diff)
    problems = len(diff["missing_columns"]) + len(diff["type_mismatches"])
    if not problems:
        return frame
    description = (
        f"logs does not match the declared schema: missing {diff['missing_columns']}, "
        f"other types {sorted(diff['type_mismatches'])}"
    )
    return CheckOutcome("schema", False, description, frame.metadata)


def _unique_outcome(con, day: str, results: list[dict], rows: int) -> CheckOutcome:
    """Return the unique_log_id check: unique within the day (GE) and not already
    present on another day (SQL)."""
    clashes, examples = _other_day_duplicates(con, day)
    within = _frame_outcome("unique_log_id", results, rows)
    metadata = {
        **within.metadata,
        "duplicates_within_day": within.metadata["failing_values"],
        "log_ids_on_other_days": clashes,
        "other_day_examples": examples,
    }
    if clashes:
        metadata["example_log_ids"] = list(
            dict.fromkeys(metadata["example_log_ids"] + [e["log_id"] for e in examples])
        )[:EXAMPLES]
    passed = within.passed and clashes == 0
    parts = []
    if not within.passed:
        parts.append(f"{metadata['duplicates_within_day']} rows share a log_id within the day")
    if clashes:
        parts.append(f"{clashes} log_ids also exist on another day")
    description = "; ".join(parts) if parts else f"{rows:,} log_ids, all unique across days"
    return CheckOutcome("unique_log_id", passed, description, metadata)


def _rejected_share_outcome(con, day: str, max_rejected_share: float) -> CheckOutcome:
    """Return the rejected_share check: rejected / (accepted + rejected) of the day at
    most ``max_rejected_share``."""
    accepted, rejected, source = _ingest_counts(con, day)
    total = accepted + rejected
    metadata: dict[str, Any] = {
        "accepted": accepted,
        "rejected": rejected,
        "max_rejected_share": max_rejected_share,
        "counted_from": source,
    }
    if total == 0:
        metadata["rejected_share"] = 0.0
        metadata["note"] = "no records ingested for this day"
        return CheckOutcome("rejected_share", True, "no records ingested for this day", metadata)
    share = rejected / total
    metadata["rejected_share"] = share
    examples = con.execute(
        "SELECT source_file, line, reason FROM rejected_logs WHERE day = ?::DATE "
        f"ORDER BY source_file, line LIMIT {EXAMPLES}",
        [day],
    ).fetchall()
    metadata["example_rejections"] = [
        {"source_file": f, "line": line, "reason": reason} for f, line, reason in examples
    ]
    passed = share <= max_rejected_share
    verdict = "within" if passed else "over"
    description = (
        f"{rejected:,} of {total:,} records rejected ({share:.2%}), {verdict} the "
        f"limit of {max_rejected_share:.2%}"
    )
    return CheckOutcome("rejected_share", passed, description, metadata)


def _not_run(name: str, reason: str) -> CheckOutcome:
    return CheckOutcome(name, False, f"not run: {reason}", {"note": reason})


def check_partition(
    con: duckdb.DuckDBPyConnection, day: str, *, max_rejected_share: float
) -> list[CheckOutcome]:
    """Return one :class:`CheckOutcome` per name of :data:`CHECK_NAMES`, in that order,
    for the ``logs`` partition of ``day``.

    An empty partition passes (with a note in each outcome's metadata); the schema and
    required-field checks still run. When ``logs`` lacks columns the frame needs, the
    schema check says which and the frame checks fail as not run.
    """
    diff = _schema_differences(con)
    missing = [c for c in FRAME_SOURCE_COLUMNS if c in diff["missing_columns"]]
    if missing:
        reason = f"logs lacks columns {missing}"
        schema = CheckOutcome("schema", False, f"logs does not match the declared schema: {reason}", diff)
        frame_checks = [_not_run(n, reason) for n in CHECK_NAMES[1:4]]
        return [schema, *frame_checks, _rejected_share_outcome(con, day, max_rejected_share)]

    frame = partition_frame(con, day)
    rows = len(frame)
    results = _validate_frame(frame)
    outcomes = [
        _schema_outcome(diff, results["schema"], rows),
        _frame_outcome("required_fields", results["required_fields"], rows),
        _unique_outcome(con, day, results["unique_log_id"], rows),
        _frame_outcome("value_ranges", results["value_ranges"], rows),
        _rejected_share_outcome(con, day, max_rejected_share),
    ]
    if rows == 0:
        outcomes = [
            CheckOutcome(o.name, o.passed, o.description, {**o.metadata, "note": EMPTY_NOTE})
            if o.name != "rejected_share"
            else o
            for o in outcomes
        ]
    return outcomes
