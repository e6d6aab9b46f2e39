"""Detect the format of a log file and read the JSON-based formats into RawRecords.

The loader asks :func:`detect_format` what a landing file is, then reads canonical CSV
and Parquet itself and hands every JSON-based format to :func:`iter_records`, which
yields one :class:`~flywheel.ingest.records.RawRecord` per log record, in file order,
with the record mapped to the canonical shape of DESIGN.md (not validated: values are
kept as found; the loader validates types and required fields for all formats alike).

Files may be gzip-compressed (``.gz`` or gzip magic bytes). A file that cannot be read
at all (unknown format, empty, truncated or corrupt gzip, not UTF-8, a JSON document
broken beyond the first line) raises :class:`~flywheel.ingest.records.UnreadableFile`,
from :func:`detect_format` or, when the damage is further in, during iteration.

JSON layouts accepted by every JSON format: JSON lines (one value per line; blank lines
are skipped, a broken line becomes an error record), one top-level JSON array, or one
(pretty-printed) JSON document. Langfuse exports may also be ``{"data": [...]}``.

Mapping, per format (unknown fields always end up in ``record["metadata"]``):

- openai_chat: log_id = top-level ``log_id``/``id``, else ``response.id``; ts =
  ``timestamp``, else ``response.created``; source = ``workload_id``, else ``client_id``;
  user_id = ``request.user``; top-level canonical keys win over derived values. The
  request's ``metadata`` (stored-completions metadata, a dict of strings) fills the
  canonical fields its keys name (``prompt_version``, ``session_id``, ``source``, ...)
  where the record has no value; its other keys go to the record's metadata.
- openai_batch_output: log_id = ``response.body.id``, else the line's ``id``; messages
  from the input line with the same ``custom_id``; user_id = the input body's ``user``;
  the input body's ``metadata`` is used as for openai_chat (so source = its
  ``metadata.source``); failed requests and unknown custom_ids are error records.
- otel: one record per LLM span (others are counted in ``stats["ignored_spans"]``);
  log_id = ``spanId``; ts = start time as ISO-8601 UTC; source = resource
  ``service.name``; attribute names accepted per field: see ``_OTEL_FIELDS``.
- langfuse: one record per trace; log_id = trace ``id``; source = ``name``, else
  ``environment``; feedback rule: see ``_langfuse_feedback``.
- context, for chat-shaped inputs: tool/function result messages if any, else what
  follows a ``Context:`` line in the system prompt; Langfuse dict inputs give it
  under ``context``/``documents``.
"""

from __future__ import annotations

import gzip
import json
import os
import re
import zlib
from contextlib import contextmanager
from datetime import datetime, timezone
from pathlib import Path
from typing import Any, Callable, Iterable, Iterator, NamedTuple, NoReturn, TextIO

from flywheel.ingest.records import CANONICAL_FIELDS, RawRecord, UnreadableFile

FORMATS = (
    "canonical_jsonl",
    "canonical_csv",
    "canonical_parquet",
    "openai_chat",
    "openai_batch_input",
    "openai_batch_output",
    "otel",
    "langfuse",
)

# How much of a file detection looks at: the head of the text, and at most this many
# non-blank lines of it (the first lines of a canonical file may be broken JSON).
_SNIFF_CHARS = 1 << 16
_SNIFF_LINES = 20

_CANONICAL = frozenset(CANONICAL_FIELDS)
_DECODER = json.JSONDecoder()
_WS = re.compile(r"[ \t\n\r]*")
_JSON_KEY = re.compile(r'"([^"\\]{1,80})"\s*:')

# Keys that only a Langfuse trace has next to `id` and `timestamp`.
_LANGFUSE_TRACE_KEYS = (
    "sessionId", "latency", "totalCost", "userId", "release", "scores", "htmlPath",
    "projectId", "bookmarked",
)


# --------------------------------------------------------------------------- opening


def open_text(path) -> TextIO:
    """Return ``path`` opened for reading UTF-8 text, decompressing gzip on the fly.

    A file is treated as gzip when its name ends in ``.gz`` or it starts with the gzip
    magic bytes. A leading byte-order mark is skipped (``utf-8-sig``), since Windows
    tools write one. Decoding and decompression errors surface while reading.
    """
    if _is_gzip(path):
        return gzip.open(path, "rt", encoding="utf-8-sig")
    return open(path, encoding="utf-8-sig")


def _is_gzip(path) -> bool:
    """Return whether ``path`` is gzip-compressed (by name, else by magic bytes)."""
    if str(path).lower().endswith(".gz"):
        return True
    with open(path, "rb") as f:
        return f.read(2) == b"\x1f\x8b"


@contextmanager
def _unreadable_on_decode_errors(path):
    """Turn gzip and text-decoding failures inside the block into UnreadableFile."""
    try:
        yield
    except EOFError as err:
        raise UnreadableFile(
            path, "truncated gzip file: the compressed stream ends before its end marker"
        ) from err
    except (gzip.BadGzipFile, zlib.error) as err:
        raise UnreadableFile(path, f"corrupt gzip file: {err}") from err
    except UnicodeDecodeError as err:
        raise UnreadableFile(path, f"not UTF-8 text: {err.reason}") from err


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
        head = f.read(_SNIFF_CHARS)
        complete = len(head) < _SNIFF_CHARS or not f.read(1)
    if not head.strip():
        raise UnreadableFile(path, "empty file")
    if name.endswith((".csv", ".csv.gz")):
        return "canonical_csv"
    fmt = _sniff(head, complete)
    if fmt is None:
        raise UnreadableFile(path, f"unknown format ({_describe(head)})")
    return fmt


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
    for line in lines:
        if not line.strip():
            continue
        tried += 1
        if tried > _SNIFF_LINES:
            break
        try:
            value = json.loads(line)
        except ValueError:
            continue
        fmt = _classify_value(value)
        if fmt is not None:
            return fmt
    if complete:
        try:
            value = json.loads(head)
        except ValueError:
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


# --------------------------------------------------------------------------- JSON items


class _Item(NamedTuple):
    """One JSON value of a file: its start line, its text, and the value or an error."""

    line: int
    raw: str
    value: Any = None
    error: str | None = None


def _iter_json_items(path) -> Iterator[_Item]:
    """Yield the JSON values of a file in order.

    JSON lines give one item per non-blank line (a broken line is an item with an
    error); a top-level array gives one item per element; a single multi-line document
    gives one item whose ``raw`` is the whole document text.

    Raises:
        UnreadableFile: a multi-line document or an array that is not valid JSON
            (its records cannot be told apart).
    """
    with open_text(path) as f:
        lineno = 0
        for first in f:
            lineno += 1
            if first.strip():
                break
        else:
            return
        if first.lstrip().startswith("["):
            yield from _iter_array(path, first + f.read(), lineno)
            return
        try:
            value, first_error = json.loads(first.rstrip("\r\n")), None
        except ValueError as err:
            value, first_error = None, _json_error(err)
        if first_error is not None:
            yield from _after_broken_first_line(path, first, f.read(), lineno, first_error)
            return
        yield _Item(lineno, first.strip(), value)
        yield from _iter_lines(f, lineno + 1)


def _iter_lines(lines: Iterable[str], start: int) -> Iterator[_Item]:
    """Yield one item per non-blank line, numbering lines from ``start``."""
    for lineno, line in enumerate(lines, start):
        text = line.strip()
        if not text:
            continue
        try:
            # Only the line end is cut: columns stay right, and a cut-off string reads
            # "Unterminated string", not "Invalid control character".
            item = _Item(lineno, text, json.loads(line.rstrip("\r\n")))
        except ValueError as err:
            item = _Item(lineno, text, error=_json_error(err))
        yield item


def _after_broken_first_line(path, first: str, rest: str, lineno: int, first_error: str) -> Iterator[_Item]:
    """Yield the items of a file whose first non-blank line is not JSON by itself.

    Either the file is one multi-line (pretty-printed) document, or it is JSON lines
    whose first line (``lineno``, broken with ``first_error``) is broken. The whole
    text is parsed once to tell them apart.
    """
    whole = first + rest
    try:
        doc = json.loads(whole)
    except json.JSONDecodeError as err:
        doc_error = f"{err.msg} (line {lineno + err.lineno - 1}, col {err.colno})"
    else:
        yield _Item(lineno, whole.strip(), doc)
        return
    rest_lines = rest.split("\n")
    if _is_broken_document(rest_lines):
        raise UnreadableFile(path, f"invalid JSON document: {doc_error}")
    yield _Item(lineno, first.strip(), error=first_error)
    yield from _iter_lines(rest_lines, lineno + 1)


def _is_broken_document(rest_lines: list[str]) -> bool:
    """Return whether lines after a broken first line belong to one broken document.

    JSON lines have other lines that are JSON objects on their own; a pretty-printed
    document does not (a lone ``"prod"`` line of a list parses, but is no object). A
    file with a single (broken) line counts as JSON lines.
    """
    seen = 0
    for line in rest_lines:
        if not line.strip():
            continue
        seen += 1
        if seen > _SNIFF_LINES:
            break
        try:
            if isinstance(json.loads(line), dict):
                return False
        except ValueError:
            continue
    return seen > 0


def _iter_array(path, text: str, first_line: int) -> Iterator[_Item]:
    """Yield one item per element of the JSON array that ``text`` holds.

    ``text`` starts on line ``first_line`` of the file. Elements are decoded one by one
    so that each item knows the line where its element starts and its own text.
    """
    pos = _WS.match(text, text.index("[") + 1).end()
    line, counted = first_line, 0
    if text.startswith("]", pos):
        pos = _WS.match(text, pos + 1).end()
    else:
        while True:
            try:
                value, end = _DECODER.raw_decode(text, pos)
            except json.JSONDecodeError as err:
                _raise_broken_array(path, err.msg, text, err.pos, first_line)
            line += text.count("\n", counted, pos)
            counted = pos
            yield _Item(line, text[pos:end], value)
            pos = _WS.match(text, end).end()
            sep = text[pos : pos + 1]
            if sep == ",":
                pos = _WS.match(text, pos + 1).end()
                continue
            if sep == "]":
                pos = _WS.match(text, pos + 1).end()
                break
            _raise_broken_array(path, "Expecting ',' delimiter", text, pos, first_line)
    if pos != len(text):
        _raise_broken_array(path, "Extra data after the array", text, pos, first_line)


def _raise_broken_array(path, msg: str, text: str, pos: int, first_line: int) -> NoReturn:
    """Raise UnreadableFile for a JSON array broken at offset ``pos`` of ``text``."""
    line = first_line + text.count("\n", 0, pos)
    col = pos - text.rfind("\n", 0, pos)
    raise UnreadableFile(path, f"invalid JSON document: {msg} (line {line}, col {col})")


def _json_error(err: json.JSONDecodeError) -> str:
    """Return the error reason for a line that is not valid JSON."""
    return f"invalid JSON: {err.msg} (col {err.colno})"


class _LineFinder:
    """Finds the lines of the records inside one multi-line JSON text, in order.

    Each record is found by its id member (``"spanId": "..."``); searches only move
    forward, so locating all records of a document is linear in its size.
    """

    def __init__(self, text: str, first_line: int):
        self._text = text if "\n" in text else ""
        self._first_line = first_line
        self._line = first_line
        self._pos = 0

    def line_of(self, name: str, value: Any) -> int:
        """Return the line of the next ``"name": value`` member, else the document's line."""
        if not self._text or not isinstance(value, str) or not value:
            return self._first_line
        needle = json.dumps(value)
        found = self._text.find(needle, self._pos)
        while found >= 0 and not self._is_member_value(name, found):
            found = self._text.find(needle, found + 1)  # e.g. a parentSpanId, not the spanId
        if found < 0:
            return self._first_line
        self._line += self._text.count("\n", self._pos, found)
        self._pos = found
        return self._line

    def _is_member_value(self, name: str, pos: int) -> bool:
        """Return whether the JSON string at ``pos`` is the value of member ``name``."""
        before = self._text[max(0, pos - len(name) - 40) : pos].rstrip()
        return before.endswith(":") and before[:-1].rstrip().endswith(f'"{name}"')


# --------------------------------------------------------------------------- public readers


def load_batch_requests(path) -> dict[str, dict]:
    """Return ``custom_id -> input line object`` (with its ``body``) of a Batch API input file.

    Lines that are broken or have no ``custom_id`` are skipped here: the output lines
    that refer to them become error records in :func:`iter_records`.
    """
    requests: dict[str, dict] = {}
    with _unreadable_on_decode_errors(path):
        for item in _iter_json_items(path):
            value = item.value
            if isinstance(value, dict) and value.get("custom_id") is not None:
                requests[str(value["custom_id"])] = value
    return requests


def iter_records(
    path,
    fmt: str,
    *,
    batch_requests: dict[str, dict] | None = None,
    stats: dict | None = None,
) -> Iterator[RawRecord]:
    """Return an iterator of the RawRecords of a JSON-based log file, in file order.

    Args:
        path: the file (gzip or plain).
        fmt: ``canonical_jsonl``, ``openai_chat``, ``openai_batch_output``, ``otel`` or
            ``langfuse``.
        batch_requests: for ``openai_batch_output``, the map from
            :func:`load_batch_requests` of the matching input file(s); output lines
            without an input line become error records.
        stats: when given, counters are added to it as the iterator runs (final once
            it is exhausted): ``stats["ignored_spans"]`` counts OTel spans that are not
            LLM calls (HTTP, retriever, chain, embedding, tool spans) and so are not
            log records. The key is created (0) for every format.

    Every log record of the file yields exactly one RawRecord: parsed (``record``) or
    broken (``error``). Raises ValueError for formats it does not read (CSV, Parquet,
    Batch API input); raises UnreadableFile during iteration when the file turns out
    to be unreadable (truncated gzip, not UTF-8, broken JSON document).
    """
    reader = _READERS.get(fmt)
    if reader is None:
        raise ValueError(
            f"iter_records cannot read format {fmt!r}; it reads {', '.join(_READERS)}"
        )
    if stats is not None:
        stats.setdefault("ignored_spans", 0)
    return _guarded(path, reader(path, batch_requests, stats))


def _guarded(path, records: Iterator[RawRecord]) -> Iterator[RawRecord]:
    """Yield ``records``, turning decode errors met mid-file into UnreadableFile."""
    with _unreadable_on_decode_errors(path):
        yield from records


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
        except ValueError:
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


# --------------------------------------------------------------------------- messages
#
# Internally a message is {"role", "content", "tool_calls"?}: content is plain text
# (parts joined, tool calls rendered), tool_calls are {"id", "name", "arguments"} with
# arguments parsed from JSON text when possible.


def _parse_arguments(arguments: Any) -> Any:
    """Return tool-call arguments as an object when they are JSON text, else as given."""
    if isinstance(arguments, str):
        try:
            return json.loads(arguments)
        except ValueError:
            return arguments
    return arguments


def _render_call(call: dict) -> str:
    """Return a readable one-line rendering of a tool call: ``name({"arg": 1})``."""
    args = call.get("arguments")
    text = "" if args is None else args if isinstance(args, str) else _dumps(args)
    return f"{call.get('name') or '?'}({text})"


def _part_text(part: Any) -> str | None:
    """Return the text of one content part (OpenAI or OTel GenAI shape), else None."""
    if isinstance(part, str):
        return part
    if not isinstance(part, dict):
        return None
    kind = part.get("type")
    if kind in (None, "text", "input_text", "output_text"):
        text = _first(part, "text", "content")
        return text if isinstance(text, str) else None
    if kind == "tool_call":
        return _render_call(
            {"name": part.get("name"), "arguments": _parse_arguments(part.get("arguments"))}
        )
    if kind == "tool_call_response":
        response = part.get("response", part.get("result"))
        return response if isinstance(response, str) or response is None else _dumps(response)
    return None  # images, audio, files: no text to keep (the raw record still has them)


def _text(content: Any) -> str | None:
    """Return message content flattened to text: a string, or its text parts joined."""
    if content is None or isinstance(content, str):
        return content
    if isinstance(content, list):
        texts = [t for t in map(_part_text, content) if t]
        return "\n".join(texts) if texts else None
    if isinstance(content, dict):
        return _part_text(content)
    return str(content)


def _openai_tool_calls(message: dict) -> list[dict]:
    """Return the tool calls of an OpenAI-style message as {id, name, arguments}."""
    calls = []
    for call in message.get("tool_calls") or ():
        if isinstance(call, dict):
            function = call.get("function") if isinstance(call.get("function"), dict) else call
            calls.append(
                {
                    "id": call.get("id"),
                    "name": function.get("name"),
                    "arguments": _parse_arguments(function.get("arguments")),
                }
            )
    legacy = message.get("function_call")  # pre-tools function calling
    if isinstance(legacy, dict):
        calls.append(
            {"id": None, "name": legacy.get("name"), "arguments": _parse_arguments(legacy.get("arguments"))}
        )
    return calls


def _openai_message(message: dict) -> dict:
    """Return an OpenAI-style chat message as an internal message."""
    content = _text(message.get("content"))
    calls = _openai_tool_calls(message)
    if not content and calls:
        content = "\n".join(map(_render_call, calls))
    out = {"role": message.get("role"), "content": content}
    if calls:
        out["tool_calls"] = calls
    return out


def _last_user_text(messages: list[dict]) -> str | None:
    """Return the content of the last user message, else None."""
    for message in reversed(messages):
        if message.get("role") == "user":
            return message.get("content")
    return None


def _context_line_tail(text: str) -> str | None:
    """Return what follows a line starting with ``Context:`` in a prompt, else None."""
    lines = text.split("\n")
    for i, line in enumerate(lines):
        stripped = line.lstrip()
        if stripped[:8].lower() == "context:":
            tail = "\n".join([stripped[8:], *lines[i + 1 :]]).strip()
            return tail or None
    return None


def _context_from(messages: list[dict]) -> str | None:
    """Return the retrieved context of a conversation, else None.

    Tool/function results are the context when there are any (agents retrieve by tool
    calls); otherwise the part of a system message after a ``Context:`` line (the usual
    RAG prompt layout).
    """
    tool_texts = [
        m["content"] for m in messages if m.get("role") in ("tool", "function") and m.get("content")
    ]
    if tool_texts:
        return "\n\n".join(tool_texts)
    for message in messages:
        # "developer" is the system role of OpenAI's reasoning models.
        if message.get("role") in ("system", "developer") and isinstance(message.get("content"), str):
            tail = _context_line_tail(message["content"])
            if tail:
                return tail
    return None


def _canonical_messages(messages: list[dict]) -> list[dict]:
    """Return internal messages as canonical ``{role, content}`` dicts."""
    return [{"role": m.get("role"), "content": m.get("content")} for m in messages]


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


# --------------------------------------------------------------------------- OpenAI


def _chat_fields(request: dict, response: dict, record: dict, meta: dict) -> None:
    """Fill model, input, output, messages, context and tokens from a chat request/response.

    Request parameters (temperature, tools, ...) and response details (id, finish
    reason, extra usage counters) go into ``meta``.
    """
    messages = [_openai_message(m) for m in request.get("messages") or () if isinstance(m, dict)]
    choices = response.get("choices") or []
    choice = choices[0] if choices and isinstance(choices[0], dict) else {}
    reply = _openai_message(choice["message"]) if isinstance(choice.get("message"), dict) else None

    output = reply["content"] if reply else None
    if output is None and isinstance(choice.get("text"), str):  # legacy completions
        output = choice["text"]
    refusal = (choice.get("message") or {}).get("refusal") if reply else None
    if output is None and isinstance(refusal, str):
        output = refusal  # what the user was shown
    user_input = _last_user_text(messages)
    if user_input is None and "messages" not in request:
        prompt = request.get("prompt")
        user_input = prompt if isinstance(prompt, str) else _text(prompt)

    _put(record, "model", _first(response, "model") or request.get("model"))
    _put(record, "input", user_input)
    _put(record, "output", output)
    _put(record, "context", _context_from(messages))
    conversation = messages + ([{"role": reply["role"] or "assistant", "content": output}] if reply else [])
    if conversation:
        record["messages"] = _canonical_messages(conversation)
    usage = _as_dict(response.get("usage"))
    _put(record, "prompt_tokens", _first(usage, "prompt_tokens", "input_tokens"))
    _put(record, "completion_tokens", _first(usage, "completion_tokens", "output_tokens"))
    _put(record, "user_id", request.get("user"))

    for key, value in request.items():
        if key not in ("messages", "model", "metadata", "user", "prompt"):
            _add(meta, key, value)
    if response.get("model") and request.get("model") and response["model"] != request["model"]:
        _add(meta, "request_model", request["model"])
    _add(meta, "response_id", response.get("id"))
    for key, value in response.items():
        if key not in ("id", "model", "choices", "usage"):
            _add(meta, key, value)
    for key, value in usage.items():
        if key not in ("prompt_tokens", "completion_tokens", "input_tokens", "output_tokens"):
            _add(meta, key, value)
    _add(meta, "finish_reason", choice.get("finish_reason"))
    if isinstance(refusal, str):
        _add(meta, "refusal", refusal)
    if reply and reply.get("tool_calls"):
        meta["tool_calls"] = reply["tool_calls"]
    if len(choices) > 1:  # n > 1: the first choice is the record, keep the others' texts
        meta["other_choices"] = [_choice_text(c) for c in choices[1:]]


def _fill_from_request_metadata(record: dict, meta: dict, request: dict) -> None:
    """Use a request's ``metadata`` object (OpenAI's stored-completions metadata).

    Its keys that are canonical fields (``source``, ``prompt_version``, ``session_id``,
    ``feedback``, ...) fill those fields when the record has no value for them yet;
    values as found (strings, as the API requires; the loader validates them). Every
    other key, and a canonical key whose field already has another value, goes to
    ``meta``. Called last, so a record's own and derived values win.
    """
    for key, value in _as_dict(request.get("metadata")).items():
        if key in _CANONICAL and key != "metadata" and value is not None:
            if record.get(key) is None:
                record[key] = value
                continue
            if record[key] == value:
                continue  # nothing to keep: the field holds it already
        _add(meta, key, value)


def _choice_text(choice: Any) -> Any:
    """Return the text of a chat choice (its message content), else the choice as found."""
    if isinstance(choice, dict) and isinstance(choice.get("message"), dict):
        return _openai_message(choice["message"])["content"]
    return choice


# Top-level keys of a request/response log entry that the mapping consumes.
_OPENAI_CHAT_CONSUMED = frozenset(
    {"request", "response", "timestamp", "latency", "metadata", "log_id", "id"}
)


def _read_openai_chat(path, batch_requests, stats) -> Iterator[RawRecord]:
    """Yield the records of an OpenAI request/response log."""
    return _map_items(_iter_json_items(path), _map_openai_chat)


def _map_openai_chat(obj: dict) -> dict:
    """Return the canonical record of one ``{request, response, ...}`` log entry.

    Top-level canonical keys (log_id, ts, source, session_id, feedback, ...) win over
    what is derived from the request and response.
    """
    request, response = _as_dict(obj.get("request")), _as_dict(obj.get("response"))
    record: dict = {}
    meta = _own_metadata(obj.get("metadata"))
    _chat_fields(request, response, record, meta)
    _put(record, "log_id", _first(obj, "log_id", "id") or response.get("id"))
    if obj.get("log_id") is not None:
        _add(meta, "id", obj.get("id"))
    _put(record, "ts", _first(obj, "timestamp", "created_at") or response.get("created"))
    _put(record, "source", _first(obj, "workload_id", "client_id"))
    latency = _seconds_to_ms(obj.get("latency"))
    _put(record, "latency_ms", latency)
    if latency is None:
        _add(meta, "latency", obj.get("latency"))
    for key, value in obj.items():
        if key in _CANONICAL:
            if key != "metadata" and value is not None:  # a null does not erase a derived value
                record[key] = value
        elif key not in _OPENAI_CHAT_CONSUMED:
            _add(meta, key, value)  # workload_id, client_id and anything unknown
    _fill_from_request_metadata(record, meta, request)
    record["metadata"] = meta
    return record


def _read_batch_output(path, batch_requests, stats) -> Iterator[RawRecord]:
    """Yield the records of an OpenAI Batch API output file."""
    requests = batch_requests or {}
    return _map_items(_iter_json_items(path), lambda obj: _map_batch_output(obj, requests))


def _map_batch_output(obj: dict, requests: dict[str, dict]) -> dict:
    """Return the canonical record of one Batch API output line.

    Raises:
        _RecordError: the request failed, or its input line is unknown.
    """
    custom_id = obj.get("custom_id")
    response = _as_dict(obj.get("response"))
    body = _as_dict(response.get("body"))
    status = response.get("status_code")
    if obj.get("error") or not response or (status is not None and str(status) != "200"):
        raise _RecordError(_batch_failure(obj.get("error"), status, body))
    request_line = requests.get(str(custom_id))
    if not isinstance(request_line, dict):
        raise _RecordError(f"no batch input line for custom_id {custom_id}", field="input")
    request = _as_dict(request_line.get("body"))

    record: dict = {}
    meta: dict = {}
    _add(meta, "custom_id", custom_id)
    _add(meta, "batch_request_id", obj.get("id"))
    _add(meta, "request_id", response.get("request_id"))
    _chat_fields(request, body, record, meta)
    _put(record, "log_id", body.get("id") or obj.get("id"))
    _put(record, "ts", body.get("created"))
    for key, value in obj.items():
        if key not in ("id", "custom_id", "response", "error"):
            _add(meta, key, value)
    _fill_from_request_metadata(record, meta, request)  # source, prompt_version, ...
    record["metadata"] = meta
    return record


def _batch_failure(error: Any, status: Any, body: dict) -> str:
    """Return the reason a batch request failed, from its error and status."""
    parts = []
    if status is not None:
        parts.append(f"status {status}")
    error = error or body.get("error")
    if isinstance(error, dict):
        parts.extend(str(error[k]) for k in ("code", "message") if error.get(k))
    elif error:
        parts.append(str(error))
    return "batch request failed: " + (": ".join(parts) if parts else "no response")


# --------------------------------------------------------------------------- OpenTelemetry

# gen_ai operations that are not a text generation a person asked for.
_NON_LLM_OPERATIONS = frozenset({"embeddings", "execute_tool", "create_agent"})
_EVENT_ROLES = {
    "gen_ai.system.message": "system",
    "gen_ai.user.message": "user",
    "gen_ai.assistant.message": "assistant",
    "gen_ai.tool.message": "tool",
}
_INDEXED_GEN_AI = re.compile(r"gen_ai\.(prompt|completion)\.(\d+)\.(.+)")
_INDEXED_OPENINFERENCE = re.compile(r"llm\.(input|output)_messages\.(\d+)\.message\.(.+)")
_TOOL_CALL_FIELD = re.compile(r"tool_calls\.(\d+)\.(?:tool_call\.)?(?:function\.)?(name|arguments|id)")
_CONTENTS_FIELD = re.compile(r"contents\.(\d+)\.message_content\.text")

# Attribute names accepted per canonical field, first present wins. Values of the
# names not used stay in metadata.
_OTEL_FIELDS = {
    "model": ("gen_ai.response.model", "gen_ai.request.model", "llm.model_name",
              "llm.response.model", "llm.request.model"),
    "prompt_tokens": ("gen_ai.usage.input_tokens", "gen_ai.usage.prompt_tokens",
                      "llm.token_count.prompt", "llm.usage.prompt_tokens"),
    "completion_tokens": ("gen_ai.usage.output_tokens", "gen_ai.usage.completion_tokens",
                          "llm.token_count.completion", "llm.usage.completion_tokens"),
    "session_id": ("session.id", "gen_ai.conversation.id", "langfuse.session.id"),
    "user_id": ("user.id", "enduser.id", "langfuse.user.id"),
    "prompt_name": ("gen_ai.prompt.name", "prompt.name", "llm.prompt_template.name",
                    "langfuse.prompt.name"),
    "prompt_version": ("gen_ai.prompt.version", "prompt.version", "prompt_version",
                       "llm.prompt_template.version", "langfuse.prompt.version"),
    "tags": ("tag.tags",),
}
# Attributes that are the request/response text itself (kept as input/output/messages).
_OTEL_CONTENT_KEYS = ("input.value", "output.value", "input.mime_type", "output.mime_type")


def _read_otel(path, batch_requests, stats) -> Iterator[RawRecord]:
    """Yield one record per LLM span of an OTLP/JSON file (one document, or one per line)."""
    for item in _iter_json_items(path):
        if item.error is not None:
            yield RawRecord(item.line, item.raw, error=item.error)
            continue
        doc = item.value
        if not isinstance(doc, dict) or not isinstance(doc.get("resourceSpans"), list):
            yield RawRecord(item.line, item.raw, error="not an OTLP/JSON document (no resourceSpans)")
            continue
        finder = _LineFinder(item.raw, item.line)
        for resource, scope, span in _otel_spans(doc):
            if not isinstance(span, dict):
                yield RawRecord(item.line, _dumps(span), error="span is not a JSON object")
                continue
            attrs = _otel_attrs(span.get("attributes"))
            events = [e for e in span.get("events") or () if isinstance(e, dict)]
            if not _is_llm_span(attrs, events):
                if stats is not None:
                    stats["ignored_spans"] = stats.get("ignored_spans", 0) + 1
                continue
            line = finder.line_of("spanId", span.get("spanId"))
            yield _map_value(
                line, _dumps(span), span,
                lambda s: _map_otel_span(s, attrs, events, resource, scope),  # noqa: B023 (called at once)
            )


def _otel_spans(doc: dict) -> Iterator[tuple[dict, dict, Any]]:
    """Yield (resource attributes, scope, span) for every span of an OTLP/JSON document."""
    for resource_spans in doc.get("resourceSpans") or ():
        if not isinstance(resource_spans, dict):
            continue
        resource = _otel_attrs((resource_spans.get("resource") or {}).get("attributes"))
        # instrumentationLibrarySpans: the name before OTLP 0.15, still in old files.
        scope_list = resource_spans.get("scopeSpans") or resource_spans.get("instrumentationLibrarySpans")
        for scope_spans in scope_list or ():
            if not isinstance(scope_spans, dict):
                continue
            scope = scope_spans.get("scope") or scope_spans.get("instrumentationLibrary") or {}
            for span in scope_spans.get("spans") or ():
                yield resource, scope, span


def _otel_attrs(attributes: Any) -> dict:
    """Return OTLP attributes (a list of {key, value}) as a plain dict of decoded values."""
    if isinstance(attributes, dict):  # some exporters write a plain map already
        return attributes
    out = {}
    for attribute in attributes or ():
        if isinstance(attribute, dict) and "key" in attribute:
            out[attribute["key"]] = _otel_value(attribute.get("value"))
    return out


def _otel_value(value: Any) -> Any:
    """Return the Python value of an OTLP AnyValue (``intValue`` strings become ints)."""
    if not isinstance(value, dict):
        return value
    if "stringValue" in value:
        return value["stringValue"]
    if "intValue" in value:
        try:
            return int(value["intValue"])
        except (TypeError, ValueError):
            return value["intValue"]
    if "doubleValue" in value:
        try:
            return float(value["doubleValue"])
        except (TypeError, ValueError):
            return value["doubleValue"]
    if "boolValue" in value:
        return value["boolValue"]
    if "arrayValue" in value:
        return [_otel_value(v) for v in (value["arrayValue"] or {}).get("values") or ()]
    if "kvlistValue" in value:
        return _otel_attrs((value["kvlistValue"] or {}).get("values"))
    if "bytesValue" in value:
        return value["bytesValue"]
    return None


def _is_llm_span(attrs: dict, events: list[dict]) -> bool:
    """Return whether a span is an LLM call (a log record) rather than HTTP, retrieval, ...

    OpenInference says so with ``openinference.span.kind`` (only ``LLM`` is); gen_ai
    operations that generate no text (embeddings, tools) are not; otherwise any
    ``gen_ai.*``/``llm.*`` attribute or ``gen_ai.*`` event makes it one.
    """
    kind = attrs.get("openinference.span.kind")
    if isinstance(kind, str):
        return kind.upper() == "LLM"
    if attrs.get("gen_ai.operation.name") in _NON_LLM_OPERATIONS:
        return False
    if str(attrs.get("llm.request.type", "")).lower() in ("embedding", "rerank"):
        return False
    if any(key.startswith(("gen_ai.", "llm.")) for key in attrs):
        return True
    return any(str(e.get("name", "")).startswith("gen_ai.") for e in events)


def _nanos(value: Any) -> int | None:
    """Return a nanosecond timestamp (int or digit string) as an int, else None."""
    try:
        return int(value)
    except (TypeError, ValueError):
        return None


def _iso_from_nanos(nanos: int) -> str | None:
    """Return epoch nanoseconds as an ISO-8601 UTC string with microseconds, else None."""
    seconds, rest = divmod(nanos, 1_000_000_000)
    try:
        moment = datetime.fromtimestamp(seconds, timezone.utc).replace(microsecond=rest // 1000)
    except (OverflowError, OSError, ValueError):
        return None
    return moment.strftime("%Y-%m-%dT%H:%M:%S.%fZ")


def _map_otel_span(span: dict, attrs: dict, events: list[dict], resource: dict, scope: dict) -> dict:
    """Return the canonical record of one LLM span."""
    used: set[str] = set(_OTEL_CONTENT_KEYS)
    record: dict = {}
    _put(record, "log_id", span.get("spanId"))
    start, end = _nanos(span.get("startTimeUnixNano")), _nanos(span.get("endTimeUnixNano"))
    if start:  # 0 means "unknown" in OTLP
        _put(record, "ts", _iso_from_nanos(start) or span.get("startTimeUnixNano"))
    elif start is None:
        _put(record, "ts", span.get("startTimeUnixNano"))
    if start and end and end >= start:
        record["latency_ms"] = (end - start) / 1e6
    _put(record, "source", resource.get("service.name"))
    for field, keys in _OTEL_FIELDS.items():
        _put(record, field, _take(attrs, keys, used))

    inputs, outputs, other_events = _otel_messages(attrs, events, used)
    _put(record, "input", _otel_input(inputs, attrs))
    reply = outputs[0] if outputs else None
    output = reply.get("content") if reply else None
    _put(record, "output", output if output is not None else attrs.get("output.value"))
    _put(record, "context", _context_from(inputs))
    if inputs or reply:
        record["messages"] = _canonical_messages(inputs + ([reply] if reply else []))

    meta = _own_metadata(attrs.get("metadata"))  # OpenInference keeps a JSON object here
    used.add("metadata")
    _add(meta, "trace_id", span.get("traceId"))
    _add(meta, "parent_span_id", span.get("parentSpanId") or None)
    _add(meta, "span_name", span.get("name"))
    _add(meta, "span_kind", span.get("kind"))
    _add(meta, "scope_name", scope.get("name") if isinstance(scope, dict) else None)
    _add(meta, "status", span.get("status") or None)
    for key, value in resource.items():
        if key != "service.name":
            _add(meta, f"resource.{key}", value)
    for key, value in attrs.items():
        if key not in used:
            _add(meta, key, value)
    if reply and reply.get("tool_calls"):
        meta["tool_calls"] = reply["tool_calls"]
    if reply and reply.get("finish_reason") is not None:
        _add(meta, "finish_reason", reply["finish_reason"])
    if other_events:
        meta["events"] = other_events
    record["metadata"] = meta
    return record


def _take(attrs: dict, keys: Iterable[str], used: set[str]) -> Any:
    """Return the value of the first of ``keys`` present in ``attrs``, marking it used."""
    for key in keys:
        value = attrs.get(key)
        if value is not None:
            used.add(key)
            return value
    return None


def _otel_input(inputs: list[dict], attrs: dict) -> str | None:
    """Return a span's user input: the last user message, else ``input.value``."""
    text = _last_user_text(inputs)
    if text is None:
        others = [m.get("content") for m in inputs if m.get("role") != "system" and m.get("content")]
        text = others[-1] if others else None
    if text is None:
        value = attrs.get("input.value")
        parsed = _parse_json_text(value)
        if isinstance(parsed, dict) and isinstance(parsed.get("messages"), list):
            text = _last_user_text([_openai_message(m) for m in parsed["messages"] if isinstance(m, dict)])
        text = text if text is not None else value
    return text


def _otel_messages(attrs: dict, events: list[dict], used: set[str]) -> tuple[list, list, list]:
    """Return (input messages, output messages, unconsumed events) of an LLM span.

    Conventions are tried newest first; inputs and outputs each come from the first
    convention that has them (an instrumentation may mix attributes and events).
    """
    found = [
        _messages_current(attrs, used),
        _messages_indexed(attrs, used, _INDEXED_GEN_AI, "gen_ai.prompt.", "gen_ai.completion."),
        _messages_indexed(attrs, used, _INDEXED_OPENINFERENCE, "llm.input_messages.", "llm.output_messages."),
    ]
    event_inputs, event_outputs, other_events = _messages_from_events(events)
    found.append((event_inputs, event_outputs))
    inputs = next((i for i, _ in found if i), [])
    outputs = next((o for _, o in found if o), [])
    return inputs, outputs, other_events


def _messages_current(attrs: dict, used: set[str]) -> tuple[list, list]:
    """Return messages from gen_ai.system_instructions / gen_ai.input.messages / gen_ai.output.messages."""
    inputs: list[dict] = []
    outputs: list[dict] = []
    if "gen_ai.system_instructions" in attrs:
        used.add("gen_ai.system_instructions")
        text = _text(_parse_json_text(attrs["gen_ai.system_instructions"]))
        if text:
            inputs.append({"role": "system", "content": text})
    for key, target in (("gen_ai.input.messages", inputs), ("gen_ai.output.messages", outputs)):
        if key in attrs:
            used.add(key)
            messages = _parse_json_text(attrs[key])
            if isinstance(messages, list):
                target.extend(_semconv_message(m) for m in messages if isinstance(m, dict))
    return inputs, outputs


def _semconv_message(message: dict) -> dict:
    """Return a GenAI semconv message ({role, parts:[...]}) as an internal message."""
    parts = message.get("parts")
    if parts is None:  # some emitters use OpenAI's shape inside the attribute
        return _openai_message(message) | _finish(message)
    calls = [
        {"id": p.get("id"), "name": p.get("name"), "arguments": _parse_arguments(p.get("arguments"))}
        for p in parts if isinstance(p, dict) and p.get("type") == "tool_call"
    ]
    out = {"role": message.get("role"), "content": _text(parts)}
    if calls:
        out["tool_calls"] = calls
    return out | _finish(message)


def _finish(message: dict) -> dict:
    """Return ``{"finish_reason": ...}`` when a message has one, else {}."""
    reason = message.get("finish_reason")
    return {} if reason is None else {"finish_reason": reason}


def _messages_indexed(
    attrs: dict, used: set[str], pattern: re.Pattern, in_prefix: str, out_prefix: str
) -> tuple[list, list]:
    """Return messages flattened into indexed attributes.

    OpenLLMetry: ``gen_ai.prompt.N.role/content``, ``gen_ai.completion.N.content``;
    OpenInference: ``llm.input_messages.N.message.role/content`` and
    ``llm.output_messages.N.message.content`` (plus ``contents.K`` text parts and
    ``tool_calls.K`` in both).
    """
    groups: dict[bool, dict[int, dict]] = {True: {}, False: {}}
    for key, value in attrs.items():
        if not key.startswith((in_prefix, out_prefix)):
            continue
        match = pattern.fullmatch(key)
        if match is None:
            continue
        used.add(key)
        is_input = match.group(1) in ("prompt", "input")
        groups[is_input].setdefault(int(match.group(2)), {})[match.group(3)] = value
    return (
        [_indexed_message(groups[True][i]) for i in sorted(groups[True])],
        [_indexed_message(groups[False][i]) for i in sorted(groups[False])],
    )


def _indexed_message(fields: dict) -> dict:
    """Return an internal message from the sub-fields of one indexed message."""
    content = fields.get("content")
    if isinstance(content, str) and content.startswith("[{"):
        parts = _parse_json_text(content)  # multimodal content serialized as parts
        if isinstance(parts, list) and all(isinstance(p, dict) and "type" in p for p in parts):
            content = parts
    texts: dict[int, str] = {}
    calls: dict[int, dict] = {}
    for name, value in fields.items():
        if match := _CONTENTS_FIELD.fullmatch(name):
            texts[int(match.group(1))] = value
        elif match := _TOOL_CALL_FIELD.fullmatch(name):
            calls.setdefault(int(match.group(1)), {})[match.group(2)] = value
    text = _text(content)
    if text is None and texts:
        text = "\n".join(str(texts[i]) for i in sorted(texts))
    tool_calls = [
        {"id": c.get("id"), "name": c.get("name"), "arguments": _parse_arguments(c.get("arguments"))}
        for _, c in sorted(calls.items())
    ]
    if not text and tool_calls:
        text = "\n".join(map(_render_call, tool_calls))
    out = {"role": fields.get("role"), "content": text}
    if tool_calls:
        out["tool_calls"] = tool_calls
    return out | _finish(fields)


def _messages_from_events(events: list[dict]) -> tuple[list, list, list]:
    """Return (input messages, output messages, other events) from span events.

    Reads ``gen_ai.{system,user,assistant,tool}.message`` and ``gen_ai.choice`` events
    (content in a ``content`` attribute, a ``message`` attribute or a ``body``) and
    the older ``gen_ai.content.prompt``/``gen_ai.content.completion`` events (JSON
    message lists in ``gen_ai.prompt``/``gen_ai.completion``). Other events (e.g.
    exceptions) are returned as {name, attributes} for the metadata.
    """
    inputs: list[dict] = []
    outputs: list[dict] = []
    others: list[dict] = []
    for event in events:
        name = event.get("name")
        attrs = _otel_attrs(event.get("attributes"))
        if name in _EVENT_ROLES:
            inputs.append(_event_message(event, attrs, _EVENT_ROLES[name]))
        elif name == "gen_ai.choice":
            outputs.append(_event_message(event, attrs, "assistant"))
        elif name in ("gen_ai.content.prompt", "gen_ai.content.completion"):
            is_prompt = name == "gen_ai.content.prompt"
            target = inputs if is_prompt else outputs
            messages = _parse_json_text(attrs.get("gen_ai.prompt" if is_prompt else "gen_ai.completion"))
            if isinstance(messages, list):
                target.extend(_openai_message(m) for m in messages if isinstance(m, dict))
            elif isinstance(messages, str):
                target.append({"role": "user" if is_prompt else "assistant", "content": messages})
        else:
            others.append({"name": name, "attributes": attrs})
    return inputs, outputs, others


def _event_message(event: dict, attrs: dict, role: str) -> dict:
    """Return the message a gen_ai message/choice event carries."""
    body = _parse_json_text(_first(attrs, "message", "body") or event.get("body"))
    message = body
    if isinstance(body, dict) and isinstance(body.get("message"), dict):
        message = body["message"]  # gen_ai.choice: {index, finish_reason, message}
    if isinstance(message, dict):
        out = _openai_message({"role": message.get("role") or role, **message})
    else:
        out = {"role": role, "content": _text(message)}
    if "content" in attrs:
        out["content"] = _text(_parse_json_text(attrs["content"]))
    out["role"] = attrs.get("role") or out.get("role") or role
    reason = _first(attrs, "finish_reason") or (body.get("finish_reason") if isinstance(body, dict) else None)
    return out | ({"finish_reason": reason} if reason is not None else {})


# --------------------------------------------------------------------------- Langfuse

_LANGFUSE_QUESTION_KEYS = ("question", "query", "input", "message", "prompt")
_LANGFUSE_CONTEXT_KEYS = ("context", "documents", "contexts", "passages")
_LANGFUSE_ANSWER_KEYS = ("content", "answer", "output", "text", "completion")
_LANGFUSE_CONSUMED = frozenset(
    {"id", "timestamp", "name", "input", "output", "sessionId", "userId", "tags",
     "metadata", "latency", "totalCost", "observations", "scores"}
)
# Score names (lower case, "_" and " " read as "-") that are end-user feedback.
_FEEDBACK_SCORE_NAMES = frozenset(
    {"user-feedback", "feedback", "thumbs", "thumbs-up", "thumbs-up-down", "user-thumbs"}
)
_FEEDBACK_SCORE_SOURCES = frozenset({"API", "EVAL"})
_FEEDBACK_CATEGORIES = {
    "up": 1, "thumbs-up": 1, "positive": 1, "good": 1, "yes": 1, "true": 1, "helpful": 1,
    "down": -1, "thumbs-down": -1, "negative": -1, "bad": -1, "no": -1, "false": -1,
    "unhelpful": -1, "neutral": 0,
}


def _read_langfuse(path, batch_requests, stats) -> Iterator[RawRecord]:
    """Yield one record per trace of a Langfuse export (array, JSON lines or {"data": [...]})."""
    for item in _iter_json_items(path):
        value = item.value
        is_wrapper = isinstance(value, dict) and isinstance(value.get("data"), list) and "id" not in value
        if item.error is None and is_wrapper:
            finder = _LineFinder(item.raw, item.line)
            for trace in value["data"]:
                line = finder.line_of("id", trace.get("id") if isinstance(trace, dict) else None)
                yield _map_value(line, _dumps(trace), trace, _map_langfuse)
            continue
        yield _map_value(item.line, item.raw, value, _map_langfuse, item.error)


def _map_langfuse(trace: dict) -> dict:
    """Return the canonical record of one Langfuse trace with its observations and scores."""
    record: dict = {}
    meta = _own_metadata(trace.get("metadata"))
    observations = trace.get("observations") or []
    generation = next(
        (o for o in observations if isinstance(o, dict) and str(o.get("type", "")).upper() == "GENERATION"),
        None,
    ) or {}

    _put(record, "log_id", trace.get("id"))
    _put(record, "ts", trace.get("timestamp"))
    _put(record, "source", trace.get("name") or trace.get("environment"))
    trace_input = trace.get("input") if trace.get("input") is not None else generation.get("input")
    conversation = _langfuse_input(trace_input, record, meta)
    trace_output = trace.get("output") if trace.get("output") is not None else generation.get("output")
    _put(record, "output", _langfuse_output(trace_output))
    if conversation:
        reply = [{"role": "assistant", "content": record.get("output")}] if "output" in record else []
        record["messages"] = _canonical_messages(conversation) + reply
    _put(record, "session_id", trace.get("sessionId"))
    _put(record, "user_id", trace.get("userId"))
    _put(record, "tags", trace.get("tags"))
    _put(record, "model", generation.get("model"))
    _put(record, "prompt_name", generation.get("promptName"))
    _put(record, "prompt_version", generation.get("promptVersion"))
    usage = _as_dict(generation.get("usageDetails")) or _as_dict(generation.get("usage"))
    # usageDetails/usage {input, output} (v3), usage {promptTokens, ...} (v2 SDKs), or
    # promptTokens/completionTokens on the observation itself (public API v2).
    prompt_tokens = _first(usage, "input", "promptTokens", "prompt_tokens")
    completion_tokens = _first(usage, "output", "completionTokens", "completion_tokens")
    _put(record, "prompt_tokens", prompt_tokens if prompt_tokens is not None else generation.get("promptTokens"))
    _put(
        record, "completion_tokens",
        completion_tokens if completion_tokens is not None else generation.get("completionTokens"),
    )
    latency = _seconds_to_ms(trace.get("latency"))
    _put(record, "latency_ms", latency)
    if latency is None:
        _add(meta, "latency", trace.get("latency"))
    _put(record, "cost_usd", trace.get("totalCost"))

    scores = trace.get("scores") or []
    if scores:
        meta["langfuse_scores"] = scores
    _put(record, "feedback", _langfuse_feedback(scores))
    if observations:
        # Their input/output is the trace's text again; everything else is kept.
        meta["langfuse_observations"] = [
            {k: v for k, v in o.items() if k not in ("input", "output")} if isinstance(o, dict) else o
            for o in observations
        ]
    for key, value in trace.items():
        if key not in _LANGFUSE_CONSUMED:
            _add(meta, key, value)  # release, version, environment, htmlPath, ...
    record["metadata"] = meta
    return record


def _langfuse_input(value: Any, record: dict, meta: dict) -> list[dict]:
    """Set input (and context) from a trace's input; return its messages when it has some.

    A string is the input; a dict gives its question-like key as input and its
    context-like key as context, its other keys go to metadata as ``input.<key>``;
    a message list gives the last user message (and the context of the conversation).
    """
    if isinstance(value, dict) and isinstance(value.get("messages"), list):
        for key, extra in value.items():
            if key != "messages":
                _add(meta, f"input.{key}", extra)
        value = value["messages"]
    if isinstance(value, list) and any(isinstance(m, dict) and "role" in m for m in value):
        messages = [_openai_message(m) for m in value if isinstance(m, dict)]
        _put(record, "input", _last_user_text(messages))
        _put(record, "context", _context_from(messages))
        return messages
    if isinstance(value, dict):
        question_key = next((k for k in _LANGFUSE_QUESTION_KEYS if k in value), None)
        if question_key is None:
            record["input"] = _dumps(value)
            return []
        context_key = next((k for k in _LANGFUSE_CONTEXT_KEYS if k in value), None)
        _put(record, "input", _text_or_json(value[question_key]))
        if context_key is not None:
            _put(record, "context", _join_context(value[context_key]))
        for key, extra in value.items():
            if key not in (question_key, context_key):
                _add(meta, f"input.{key}", extra)
        return []
    if value is not None:
        record["input"] = value if isinstance(value, str) else _dumps(value)
    return []


def _text_or_json(value: Any) -> str | None:
    """Return text for a value: a string, a message's content, text parts, else its JSON."""
    if value is None or isinstance(value, str):
        return value
    if isinstance(value, dict) and "content" in value:
        return _text(value["content"])
    text = _text(value) if isinstance(value, list) else None
    return text if text is not None else _dumps(value)


def _join_context(value: Any) -> str | None:
    """Return retrieved documents as one text (list items joined by blank lines)."""
    if value is None or isinstance(value, str):
        return value
    if isinstance(value, list):
        texts = []
        for doc in value:
            if isinstance(doc, dict):
                text = _first(doc, "content", "text", "page_content")
                texts.append(text if isinstance(text, str) else _dumps(doc))
            elif doc is not None:
                texts.append(doc if isinstance(doc, str) else _dumps(doc))
        return "\n\n".join(texts)
    if isinstance(value, dict):
        text = _first(value, "content", "text", "page_content")
        return text if isinstance(text, str) else _dumps(value)
    return str(value)


def _langfuse_output(value: Any) -> str | None:
    """Return a trace's output as text: a string, an answer-like key, a message, else JSON."""
    if value is None or isinstance(value, str):
        return value
    if isinstance(value, dict):
        for key in _LANGFUSE_ANSWER_KEYS:
            text = _text(value.get(key))
            if text is not None:
                return text
        if value.get("tool_calls"):
            return _openai_message(value)["content"]
    if isinstance(value, list):
        replies = [_openai_message(m) for m in value if isinstance(m, dict) and m.get("role") == "assistant"]
        if replies and replies[-1]["content"] is not None:
            return replies[-1]["content"]
    return _dumps(value)


def _langfuse_feedback(scores: list) -> int | None:
    """Return end-user feedback (-1, 0, 1) from a trace's scores, else None.

    Only scores named like user feedback (:data:`_FEEDBACK_SCORE_NAMES`) from source
    API or EVAL count (ANNOTATION scores are labels, not feedback); the latest one
    (by timestamp, else the last listed) wins. Rule: BOOLEAN scores and ``thumbs``
    names are 0/1 thumbs (1 -> 1, 0 -> -1); NUMERIC scores map by sign (>0 -> 1,
    <0 -> -1, 0 -> 0); CATEGORICAL ones by label (up/positive/good/yes -> 1,
    down/negative/bad/no -> -1, neutral -> 0).
    """
    candidates = []
    for index, score in enumerate(scores):
        if not isinstance(score, dict):
            continue
        name = str(score.get("name", "")).lower().replace("_", "-").replace(" ", "-")
        source = str(score.get("source", "")).upper()
        if name not in _FEEDBACK_SCORE_NAMES or source not in _FEEDBACK_SCORE_SOURCES:
            continue
        value = _feedback_value(score, name)
        if value is not None:
            ts = score.get("timestamp")
            candidates.append((ts if isinstance(ts, str) else "", index, value))
    return max(candidates)[2] if candidates else None


def _feedback_value(score: dict, name: str) -> int | None:
    """Return -1/0/1 for one feedback score by the rule of :func:`_langfuse_feedback`."""
    data_type = str(score.get("dataType", "")).upper()
    value = score.get("value")
    label = score.get("stringValue")
    if data_type == "CATEGORICAL" or (value is None and isinstance(label, str)):
        return _FEEDBACK_CATEGORIES.get(str(label).strip().lower().replace(" ", "-"))
    try:
        number = float(value)
    except (TypeError, ValueError):
        return None
    if data_type == "BOOLEAN" or "thumb" in name:
        return 1 if number > 0 else -1
    return (number > 0) - (number < 0)


# --------------------------------------------------------------------------- dispatch

_READERS: dict[str, Callable[[Any, dict | None, dict | None], Iterator[RawRecord]]] = {
    "canonical_jsonl": _read_canonical,
    "openai_chat": _read_openai_chat,
    "openai_batch_output": _read_batch_output,
    "otel": _read_otel,
    "langfuse": _read_langfuse,
}
