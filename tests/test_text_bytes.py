"""The fast paths' work on the bytes of a batch's strings (flywheel.ingest.fast.text_bytes)."""

from __future__ import annotations

import numpy as np
import pyarrow as pa
import pytest

from flywheel.ingest.fast.text_bytes import filter_rows


def _table() -> pa.Table:
    """Rows as the span statement gives them: long texts only for the rows it takes, in
    several chunks, one of them a slice (its offsets do not start at zero)."""
    texts = ["ünïcode text", None, "a", None, "", "third", None, "😀 four"]
    numbers = list(range(len(texts)))
    sliced = pa.array(["dropped before", *texts[4:]]).slice(1)
    return pa.table({
        "n": pa.chunked_array([numbers[:4], numbers[4:]], pa.int64()),
        "text": pa.chunked_array([pa.array(texts[:4]), sliced]),
        "other": pa.chunked_array([["x", "y", "z", "w"], ["v", "u", "t", "s"]]),
    })


@pytest.mark.parametrize("keep", [
    [True, False, True, False, True, True, False, True],  # every row left out null or empty
    [False] * 8,
    [True] * 8,
    [True, True, False, False, False, False, True, False],  # nulls kept, a text left out
])
def test_filter_rows_gives_what_table_filter_gives(keep):
    table = _table()
    mask = np.array(keep)
    assert filter_rows(table, mask).equals(table.filter(pa.array(mask)))


def test_filter_rows_keeps_the_text_data_where_the_rows_left_out_have_none():
    table = _table()
    mask = np.array([True, False, True, False, True, True, False, True])
    filtered = filter_rows(table, mask)
    data = [chunk.buffers()[2].address for chunk in table.column("text").chunks]
    assert [chunk.buffers()[2].address for chunk in filtered.column("text").chunks] == data
    # A column whose rows left out hold text is copied, as Table.filter copies it.
    assert filtered.column("other").chunks[0].buffers()[2].address != table.column("other").chunks[0].buffers()[2].address
