"""The requests of a day's OpenAI Batch API input files, held compressed in Arrow.

A Batch API output line names its request by ``custom_id``; the request (model,
messages, user, metadata) is in the input file. A day of a million requests held as
Python dicts took about 4 GB, and even as Arrow text about the size of the file (1 GB).
Here the custom ids stay an Arrow column (``str(custom_id)``, the key output lines are
matched with), and the bodies, as JSON text, are kept in zstd-compressed Arrow IPC
chunks of a few thousand requests: requests of one application share long prompts, and
a chunk compresses about 20 times (1M demo requests: about 40 MB). A batch of output
lines asks for the requests it names at once (:meth:`BatchRequests.subset`): only the
chunks holding them are decompressed. The other fields of an input line (``method``,
``url``) are not kept: nothing reads them.

The day's companion dict (see :func:`flywheel.ingest.formats.load_companion`) holds
each input file's :class:`BatchRequests` under a key of its own, so that the loader's
plain ``dict.update`` merges files without copying them; :func:`day_batch_requests`
puts them together (a later file wins a custom_id, as a dict update did).
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Iterator, Mapping
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from flywheel.ingest.formats.jsonio import _iter_json_items, _unreadable_on_decode_errors, has_undecodable

# The first item of the companion key of an input file's requests: (BATCH_INPUT, path).
BATCH_INPUT = "openai_batch_input"
# Requests per compressed chunk (also the input lines parsed before they go to Arrow):
# a chunk of demo requests is about 8 MB of JSON text before compression.
CHUNK_ROWS = 8192
_BODIES = pa.schema([("body", pa.string())])
_IDS = pa.schema([("custom_id", pa.string()), ("row", pa.int64()), ("object", pa.bool_())])
_SUBSET = pa.schema([("custom_id", pa.string()), ("body", pa.string()), ("object", pa.bool_())])
_COMPRESSED = pa.ipc.IpcWriteOptions(compression="zstd")
_MISSING = object()


class BatchRequests(Mapping):
    """The input lines of Batch API requests by ``custom_id`` (a read-only mapping).

    ``requests[custom_id]`` is ``{"body": body}``, the body as the input line had it
    (parsed anew on each look-up). :attr:`ids` has a row per custom_id: ``custom_id``,
    ``row`` (where its body is in the chunks) and ``object`` (the body is an object
    whose text DuckDB can read: what the fast path joins). A custom_id holding text
    that is not UTF-8 (lone surrogates) cannot be an Arrow string: those few are kept
    in a dict of their own.
    """

    def __init__(self, ids: pa.Table, chunks: list[pa.Buffer], chunk_starts: np.ndarray,
                 odd: dict[str, str | None]) -> None:
        self.ids = ids
        self._chunks = chunks
        self._starts = chunk_starts  # the first row of each chunk, and the rows in all
        self._odd = odd
        self._index: dict[str, int] | None = None

    @classmethod
    def read(cls, path) -> BatchRequests:
        """Return the requests of one input file (a later line wins a custom_id).

        Lines that are broken or have no ``custom_id`` are skipped here: the output
        lines that refer to them become error records.
        """
        store = _ChunkWriter()
        rows: list[tuple[str, Any]] = []
        with _unreadable_on_decode_errors(path):
            for item in _iter_json_items(path):
                value = item.value
                if isinstance(value, dict) and value.get("custom_id") is not None:
                    rows.append((str(value["custom_id"]), value.get("body")))
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
            return {"body": _parsed(self._odd[custom_id])}
        if self._index is None:
            # Built on the first single look-up only (a custom_id a batch's subset did
            # not foresee): about 130 MB at 1M requests.
            self._index = {key: i for i, key in enumerate(self.ids.column("custom_id").to_pylist())}
        position = self._index.get(custom_id)
        if position is None:
            return default
        row = self.ids.column("row")[position].as_py()
        return {"body": _parsed(self._bodies(np.array([row], dtype=np.int64))[0].as_py())}

    def subset(self, custom_ids: Iterable[str | None] | pa.Array) -> NamedRequests:
        """Return the requests of the given custom ids (they may repeat, be null or
        unknown), decompressing only the chunks that hold them."""
        asked = pc.drop_null(pc.unique(_strings(custom_ids))).cast(pa.string())
        found = self.ids.filter(pc.is_in(self.ids.column("custom_id"), value_set=asked))
        bodies = self._bodies(found.column("row").to_numpy())
        table = pa.table([found.column("custom_id"), bodies, found.column("object")], schema=_SUBSET)
        return NamedRequests(table, asked, parent=self)

    def _bodies(self, rows: np.ndarray) -> pa.Array:
        """Return the bodies (JSON text or null) of the given rows, in their order."""
        if len(rows) == 0:
            return pa.array([], pa.string())
        chunk_of = np.searchsorted(self._starts, rows, side="right") - 1
        order = np.argsort(chunk_of, kind="stable")
        by_chunk = chunk_of[order]
        cuts = np.flatnonzero(np.diff(by_chunk)) + 1
        parts = []
        for chunk, wanted in zip(by_chunk[np.concatenate([[0], cuts])], np.split(rows[order], cuts)):
            column = pa.ipc.open_stream(self._chunks[chunk]).read_all().column("body")
            parts.append(column.take(pa.array(wanted - self._starts[chunk])))
        gathered = pa.chunked_array(parts, pa.string()).combine_chunks()
        return gathered.take(pa.array(np.argsort(order, kind="stable")))


class NamedRequests(Mapping):
    """The requests a batch of output lines names (see :meth:`BatchRequests.subset`).

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
            return {"body": _parsed(self.table.column("body")[position].as_py())}
        if custom_id in self._asked_set:
            return default
        return self._parent.get(custom_id, default)

    def object_bodies(self) -> pa.Table:
        """Return ``custom_id, body`` of the requests whose body is an object DuckDB can read."""
        return self.table.filter(self.table.column("object")).select(["custom_id", "body"])


class _ChunkWriter:
    """Turns (custom_id, body) pairs into compressed chunks and the custom_id rows."""

    def __init__(self) -> None:
        self.chunks: list[pa.Buffer] = []
        self.starts = [0]
        self.ids: list[pa.Table] = []
        self.odd: dict[str, str | None] = {}

    def add(self, rows: list[tuple[str, Any]]) -> None:
        """Add one chunk of pairs (in file order); a pair whose custom_id is not valid
        Unicode goes to ``odd`` instead."""
        # The very text the fast path always joined (ensure_ascii=False).
        texts = [None if body is None else json.dumps(body, ensure_ascii=False) for _, body in rows]
        objects = [isinstance(body, dict) for _, body in rows]
        ids = [custom_id for custom_id, _ in rows]
        try:
            bodies, custom_ids = pa.array(texts, pa.string()), pa.array(ids, pa.string())
        except UnicodeEncodeError:  # lone surrogates (bytes that were not UTF-8, or escapes)
            keep = []
            for i, (custom_id, body) in enumerate(rows):
                if has_undecodable(custom_id):
                    self.odd[custom_id] = None if body is None else json.dumps(body)
                    continue
                if texts[i] is not None and has_undecodable(texts[i]):
                    # JSON escapes keep its lone surrogates; DuckDB is not given it.
                    texts[i], objects[i] = json.dumps(body), False
                keep.append(i)
            bodies = pa.array([texts[i] for i in keep], pa.string())
            custom_ids = pa.array([ids[i] for i in keep], pa.string())
            objects = [objects[i] for i in keep]
        if len(bodies) == 0:
            return
        sink = pa.BufferOutputStream()
        with pa.ipc.new_stream(sink, _BODIES, options=_COMPRESSED) as writer:
            writer.write_table(pa.table([bodies], schema=_BODIES))
        self.chunks.append(sink.getvalue())
        start = self.starts[-1]
        self.ids.append(pa.table([custom_ids, pa.array(np.arange(start, start + len(bodies), dtype=np.int64)),
                                  pa.array(objects, pa.bool_())], schema=_IDS))
        self.starts.append(start + len(bodies))

    def requests(self) -> BatchRequests:
        """Return the requests added (a later pair wins a custom_id)."""
        ids = _last_of_each(pa.concat_tables(self.ids) if self.ids else _IDS.empty_table())
        return BatchRequests(ids, self.chunks, np.array(self.starts, dtype=np.int64), self.odd)


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


def _parsed(text: str | None) -> Any:
    return None if text is None else json.loads(text)
