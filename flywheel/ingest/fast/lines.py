"""The driver of the fast paths: line batches in, staged batches with canonical docs out.

Each batch of lines goes through its format's mapping statement (see
:mod:`flywheel.ingest.fast.openai_sql`), which returns the canonical JSON document of
every line it could decide; the other lines are mapped by the format's Python mapper,
exactly as :func:`flywheel.ingest.formats.jsonio._iter_lines` and
:func:`flywheel.ingest.formats.common._map_value` would have.
"""

from __future__ import annotations

import contextlib
import itertools
import json
from collections.abc import Callable, Iterator
from pathlib import Path

import duckdb
import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from flywheel.ingest.fast import langfuse_sql, openai_sql, otel_lines
from flywheel.ingest.fast.text_bytes import lone_carriage_return
from flywheel.ingest.formats.batch_input import BatchRequests, day_batch_requests
from flywheel.ingest.formats.common import _map_value
from flywheel.ingest.formats.jsonio import _JSON_ERRORS, _is_gzip, _json_error
from flywheel.ingest.formats.langfuse import _map_langfuse, _trace_of_download
from flywheel.ingest.formats.openai import _map_batch_output, _map_openai_chat
from flywheel.ingest.normalize import TsWindow
from flywheel.ingest.records import UnreadableFile


MAPPING_CHUNK_ROWS = 1024
# Bytes of lines per batch: each batch pays for a handful of statements (mapping, the
# combined test, the lines it left out), which are many times larger than the
# canonical path's; larger batches than the loader's spread that over more records.
FAST_BLOCK_BYTES = 48 << 20


class NotFast(Exception):
    """The file cannot take the fast path; the loader reads it the Python way."""


# The fast formats: each gives, from the day's companion records (for Batch API output,
# the requests a batch of lines names, see :func:`_requests_of`), the mapping statement
# over a relation of lines (and the batch), and the Python mapper of one record.
_FORMATS = {
    "openai_chat": lambda requests: (openai_sql.openai_chat_docs, _map_openai_chat),
    "openai_batch_output": lambda requests: (
        lambda relation, lines: openai_sql.openai_batch_docs(
            relation, lines, "(SELECT custom_id, line FROM fast_requests WHERE object)", requests),
        lambda obj: _map_batch_output(obj, requests),
    ),
    "langfuse": lambda requests: (langfuse_sql.langfuse_docs, _langfuse_trace),
}


def _langfuse_trace(value: dict) -> dict:
    """Map one Langfuse value the way the Python reader does, when it is one trace; a
    ``{"data": [...]}`` wrapper holds several (the file is not one record per line)."""
    if isinstance(value.get("data"), list) and "id" not in value:
        raise NotFast("a {\"data\": [...]} wrapper of several traces")
    return _map_langfuse(_trace_of_download(value))


def handles(fmt: str) -> bool:
    """Return whether ``fmt`` has a fast path."""
    return fmt in _FORMATS or fmt == "otel"


def fast_batches(con: duckdb.DuckDBPyConnection, path: Path, fmt: str, *,
                 pii_gate: bool, batch_requests: dict | None = None,
                 stats: dict | None = None, window: TsWindow = None) -> Iterator[pa.Table]:
    """Yield the staged batches (the loader's ``BATCH_SCHEMA``) of a JSON-lines file of
    ``fmt``, one row per record, blank lines left out, as the Python reader numbers them.

    ``batch_requests``: the day's companion records (the loader's), for Batch API
    output files their input lines by custom_id, for OTel spans their log records by span.
    ``stats``, when given, counts the records mapped in SQL (``in_sql``) and in Python
    (``in_python``), and the non-LLM OTel spans skipped (``ignored_spans``). ``window``:
    the day's plausible timestamps (the OTel statement decides only spans it knows are
    accepted). OTel files hold several records per line: their batches have a row per
    record, the line repeated, and come with `logs` rows the span statement accepted
    itself and records for the detailed checks (see
    :func:`flywheel.ingest.fast.otel_lines.otel_batches` and the loader's ``_load_fast``).

    Raises:
        NotFast: the file is not plain JSON lines the way this reader can number them;
            it may be raised after some batches were yielded.
    """
    from flywheel.ingest import loader  # the loader imports this module

    if _is_gzip(path) != path.name.lower().endswith(".gz"):
        raise NotFast("gzip by its magic bytes only")
    # Each batch of lines is mapped on a connection of its own by a thread, while the
    # loader stores the batch before on ``con``: mapping is mostly DuckDB and Python
    # work that the loader's statements (and their Python around them) would otherwise
    # wait for. The mapping statements read registered Arrow only, not the day's
    # transaction.
    mapping = con.cursor()
    try:
        with contextlib.closing(loader._read_ahead(
                _mapped_batches(mapping, path, fmt, pii_gate=pii_gate, batch_requests=batch_requests,
                                stats=stats if stats is not None else {}, window=window))) as ahead:
            for tables in ahead:
                yield from tables
    finally:
        mapping.close()


def _mapped_batches(con, path: Path, fmt: str, *, pii_gate: bool, batch_requests: dict | None,
                    stats: dict, window: TsWindow) -> Iterator[list[pa.Table]]:
    """Yield, for each batch of lines of the file, the tables :func:`fast_batches`
    yields for it (see there), mapped on ``con``."""
    from flywheel.ingest import loader

    batch_output = fmt == "openai_batch_output"
    requests = day_batch_requests(batch_requests) if batch_output else batch_requests or {}
    if fmt == "otel":
        yield from otel_lines.otel_batches(con, path, pii_gate=pii_gate, companions=requests, window=window,
                                           stats=stats, block_bytes=FAST_BLOCK_BYTES)
        return
    statement, mapper = _FORMATS[fmt](requests)
    batches = loader._line_batches(path, block_bytes=FAST_BLOCK_BYTES)
    array = False
    if fmt == "langfuse":  # a JSON array of traces, one per line, or JSON lines
        batches, array = _array_or_lines(batches)
    first = not array
    try:
        for lines in batches:
            if first:
                _check_first(lines)
                first = False
            if not batch_output:
                yield [_mapped(con, lines, statement, mapper, pii_gate=pii_gate, stats=stats, strict=array)]
                continue
            with _requests_of(con, lines, requests) as named:
                statement, mapper = _FORMATS[fmt](named)
                yield [_mapped(con, lines, statement, mapper, pii_gate=pii_gate, stats=stats, strict=array)]
    except UnreadableFile as exc:  # the Python reader words these its own way
        raise NotFast(exc.reason) from None


_CUSTOM_ID = r'"custom_id":[ \t]*"(?P<id>[^"\\]*)"'


@contextlib.contextmanager
def _requests_of(con, lines: pa.Table, requests: BatchRequests):
    """Register ``fast_requests(custom_id, line, object)``: the text holding the input
    line's body of each custom id the batch's lines name (and of others in the chunks
    mostly asked for: the day's requests are not copied as a whole; ``object``: whether
    the statement may join it); yield those requests (a look-up of another custom_id in
    them asks the whole day's)."""
    from flywheel.ingest import loader

    # The custom ids as the lines usually spell them (a string without escapes, the
    # first such key of the line), found by RE2 near the start of each line: no parse.
    # A line whose request this misses (an escape in its custom_id, a number) is not
    # joined in SQL but mapped by Python, which asks the whole day's requests.
    ids = pc.struct_field(pc.extract_regex(lines.column("text"), _CUSTOM_ID), [0])
    named = requests.subset(ids)
    con.register("fast_requests", loader._scan_once(named.table))
    try:
        yield named
    finally:
        con.unregister("fast_requests")


def _no_filter_pushdown(con):
    """Return a context that runs a statement without filter pushdown: DuckDB would
    otherwise repeat each record's parse for every test of the WHERE clause that names a
    parsed field. (The loader's settings for its fast statement, under its
    ``SHARED_SETTINGS``: the setting is the database's.)"""
    from flywheel.ingest import loader

    return loader._fast_insert_settings(con)


# The lines of a JSON array written one element per line: what each line may be, and
# which may follow which (the Python reader reads nothing else the same way).
_BLANK, _OPEN, _ELEMENT, _LAST, _CLOSE, _OTHER = range(6)
_FOLLOWS = np.zeros((6, 6), dtype=bool)
_FOLLOWS[_OPEN, [_ELEMENT, _LAST, _CLOSE]] = True
_FOLLOWS[_ELEMENT, [_ELEMENT, _LAST]] = True
_FOLLOWS[_LAST, _CLOSE] = True


def _array_or_lines(batches: Iterator[pa.Table]) -> tuple[Iterator[pa.Table], bool]:
    """Return the batches of a file that is either JSON lines (as they are, and False)
    or a JSON array with one element per line (True): then each batch's element lines
    lose their trailing comma, and the bracket lines count as blank.

    The array's layout is checked as the lines go by: ``[`` alone on the first line,
    ``{...},`` lines, a last ``{...}`` line, ``]`` alone, nothing after it but blank
    lines; any other layout raises NotFast (the Python reader reads it).
    """
    batches = iter(batches)
    head = next(batches, None)
    if head is None:
        return iter(()), False
    first = next((t for t in head.column("text").to_pylist() if t is None or t.strip()), None)
    if first is None or not first.lstrip().startswith("["):
        return itertools.chain([head], batches), False

    def elements() -> Iterator[pa.Table]:
        last = _BLANK
        for lines in itertools.chain([head], batches):
            text = lines.column("text")
            if text.null_count:
                raise NotFast("not UTF-8")
            kind = np.full(lines.num_rows, _OTHER, dtype=np.int8)
            starts = pc.starts_with(text, "{").to_numpy(zero_copy_only=False)
            for end in (",\n", ",\r\n", ","):  # (tests of the ends only: no regex)
                kind[starts & pc.ends_with(text, "}" + end).to_numpy(zero_copy_only=False)] = _ELEMENT
            for end in ("\n", "\r\n", ""):
                kind[starts & pc.ends_with(text, "}" + end).to_numpy(zero_copy_only=False)] = _LAST
                kind[pc.equal(text, "[" + end).to_numpy(zero_copy_only=False)] = _OPEN
                kind[pc.equal(text, "]" + end).to_numpy(zero_copy_only=False)] = _CLOSE
            # Blank lines are short: the reader's test, then only [ \t\r\n] as JSON's blanks.
            for i in np.flatnonzero(lines.column("blank").to_numpy(zero_copy_only=False)):
                kind[i] = _BLANK if not text[int(i)].as_py().strip(" \t\r\n") else _OTHER
            found = kind[kind != _BLANK]
            # (the first line that is not blank opens the array)
            order = found if last == _BLANK else np.concatenate([[last], found])
            if (len(order) and order[0] != _OPEN and last == _BLANK) or (order == _OTHER).any() \
                    or not _FOLLOWS[order[:-1], order[1:]].all():
                raise NotFast("not a JSON array of one element per line")
            if len(order):
                last = order[-1]
            # An element line loses its comma (and line end): the element's text.
            element = kind == _ELEMENT
            if element.any():
                cut = pc.utf8_slice_codeunits(text, 0, -2)  # "},\n", the usual end
                unusual = element & ~pc.ends_with(text, "},\n").to_numpy(zero_copy_only=False)
                if unusual.any():
                    trimmed = pc.utf8_rtrim(text, characters="\r\n")
                    cut = pc.if_else(pa.array(unusual), pc.utf8_slice_codeunits(trimmed, 0, -1), cut)
                text = pc.if_else(pa.array(element), cut, text)
            yield lines.set_column(lines.schema.get_field_index("text"), "text", text).set_column(
                lines.schema.get_field_index("blank"), "blank",
                pa.array(np.isin(kind, (_BLANK, _OPEN, _CLOSE))))
        if last != _CLOSE:
            raise NotFast("a JSON array that does not end")

    return elements(), True


def _check_first(lines: pa.Table) -> None:
    """Raise NotFast unless the file's first non-blank line is a JSON value of its own
    (not an array, no byte order mark): the Python reader then reads JSON lines."""
    for text in lines.column("text").to_pylist():
        if text is None:
            raise NotFast("not UTF-8")
        if text.strip():
            if text.startswith("\ufeff") or text.lstrip().startswith("["):
                raise NotFast("a byte order mark or a JSON array")
            try:
                json.loads(text.rstrip("\r\n"))
            except _JSON_ERRORS:
                raise NotFast("the first line is not JSON by itself") from None
            return


def _mapped(con, lines: pa.Table, statement: Callable[[str, pa.Table], str], mapper: Callable[[dict], dict], *,
            pii_gate: bool, stats: dict, strict: bool = False) -> pa.Table:
    """Return the staged batch of one batch of lines: docs from SQL, else from Python.
    ``strict``: the lines are elements of one JSON array, and a broken one makes the
    whole file unreadable to the Python reader (NotFast)."""
    from flywheel.ingest import loader

    text = lines.column("text")
    if text.null_count:
        raise NotFast("not UTF-8")
    if lines.column("pre_error").null_count < lines.num_rows:  # a gzip stream broke off
        raise NotFast("a broken gzip stream")
    if lone_carriage_return(text):
        raise NotFast("a lone carriage return")
    n = lines.num_rows
    # Small record batches: DuckDB maps one per thread, and a batch of lines is only a
    # few of the loader's chunks.
    con.register("fast_lines", pa.RecordBatchReader.from_batches(
        lines.schema, lines.to_batches(max_chunksize=MAPPING_CHUNK_ROWS)))
    try:
        with _no_filter_pushdown(con):
            decided = con.sql(statement("fast_lines", lines)).to_arrow_table()  # (see the loader's _second_look)
    except duckdb.InvalidInputException:
        # e.g. an object with a key twice (a DuckDB MAP refuses it): all in Python.
        decided = pa.table({"rid": pa.array([], pa.int64()), "doc": pa.array([], pa.string())})
    finally:
        con.unregister("fast_lines")
    doc_values = np.full(n, None, dtype=object)
    rids = decided.column("rid").to_numpy()
    has_doc = np.zeros(n, dtype=bool)
    has_doc[rids] = True
    blank = lines.column("blank").to_numpy(zero_copy_only=False)
    # The lines left to the Python mapper, read as the Python reader reads them.
    todo = np.flatnonzero(~has_doc & ~blank)
    keep = ~blank
    stats["in_sql"] = stats.get("in_sql", 0) + len(rids)
    stats["in_python"] = stats.get("in_python", 0) + len(todo)
    fallback_text = np.full(n, None, dtype=object)
    pre_error = np.full(n, None, dtype=object)
    pre_field = np.full(n, None, dtype=object)
    line_numbers = lines.column("line").to_numpy()
    for i in todo:
        line = text[int(i)].as_py()
        stripped = line.strip()
        if not stripped:
            keep[i] = False
            continue
        try:
            value, error = json.loads(line.rstrip("\r\n")), None
        except _JSON_ERRORS as err:
            if strict:
                raise NotFast("a broken element of a JSON array") from None
            value, error = None, _json_error(err)
        # as the Python reader's batches hold it (a record that cannot be stored, such as
        # one holding an escaped lone surrogate, is rejected with the Python path's reason)
        fallback_text[i], doc_values[i], pre_error[i], pre_field[i] = loader._batch_row(
            _map_value(int(line_numbers[i]), stripped, value, mapper, error))
    kept = np.flatnonzero(keep)
    if len(todo) == 0 and len(rids) == len(kept):
        # The usual batch: every record decided in SQL. Its documents in line order, and
        # no copy of the whole batch but the one of the records kept.
        docs = decided.column("doc")
        if len(rids) > 1 and not (np.diff(rids) > 0).all():
            docs = docs.take(pa.array(np.argsort(rids)))
        taken = pa.array(kept)
        m = len(kept)
        table = pa.table(
            {
                "rid": pa.array(np.arange(m, dtype=np.int64)),
                "line": lines.column("line").take(taken) if m < n else lines.column("line"),
                "text": text.take(taken) if m < n else text,
                "raw": pa.nulls(m, pa.binary()),
                "doc": docs,
                "pre_error": pa.nulls(m, pa.string()),
                "pre_field": pa.nulls(m, pa.string()),
                "blank": pa.array(np.zeros(m, dtype=bool)),
                "maybe_pii": loader._maybe_pii(docs) if pii_gate else pa.nulls(m, pa.bool_()),
            },
            schema=loader.BATCH_SCHEMA,
        )
        return loader._parallel(table)
    sql_docs = pa.array(np.full(n, None, dtype=object), pa.string())
    if len(rids):
        order = np.argsort(rids)
        positions = np.zeros(n, dtype=np.int64)
        positions[rids[order]] = np.arange(len(rids))
        sql_docs = pc.if_else(pa.array(has_doc), pc.take(decided.column("doc").take(pa.array(order)), pa.array(positions)),
                              sql_docs)
    fallback_mask = pa.array(np.isin(np.arange(n), todo))
    docs = pc.if_else(fallback_mask, pa.array(doc_values, pa.string()), sql_docs)
    # A decided line keeps its line end: it starts with "{" and ends with "}" and a line
    # end, which is all Python's strip() would take off (the rejected raw text is
    # taken without it).
    texts = pc.if_else(fallback_mask, pa.array(fallback_text, pa.string()), text)
    table = pa.table(
        {
            "rid": pa.array(np.arange(n, dtype=np.int64)),
            "line": lines.column("line"),
            "text": texts,
            "raw": pa.nulls(n, pa.binary()),
            "doc": docs,
            "pre_error": pa.array(pre_error, pa.string()),
            "pre_field": pa.array(pre_field, pa.string()),
            "blank": pa.array(np.zeros(n, dtype=bool)),
            "maybe_pii": loader._maybe_pii(docs) if pii_gate else pa.nulls(n, pa.bool_()),
        },
        schema=loader.BATCH_SCHEMA,
    ).filter(pa.array(keep))
    table = table.set_column(0, "rid", pa.array(np.arange(table.num_rows, dtype=np.int64)))
    return loader._parallel(table)
