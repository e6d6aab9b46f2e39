"""Quick tests of the bytes of a batch's lines, for the fast paths' checks of a whole
batch: a scan of the strings' data buffer (numpy, or one bytes search per chunk) is
several times faster than Arrow's search string by string."""

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
