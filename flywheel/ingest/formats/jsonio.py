"""Open log files (gzip, BOM) and iterate the JSON values of a file with their lines.

JSON layouts accepted by every JSON format: JSON lines (one value per line; blank lines
are skipped, a broken line becomes an error record), one top-level JSON array, or one
(pretty-printed) JSON document. Langfuse exports may also be ``{"data": [...]}``.
"""

from __future__ import annotations

import gzip
import json
import re
import zlib
from contextlib import contextmanager
from typing import Any, Iterable, Iterator, NamedTuple, NoReturn, TextIO

from flywheel.ingest.records import UnreadableFile


_SNIFF_CHARS = 1 << 16
_SNIFF_LINES = 20

_DECODER = json.JSONDecoder()
# What parsing one JSON text may raise: not JSON, or nested deeper than Python's
# recursion limit (a poison record, rejected like a broken one).
_JSON_ERRORS = (ValueError, RecursionError)
NOT_UTF8 = "not valid UTF-8"
_WS = re.compile(r"[ \t\n\r]*")

# --------------------------------------------------------------------------- opening


def open_text(path) -> TextIO:
    """Return ``path`` opened for reading UTF-8 text, decompressing gzip on the fly.

    A file is treated as gzip when its name ends in ``.gz`` or it starts with the gzip
    magic bytes. A leading byte-order mark is skipped (``utf-8-sig``), since Windows
    tools write one. Bytes that are not UTF-8 become lone surrogates
    (``surrogateescape``): the record holding them is rejected, not the file (see
    :func:`has_undecodable`). Decompression errors surface while reading.
    """
    if _is_gzip(path):
        return gzip.open(path, "rt", encoding="utf-8-sig", errors="surrogateescape")
    return open(path, encoding="utf-8-sig", errors="surrogateescape")


def has_undecodable(text: str) -> bool:
    """Return whether text read by :func:`open_text` held bytes that are not UTF-8."""
    try:
        text.encode("utf-8")
    except UnicodeEncodeError:
        return True
    return False


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
        except _JSON_ERRORS as err:
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
        except _JSON_ERRORS as err:
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
    except RecursionError:
        doc_error = "nested too deeply"
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
        except _JSON_ERRORS:
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
            except RecursionError:  # where the element ends is not known
                _raise_broken_array(path, "an element nested too deeply", text, pos, first_line)
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


def _json_error(err: ValueError | RecursionError) -> str:
    """Return the error reason for a line that is not valid JSON."""
    if isinstance(err, RecursionError):
        return "invalid JSON: nested too deeply"
    if not isinstance(err, json.JSONDecodeError):
        return f"invalid JSON: {err}"
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
