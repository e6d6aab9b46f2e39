"""Read annotation files of every supported tool into :class:`ParsedRecord` objects.

One parsed record is one label claim: one annotator's value of one label for one log
(plus, for span labels, one span). Records keep the file's line and raw text so that
a rejection can point at them. This module only reads: mapping names and values to the
label schema, and the checks against the database, are :mod:`.values` and
:mod:`.importer`.

Formats (:func:`parse_file` detects them from the content, not the file name):

=================  ===========  =====================================================
format             tool         what one record is
=================  ===========  =====================================================
canonical_csv      canonical    a row ``log_id,annotator,label,value[,comment,created_at,
                                span_start,span_end]`` (comma, tab or semicolon)
canonical_json     canonical    an object with the same keys (JSON lines or an array)
label_studio       label_studio a ``choices`` or ``labels`` result of a not-cancelled
                                annotation of a task (JSON export: array, or lines)
argilla            argilla      a response of one user to one question of a record
                                (``record.to_dict()``, or the flattened ``to_list()``)
langfuse_scores    langfuse     a score row with ``source`` = ``ANNOTATION`` (CSV export,
                                or score objects as JSON)
wide_csv           canonical    a filled cell of a label column (``hallucination``,
                                ``relevance``) of a row with ``log_id`` and ``annotator``:
                                the queue CSV of the outbox, filled in by a person
=================  ===========  =====================================================

Log ids: canonical ``log_id``; Label Studio ``data.log_id``, else ``data.id``, else the
task id as ``ls-<id>`` (tasks with none of these are rejected: ``missing log_id``);
Argilla ``metadata.log_id``, else ``fields.log_id``, else the record ``id``; Langfuse
``traceId``.

Annotators: Label Studio ``completed_by`` as ``label-studio:<user id>`` whether it is
an id or an object (so that one person is one annotator in every export), the e-mail
when the object has no id; Argilla the response's ``user_id``; Langfuse the
``authorUserId`` column, else ``annotator``/``author``/``authorUserId``/``user``/
``email`` in the score's metadata, else ``langfuse`` (the CSV export names no author).

Not labels, so counted as *skipped* rather than read: cancelled Label Studio
annotations, annotations without results, Argilla responses with status ``discarded``
or ``draft``, Langfuse scores whose source is not ``ANNOTATION`` (API, EVAL).
"""

from __future__ import annotations

import csv
import gzip
import io
import json
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

RAW_LIMIT = 20_000  # characters of raw text kept with a rejection

TOOL_OF_FORMAT: dict[str, str] = {
    "canonical_csv": "canonical",
    "canonical_json": "canonical",
    "wide_csv": "canonical",
    "label_studio": "label_studio",
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


def parse_file(path: Path) -> tuple[str, Iterator[ParsedRecord]]:
    """Return the format of an annotation file and an iterator of its parsed records.

    Raises :class:`UnreadableAnnotationFile` when the bytes are not UTF-8 text or the
    content is not one of the formats of this module.
    """
    text = _read_text(Path(path))
    stripped = text.lstrip()
    if not stripped:
        return "empty", iter(())
    if stripped[0] in "[{":
        documents = list(_json_documents(text))
        fmt = _json_format(documents)
        return fmt, (iter(()) if fmt == "empty" else _json_records(fmt, documents))
    return _csv_file(text)


def detect_format(path: Path) -> str:
    """Return the format name of an annotation file (see the module docstring)."""
    return parse_file(path)[0]


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
    lines = text.splitlines()
    first = next(i for i, line in enumerate(lines) if line.strip())
    try:
        json.loads(lines[first])
    except json.JSONDecodeError:
        # Not JSON lines: maybe one pretty-printed object.
        try:
            yield _Document(line=first + 1, raw=text.strip()[:RAW_LIMIT], obj=json.loads(text))
            return
        except json.JSONDecodeError:
            pass
    for number, line in enumerate(lines, start=1):
        if not line.strip():
            continue
        try:
            yield _Document(line=number, raw=line, obj=json.loads(line))
        except json.JSONDecodeError as exc:
            yield _Document(line=number, raw=line, error=f"not valid JSON: {exc.msg} at column {exc.colno}")


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


def _kind(obj: Any) -> str | None:
    """Return the format one JSON object looks like, or None."""
    if not isinstance(obj, dict):
        return None
    keys = {str(k).lower() for k in obj}
    if "annotations" in keys or ("data" in keys and isinstance(obj.get("data"), dict)):
        return "label_studio"
    if "responses" in keys or "fields" in keys or any(k.endswith(".responses") for k in keys):
        return "argilla"
    if "log_id" in keys and "label" in keys:
        return "canonical_json"
    if {"traceid", "name"} <= keys and keys & {"value", "stringvalue"}:
        return "langfuse_scores"
    return None


def _json_format(documents: list[_Document]) -> str:
    parsed = [d for d in documents if d.error is None]
    if not parsed:
        if documents and documents[0].error:
            raise UnreadableAnnotationFile(documents[0].error)
        return "empty"
    for doc in parsed[:50]:
        kind = _kind(doc.obj)
        if kind:
            return kind
    sample = parsed[0].obj
    keys = sorted(sample)[:12] if isinstance(sample, dict) else type(sample).__name__
    raise UnreadableAnnotationFile(
        f"JSON of no known annotation format (first record keys: {keys}); expected canonical "
        "records (log_id, label, value), Label Studio tasks, Argilla records or Langfuse scores"
    )


def _json_records(fmt: str, documents: list[_Document]) -> Iterator[ParsedRecord]:
    reader = {
        "canonical_json": _canonical,
        "label_studio": _label_studio_task,
        "argilla": _argilla_record,
        "langfuse_scores": _langfuse_score,
    }[fmt]
    for doc in documents:
        if doc.error is not None:
            yield ParsedRecord(line=doc.line, raw=doc.raw, reject="malformed", detail=doc.error)
        elif not isinstance(doc.obj, dict):
            yield ParsedRecord(line=doc.line, raw=doc.raw, reject="malformed",
                               detail=f"a {type(doc.obj).__name__}, not a JSON object")
        else:
            yield from reader(doc.obj, doc.line, doc.raw)


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


def _csv_file(text: str) -> tuple[str, Iterator[ParsedRecord]]:
    rows = _csv_rows(text)
    for line, raw, header, error in rows:
        if error or not header or not any(h.strip() for h in header):
            if error:
                raise UnreadableAnnotationFile(f"line {line}: {error}")
            continue
        break
    else:
        return "empty", iter(())
    names = [h.strip() for h in header]
    lower = {n.lower() for n in names}
    if "log_id" in lower and "label" in lower:
        fmt, reader = "canonical_csv", _canonical
        names = [n.lower() for n in names]
    elif "log_id" in lower and lower & set(WIDE_LABEL_COLUMNS):
        fmt, reader = "wide_csv", _wide
        names = [n.lower() for n in names]
    elif {"traceid", "name"} <= lower and lower & {"value", "stringvalue"}:
        fmt, reader = "langfuse_scores", _langfuse_score
    else:
        raise UnreadableAnnotationFile(
            f"CSV of no known annotation format (header: {', '.join(names)[:300]}); expected "
            "log_id,annotator,label,value,... or a Langfuse score export (traceId, name, value, ...)"
        )

    def records() -> Iterator[ParsedRecord]:
        for line, raw, row, error in rows:
            if error:
                yield ParsedRecord(line=line, raw=raw, reject="malformed", detail=error)
                continue
            if not row or not any(field.strip() for field in row):
                continue  # a blank line is not a record
            if len(row) != len(names):
                yield ParsedRecord(line=line, raw=raw, reject="malformed",
                                   detail=f"{len(row)} fields, the header has {len(names)}")
                continue
            values = {name: (value if value.strip() != "" else None) for name, value in zip(names, row)}
            yield from reader(values, line, raw)

    return fmt, records()


# ---------------------------------------------------------------------------------------
# One reader per format: a dict (row or object) and its line -> parsed records
# ---------------------------------------------------------------------------------------


def _text(value: Any) -> Any:
    """Return strings stripped (None when empty); other values as they are."""
    if isinstance(value, str):
        value = value.strip()
        return value or None
    return value


def _canonical(obj: dict, line: int, raw: str) -> Iterator[ParsedRecord]:
    get = {str(k).lower(): v for k, v in obj.items()}
    yield ParsedRecord(line=line, raw=raw, **{name: _text(get.get(name)) for name in CANONICAL_FIELDS})


WIDE_LABEL_COLUMNS = ("hallucination", "relevance")


def _wide(obj: dict, line: int, raw: str) -> Iterator[ParsedRecord]:
    """One record per filled label column; a row with none filled is skipped (not labelled)."""
    filled = [name for name in WIDE_LABEL_COLUMNS if _text(obj.get(name)) is not None]
    if not filled:
        yield ParsedRecord(line=line, raw=raw, log_id=_text(obj.get("log_id")), skip="not labelled")
        return
    for name in filled:
        yield ParsedRecord(
            line=line, raw=raw, log_id=_text(obj.get("log_id")), annotator=_text(obj.get("annotator")),
            label=name, value=_text(obj.get(name)), comment=_text(obj.get("comment")),
            created_at=_text(obj.get("created_at")),
        )


def _dumps(value: Any) -> str:
    return json.dumps(value, ensure_ascii=False, separators=(",", ":"), default=str)[:RAW_LIMIT]


def _ls_annotator(completed_by: Any) -> str | None:
    if isinstance(completed_by, dict):
        if completed_by.get("id") not in (None, ""):
            return f"label-studio:{completed_by['id']}"
        return _text(completed_by.get("email")) or _text(completed_by.get("username"))
    if completed_by in (None, "") or isinstance(completed_by, (list, bool)):
        return None
    return f"label-studio:{completed_by}"


def _first_present(*values: Any) -> Any:
    for value in values:
        if value is not None and value != "":
            return value
    return None


def _label_studio_task(task: dict, line: int, raw: str) -> Iterator[ParsedRecord]:
    data = task.get("data") if isinstance(task.get("data"), dict) else {}
    log_id = _first_present(data.get("log_id"), data.get("id"))
    if log_id is None and task.get("id") not in (None, ""):
        log_id = f"ls-{task['id']}"
    annotations = task.get("annotations") or []
    if not isinstance(annotations, list):
        yield ParsedRecord(line=line, raw=raw, reject="malformed", detail="'annotations' is not a list")
        return
    for annotation in annotations:
        if not isinstance(annotation, dict):
            yield ParsedRecord(line=line, raw=_dumps(annotation), reject="malformed",
                               detail="an annotation is not a JSON object")
            continue
        results = annotation.get("result") or []
        if not isinstance(results, list):
            results = [results]
        comments = [
            " ".join(str(t) for t in (r.get("value") or {}).get("text") or [])
            for r in results if isinstance(r, dict) and r.get("type") == "textarea"
        ]
        labelled = [r for r in results if not (isinstance(r, dict) and r.get("type") == "textarea")]
        where = {"task": task.get("id"), "annotation": annotation.get("id")}
        if annotation.get("was_cancelled"):
            for result in labelled or [None]:
                yield ParsedRecord(line=line, raw=_dumps({**where, "result": result}), skip="cancelled annotation")
            continue
        if not labelled:
            yield ParsedRecord(line=line, raw=_dumps(where), skip="annotation without results")
            continue
        common = {
            "log_id": log_id,
            "annotator": _ls_annotator(annotation.get("completed_by")),
            "comment": _text(" ".join(c for c in comments if c.strip())),
            # updated_at: an edited annotation counts from its last edit (latest vote wins).
            "created_at": _first_present(annotation.get("updated_at"), annotation.get("created_at")),
        }
        for result in labelled:
            record = ParsedRecord(line=line, raw=_dumps({**where, "result": result}), **common)
            if log_id is None:
                record.reject, record.detail = "missing log_id", "the task has no data.log_id, data.id or id"
            elif not isinstance(result, dict):
                record.reject, record.detail = "malformed", "a result is not a JSON object"
            else:
                _ls_result(record, result)
            yield record


def _ls_result(record: ParsedRecord, result: dict) -> None:
    kind = result.get("type")
    value = result.get("value") if isinstance(result.get("value"), dict) else {}
    record.label = _text(result.get("from_name"))
    if kind == "choices":
        record.value = _single(record, value.get("choices"), "choices")
    elif kind == "labels":
        record.value = _single(record, value.get("labels"), "labels")
        record.span_label = record.value
        record.span_start, record.span_end = value.get("start"), value.get("end")
    else:
        record.reject = "unsupported result type"
        record.detail = f"{kind!r} results are not labels of a log (only choices and labels are)"


def _single(record: ParsedRecord, values: Any, what: str) -> Any:
    """Return the one value of a list (None if empty); mark the record if there are several."""
    if not isinstance(values, list):
        return values
    if len(values) > 1 and record.reject is None:
        record.reject, record.detail = "unmappable value", f"several {what} {values!r}: one value expected"
    return values[0] if values else None


def _argilla_record(rec: dict, line: int, raw: str) -> Iterator[ParsedRecord]:
    metadata = rec.get("metadata") if isinstance(rec.get("metadata"), dict) else {}
    fields = rec.get("fields") if isinstance(rec.get("fields"), dict) else {}
    log_id = _first_present(metadata.get("log_id"), fields.get("log_id"), rec.get("id"), rec.get("external_id"))
    created = _first_present(rec.get("updated_at"), rec.get("_updated_at"), rec.get("inserted_at"))
    for question, value, user, status in _argilla_responses(rec):
        raw_response = _dumps({"id": rec.get("id"), "question": question, "value": value,
                               "user_id": user, "status": status})
        if status in ("discarded", "draft"):
            yield ParsedRecord(line=line, raw=raw_response, skip=f"{status} response")
            continue
        common = {"log_id": log_id, "annotator": _text(user), "label": question, "created_at": created}
        if log_id is None:
            yield ParsedRecord(line=line, raw=raw_response, reject="missing log_id",
                               detail="no metadata.log_id, fields.log_id or id", **common)
        elif isinstance(value, list) and value and all(isinstance(v, dict) for v in value):
            for span in value:  # a span question: one record per span
                yield ParsedRecord(line=line, raw=raw_response, value=span.get("label"),
                                   span_label=span.get("label"), span_start=span.get("start"),
                                   span_end=span.get("end"), **common)
        else:
            record = ParsedRecord(line=line, raw=raw_response, **common)
            record.value = _text(_single(record, value, "values"))
            yield record


def _argilla_responses(rec: dict) -> Iterator[tuple[str, Any, Any, Any]]:
    """Yield (question, value, user_id, status) of a record's responses, either shape."""
    responses = rec.get("responses")
    if isinstance(responses, dict):
        for question, items in responses.items():
            for item in items if isinstance(items, list) else [items]:
                item = item if isinstance(item, dict) else {"value": item}
                yield question, item.get("value"), item.get("user_id"), item.get("status")
    for key, values in rec.items():  # to_list(flatten=True): "q.responses", "q.responses.users"
        if not (isinstance(key, str) and key.endswith(".responses")) or not isinstance(values, list):
            continue
        question = key[: -len(".responses")]
        users = rec.get(f"{key}.users") or []
        statuses = rec.get(f"{key}.status") or []
        for i, value in enumerate(values):
            yield (question, value, users[i] if i < len(users) else None,
                   statuses[i] if i < len(statuses) else None)


_LANGFUSE_AUTHOR_KEYS = ("annotator", "author", "authorUserId", "author_user_id", "user", "email", "userEmail")


def _langfuse_score(row: dict, line: int, raw: str) -> Iterator[ParsedRecord]:
    get = {str(k).lower(): v for k, v in row.items()}
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
        except json.JSONDecodeError:
            metadata = None
    metadata = {str(k).lower(): v for k, v in metadata.items()} if isinstance(metadata, dict) else {}
    author = _first_present(_text(get.get("authoruserid")),
                            *(_text(metadata.get(k.lower())) for k in _LANGFUSE_AUTHOR_KEYS))
    yield ParsedRecord(
        line=line, raw=raw if isinstance(raw, str) else _dumps(row),
        log_id=_text(get.get("traceid")), annotator=author if author is not None else "langfuse",
        label=_text(get.get("name")), value=value, comment=_text(get.get("comment")),
        created_at=_text(get.get("timestamp")),
    )
