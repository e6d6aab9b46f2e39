"""Quick work on the bytes of a batch's strings, for the fast paths: tests of a whole
batch of lines (a scan of the strings' data buffer, numpy or one bytes search per chunk,
is several times faster than Arrow's search string by string), and a filter of rows that
leaves the strings' data where it is."""

from __future__ import annotations

import re
from collections.abc import Iterator

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc


def _string_bytes(text: pa.Array | pa.ChunkedArray) -> Iterator[memoryview]:
    """Yield, for each chunk of ``text``, the bytes of its strings one after another (no
    copy; the bytes of values sliced off are left out)."""
    for chunk in text.chunks if isinstance(text, pa.ChunkedArray) else [text]:
        _, offsets, data = chunk.buffers()
        if len(chunk) == 0 or data is None:
            continue
        ends = np.frombuffer(offsets, dtype=np.int32)[chunk.offset:chunk.offset + len(chunk) + 1]
        yield memoryview(data)[ends[0]:ends[-1]]


def has_byte(text: pa.Array | pa.ChunkedArray, byte: int) -> bool:
    """Return whether a string of ``text`` holds ``byte``."""
    return any((np.frombuffer(view, dtype=np.uint8) == byte).any() for view in _string_bytes(text))


def holds(text: pa.Array | pa.ChunkedArray, needle: bytes) -> bool:
    """Return whether the strings of ``text`` hold ``needle`` (True also where it runs
    from the end of one string into the next: for a test that may only say too much)."""
    search = re.compile(re.escape(needle)).search
    return any(search(view) is not None for view in _string_bytes(text))


def lone_carriage_return(text: pa.Array | pa.ChunkedArray) -> bool:
    """Return whether a string of ``text`` (lines) holds a carriage return that no newline
    follows: Python's text reader ends a line there too, the loader's reader does not."""
    return has_byte(text, 13) and bool(pc.any(pc.match_substring_regex(text, r"\r[^\n]|\r$")).as_py())


def filter_rows(table: pa.Table, keep: np.ndarray) -> pa.Table:
    """Return the rows of ``table`` where ``keep`` (booleans) holds, as ``Table.filter``
    does, but a string column whose rows left out are all null or empty keeps its data
    buffers (shared with ``table``): only its offsets and validity are built anew. (The
    span statement gives its long texts only for the spans it takes; copying them took
    about as long as the batch's other work after the statement.)"""
    mask = pa.array(keep)
    columns = []
    for column in table.columns:
        shared = _filtered_in_place(column, keep) if column.type == pa.string() else None
        columns.append(shared if shared is not None else pc.filter(column, mask))
    return pa.Table.from_arrays(columns, schema=table.schema)


def _filtered_in_place(column: pa.ChunkedArray, keep: np.ndarray) -> pa.ChunkedArray | None:
    """Return the strings of ``column`` where ``keep`` holds, on the data buffers of
    ``column``; None where a string left out has a byte (its data would have to go)."""
    chunks, start = [], 0
    for chunk in column.chunks:
        n = len(chunk)
        kept, start = keep[start:start + n], start + n
        _, offsets, data = chunk.buffers()
        ends = np.frombuffer(offsets, dtype=np.int32)[chunk.offset:chunk.offset + n + 1]
        if np.diff(ends)[~kept].any():
            return None
        rows = np.flatnonzero(kept)
        if not len(rows):
            continue
        # (A row left out is empty: the next row kept starts where the one before it ends.)
        new_ends = np.append(ends[rows], ends[rows[-1] + 1]).astype(np.int32)
        validity, nulls = None, 0
        if chunk.null_count:
            valid = chunk.is_valid().to_numpy(zero_copy_only=False)[rows]
            nulls = len(rows) - int(valid.sum())
            validity = pa.py_buffer(np.packbits(valid, bitorder="little")) if nulls else None
        chunks.append(pa.Array.from_buffers(pa.string(), len(rows), [validity, pa.py_buffer(new_ends),
                                                                     data or pa.py_buffer(b"")], null_count=nulls))
    return pa.chunked_array(chunks, type=pa.string())
