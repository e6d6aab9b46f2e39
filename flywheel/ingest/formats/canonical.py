"""Canonical JSON lines: canonical keys as found, all other keys into ``metadata``."""

from __future__ import annotations

from typing import Iterator

from flywheel.ingest.records import RawRecord
from flywheel.ingest.formats.jsonio import _iter_json_items
from flywheel.ingest.formats.common import _CANONICAL, _add, _map_items, _own_metadata


# --------------------------------------------------------------------------- canonical


def _read_canonical(path, batch_requests, stats) -> Iterator[RawRecord]:
    """Yield the records of a canonical JSON lines file."""
    return _map_items(_iter_json_items(path), _map_canonical)


def _map_canonical(obj: dict) -> dict:
    """Return a canonical record: canonical keys as found, the others in metadata."""
    record: dict = {}
    extras: dict = {}
    for key, value in obj.items():
        (record if key in _CANONICAL else extras)[key] = value
    if extras:
        meta = _own_metadata(obj.get("metadata"))
        for key, value in extras.items():
            _add(meta, key, value)
        record["metadata"] = meta
    return record
