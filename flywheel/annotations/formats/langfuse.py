"""Langfuse scores (CSV export, or score objects as JSON): one record per score with
``source`` = ``ANNOTATION`` (API and EVAL scores are skipped).

Log id: ``traceId``. Annotator: the ``authorUserId`` column, else ``authorUserName``
(current CSV exports name the author there and have no ``authorUserId``), else
``authorUserEmail``, else ``annotator``/``author``/``authorUserId``/``user``/``email`` in
the score's metadata, else ``langfuse`` (then every author is one annotator, so a file
without authors should not be mixed with others for consensus).

Current CSV exports write date cells JSON-encoded (``"2026-11-21T09:00:00.000Z"`` with
the quotes); a cell holding a JSON string is read as that string.
"""

from __future__ import annotations

import json
from collections.abc import Iterator

from flywheel.annotations.formats.records import ParsedRecord, _dumps, _first_present, _text


_LANGFUSE_AUTHOR_KEYS = ("annotator", "author", "authorUserId", "author_user_id", "user", "email", "userEmail")


def _unquoted(value):
    """Return a cell holding a JSON-encoded string (``"..."`` with the quotes) as the string."""
    if isinstance(value, str) and len(value) >= 2 and value[0] == '"' and value[-1] == '"':
        try:
            decoded = json.loads(value)
        except ValueError:
            return value
        return decoded if isinstance(decoded, str) else value
    return value


def _langfuse_score(row: dict, line: int, raw: str) -> Iterator[ParsedRecord]:
    get = {str(k).lower(): _unquoted(v) for k, v in row.items()}
    source = _text(get.get("source"))
    if str(source or "").upper() != "ANNOTATION":
        yield ParsedRecord(line=line, raw=raw, skip=f"not a human label (source={source or 'none'})")
        return
    kind = str(get.get("datatype") or "").upper()
    value, string_value = _text(get.get("value")), _text(get.get("stringvalue"))
    value = _first_present(string_value, value) if kind == "CATEGORICAL" else _first_present(value, string_value)
    metadata = get.get("metadata")
    if isinstance(metadata, str):
        try:
            metadata = json.loads(metadata)
        except (json.JSONDecodeError, RecursionError):
            metadata = None
    metadata = {str(k).lower(): v for k, v in metadata.items()} if isinstance(metadata, dict) else {}
    author = _first_present(_text(get.get("authoruserid")), _text(get.get("authorusername")),
                            _text(get.get("authoruseremail")),
                            *(_text(metadata.get(k.lower())) for k in _LANGFUSE_AUTHOR_KEYS))
    yield ParsedRecord(
        line=line, raw=raw if isinstance(raw, str) else _dumps(row),
        log_id=_text(get.get("traceid")), annotator=author if author is not None else "langfuse",
        label=_text(get.get("name")), value=value, comment=_text(get.get("comment")),
        created_at=_text(get.get("timestamp")),
    )
