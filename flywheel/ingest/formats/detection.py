"""Detect the format of a landing log file from its name and the keys of its first values.

``.parquet`` is canonical Parquet and ``.csv``/``.csv.gz`` canonical CSV; anything else
is recognized by the keys of its first JSON values (see :func:`_classify_keys`).
"""

from __future__ import annotations

import json
import os
import re
import zlib
from pathlib import Path
from typing import Any

from flywheel.ingest.records import UnreadableFile
from flywheel.ingest.formats.jsonio import (
    _JSON_ERRORS, _SNIFF_CHARS, _SNIFF_LINES, _unreadable_on_decode_errors, open_text,
)


FORMATS = (
    "canonical_jsonl",
    "canonical_csv",
    "canonical_parquet",
    "openai_chat",
    "openai_batch_input",
    "openai_batch_output",
    "otel",
    "otel_logs",
    "langfuse",
)

# How much of a file detection looks at: the head of the text, and at most this many

_JSON_KEY = re.compile(r'"([^"\\]{1,80})"\s*:')

# Keys that only a Langfuse trace has next to `id` and `timestamp`.
_LANGFUSE_TRACE_KEYS = (
    "sessionId", "latency", "totalCost", "userId", "release", "scores", "htmlPath",
    "projectId", "bookmarked",
)


# --------------------------------------------------------------------------- detection


def detect_format(path) -> str:
    """Return the format of the log file at ``path``, one of :data:`FORMATS`.

    ``.parquet`` is canonical Parquet and ``.csv``/``.csv.gz`` canonical CSV; anything
    else is recognized by the keys of its first JSON values (see :func:`_classify_keys`).

    Raises:
        UnreadableFile: unknown format, empty file, truncated or corrupt gzip or
            Parquet, text that is not UTF-8.
    """
    name = Path(path).name.lower()
    if name.endswith(".parquet"):
        _check_parquet(path)
        return "canonical_parquet"
    with _unreadable_on_decode_errors(path), open_text(path) as f:
        head, complete = _head(f)
    if not head.strip():
        raise UnreadableFile(path, "empty file")
    if name.endswith((".csv", ".csv.gz")):
        return "canonical_csv"
    fmt = _sniff(head, complete)
    if fmt is None:
        raise UnreadableFile(path, f"unknown format ({_describe(head)})")
    return fmt


def _head(f) -> tuple[str, bool]:
    """Return the first :data:`_SNIFF_CHARS` characters of a text file and whether they
    are the whole file. A gzip stream that breaks off gives the lines before the break
    (its reader names the break); broken before any line, it raises."""
    lines: list[str] = []
    size = 0
    try:
        while size < _SNIFF_CHARS:
            line = f.readline(_SNIFF_CHARS - size)
            if not line:
                return "".join(lines), True
            lines.append(line)
            size += len(line)
        return "".join(lines), not f.read(1)
    except (EOFError, zlib.error):
        if not lines:
            raise
        return "".join(lines), False


def _check_parquet(path) -> None:
    """Raise UnreadableFile unless ``path`` has Parquet's magic bytes at both ends."""
    size = os.path.getsize(path)
    if size == 0:
        raise UnreadableFile(path, "empty file")
    with open(path, "rb") as f:
        head = f.read(4)
        f.seek(max(size - 4, 0))
        tail = f.read(4)
    if head != b"PAR1":
        raise UnreadableFile(path, "not a Parquet file (no PAR1 magic bytes at the start)")
    if size < 12 or tail != b"PAR1":
        raise UnreadableFile(path, "truncated Parquet file (no PAR1 footer)")


def _sniff(head: str, complete: bool) -> str | None:
    """Return the format of a JSON text from its head, or None when unrecognized.

    Tries the first non-blank lines one by one (JSON lines), then the whole head as one
    document when it is the whole file, then, for a document too large or too broken to
    parse, the set of keys that appear in the head.
    """
    lines = head.split("\n")
    if not complete:
        lines.pop()  # the last line of a partial head may be cut off
    tried = 0
    found = None
    for line in lines:
        if not line.strip():
            continue
        tried += 1
        if tried > _SNIFF_LINES:
            break
        try:
            value = json.loads(line)
        except _JSON_ERRORS:
            continue
        fmt = _classify_value(value)
        if fmt == "otel_logs":
            # A collector writing both signals to one file: any span line makes it otel.
            found = fmt
            continue
        if fmt is not None:
            return fmt
    if found is not None:
        return found
    if complete:
        try:
            value = json.loads(head)
        except _JSON_ERRORS:
            pass
        else:
            return _classify_value(value)
    if head.lstrip()[:1] in ("{", "["):
        return _classify_keys(set(_JSON_KEY.findall(head)))
    return None


def _classify_value(value: Any) -> str | None:
    """Return the format a parsed JSON value belongs to, or None."""
    if isinstance(value, list):
        first = next((v for v in value if isinstance(v, dict)), None)
        return None if first is None else _classify_value(first)
    if not isinstance(value, dict):
        return None
    data = value.get("data")
    if isinstance(data, list) and "id" not in value:
        # Langfuse API/export wrapper {"data": [...], "meta": {...}}, possibly empty.
        if _classify_value(data) == "langfuse" or (not data and "meta" in value):
            return "langfuse"
    return _classify_keys(value)


def _classify_keys(keys) -> str | None:
    """Return the format of a record with these top-level keys (a dict or a set), or None.

    Order matters: an OpenAI log may carry ``log_id``; a Langfuse trace has ``input`` and
    ``output`` like a canonical record.
    """
    if "resourceSpans" in keys:
        return "otel"
    if "resourceLogs" in keys:
        return "otel_logs"
    if "custom_id" in keys:
        if "response" in keys or "error" in keys:
            return "openai_batch_output"
        if "method" in keys or "body" in keys:
            return "openai_batch_input"
    if "request" in keys and "response" in keys:
        return "openai_chat"
    if "log_id" in keys:
        return "canonical_jsonl"
    if "observations" in keys or (
        "id" in keys and "timestamp" in keys and any(k in keys for k in _LANGFUSE_TRACE_KEYS)
    ):
        return "langfuse"
    if "input" in keys and "output" in keys:
        return "canonical_jsonl"
    return None


def _describe(head: str) -> str:
    """Return a short description of a file's first line for an error message."""
    first = next((line.strip() for line in head.split("\n") if line.strip()), "")
    if len(first) > 60:
        first = first[:57] + "..."
    return f"first line: {first!r}"
