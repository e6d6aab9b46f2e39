"""The fast path of OTLP/JSON span files: line batches in; `logs` rows, records for the
detailed checks and staged batches of spans out.

For each batch of lines, :func:`flywheel.ingest.fast.otel_sql.otel_span_rows` decides
the lines it can: the LLM spans it accepts come out as `logs` rows (the loader's
``ACCEPTED_SCHEMA``, inserted as they are), the others it decides as their canonical
documents for the loader's detailed checks (``SECOND_LOOK_SCHEMA``). The lines it does
not decide are read by :func:`flywheel.ingest.formats.otel.otel_document_records`, line
by line, and their records staged as the Python path stages them (``BATCH_SCHEMA``):
unlike the other fast formats a line holds several records (one per LLM span), so such
a batch has one row per record with the line repeated, in the order the Python reader
gives them.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path

import duckdb
import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from flywheel import pii
from flywheel.ingest.fast.otel_sql import ACCEPTED_COLUMNS, BENT_LINE, otel_span_rows
from flywheel.ingest.fast.text_bytes import filter_rows, holds, lone_carriage_return
from flywheel.ingest.formats.jsonio import _JSON_ERRORS, _json_error
from flywheel.ingest.formats.otel import otel_document_records
from flywheel.ingest.normalize import TsWindow
from flywheel.ingest.records import RawRecord, UnreadableFile

MAPPING_CHUNK_ROWS = 256  # lines of up to a few kB each: DuckDB maps one chunk per thread
# A line that is bent, or holds a carriage return or the key of log records.
_SCREENED = BENT_LINE + r'|\r|"resourceLogs"'


def otel_batches(con: duckdb.DuckDBPyConnection, path: Path, *, pii_gate: bool, companions: dict,
                 window: TsWindow, stats: dict, block_bytes: int) -> Iterator[list[pa.Table]]:
    """Yield the batches of an OTLP/JSON-lines file, one row per record (LLM span, or
    broken line or span), blank lines left out: for each batch of lines, a list of the staged
    records of the Python reader (the loader's ``BATCH_SCHEMA``, when there are some),
    the documents for the detailed checks (``SECOND_LOOK_SCHEMA``), the accepted rows
    (``ACCEPTED_SCHEMA``) and, with ``pii_gate``, instead of those, the rows held for the
    loader's PII test (``PII_CANDIDATES_SCHEMA``), in that order.

    ``companions``: the day's OTel log records by span (the loader's companion records);
    spans that have some are mapped in Python. ``stats`` counts the non-LLM spans
    skipped (``ignored_spans``) and the records mapped in SQL (``in_sql``) and in Python
    (``in_python``).

    Raises:
        NotFast: the file is not plain JSON lines the way this reader can number them,
            or holds log records of its own; it may be raised after some batches.
    """
    from flywheel.ingest import loader
    from flywheel.ingest.fast.lines import NotFast, _check_first

    # Only the day's OTel log records concern spans (a Batch API day's requests share the
    # dict): without any, no span needs its ids checked in Python.
    if not any(key[0] == "otel_log" for key in companions):
        companions = {}
    first = True
    # Lines are taken for JSON (a parse each saved) until a batch holds one that is not:
    # then that batch and the rest of the file are read checking each line.
    checked = False
    try:
        for lines in _first_two_joined(loader._line_batches(path, block_bytes=block_bytes)):
            if first:
                _check_first(lines)
                first = False
            # The staged records of these lines first, then the rows accepted of them (see
            # the loader's _load_fast).
            tables, checked = _staged(con, lines, pii_gate=pii_gate, companions=companions, window=window,
                                      stats=stats, checked=checked)
            yield tables
    except UnreadableFile as exc:  # the Python reader words these its own way
        raise NotFast(exc.reason) from None


def _first_two_joined(batches: Iterator[pa.Table]) -> Iterator[pa.Table]:
    """Yield the batches of lines with the first (the loader's small first block) joined
    to the second, numbered anew: here a batch costs a statement whose planning alone
    takes about as long as mapping a small block, with nothing else to do meanwhile."""
    first = next(batches, None)
    if first is None:
        return
    second = next(batches, None)
    if second is None:
        yield first
        return
    joined = pa.concat_tables([first, second])
    yield joined.set_column(0, "rid", pa.array(np.arange(joined.num_rows, dtype=np.int64)))
    yield from batches


def _bent(text: pa.ChunkedArray) -> pa.Array | pa.ChunkedArray:
    """Return, for each line, whether it matches :data:`BENT_LINE` (it is left to Python).

    Raises:
        NotFast: a line holds a lone carriage return, or log records (``resourceLogs``).
    """
    from flywheel.ingest.fast.lines import NotFast

    # One scan of every line finds those that matter to any of the three tests: only
    # they are tested one by one (a line holds a carriage return or the key of log
    # records only if it matches _SCREENED).
    flagged = pc.match_substring_regex(text, _SCREENED)
    if not pc.any(flagged).as_py():
        return flagged
    suspects = text.filter(flagged)
    if lone_carriage_return(suspects):
        raise NotFast("a lone carriage return")
    if holds(suspects, b'"resourceLogs"'):
        raise NotFast("log records in the spans file")  # joined by the Python reader
    bent = np.zeros(len(text), dtype=bool)
    bent[flagged.to_numpy(zero_copy_only=False)] = pc.match_substring_regex(suspects, BENT_LINE).to_numpy(
        zero_copy_only=False)
    return pa.array(bent)


def _no_spans() -> pa.Table:
    """Return the span statement's result without a row (every line left to Python)."""
    from flywheel.ingest import loader

    columns = {"rid": pa.int64(), "k": pa.int64(), "ok": pa.bool_(), "llm": pa.bool_(), "trace_id": pa.string(),
               "span_id": pa.string(), "accepted": pa.bool_(), "held": pa.bool_(), "doc": pa.string(),
               **{name: loader.ACCEPTED_SCHEMA.field(name).type for name in ACCEPTED_COLUMNS}}
    return pa.table({name: pa.array([], kind) for name, kind in columns.items()})


def _staged(con, lines: pa.Table, *, pii_gate: bool, companions: dict, window: TsWindow,
            stats: dict, checked: bool) -> tuple[list[pa.Table], bool]:
    """Return what one batch of lines gives the loader: the staged batch (the loader's
    ``BATCH_SCHEMA``) of the records it must judge (the documents of the spans the
    statement decides but does not accept itself, and the records of the lines the
    Python reader maps), then the rows the statement accepted (``ACCEPTED_SCHEMA``: none
    with the PII guardrail), then the rows it would accept, held for the loader's PII
    test (the loader's ``PII_CANDIDATES_SCHEMA``: with the guardrail); and whether the
    lines had to be checked for JSON one by one (``checked``: from the start)."""
    from flywheel.ingest import loader
    from flywheel.ingest.fast.lines import NotFast, _no_filter_pushdown

    text = lines.column("text")
    if text.null_count:
        raise NotFast("not UTF-8")
    if lines.column("pre_error").null_count < lines.num_rows:
        raise NotFast("a broken gzip stream")
    screened = lines.append_column("bent", _bent(text))
    spans = None
    for checked in ((True,) if checked else (False, True)):
        # (A reader is read once: registered for each run.)
        con.register("fast_otel_lines", pa.RecordBatchReader.from_batches(
            screened.schema, screened.to_batches(max_chunksize=MAPPING_CHUNK_ROWS)))
        statement = otel_span_rows("fast_otel_lines", window=window, ids=bool(companions),
                                   hold_back=pii.PREFILTER_PATTERN if pii_gate else None, checked=checked)
        try:
            with _no_filter_pushdown(con):
                spans = con.sql(statement).to_arrow_table()  # (on all threads: see the loader's _second_look)
            break
        except duckdb.InvalidInputException:  # a line that is not JSON, or a value DuckDB refuses
            pass
        finally:
            con.unregister("fast_otel_lines")
    if spans is None:  # a value DuckDB refuses: all in Python
        spans = _no_spans()
    n = lines.num_rows
    ok, llm, accepted, held = (pc.fill_null(spans.column(name), False).to_numpy(zero_copy_only=False)
                               for name in ("ok", "llm", "accepted", "held"))
    rid = spans.column("rid").to_numpy()
    undecided = np.zeros(n, dtype=bool)
    undecided[rid[~ok]] = True
    if companions:
        # A span with log records of its own (or ids that are not hex) is joined in Python.
        for i, trace_id, span_id in zip(rid, spans.column("trace_id").to_pylist(), spans.column("span_id").to_pylist()):
            if trace_id == "?" or span_id == "?" or ("otel_log", trace_id, span_id) in companions:
                undecided[i] = True
    decided = np.zeros(n, dtype=bool)
    decided[rid] = True
    decided &= ~undecided
    kept = decided[rid]
    stats["ignored_spans"] = stats.get("ignored_spans", 0) + int((kept & ~llm).sum())
    stats["in_sql"] = stats.get("in_sql", 0) + int((kept & llm).sum())
    accepted &= kept
    held &= kept

    blank = lines.column("blank").to_numpy(zero_copy_only=False)
    line_numbers = lines.column("line").to_numpy()
    records: list[RawRecord] = []
    places: list[int] = []
    for i in np.flatnonzero(~decided & ~blank):
        line = text[int(i)].as_py()
        stripped = line.strip()
        if not stripped:
            continue
        try:
            value, error = json.loads(line.rstrip("\r\n")), None
        except _JSON_ERRORS as err:
            value, error = None, _json_error(err)
        number = int(line_numbers[i])
        found = ([RawRecord(number, stripped, error=error)] if error is not None
                 else list(otel_document_records(number, stripped, value, companions, stats)))
        records += found
        places += range(len(found))
    stats["in_python"] = stats.get("in_python", 0) + len(records)

    # The spans decided but neither accepted nor held here: for the detailed checks, in
    # file order.
    judged = filter_rows(spans.select(["rid", "k", "doc"]), kept & llm & ~accepted & ~held)
    m = judged.num_rows
    second = pa.table(
        {
            "rid": pa.array(np.arange(m, dtype=np.int64)),
            "line": pa.array(line_numbers[judged.column("rid").to_numpy()]),
            "text": pa.nulls(m, pa.string()),  # never rejected: its raw text is not needed
            "raw": pa.nulls(m, pa.binary()),
            "doc": judged.column("doc"),
            "pre_error": pa.nulls(m, pa.string()),
            "pre_field": pa.nulls(m, pa.string()),
            "blank": pa.array(np.zeros(m, dtype=bool)),
            "maybe_pii": pa.nulls(m, pa.bool_()),
        },
        schema=loader.SECOND_LOOK_SCHEMA,
    )
    second = _in_file_order(second, judged.column("k").to_numpy())
    values = spans.select(["rid", *ACCEPTED_COLUMNS])
    rows, candidates = (
        pa.table({"line": pa.array(line_numbers[taken.column("rid").to_numpy()]),
                  **{name: taken.column(name) for name in ACCEPTED_COLUMNS}}).cast(schema)
        for taken, schema in ((filter_rows(values, accepted), loader.ACCEPTED_SCHEMA),
                              (filter_rows(values, held), loader.PII_CANDIDATES_SCHEMA)))
    if not records:
        return [second, rows, candidates], checked
    # The records the Python reader mapped, staged as the Python path stages them (NaN,
    # non-UTF-8 text, deep nesting), for the loader's fast statement.
    python = pa.concat_tables(loader._parsed_batches(iter(records)))
    python = _in_file_order(python, np.asarray(places, dtype=np.int64))
    python = python.set_column(0, "rid", pa.array(np.arange(python.num_rows, dtype=np.int64)))
    if pii_gate:
        python = python.set_column(python.schema.get_field_index("maybe_pii"), "maybe_pii",
                                   loader._maybe_pii(python.column("doc")))
    return [loader._parallel(python), second, rows, candidates], checked


def _in_file_order(rows: pa.Table, places: np.ndarray) -> pa.Table:
    """Return the records in file order: by line, then by their place in it (DuckDB's
    output and the Python reader's are mostly in order already: then nothing is copied)."""
    lines_of = rows.column("line").to_numpy()
    steps_line, steps_place = np.diff(lines_of), np.diff(places)
    if len(lines_of) < 2 or bool(((steps_line > 0) | ((steps_line == 0) & (steps_place > 0))).all()):
        return rows
    return rows.take(pa.array(np.lexsort((places, lines_of))))
