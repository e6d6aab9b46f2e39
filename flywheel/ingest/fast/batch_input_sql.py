"""Batch API input files read a block of lines at a time by DuckDB, not line by line in Python.

The requests of a day (see :mod:`flywheel.ingest.formats.batch_input`) are, for each
``custom_id``, the last input line that Python's JSON reader reads as an object with a
non-null ``custom_id``; its ``body`` is what the output line's record is made from.
Parsing every line and re-encoding its body in Python cost about 2 CPU-s per 100k demo
requests. Here each block of lines (the loader's own reader) goes through one
DuckDB statement that tells, for each line, whether it is an object, the types of its
``custom_id`` and ``body``, and the custom_id when it is a string. A line is kept as it
is, its text standing for the request (it holds the body under ``"body"``), when DuckDB
is sure to read it as Python does. Every other line goes through Python's reader, one
line at a time, exactly as :meth:`BatchRequests.read_python` reads every line.

DuckDB reads a JSON line as Python does but in these cases, which go to Python:

- a key written twice in one object: DuckDB takes the first value, Python the last (the
  key lists of every object are compared with their distinct keys);
- a trailing comma, or ``nan``/``inf``/``Infinity`` in any case: DuckDB accepts them,
  Python refuses them but for ``NaN``, ``Infinity`` and ``-Infinity``;
- a number beyond a double: Python's is infinite (and written ``Infinity``), DuckDB keeps
  its digits;
- nesting deeper than Python's recursion limit allows (a line of more than
  :data:`MAX_NODES` values);
- a lone surrogate in an escape (``"\\ud800"``): DuckDB refuses the line; text that is not
  UTF-8; a ``custom_id`` that is not a string (Python's ``str`` spells ``True``, ``1.0``).

The trailing commas, non-finite literals and long numbers are found by one regular
expression over the line (:data:`_UNSURE`), which may also match inside a string: such a
line merely goes to Python. A file the
loader's reader does not cut into lines as Python's text reader does (a lone carriage
return, a broken gzip stream, a JSON array, a first line that is not JSON by itself)
raises :class:`NotVectorized`: it is read the Python way as a whole.
"""

from __future__ import annotations

import json
import re
from collections import deque
from collections.abc import Iterator
from concurrent.futures import Future, ThreadPoolExecutor
from pathlib import Path
from typing import Any

import duckdb
import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from flywheel.ingest.formats.batch_input import Rows
from flywheel.ingest.fast.text_bytes import lone_carriage_return
from flywheel.ingest.formats.jsonio import _JSON_ERRORS, _is_gzip, has_undecodable

# A line of more values than this goes to Python: no deeper nesting than that, far below
# what Python's recursion limit (1,000 frames) lets its JSON reader read.
MAX_NODES = 500
# Blocks of lines read at once (each on one DuckDB thread), and their size.
WORKERS = 2
BLOCK_BYTES = 16 << 20
_WS = "[ \\t\\r\\n]*"
# Where a JSON value starts (the root of a line is an object: every value of interest
# follows one of these).
_VALUE = "[:,\\[]" + _WS
_UNSURE = "|".join([
    "," + _WS + "[\\]}]",  # a trailing comma
    _VALUE + "[-+]?(?i:nan|inf|infinity)" + _WS + "[,\\]}]",  # a non-finite literal
    _VALUE + "-?[0-9]+(?:\\.[0-9]+)?[eE][-+]?[0-9]{3}",  # an exponent of three digits or more
    _VALUE + "-?[0-9]{200}",  # digits enough to leave a double with a two-digit exponent
])
# Per line: the types of the root, custom_id and body (NULL for a line DuckDB cannot
# read), the custom_id as text, and whether DuckDB might read it otherwise than Python.
_CLASSIFY = f"""
WITH parsed AS (
    SELECT rid, unsure, try(json_type(text, ['$', '$.custom_id', '$.body'])) AS types,
        try(json_keys(text)) AS root, try(json_keys(text, '$.**')) AS nested,
        try(text ->> '$.custom_id') AS custom_id
    FROM input_lines
)
SELECT rid, types[1] AS root_type, types[2] AS id_type, types[3] AS body_type,
    CASE WHEN types[2] = 'VARCHAR' THEN custom_id END AS custom_id,
    unsure OR len(nested) > {MAX_NODES} OR list_unique(root) < len(root)
        OR coalesce(list_bool_or(list_transform(nested, k -> len(k) > 1 AND list_unique(k) < len(k))), false)
        AS unsure
FROM parsed
"""


class NotVectorized(Exception):
    """The file is not JSON lines as this reader can cut them: read it the Python way."""


def request_rows(path: Path, *, python_row) -> Iterator[Rows]:
    """Yield the requests of an input file block by block, in file order.

    ``python_row(custom_id, body)`` gives (``str(custom_id)``, text, object) of a line
    read by Python, stored as the Python reader stores it: the lines DuckDB cannot be
    trusted with.

    Raises:
        NotVectorized: before or after some blocks were yielded.
    """
    from flywheel.ingest import loader  # the loader imports the formats

    if _is_gzip(path) != path.name.endswith(".gz"):
        raise NotVectorized("gzip by its magic bytes only")
    first = True
    # DuckDB reads a block of lines on one thread: two blocks go at once, each on a
    # cursor of its own, while this thread reads the next block.
    with duckdb.connect() as con, ThreadPoolExecutor(WORKERS) as pool:
        pending: deque[Future] = deque()
        try:
            for lines in loader._line_batches(path, block_bytes=BLOCK_BYTES):
                if lines.column("pre_error").null_count < lines.num_rows:
                    raise NotVectorized("a broken gzip stream")
                if first:
                    first = not _first_line_is_json(lines)
                pending.append(pool.submit(_rows, con, lines, python_row))
                if len(pending) >= WORKERS:
                    yield pending.popleft().result()
            while pending:
                yield pending.popleft().result()
        except loader.UnreadableFile as exc:
            raise NotVectorized(exc.reason) from None
        finally:
            for future in pending:
                future.cancel()


def _first_line_is_json(lines: pa.Table) -> bool:
    """Return True when the block holds the file's first non-blank line (False when it
    is all blank); raise NotVectorized unless that line is a JSON value by itself that
    is not an array (else Python reads the file as one document or an array)."""
    column = lines.column("text")
    for i in range(lines.num_rows):
        text = column[i].as_py()
        if text is None:
            raise NotVectorized("the first line is not UTF-8")
        if text.strip():
            if text.lstrip().startswith("["):
                raise NotVectorized("a JSON array")
            try:
                json.loads(text.rstrip("\r\n"))
            except _JSON_ERRORS:
                raise NotVectorized("the first line is not JSON by itself") from None
            return True
    return False


def _rows(con: duckdb.DuckDBPyConnection, lines: pa.Table, python_row) -> Rows:
    """Return the requests of one block of lines (see :func:`request_rows`), read on a
    cursor of its own of ``con``."""
    text = lines.column("text")
    if lone_carriage_return(text):
        raise NotVectorized("a lone carriage return")
    blank = lines.column("blank").to_numpy(zero_copy_only=False)
    utf8 = text.is_valid().to_numpy(zero_copy_only=False)
    # (RE2 in Arrow: about twice as fast as the same expression in DuckDB)
    unsure = pc.fill_null(pc.match_substring_regex(text, _UNSURE), True)
    candidates = pa.table({"rid": lines.column("rid"), "text": text, "unsure": unsure}).filter(
        pa.array(~blank & utf8))
    with con.cursor() as cursor:
        cursor.register("input_lines", candidates)
        found = cursor.execute(_CLASSIFY).fetch_arrow_table().sort_by("rid")
    rids = found.column("rid").to_numpy()
    readable = found.column("root_type").is_valid().to_numpy(zero_copy_only=False)
    unsure = pc.fill_null(found.column("unsure"), True).to_numpy(zero_copy_only=False)
    sure_object = ~unsure & _equal(found.column("root_type"), "OBJECT")
    id_type = found.column("id_type")
    kept = sure_object & _equal(id_type, "VARCHAR")
    # An object with a null or no custom_id holds no request; any other custom_id
    # (a number, a boolean) is spelled by Python's str.
    other_id = sure_object & ~kept & id_type.is_valid().to_numpy(zero_copy_only=False) & ~_equal(id_type, "NULL")
    python_rids = np.sort(np.concatenate([rids[~readable | unsure | other_id], np.flatnonzero(~blank & ~utf8)]))
    kept_rids = rids[kept]
    keep = pa.array(kept)
    custom_ids = found.column("custom_id").filter(keep)
    # (the usual block: every line kept, its texts as they are)
    whole = len(kept_rids) == lines.num_rows
    texts = text if whole else text.take(pa.array(kept_rids))
    objects = _equal(found.column("body_type").filter(keep), "OBJECT")
    if len(python_rids) == 0:
        return Rows(custom_ids, texts, objects, [])
    return _with_python_rows(lines, kept_rids, custom_ids, texts, objects, python_rids, python_row)


def _equal(values: pa.Array | pa.ChunkedArray, value: str) -> np.ndarray:
    """Return where ``values`` equal ``value`` (False where null), as numpy booleans."""
    return pc.fill_null(pc.equal(values, value), False).to_numpy(zero_copy_only=False)


def _with_python_rows(lines: pa.Table, kept_rids: np.ndarray, custom_ids: pa.Array, texts: pa.Array,
                      objects: np.ndarray, python_rids: np.ndarray, python_row) -> Rows:
    """Return the block's requests with those of the lines Python reads put in their place."""
    extra_rids, extra_ids, extra_texts, extra_objects, odd = [], [], [], [], []
    for rid in python_rids:
        found = _python_line(lines, int(rid))
        if found is None:
            continue
        custom_id, text, is_object = python_row(*found)
        if has_undecodable(custom_id):
            odd.append((custom_id, text))
            continue
        extra_rids.append(rid)
        extra_ids.append(custom_id)
        extra_texts.append(text)
        extra_objects.append(is_object)
    if not extra_rids:
        return Rows(custom_ids, texts, objects, odd)
    order = np.argsort(np.concatenate([kept_rids, np.array(extra_rids, dtype=np.int64)]), kind="stable")
    take = pa.array(order)
    return Rows(
        pa.concat_arrays([_array(custom_ids), pa.array(extra_ids, pa.string())]).take(take),
        pa.concat_arrays([_array(texts), pa.array(extra_texts, pa.string())]).take(take),
        np.concatenate([objects, np.array(extra_objects, dtype=bool)])[order],
        odd,
    )


def _array(values: pa.Array | pa.ChunkedArray) -> pa.Array:
    return values.combine_chunks() if isinstance(values, pa.ChunkedArray) else values


def _python_line(lines: pa.Table, rid: int) -> tuple[Any, Any] | None:
    """Return (custom_id, body) of one line as Python's reader reads it, or None when it
    holds no request (blank, broken, not an object, no custom_id)."""
    line = lines.column("text")[rid].as_py()
    if line is None:  # bytes that are not UTF-8, as Python's text reader decodes them
        line = lines.column("raw")[rid].as_py().decode("utf-8", errors="surrogateescape")
        if re.search("\r(?!\n)", line):
            raise NotVectorized("a lone carriage return")
    if not line.strip():
        return None
    try:
        value = json.loads(line.rstrip("\r\n"))
    except _JSON_ERRORS:
        return None
    if isinstance(value, dict) and value.get("custom_id") is not None:
        return value["custom_id"], value.get("body")
    return None
