"""Annotation file text (gzip, BOM, UTF-8), JSON documents and CSV rows with their lines."""

from __future__ import annotations

import csv
import gzip
import io
import json
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from flywheel.annotations.formats.records import RAW_LIMIT, UnreadableAnnotationFile


# ---------------------------------------------------------------------------------------
# Text, JSON documents and CSV rows with their lines
# ---------------------------------------------------------------------------------------


def _read_text(path: Path) -> str:
    data = path.read_bytes()
    if data[:2] == b"\x1f\x8b":
        try:
            data = gzip.decompress(data)
        except (OSError, EOFError) as exc:
            raise UnreadableAnnotationFile(f"broken gzip file ({exc})") from None
    try:
        return data.decode("utf-8-sig")
    except UnicodeDecodeError as exc:
        raise UnreadableAnnotationFile(f"not UTF-8 text ({exc})") from None


NESTED_TOO_DEEPLY = "not valid JSON: nested too deeply"


@dataclass
class _Document:
    line: int
    raw: str
    obj: Any = None
    error: str | None = None


def _json_documents(text: str) -> Iterator[_Document]:
    """Yield the top-level JSON values of a JSON array, JSON lines or one JSON object."""
    start = len(text) - len(text.lstrip())
    if text[start] == "[":
        yield from _array_documents(text, start)
        return
    # Only "\n" ends a JSON line: str.splitlines would also split at U+2028/U+2029, \x1c-\x1e
    # and \x85, which JSON allows raw inside strings (a comment with a line separator).
    lines = [line.removesuffix("\r") for line in text.split("\n")]
    first = next(i for i, line in enumerate(lines) if line.strip())
    try:
        json.loads(lines[first])
    except (json.JSONDecodeError, RecursionError):
        # Not JSON lines: maybe one pretty-printed object.
        try:
            yield _Document(line=first + 1, raw=text.strip()[:RAW_LIMIT], obj=json.loads(text))
            return
        except (json.JSONDecodeError, RecursionError):
            pass
    for number, line in enumerate(lines, start=1):
        if not line.strip():
            continue
        try:
            yield _Document(line=number, raw=line, obj=json.loads(line))
        except json.JSONDecodeError as exc:
            yield _Document(line=number, raw=line, error=f"not valid JSON: {exc.msg} at column {exc.colno}")
        except RecursionError:  # a poison record: rejected like a broken one
            yield _Document(line=number, raw=line[:RAW_LIMIT], error=NESTED_TOO_DEEPLY)


def _array_documents(text: str, start: int) -> Iterator[_Document]:
    decoder = json.JSONDecoder()
    pos, line, counted = start + 1, 1 + text.count("\n", 0, start), start
    while True:
        pos = _skip_space(text, pos)
        if pos < len(text) and text[pos] == "]":
            return
        line += text.count("\n", counted, pos)
        counted = pos
        try:
            obj, end = decoder.raw_decode(text, pos)
        except json.JSONDecodeError as exc:
            yield _Document(line=line, raw=text[pos:pos + RAW_LIMIT],
                            error=f"not valid JSON from here on: {exc.msg} (line {exc.lineno}, column {exc.colno})")
            return
        except RecursionError:  # where the element ends is not known
            yield _Document(line=line, raw=text[pos:pos + RAW_LIMIT], error=f"{NESTED_TOO_DEEPLY} from here on")
            return
        yield _Document(line=line, raw=text[pos:end][:RAW_LIMIT], obj=obj)
        pos = _skip_space(text, end)
        if pos < len(text) and text[pos] == ",":
            pos += 1
        elif pos >= len(text) or text[pos] != "]":
            line += text.count("\n", counted, pos)
            counted = pos
            yield _Document(line=line, raw=text[pos:pos + RAW_LIMIT],
                            error="not valid JSON from here on: expected ',' or ']' between array elements")
            return


def _skip_space(text: str, pos: int) -> int:
    while pos < len(text) and text[pos] in " \t\r\n":
        pos += 1
    return pos


class _Tap:
    """An iterator over lines that remembers the lines the CSV reader consumed."""

    def __init__(self, lines: Iterator[str]):
        self.lines = lines
        self.taken: list[str] = []

    def __iter__(self):
        return self

    def __next__(self) -> str:
        line = next(self.lines)
        self.taken.append(line)
        return line


def _csv_rows(text: str) -> Iterator[tuple[int, str, list[str] | None, str | None]]:
    """Yield (first line, raw text, fields or None, error) for each CSV record."""
    tap = _Tap(iter(io.StringIO(text, newline="")))
    header = text.split("\n", 1)[0]
    delimiter = max((",", "\t", ";"), key=header.count)
    reader = csv.reader(tap, delimiter=delimiter)
    line = 1
    while True:
        try:
            row = next(reader)
            error = None
        except StopIteration:
            return
        except csv.Error as exc:
            row, error = None, f"not valid CSV: {exc}"
        raw = "".join(tap.taken)
        tap.taken.clear()
        yield line, raw.rstrip("\r\n"), row, error
        line += max(1, raw.count("\n"))
