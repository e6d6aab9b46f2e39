"""Label Studio JSON export: one record per ``choices`` or ``labels`` result of a
not-cancelled annotation of a task.

Log id: ``data.log_id``, else ``data.id``, else the task id as ``ls-<id>``. Annotator:
``completed_by`` as ``label-studio:<user id>`` whether it is an id or an object, the
e-mail when the object has no id. Created: ``updated_at``, else ``created_at``.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

from flywheel.annotations.formats.records import ParsedRecord, _dumps, _first_present, _single, _text


def _ls_annotator(completed_by: Any) -> str | None:
    if isinstance(completed_by, dict):
        if completed_by.get("id") not in (None, ""):
            return f"label-studio:{completed_by['id']}"
        return _text(completed_by.get("email")) or _text(completed_by.get("username"))
    if completed_by in (None, "") or isinstance(completed_by, (list, bool)):
        return None
    return f"label-studio:{completed_by}"


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
