"""Tell annotation formats apart from the content and dispatch to the tool's reader."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

from flywheel.annotations.formats.records import ParsedRecord, UnreadableAnnotationFile
from flywheel.annotations.formats.reading import _Document, _csv_rows, _json_documents, _read_text
from flywheel.annotations.formats.canonical import _canonical
from flywheel.annotations.formats.queue_csv import WIDE_LABEL_COLUMNS, _wide
from flywheel.annotations.formats.label_studio import _label_studio_min, _label_studio_task
from flywheel.annotations.formats.argilla import _argilla_record
from flywheel.annotations.formats.langfuse import _langfuse_score


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


def _kind(obj: Any) -> str | None:
    """Return the format one JSON object looks like, or None."""
    if not isinstance(obj, dict):
        return None
    keys = {str(k).lower() for k in obj}
    if "annotations" in keys or ("data" in keys and isinstance(obj.get("data"), dict)):
        return "label_studio"
    if {"annotator", "annotation_id"} <= keys:
        return "label_studio_min"
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
        "records (log_id, label, value), Label Studio tasks or JSON-MIN rows, Argilla records or Langfuse scores"
    )


def _json_records(fmt: str, documents: list[_Document]) -> Iterator[ParsedRecord]:
    reader = {
        "canonical_json": _canonical,
        "label_studio": _label_studio_task,
        "label_studio_min": _label_studio_min,
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
    elif {"annotator", "annotation_id"} <= lower:  # Label Studio's CSV/TSV export (JSON-MIN rows)
        fmt, reader = "label_studio_csv", _label_studio_min
    elif "log_id" in lower and lower & set(WIDE_LABEL_COLUMNS):
        fmt, reader = "wide_csv", _wide
        names = [n.lower() for n in names]
    elif {"traceid", "name"} <= lower and lower & {"value", "stringvalue"}:
        fmt, reader = "langfuse_scores", _langfuse_score
    else:
        raise UnreadableAnnotationFile(
            f"CSV of no known annotation format (header: {', '.join(names)[:300]}); expected "
            "log_id,annotator,label,value,..., a Label Studio CSV/TSV export (annotator, annotation_id, ...) "
            "or a Langfuse score export (traceId, name, value, ...)"
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
