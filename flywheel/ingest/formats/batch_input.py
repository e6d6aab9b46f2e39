"""The requests of a day's OpenAI Batch API input files, held compressed in Arrow.

A Batch API output line names its request by ``custom_id``; the request (model,
messages, user, metadata) is in the input file. A day of a million requests held as
Python dicts took about 4 GB, and even as Arrow text about the size of the file (1 GB).
Here the custom ids stay an Arrow column (``str(custom_id)``, the key output lines are
matched with), and each request's text, a JSON object holding its body under ``"body"``
(the input line itself, or for a line read by Python ``{"body": ...}`` written anew), is
kept in zstd-compressed Arrow IPC chunks of a few thousand requests: requests of one
application share long prompts, and a chunk compresses about 20 times (1M demo
requests: about 40 MB). A batch of output lines asks for the requests it names at once
(:meth:`BatchRequests.subset`): only the chunks holding them are decompressed. The input
lines are read by DuckDB a block at a time (:mod:`flywheel.ingest.fast.batch_input_sql`),
the few it could read otherwise than Python by Python.

The day's companion dict (see :func:`flywheel.ingest.formats.load_companion`) holds
each input file's :class:`BatchRequests` under a key of its own, so that the loader's
plain ``dict.update`` merges files without copying them; :func:`day_batch_requests`
puts them together (a later file wins a custom_id, as a dict update did).
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Iterator, Mapping
from pathlib import Path
from typing import Any, NamedTuple

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from flywheel.ingest.formats.jsonio import _iter_json_items, _unreadable_on_decode_errors, has_undecodable

# The first item of the companion key of an input file's requests: (BATCH_INPUT, path).
BATCH_INPUT = "openai_batch_input"
# Requests per compressed chunk (also the input lines parsed before they go to Arrow):
# a chunk of demo requests is about 8 MB of JSON text before compression.
CHUNK_ROWS = 8192
_LINES = pa.schema([("line", pa.string())])
_IDS = pa.schema([("custom_id", pa.string()), ("row", pa.int64()), ("object", pa.bool_())])
_SUBSET = pa.schema([("custom_id", pa.string()), ("line", pa.string()), ("object", pa.bool_())])
_COMPRESSED = pa.ipc.IpcWriteOptions(compression="zstd")
_MISSING = object()


class Rows(NamedTuple):
    """Requests in file order, before they are stored: ``texts`` each a JSON object
    holding the body under ``"body"`` (null: no body), ``objects`` where the body is an
    object DuckDB reads as Python does; ``odd``: (custom_id, text) of the custom ids
    that are not valid Unicode (no Arrow string holds them), also in file order."""

    custom_ids: pa.Array
    texts: pa.Array
    objects: np.ndarray
    odd: list[tuple[str, str | None]]


class BatchRequests(Mapping):
    """The input lines of Batch API requests by ``custom_id`` (a read-only mapping).

    ``requests[custom_id]`` is ``{"body": body}``, the body as the input line had it
    (parsed anew on each look-up). :attr:`ids` has a row per custom_id: ``custom_id``,
    ``row`` (where its text is in the chunks) and ``object`` (the body is an object
    whose text DuckDB reads as Python does: what the fast path joins). A custom_id
    holding text that is not UTF-8 (lone surrogates) cannot be an Arrow string: those
    few are kept in a dict of their own.
    """

    def __init__(self, ids: pa.Table, chunks: list[pa.Buffer], chunk_starts: np.ndarray,
                 odd: dict[str, str | None]) -> None:
        self.ids = ids
        self._chunks = chunks
        self._starts = chunk_starts  # the first row of each chunk, and the rows in all
        self._odd = odd
        self._index: dict[str, int] | None = None
        self._current: np.ndarray | None = None
        self._by_row: tuple[np.ndarray, np.ndarray] | None = None

    @classmethod
    def read(cls, path) -> BatchRequests:
        """Return the requests of one input file (a later line wins a custom_id).

        Lines that are broken or have no ``custom_id`` are skipped here: the output
        lines that refer to them become error records. Read a block of lines at a time
        by DuckDB; a file it cannot cut into lines as Python does, by :meth:`read_python`.
        """
        from flywheel.ingest.fast import batch_input_sql

        store = _ChunkWriter()
        try:
            for rows in batch_input_sql.request_rows(Path(path), python_row=_python_request):
                store.add_rows(rows)
        except batch_input_sql.NotVectorized:
            return cls.read_python(path)
        return store.requests()

    @classmethod
    def read_python(cls, path) -> BatchRequests:
        """Return what :meth:`read` returns, every line read by Python's JSON reader."""
        store = _ChunkWriter()
        rows: list[tuple[str, Any]] = []
        with _unreadable_on_decode_errors(path):
            for item in _iter_json_items(path):
                value = item.value
                if isinstance(value, dict) and value.get("custom_id") is not None:
                    rows.append((value["custom_id"], value.get("body")))
                    if len(rows) >= CHUNK_ROWS:
                        store.add(rows)
                        rows = []
        store.add(rows)
        return store.requests()

    def __len__(self) -> int:
        return self.ids.num_rows + len(self._odd)

    def __iter__(self) -> Iterator[str]:
        yield from self.ids.column("custom_id").to_pylist()
        yield from self._odd

    def __getitem__(self, custom_id: str) -> dict:
        found = self.get(custom_id, _MISSING)
        if found is _MISSING:
            raise KeyError(custom_id)
        return found

    def __contains__(self, custom_id: object) -> bool:
        return self.get(custom_id, _MISSING) is not _MISSING

    def get(self, custom_id: Any, default: Any = None) -> Any:
        """Return ``{"body": body}`` of the request ``custom_id`` (a str), else ``default``.

        One look-up decompresses a chunk: many go through :meth:`subset`.
        """
        if not isinstance(custom_id, str):
            return default
        if custom_id in self._odd:
            return {"body": _body_of(self._odd[custom_id])}
        if self._index is None:
            # Built on the first single look-up only (a custom_id a batch's subset did
            # not foresee): about 130 MB at 1M requests.
            self._index = {key: i for i, key in enumerate(self.ids.column("custom_id").to_pylist())}
        position = self._index.get(custom_id)
        if position is None:
            return default
        row = self.ids.column("row")[position].as_py()
        return {"body": _body_of(self._lines(np.array([row], dtype=np.int64))[0].as_py())}

    def subset(self, custom_ids: Iterable[str | None] | pa.Array) -> NamedRequests:
        """Return the requests of the given custom ids (they may repeat, be null or
        unknown), decompressing only the chunks that hold them.

        A chunk of which at least half is asked for is taken whole (no copy of its
        texts): the requests are then more than those asked, each the day's own."""
        asked = pc.drop_null(pc.unique(_strings(custom_ids))).cast(pa.string())
        found = self.ids.filter(pc.is_in(self.ids.column("custom_id"), value_set=asked))
        rows = np.sort(found.column("row").to_numpy())
        chunk_of = np.searchsorted(self._starts, rows, side="right") - 1
        wanted = np.bincount(chunk_of, minlength=len(self._chunks))
        whole = (wanted * 2 >= np.diff(self._starts)) & self._all_current
        rows = np.union1d(rows, self._rows_of(np.flatnonzero(whole & (wanted > 0))))
        # In the order of the chunks: each chunk's texts are taken once, not copied again
        # to be put back in the order asked (nothing needs it).
        found = self.ids.take(pa.array(self._id_positions(rows)))
        table = pa.table([found.column("custom_id"), self._lines(rows), found.column("object")], schema=_SUBSET)
        return NamedRequests(table, asked, parent=self)

    @property
    def _all_current(self) -> np.ndarray:
        """Where every row of a chunk is its custom_id's request (no later line replaced one)."""
        if self._current is None:
            chunk_of = np.searchsorted(self._starts, self.ids.column("row").to_numpy(), side="right") - 1
            self._current = np.bincount(chunk_of, minlength=len(self._chunks)) == np.diff(self._starts)
        return self._current

    def _rows_of(self, chunks: np.ndarray) -> np.ndarray:
        """Return the rows of the given chunks."""
        return np.concatenate([np.arange(self._starts[c], self._starts[c + 1]) for c in chunks]
                              or [np.zeros(0, dtype=np.int64)])

    def _id_positions(self, rows: np.ndarray) -> np.ndarray:
        """Return the positions in :attr:`ids` of the given rows (each one of them)."""
        if self._by_row is None:
            order = np.argsort(self.ids.column("row").to_numpy(), kind="stable")
            self._by_row = (order, self.ids.column("row").to_numpy()[order])
        order, ordered = self._by_row
        return order[np.searchsorted(ordered, rows)]

    def _lines(self, rows: np.ndarray) -> pa.ChunkedArray:
        """Return the texts (or nulls) of the given rows, which are in ascending order."""
        if len(rows) == 0:
            return pa.chunked_array([], pa.string())
        chunk_of = np.searchsorted(self._starts, rows, side="right") - 1
        cuts = np.flatnonzero(np.diff(chunk_of)) + 1
        parts = []
        for chunk, wanted in zip(chunk_of[np.concatenate([[0], cuts])], np.split(rows, cuts)):
            column = pa.ipc.open_stream(self._chunks[chunk]).read_all().column("line")
            offsets = wanted - self._starts[chunk]
            whole = len(offsets) == len(column)
            parts.extend(column.chunks if whole else column.take(pa.array(offsets)).chunks)
        return pa.chunked_array(parts, pa.string())


class NamedRequests(Mapping):
    """The requests a batch of output lines names (see :meth:`BatchRequests.subset`).

    :attr:`table` has ``custom_id, line, object`` (see :attr:`BatchRequests.ids`;
    ``line`` a JSON object holding the body under ``"body"``).

    A custom_id that was asked for and is not here is not in the day; any other is
    asked of the day's requests (one look-up: a custom_id DuckDB read otherwise than
    Python, such as ``true``, which Python's ``str`` spells ``True``).
    """

    def __init__(self, table: pa.Table, asked: pa.Array, *, parent: BatchRequests) -> None:
        self.table = table
        self._asked = asked
        self._parent = parent
        self._index: dict[str, int] | None = None
        self._asked_set: set[str] | None = None

    def __len__(self) -> int:
        return self.table.num_rows

    def __iter__(self) -> Iterator[str]:
        yield from self.table.column("custom_id").to_pylist()

    def __getitem__(self, custom_id: str) -> dict:
        found = self.get(custom_id, _MISSING)
        if found is _MISSING:
            raise KeyError(custom_id)
        return found

    def get(self, custom_id: Any, default: Any = None) -> Any:
        """Return ``{"body": body}`` of the request ``custom_id`` (a str), else ``default``."""
        if not isinstance(custom_id, str):
            return default
        if self._index is None:
            self._index = {key: i for i, key in enumerate(self.table.column("custom_id").to_pylist())}
            self._asked_set = set(self._asked.to_pylist())
        position = self._index.get(custom_id)
        if position is not None:
            return {"body": _body_of(self.table.column("line")[position].as_py())}
        if custom_id in self._asked_set:
            return default
        return self._parent.get(custom_id, default)


class _ChunkWriter:
    """Turns requests into compressed chunks of their texts and the custom_id rows."""

    def __init__(self) -> None:
        self.chunks: list[pa.Buffer] = []
        self.starts = [0]
        self.ids: list[pa.Table] = []
        self.odd: dict[str, str | None] = {}

    def add(self, rows: list[tuple[Any, Any]]) -> None:
        """Add (custom_id, body) pairs read by Python (in file order)."""
        stored = [_python_request(custom_id, body) for custom_id, body in rows]
        keep = []
        for custom_id, text, is_object in stored:
            if has_undecodable(custom_id):
                self.odd[custom_id] = text
            else:
                keep.append((custom_id, text, is_object))
        self.add_rows(Rows(pa.array([k[0] for k in keep], pa.string()), pa.array([k[1] for k in keep], pa.string()),
                           np.array([k[2] for k in keep], dtype=bool), []))

    def add_rows(self, rows: Rows) -> None:
        """Add requests (in file order), in chunks of at most CHUNK_ROWS."""
        self.odd.update(rows.odd)
        for at in range(0, len(rows.texts), CHUNK_ROWS):
            texts = rows.texts.slice(at, CHUNK_ROWS)
            sink = pa.BufferOutputStream()
            with pa.ipc.new_stream(sink, _LINES, options=_COMPRESSED) as writer:
                writer.write_table(pa.table([texts], schema=_LINES))
            self.chunks.append(sink.getvalue())
            start = self.starts[-1]
            self.ids.append(pa.table([rows.custom_ids.slice(at, CHUNK_ROWS),
                                      pa.array(np.arange(start, start + len(texts), dtype=np.int64)),
                                      pa.array(rows.objects[at:at + CHUNK_ROWS], pa.bool_())], schema=_IDS))
            self.starts.append(start + len(texts))

    def requests(self) -> BatchRequests:
        """Return the requests added (a later pair wins a custom_id)."""
        ids = _last_of_each(pa.concat_tables(self.ids) if self.ids else _IDS.empty_table())
        return BatchRequests(ids, self.chunks, np.array(self.starts, dtype=np.int64), self.odd)


def _python_request(custom_id: Any, body: Any) -> tuple[str, str | None, bool]:
    """Return ``str(custom_id)``, the text kept and whether the body is an object DuckDB
    may read, for a request read by Python's JSON reader.

    The text is ``{"body": ...}`` with the body written as the fast path always joined
    it (``ensure_ascii=False``); a body holding lone surrogates (bytes that were not
    UTF-8, or escapes) is written with JSON escapes instead, and DuckDB is not given it.
    """
    if body is None:
        return str(custom_id), None, False
    text = json.dumps(body, ensure_ascii=False)
    if has_undecodable(text):
        return str(custom_id), '{"body": ' + json.dumps(body) + "}", False
    return str(custom_id), '{"body": ' + text + "}", isinstance(body, dict)


EMPTY = BatchRequests(_IDS.empty_table(), [], np.zeros(1, dtype=np.int64), {})


def day_batch_requests(companions: Mapping | None) -> BatchRequests:
    """Return the Batch API requests of the day's companion records (the loader's dict,
    or a :class:`BatchRequests` itself): every input file's, a later file winning a
    custom_id."""
    if isinstance(companions, BatchRequests):
        return companions
    files = [value for key, value in (companions or {}).items()
             if isinstance(key, tuple) and key[:1] == (BATCH_INPUT,) and isinstance(value, BatchRequests)]
    if not files:
        return EMPTY
    if len(files) == 1:
        return files[0]
    chunks: list[pa.Buffer] = []
    starts = [np.zeros(1, dtype=np.int64)]
    ids, odd = [], {}
    for found in files:  # each file's rows follow the files before it
        offset = starts[-1][-1]
        chunks.extend(found._chunks)
        starts.append(found._starts[1:] + offset)
        ids.append(found.ids.set_column(1, "row", pc.add(found.ids.column("row"), pa.scalar(offset, pa.int64()))))
        odd.update(found._odd)
    return BatchRequests(_last_of_each(pa.concat_tables(ids)), chunks, np.concatenate(starts), odd)


def _last_of_each(table: pa.Table) -> pa.Table:
    """Return the rows of ``table`` keeping the last row of each custom_id (in order)."""
    ids = table.column("custom_id")
    if pc.count_distinct(ids).as_py() == table.num_rows:
        return table
    rows = pa.table({"custom_id": ids, "position": pa.array(np.arange(table.num_rows, dtype=np.int64))})
    last = rows.group_by("custom_id", use_threads=False).aggregate([("position", "max")]).column("position_max")
    return table.take(pa.array(np.sort(last.to_numpy())))


def _strings(values: Iterable[str | None] | pa.Array) -> pa.Array:
    """Return ``values`` as an Arrow string array (those that are not valid Unicode
    left out: no Arrow string holds them, and the day's odd ones are found apart)."""
    if isinstance(values, (pa.Array, pa.ChunkedArray)):
        return values
    return pa.array([v for v in values if v is None or not has_undecodable(v)], pa.string())


def _body_of(text: str | None) -> Any:
    """Return the body a stored text holds (None: no body)."""
    return None if text is None else json.loads(text).get("body")
