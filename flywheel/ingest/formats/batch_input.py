"""The requests of a day's OpenAI Batch API input files, held in Arrow (not as dicts).

A Batch API output line names its request by ``custom_id``; the request (model,
messages, user, metadata) is in the input file. A day of a million requests held as
Python dicts took about 4 GB; here each request is one row of an Arrow table: its
``custom_id`` (as ``str(custom_id)``, the key the output lines are matched with) and its
``body`` as JSON text, about the size of the file. The other fields of an input line
(``method``, ``url``) are not kept: nothing reads them.

The day's companion dict (see :func:`flywheel.ingest.formats.load_companion`) holds
each input file's :class:`BatchRequests` under a key of its own, so that the loader's
plain ``dict.update`` merges files without copying them; :func:`day_batch_requests`
puts them back together (a later file wins a custom_id, as a dict update did).
"""

from __future__ import annotations

import json
from collections.abc import Iterator, Mapping
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from flywheel.ingest.formats.jsonio import _iter_json_items, _unreadable_on_decode_errors

# The first item of the companion key of an input file's requests: (BATCH_INPUT, path).
BATCH_INPUT = "openai_batch_input"
_SCHEMA = pa.schema([("custom_id", pa.string()), ("body", pa.string()), ("object", pa.bool_())])
# Input lines turned into Arrow at a time: their parsed bodies are all the dicts held.
_CHUNK_ROWS = 10_000


class BatchRequests(Mapping):
    """The input lines of Batch API requests by ``custom_id`` (a read-only mapping).

    ``requests[custom_id]`` is ``{"body": body}``, the body as the input line had it
    (parsed anew on each look-up). Columns of :attr:`table`: ``custom_id``, ``body`` (the
    JSON text of the body, null when it had none) and ``object`` (the body is an object
    whose text DuckDB can read: what the fast path joins). A custom_id holding text that
    is not UTF-8 (lone surrogates) cannot be an Arrow string: those few lines are kept
    in a dict of their own.
    """

    def __init__(self, table: pa.Table, odd: dict[str, str | None] | None = None, *,
                 parent: BatchRequests | None = None) -> None:
        self.table = table
        self._odd = odd or {}
        # A subset of the day's requests (see :meth:`subset`) asks the whole day for
        # a custom_id it does not hold.
        self._parent = parent
        self._index: dict[str, int] | None = None

    @classmethod
    def read(cls, path) -> BatchRequests:
        """Return the requests of one input file (a later line wins a custom_id).

        Lines that are broken or have no ``custom_id`` are skipped here: the output
        lines that refer to them become error records.
        """
        chunks: list[pa.Table] = []
        odd: dict[str, str | None] = {}
        rows: list[tuple[str, Any]] = []
        with _unreadable_on_decode_errors(path):
            for item in _iter_json_items(path):
                value = item.value
                if isinstance(value, dict) and value.get("custom_id") is not None:
                    rows.append((str(value["custom_id"]), value.get("body")))
                    if len(rows) >= _CHUNK_ROWS:
                        chunks.append(_chunk(rows, odd))
                        rows = []
        chunks.append(_chunk(rows, odd))
        return cls(_last_of_each(pa.concat_tables(chunks)), odd)

    def __len__(self) -> int:
        return self.table.num_rows + len(self._odd)

    def __iter__(self) -> Iterator[str]:
        yield from self.table.column("custom_id").to_pylist()
        yield from self._odd

    def __getitem__(self, custom_id: str) -> dict:
        found = self.get(custom_id, _MISSING)
        if found is _MISSING:
            raise KeyError(custom_id)
        return found

    def __contains__(self, custom_id: object) -> bool:
        return self.get(custom_id, _MISSING) is not _MISSING

    def get(self, custom_id: Any, default: Any = None) -> Any:
        """Return ``{"body": body}`` of the request ``custom_id`` (a str), else ``default``."""
        if not isinstance(custom_id, str):
            return default
        if custom_id in self._odd:
            return {"body": _parsed(self._odd[custom_id])}
        if self._index is None:
            # Built on the first look-up: the fast path asks a batch's subset, whose
            # index is small; the whole day's only for a custom_id the subset lacks.
            self._index = {key: i for i, key in enumerate(self.table.column("custom_id").to_pylist())}
        row = self._index.get(custom_id)
        if row is not None:
            return {"body": _parsed(self.table.column("body")[row].as_py())}
        return self._parent.get(custom_id, default) if self._parent is not None else default

    def subset(self, custom_ids: pa.Array) -> BatchRequests:
        """Return the requests of the given custom ids (they may repeat or be null); a
        look-up of any other custom_id in it is answered by these requests as a whole."""
        keep = pc.is_in(self.table.column("custom_id"), value_set=pc.drop_null(pc.unique(custom_ids)))
        return BatchRequests(self.table.filter(keep), self._odd, parent=self)

    def object_bodies(self) -> pa.Table:
        """Return ``custom_id, body`` of the requests whose body is an object DuckDB can read."""
        return self.table.filter(self.table.column("object")).select(["custom_id", "body"])


_MISSING = object()
EMPTY = BatchRequests(_SCHEMA.empty_table())


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
    table = _last_of_each(pa.concat_tables([f.table for f in files]))
    odd: dict[str, str | None] = {}
    for found in files:
        odd.update(found._odd)
    return BatchRequests(table, odd)


def _last_of_each(table: pa.Table) -> pa.Table:
    """Return the rows of ``table`` keeping the last row of each custom_id (in order)."""
    ids = table.column("custom_id")
    if pc.count_distinct(ids).as_py() == table.num_rows:
        return table
    rows = pa.table({"custom_id": ids, "row": pa.array(np.arange(table.num_rows, dtype=np.int64))})
    last = rows.group_by("custom_id", use_threads=False).aggregate([("row", "max")]).column("row_max")
    return table.take(pa.array(np.sort(last.to_numpy())))


def _chunk(rows: list[tuple[str, Any]], odd: dict[str, str | None]) -> pa.Table:
    """Return the Arrow rows of (custom_id, body) pairs, in order; a pair whose
    custom_id is not valid Unicode goes to ``odd`` instead."""
    # The very text the fast path always joined (ensure_ascii=False).
    texts = [None if body is None else json.dumps(body, ensure_ascii=False) for _, body in rows]
    objects = [isinstance(body, dict) for _, body in rows]
    ids = [custom_id for custom_id, _ in rows]
    try:
        return pa.table([ids, texts, objects], schema=_SCHEMA)
    except UnicodeEncodeError:  # lone surrogates (bytes that were not UTF-8, or escapes)
        pass
    keep = []
    for i, (custom_id, body) in enumerate(rows):
        if not _encodable(custom_id):
            odd[custom_id] = None if body is None else json.dumps(body)
        elif texts[i] is not None and not _encodable(texts[i]):
            # JSON escapes keep its lone surrogates; DuckDB is not given it.
            texts[i], objects[i] = json.dumps(body), False
            keep.append(i)
        else:
            keep.append(i)
    return pa.table([[ids[i] for i in keep], [texts[i] for i in keep], [objects[i] for i in keep]], schema=_SCHEMA)


def _encodable(text: str) -> bool:
    """Return whether ``text`` is valid Unicode (no lone surrogates), as Arrow needs it."""
    try:
        text.encode("utf-8")
    except UnicodeEncodeError:
        return False
    return True


def _parsed(text: str | None) -> Any:
    return None if text is None else json.loads(text)
