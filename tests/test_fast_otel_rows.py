"""The OTel span statement's own `logs` values (flywheel.ingest.fast.otel_sql): the rows it
accepts are the rows the loader's fast statement would store from the same spans'
documents, PII candidates go to the detailed checks, and the loader's batches come in
file order. (The end-to-end identity with the Python mappers is in test_fast_formats.)"""

from __future__ import annotations

from datetime import date
from pathlib import Path

import duckdb
import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pytest

from flywheel import pii
from flywheel.demo import DemoSpec, generate
from flywheel.ingest import loader
from flywheel.ingest.fast import fast_batches
from flywheel.ingest.fast.lines import FAST_BLOCK_BYTES, _no_filter_pushdown
from flywheel.ingest.fast.otel_lines import _in_file_order
from flywheel.ingest.fast.otel_sql import ACCEPTED_COLUMNS, BENT_LINE, otel_span_rows
from flywheel.ingest.normalize import fast_accepted_sql, ts_window

DAY = "2026-01-01"
WINDOW = ts_window(DAY, 2)


@pytest.fixture(scope="module")
def spans_file(tmp_path_factory) -> Path:
    """One demo day of OTel spans (several spans per line, some with PII)."""
    home = tmp_path_factory.mktemp("otel-demo")
    spec = DemoSpec(days=1, rows_per_day=300, seed=5, start=date.fromisoformat(DAY), format_shares={"otel": 1.0})
    generate(home, spec)
    (path,) = sorted((home / "landing" / DAY).iterdir())
    return path


def _span_rows(con, path: Path, *, hold_back: str | None, documents: bool = True) -> pa.Table:
    """Return the span statement's rows for the lines of ``path``, by line and place."""
    lines = pa.concat_tables(loader._line_batches(path, block_bytes=FAST_BLOCK_BYTES))
    lines = lines.append_column("bent", pc.match_substring_regex(lines.column("text"), BENT_LINE))
    con.register("span_lines", lines)
    with _no_filter_pushdown(con):
        rows = con.execute(otel_span_rows("span_lines", window=WINDOW, ids=False, hold_back=hold_back,
                                          documents=documents)).fetch_arrow_table()
    return rows.sort_by([("rid", "ascending"), ("k", "ascending")])


@pytest.mark.parametrize("zone", ["UTC", "Asia/Kolkata"])  # the session's time zone changes no value
def test_accepted_spans_have_the_values_the_fast_statement_reads_from_their_documents(spans_file, zone):
    with duckdb.connect() as con:
        con.execute(f"SET TimeZone = '{zone}'")
        rows = _span_rows(con, spans_file, hold_back=None)
        accepted = rows.filter(pc.fill_null(rows.column("accepted"), False))
        assert accepted.num_rows >= 250  # without the PII test, every demo LLM span but tool calls
        n = accepted.num_rows
        staged = pa.table({
            "rid": pa.array(np.arange(n, dtype=np.int64)), "line": pa.array(np.arange(n, dtype=np.int64)),
            "text": pa.nulls(n, pa.string()), "raw": pa.nulls(n, pa.binary()), "doc": accepted.column("doc"),
            "pre_error": pa.nulls(n, pa.string()), "pre_field": pa.nulls(n, pa.string()),
            "blank": pa.array(np.zeros(n, dtype=bool)), "maybe_pii": pa.nulls(n, pa.bool_()),
        }, schema=loader.BATCH_SCHEMA)
        con.register("staged_docs", staged)
        with _no_filter_pushdown(con):
            from_docs = con.execute(f"SELECT * FROM ({fast_accepted_sql('staged_docs', window=WINDOW)}) ORDER BY rid"
                                    ).fetch_arrow_table()
    # The fast statement takes every one of these documents, and stores what the span
    # statement gives (the JSON columns as the same text).
    assert from_docs.num_rows == n
    for name in ACCEPTED_COLUMNS:
        mine = accepted.column(name).cast(from_docs.column(name).type) if name not in ("messages", "metadata") \
            else accepted.column(name)
        theirs = from_docs.column(name) if name not in ("messages", "metadata") else from_docs.column(name).cast(pa.string())
        assert mine.to_pylist() == theirs.to_pylist(), name
    assert all(text.startswith('[{"role":') for text in accepted.column("messages").to_pylist())


def test_with_the_pii_guardrail_spans_are_held_with_their_values_for_the_pii_test(spans_file):
    with duckdb.connect() as con:
        guarded = _span_rows(con, spans_file, hold_back=pii.PREFILTER_PATTERN, documents=False)
        unguarded = _span_rows(con, spans_file, hold_back=None, documents=False)
    flags = {name: pc.fill_null(table.column(column), False).to_numpy(zero_copy_only=False)
             for name, table, column in (("taken", guarded, "accepted"), ("held", guarded, "held"),
                                         ("taken_without", unguarded, "accepted"),
                                         ("held_without", unguarded, "held"))}
    # The spans the statement would take: held for the loader's PII test with the
    # guardrail, taken as they are without it; the same values either way, no document.
    assert flags["taken_without"].sum() >= 200
    assert (flags["held"] == flags["taken_without"]).all()
    assert not flags["taken"].any() and not flags["held_without"].any()
    held = guarded.filter(pa.array(flags["held"]))
    taken = unguarded.filter(pa.array(flags["taken_without"]))
    for name in ACCEPTED_COLUMNS:
        assert held.column(name).to_pylist() == taken.column(name).to_pylist(), name
    assert held.column("doc").null_count == held.num_rows


def test_the_loader_scrubs_held_rows_where_a_prefilter_matches_and_takes_the_others_as_they_are(spans_file):
    with duckdb.connect() as con:
        guarded = _span_rows(con, spans_file, hold_back=pii.PREFILTER_PATTERN, documents=False)
    held = guarded.filter(pc.fill_null(guarded.column("held"), False))
    rows = pa.table({"line": pa.array(np.arange(held.num_rows)), **{name: held.column(name) for name in ACCEPTED_COLUMNS}})
    rows = rows.cast(loader.PII_CANDIDATES_SCHEMA)
    report = loader.IngestReport(day=DAY)
    scrubbed = loader._scrubbed_candidates(rows, "redact", report)
    assert scrubbed.schema.equals(loader.ACCEPTED_SCHEMA, check_metadata=True)
    found = pc.is_valid(scrubbed.column("pii")).to_numpy(zero_copy_only=False)
    assert 5 <= found.sum() < held.num_rows  # the demo writes e-mail addresses and phone numbers into some turns
    assert sum(report.pii_counts.values()) >= found.sum()
    for name in ("input", "output", "messages", "metadata"):
        before, after = rows.column(name).to_pylist(), scrubbed.column(name).to_pylist()
        # Rows without PII as they were; in the others the detectors find nothing left.
        assert [b for b, f in zip(before, found) if not f] == [a for a, f in zip(after, found) if not f], name
        assert not any(pii.find(a) for a, f in zip(after, found) if f and a is not None), name


@pytest.mark.parametrize("mode", ["redact", "flag"])
def test_the_fast_path_yields_pii_candidates_the_loader_scrubs(spans_file, mode):
    stats: dict = {}
    kinds: dict[str, int] = {"accepted": 0, "candidates": 0, "with pii": 0, "second look": 0, "staged": 0}
    report = loader.IngestReport(day=DAY)
    with duckdb.connect() as con:
        for batch in fast_batches(con, spans_file, "otel", pii_gate=True, stats=stats, window=WINDOW):
            if batch.schema.metadata == loader.PII_CANDIDATES_SCHEMA.metadata:
                kinds["candidates"] += batch.num_rows
                rows = loader._scrubbed_candidates(batch, mode, report)
                assert rows.schema.equals(loader.ACCEPTED_SCHEMA, check_metadata=True)
                flagged = rows.filter(pc.is_valid(rows.column("pii")))
                kinds["with pii"] += flagged.num_rows
                texts = [t for name in ("input", "output", "messages") for t in flagged.column(name).to_pylist()]
                # Scrubbed: the detectors find nothing left (flag mode: the PII kept as it was).
                assert any(pii.find(t) for t in texts) == (mode == "flag" and flagged.num_rows > 0)
            elif batch.schema.equals(loader.ACCEPTED_SCHEMA):
                kinds["accepted"] += batch.num_rows
                assert batch.column("log_id").null_count == 0 and batch.column("ts").null_count == 0
                assert batch.column("pii").null_count == batch.num_rows
            elif batch.schema.metadata == loader.SECOND_LOOK_SCHEMA.metadata:
                kinds["second look"] += batch.num_rows
                assert batch.column("doc").null_count == 0
            else:
                assert batch.schema.equals(loader.BATCH_SCHEMA)
                kinds["staged"] += batch.num_rows
    # With the guardrail every span the statement takes is held for the PII test.
    assert kinds["accepted"] == 0 and kinds["candidates"] >= 200 and kinds["with pii"] >= 5, kinds
    assert kinds["accepted"] + kinds["candidates"] + kinds["second look"] == stats["in_sql"]
    assert kinds["staged"] == stats["in_python"]
    assert sum(report.pii_counts.values()) >= kinds["with pii"]


def test_records_are_put_in_file_order_by_line_then_place():
    rows = pa.table({"line": [3, 1, 3, 1], "name": ["c", "a", "d", "b"]})
    ordered = _in_file_order(rows, np.array([2, 5, 7, 9]))
    assert ordered.column("name").to_pylist() == ["a", "b", "c", "d"]
    # Places are compared within a line only; rows already in order are not copied.
    ordered_rows = pa.table({"line": [1, 2, 2], "name": ["a", "b", "c"]})
    assert _in_file_order(ordered_rows, np.array([9, 1, 4])) is ordered_rows
    assert _in_file_order(pa.table({"line": [2, 2], "name": ["x", "y"]}), np.array([4, 1])).column(
        "name").to_pylist() == ["y", "x"]


def test_lines_are_screened_in_one_scan_with_the_same_answers():
    from flywheel.ingest.fast.lines import NotFast
    from flywheel.ingest.fast.otel_lines import _bent

    plain = '{"resourceSpans": [{"resource": {"attributes": []}}]}\n'
    lines = [plain, '{"key": 5}\n', plain.replace("\n", "\r\n"), '{"a": [1, 2,]}\n', '{"n": 1e999}\r\n', plain]
    text = pa.chunked_array([lines[:3], lines[3:]])
    bent = _bent(text)
    # The lines BENT_LINE matches, CRLF endings or not; none when no line is flagged.
    assert pc.fill_null(bent, False).to_pylist() == pc.match_substring_regex(text, BENT_LINE).to_pylist()
    assert pc.fill_null(bent, False).to_pylist() == [False, True, False, True, True, False]
    assert not pc.any(_bent(pa.chunked_array([[plain, plain]]))).as_py()
    with pytest.raises(NotFast, match="carriage return"):
        _bent(pa.chunked_array([[plain, '{"a": "x\ry"}\n']]))
    with pytest.raises(NotFast, match="log records"):
        _bent(pa.chunked_array([[plain], ['{"resourceLogs": []}\n']]))


def test_a_batch_the_statement_cannot_map_gives_no_spans_with_the_statements_columns():
    # (What the caller falls back on when DuckDB refuses a value: every line to Python.)
    from flywheel.ingest.fast.otel_lines import _no_spans

    lines = pa.table({"rid": pa.array([0], pa.int64()), "text": ["{}"], "blank": [False], "bent": [False]})
    with duckdb.connect() as con:
        con.register("no_lines", lines)
        with _no_filter_pushdown(con):
            rows = con.execute(otel_span_rows("no_lines", window=WINDOW, ids=True, hold_back=pii.PREFILTER_PATTERN)
                               ).fetch_arrow_table()
    assert _no_spans().schema.names == rows.schema.names


def test_lines_taken_for_json_make_the_statement_raise_where_one_is_not(spans_file):
    lines = pa.concat_tables(loader._line_batches(spans_file, block_bytes=FAST_BLOCK_BYTES))
    broken = pa.table({"rid": pa.array([lines.num_rows], pa.int64()), "text": ['{"resourceSpans": [}'],
                       "blank": [False], "bent": [False]})
    lines = pa.concat_tables([lines.select(["rid", "text", "blank"]).append_column(
        "bent", pc.match_substring_regex(lines.column("text"), BENT_LINE)), broken])
    with duckdb.connect() as con:
        con.register("some_lines", lines)
        with _no_filter_pushdown(con):
            with pytest.raises(duckdb.InvalidInputException):
                con.execute(otel_span_rows("some_lines", window=WINDOW, ids=False, hold_back=None, checked=False))
            checked = con.execute(otel_span_rows("some_lines", window=WINDOW, ids=False, hold_back=None)
                                  ).fetch_arrow_table()
    # Checked, the broken line has no span (it is left to Python), the others all theirs.
    assert lines.num_rows - 1 not in checked.column("rid").to_pylist()
    assert len(set(checked.column("rid").to_pylist())) == lines.num_rows - 1
