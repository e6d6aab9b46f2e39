"""The parsed record (one label claim), the format table, and small value helpers."""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Any


RAW_LIMIT = 20_000  # characters of raw text kept with a rejection

TOOL_OF_FORMAT: dict[str, str] = {
    "canonical_csv": "canonical",
    "canonical_json": "canonical",
    "wide_csv": "canonical",
    "label_studio": "label_studio",
    "label_studio_min": "label_studio",
    "label_studio_csv": "label_studio",
    "argilla": "argilla",
    "langfuse_scores": "langfuse",
    "empty": "canonical",
}
"""Each format and the tool (source) whose value mapping applies to it."""

CANONICAL_FIELDS = ("log_id", "annotator", "label", "value", "comment", "created_at", "span_start", "span_end")


class UnreadableAnnotationFile(Exception):
    """A file that is not an annotation file of a known format, or cannot be decoded."""

    def __init__(self, reason: str):
        super().__init__(reason)
        self.reason = reason


@dataclass
class ParsedRecord:
    """One label claim as read from a file, before mapping and checks.

    ``label`` and ``value`` are as the tool wrote them. ``span_label`` is the label text
    of a span result (used as the label name when the result's own name is not a
    known label). ``reject`` holds a rejection reason found while reading (with
    ``detail``); ``skip`` says why a record is not a label at all.
    """

    line: int | None
    raw: str
    log_id: Any = None
    annotator: Any = None
    label: Any = None
    value: Any = None
    comment: Any = None
    created_at: Any = None
    span_start: Any = None
    span_end: Any = None
    span_label: Any = None
    reject: str | None = None
    detail: str | None = None
    skip: str | None = None


def _text(value: Any) -> Any:
    """Return strings stripped (None when empty); other values as they are."""
    if isinstance(value, str):
        value = value.strip()
        return value or None
    return value

def _dumps(value: Any) -> str:
    return json.dumps(value, ensure_ascii=False, separators=(",", ":"), default=str)[:RAW_LIMIT]


def _first_present(*values: Any) -> Any:
    for value in values:
        if value is not None and value != "":
            return value
    return None


def _single(record: ParsedRecord, values: Any, what: str) -> Any:
    """Return the one value of a list (None if empty); mark the record if there are several."""
    if not isinstance(values, list):
        return values
    if len(values) > 1 and record.reject is None:
        record.reject, record.detail = "unmappable value", f"several {what} {values!r}: one value expected"
    return values[0] if values else None
