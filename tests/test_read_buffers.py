"""The read buffers of JSON-lines files (flywheel.ingest.loader._Buffers): used again
only once nothing holds them, and, for the canonical path, never more than a few blocks
ahead of DuckDB."""

from __future__ import annotations

import json
import threading
import time

import numpy as np
import pyarrow as pa

from flywheel.ingest import loader


def test_a_buffer_is_used_again_only_when_nothing_holds_it():
    buffers = loader._Buffers(keep=2)
    first = buffers.take(1000)
    first[:5] = np.frombuffer(b"hello", np.uint8)
    held = pa.py_buffer(memoryview(first)[:5])  # as the lines of a block hold it
    del first
    second = buffers.take(1000)
    assert bytes(held) == b"hello"  # not handed out again while an Arrow buffer holds it
    assert second.base is not None and not np.shares_memory(second, np.frombuffer(held, np.uint8))
    del held
    third = buffers.take(900)  # free again, and large enough
    assert len(third) == 900
    assert third.base is buffers._pool[0]


def test_waiting_for_a_free_buffer_bounds_the_blocks_ahead_and_never_stalls():
    buffers = loader._Buffers(keep=2, wait=True, patience=5.0)
    a, b = buffers.take(100), buffers.take(100)

    def release():
        time.sleep(0.2)
        nonlocal a
        a = None

    threading.Thread(target=release).start()
    started = time.monotonic()
    c = buffers.take(100)  # waits until `a` is dropped, then gets its buffer
    assert 0.1 < time.monotonic() - started < 4.0
    assert c.base is buffers._pool[0]
    # A consumer that keeps everything: after `patience`, new buffers, no more waiting.
    stubborn = loader._Buffers(keep=1, wait=True, patience=0.1)
    kept = [stubborn.take(100)]
    started = time.monotonic()
    kept.append(stubborn.take(100))
    kept.append(stubborn.take(100))
    assert time.monotonic() - started < 1.0
    assert len({id(k.base) for k in kept}) == 3
    del b


def test_lines_stay_right_when_blocks_reuse_their_buffers(tmp_path, monkeypatch):
    # Many small blocks, each table kept for a while by a consumer (as DuckDB does):
    # every line must still read as written, whatever buffer its block came in.
    path = tmp_path / "a.jsonl"
    lines = [json.dumps({"log_id": f"id-{i}", "text": "x" * (i % 300)}) for i in range(4000)]
    path.write_text("\n".join(lines) + "\n")
    taken = []  # the buffer each block was read into (its id: a reference would hold it)
    take = loader._Buffers.take

    def taking(self, size):
        buffer = take(self, size)
        taken.append(id(buffer.base))
        return buffer

    monkeypatch.setattr(loader._Buffers, "take", taking)
    seen: list[str] = []
    window: list[pa.Table] = []
    started = time.monotonic()
    for table in loader._line_batches(path, block_bytes=20_000, ahead=3):
        window.append(table)
        if len(window) > 1:  # the consumer lets go of its oldest block
            seen.extend(t.rstrip("\n") for t in window.pop(0).column("text").to_pylist())
    for table in window:
        seen.extend(t.rstrip("\n") for t in table.column("text").to_pylist())
    assert seen == lines
    # The blocks took turns in a few buffers (at most the three kept), without waiting
    # for the patience to end.
    assert len(taken) > 20 and 2 <= len(set(taken)) <= 3
    assert time.monotonic() - started < 1.5
