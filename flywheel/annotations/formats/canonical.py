"""Canonical annotation records: ``log_id,annotator,label,value[,comment,created_at,
span_start,span_end]`` as CSV rows or JSON objects (keys case-insensitive).
"""

from __future__ import annotations

from collections.abc import Iterator

from flywheel.annotations.formats.records import CANONICAL_FIELDS, ParsedRecord, _text


def _canonical(obj: dict, line: int, raw: str) -> Iterator[ParsedRecord]:
    get = {str(k).lower(): v for k, v in obj.items()}
    yield ParsedRecord(line=line, raw=raw, **{name: _text(get.get(name)) for name in CANONICAL_FIELDS})
