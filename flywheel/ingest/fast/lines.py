"""The driver of the fast paths: line batches in, staged batches with canonical docs out.

Each batch of lines goes through its format's mapping statement (see
:mod:`flywheel.ingest.fast.openai_sql`), which returns the canonical JSON document of
every line it could decide; the other lines are mapped by the format's Python mapper,
exactly as :func:`flywheel.ingest.formats.jsonio._iter_lines` and
:func:`flywheel.ingest.formats.common._map_value` would have.
"""

from __future__ import annotations

import contextlib
import json
from collections.abc import Callable, Iterator
from pathlib import Path

import duckdb
import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from flywheel.ingest.fast import openai_sql
from flywheel.ingest.formats.common import _map_value
from flywheel.ingest.formats.jsonio import _JSON_ERRORS, _is_gzip, _json_error
from flywheel.ingest.formats.openai import _map_batch_output, _map_openai_chat
from flywheel.ingest.records import UnreadableFile


MAPPING_CHUNK_ROWS = 1024


class NotFast(Exception):
    """The file cannot take the fast path; the loader reads it the Python way."""


# The fast formats: each gives, from the day's companion records, the mapping statement
# over a relation of lines (and the batch), and the Python mapper of one record.
_FORMATS = {
    "openai_chat": lambda requests: (openai_sql.openai_chat_docs, _map_openai_chat),
    "openai_batch_output": lambda requests: (
        lambda relation, lines: openai_sql.openai_batch_docs(relation, lines, "fast_requests", requests),
        lambda obj: _map_batch_output(obj, requests),
    ),
}


def handles(fmt: str) -> bool:
    """Return whether ``fmt`` has a fast path."""
    return fmt in _FORMATS


def fast_batches(con: duckdb.DuckDBPyConnection, path: Path, fmt: str, *,
                 pii_gate: bool, batch_requests: dict | None = None,
                 stats: dict | None = None) -> Iterator[pa.Table]:
    """Yield the staged batches (the loader's ``BATCH_SCHEMA``) of a JSON-lines file of
    ``fmt``, one row per record, blank lines left out, as the Python reader numbers them.

    ``batch_requests``: the day's companion records (the loader's), for Batch API
    output files their input lines by custom_id. ``stats``, when given, counts the records mapped in SQL (``in_sql``) and in Python
    (``in_python``).

    Raises:
        NotFast: the file is not plain JSON lines the way this reader can number them;
            it may be raised after some batches were yielded.
    """
    from flywheel.ingest import loader  # the loader imports this module

    requests = batch_requests or {}
    statement, mapper = _FORMATS[fmt](requests)
    if _is_gzip(path) != path.name.lower().endswith(".gz"):
        raise NotFast("gzip by its magic bytes only")
    first = True
    try:
        for lines in loader._line_batches(path):
            if first:
                _check_first(lines)
                first = False
            with _requests_of(con, lines, requests, enabled=fmt == "openai_batch_output"):
                yield _mapped(con, lines, statement, mapper, pii_gate=pii_gate,
                              stats=stats if stats is not None else {})
    except UnreadableFile as exc:  # the Python reader words these its own way
        raise NotFast(exc.reason) from None


@contextlib.contextmanager
def _requests_of(con, lines: pa.Table, requests: dict, *, enabled: bool):
    """Register ``fast_requests(custom_id, body)``: the JSON text of the input line's
    body (an object) of each custom id the batch's lines name (only those: the day's
    requests are not copied as a whole)."""
    if not enabled:
        yield
        return
    con.register("fast_lines_ids", lines)
    try:
        ids = con.execute(
            """SELECT DISTINCT try(from_json(text, '{"custom_id":"VARCHAR"}')).custom_id FROM fast_lines_ids
               WHERE NOT blank"""
        ).fetchall()
    finally:
        con.unregister("fast_lines_ids")
    found, bodies = [], []
    for (custom_id,) in ids:
        line = requests.get(custom_id) if custom_id is not None else None
        body = line.get("body") if isinstance(line, dict) else None
        if isinstance(body, dict):
            found.append(custom_id)
            bodies.append(json.dumps(body, ensure_ascii=False))
    con.register("fast_requests", pa.table({"custom_id": pa.array(found, pa.string()),
                                            "body": pa.array(bodies, pa.string())}))
    try:
        yield
    finally:
        con.unregister("fast_requests")


@contextlib.contextmanager
def _no_filter_pushdown(con):
    """Run a statement without filter pushdown: DuckDB would otherwise repeat each
    record's parse for every test of the WHERE clause that names a parsed field."""
    previous = con.execute("SELECT current_setting('disabled_optimizers')").fetchone()[0]
    con.execute("SET disabled_optimizers = 'filter_pushdown'")
    try:
        yield
    finally:
        con.execute(f"SET disabled_optimizers = '{previous}'")


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
            pii_gate: bool, stats: dict) -> pa.Table:
    """Return the staged batch of one batch of lines: docs from SQL, else from Python."""
    from flywheel.ingest import loader

    text = lines.column("text")
    if text.null_count:
        raise NotFast("not UTF-8")
    if lines.column("pre_error").null_count < lines.num_rows:  # a gzip stream broke off
        raise NotFast("a broken gzip stream")
    # Python's text reader also ends a line at a lone carriage return.
    if pc.any(pc.match_substring(text, "\r")).as_py() and \
            pc.any(pc.match_substring_regex(text, r"\r[^\n]|\r$")).as_py():
        raise NotFast("a lone carriage return")
    n = lines.num_rows
    # Small record batches: DuckDB maps one per thread, and a batch of lines is only a
    # few of the loader's chunks.
    con.register("fast_lines", pa.Table.from_batches(lines.to_batches(max_chunksize=MAPPING_CHUNK_ROWS), lines.schema))
    try:
        with _no_filter_pushdown(con):
            decided = con.execute(statement("fast_lines", lines)).fetch_arrow_table()
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
            value, error = None, _json_error(err)
        rec = _map_value(int(line_numbers[i]), stripped, value, mapper, error)
        fallback_text[i] = rec.raw
        if rec.record is None:
            pre_error[i], pre_field[i] = rec.error, rec.field
        else:
            doc_values[i] = json.dumps(rec.record, default=str, ensure_ascii=False)
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
