"""Helpers shared by the format readers: mapping one JSON value to a RawRecord, and
small value helpers (set-if-present, metadata without loss, JSON text, durations).
"""

from __future__ import annotations

import json
from typing import Any, Callable, Iterable, Iterator

from flywheel.ingest.records import CANONICAL_FIELDS, RawRecord
from flywheel.ingest.formats.jsonio import _JSON_ERRORS, NOT_UTF8, _Item, has_undecodable


_CANONICAL = frozenset(CANONICAL_FIELDS)

class _RecordError(Exception):
    """A record that is valid JSON but cannot be mapped (e.g. a failed batch request)."""

    def __init__(self, reason: str, field: str | None = None):
        super().__init__(reason)
        self.reason = reason
        self.field = field


# Shapes a mapper may meet in real files and not expect; they reject that one record.
_SHAPE_ERRORS = (TypeError, AttributeError, KeyError, IndexError, ValueError)


def _map_items(items: Iterable[_Item], mapper: Callable[[dict], dict]) -> Iterator[RawRecord]:
    """Yield one RawRecord per item: ``mapper``'s record, or an error record."""
    for item in items:
        yield _map_value(item.line, item.raw, item.value, mapper, item.error)


def _map_value(
    line: int, raw: str, value: Any, mapper: Callable[[dict], dict], error: str | None = None
) -> RawRecord:
    """Return the RawRecord of one JSON value mapped by ``mapper`` (or of its parse error)."""
    if has_undecodable(raw):  # its bytes, as far as they are text
        return RawRecord(line, raw.encode("utf-8", "surrogateescape").decode("utf-8", "replace"), error=NOT_UTF8)
    if error is not None:
        return RawRecord(line, raw, error=error)
    if not isinstance(value, dict):
        return RawRecord(line, raw, error="not a JSON object")
    try:
        return RawRecord(line, raw, record=mapper(value))
    except _RecordError as err:
        return RawRecord(line, raw, error=err.reason, field=err.field)
    except _SHAPE_ERRORS as err:
        return RawRecord(line, raw, error=f"unexpected record shape: {type(err).__name__}: {err}")


# --------------------------------------------------------------------------- shared helpers


def _put(record: dict, key: str, value: Any) -> None:
    """Set ``record[key]`` unless ``value`` is None (absent stays absent)."""
    if value is not None:
        record[key] = value


def _add(meta: dict, key: str, value: Any) -> None:
    """Add ``key`` to metadata without losing an existing different value.

    On a clash (e.g. the record's own metadata already has the key) the new value is
    kept under ``_key`` (``__key``, ...), so nothing is dropped.
    """
    if value is None:
        return
    while key in meta and meta[key] != value:
        key = "_" + key
    meta[key] = value


def _first(mapping: dict, *keys: str) -> Any:
    """Return the first value of ``keys`` in ``mapping`` that is not None, else None."""
    for key in keys:
        value = mapping.get(key)
        if value is not None:
            return value
    return None


def _parse_json_text(value: Any) -> Any:
    """Return ``value`` parsed when it is a string holding JSON, else ``value`` itself."""
    if isinstance(value, str) and value[:1] in ("{", "[", '"'):
        try:
            return json.loads(value)
        except _JSON_ERRORS:
            return value
    return value


def _as_dict(value: Any) -> dict:
    """Return ``value`` as a dict (parsing a JSON string); {} when it is not one."""
    value = _parse_json_text(value)
    return value if isinstance(value, dict) else {}


def _own_metadata(value: Any) -> dict:
    """Return a fresh metadata dict seeded with a record's own ``metadata`` value.

    A dict (or a JSON string of one) is copied; any other non-null value is kept
    under the key ``metadata``.
    """
    parsed = _parse_json_text(value)
    if isinstance(parsed, dict):
        return dict(parsed)
    return {} if value is None else {"metadata": value}


def _seconds_to_ms(value: Any) -> float | None:
    """Return a duration in seconds (number or numeric string) in ms, else None."""
    if isinstance(value, bool):
        return None
    try:
        return round(float(value) * 1000, 3)
    except (TypeError, ValueError):
        return None


def _dumps(value: Any) -> str:
    """Return the JSON text of ``value``, keeping non-ASCII characters readable."""
    return json.dumps(value, ensure_ascii=False)
