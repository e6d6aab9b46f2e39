"""Label Studio exports: JSON, JSON-MIN, CSV and TSV.

JSON export (``label_studio``): one record per ``choices`` or ``labels`` result of a
not-cancelled annotation of a task. Log id: ``data.log_id``, else ``data.id``, else the
task id as ``ls-<id>``. Annotator: ``completed_by`` as ``label-studio:<user id>`` whether
it is an id or an object, the e-mail when the object has no id. Created: ``updated_at``,
else ``created_at``.

JSON-MIN export (``label_studio_min``) and the CSV/TSV exports (``label_studio_csv``,
the same rows as a table): one row per annotation, the task's data fields flattened
into the row next to one column per labelling control (the ``from_name``: a single
choice as its text, spans as a list of ``{start, end, text, labels}``), ``annotator``,
``annotation_id``, ``created_at``, ``updated_at``, ``lead_time``. One record per filled
label column. JSON-MIN keeps the Converter's key order (task data, ``id``, the controls,
``annotator``, ...), so the controls are the keys between ``id`` and ``annotator``; CSV
columns are sorted by name, so there a column is a label unless it is one of those, a
data field of the tasks flywheel exports (:data:`TASK_DATA_FIELDS`) or the ``comment``
text area (the comment). Region results other than text spans (rectangles, ...) are
rejected as ``unsupported result type``.
Log id: ``log_id``, else the task ``id`` as ``ls-<id>`` (the task's own ``data.id`` is
overwritten by the task id in these exports). Annotator: the ``annotator`` column,
which Label Studio writes as the user's e-mail (or ``label-studio:<id>`` when it is a
bare user id); note that the JSON export names the same person ``label-studio:<id>``
when its ``completed_by`` has an id, so map one to the other in ``mapping.toml``
``[annotators]`` when mixing exports. Created: ``updated_at``, else ``created_at``.
"""

from __future__ import annotations

import json
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


TASK_DATA_FIELDS = frozenset({"log_id", "input", "output", "context", "source", "day", "strategy", "reason", "priority"})
"""The data fields of the Label Studio tasks flywheel's outbox writes (not label columns)."""

_MIN_META = frozenset({"id", "annotator", "annotation_id", "created_at", "updated_at", "lead_time",
                       "agreement", "comment", "history"})


def _label_studio_min(row: dict, line: int, raw: str) -> Iterator[ParsedRecord]:
    """Yield one record per filled label column of a JSON-MIN (or CSV/TSV export) row."""
    get = {str(k).lower(): v for k, v in row.items()}
    log_id = _first_present(_text(get.get("log_id")))
    if log_id is None and get.get("id") not in (None, ""):
        log_id = f"ls-{_text(get['id'])}"
    annotator = get.get("annotator")
    if isinstance(annotator, (int, float)) and not isinstance(annotator, bool) or (
        isinstance(annotator, str) and annotator.strip().isdigit()
    ):
        annotator = f"label-studio:{int(annotator)}"  # a bare user id, as in the JSON export
    comment = get.get("comment")
    common = {
        "log_id": log_id,
        "annotator": _text(annotator),
        "comment": _text(" ".join(map(str, comment)) if isinstance(comment, list) else comment),
        "created_at": _first_present(_text(get.get("updated_at")), _text(get.get("created_at"))),
    }
    where = {"task": get.get("id"), "annotation": get.get("annotation_id")}
    labelled = False
    controls = _control_columns(row)
    for name, value in row.items():
        key = str(name).lower()
        if key in _MIN_META or value is None or value == "" or value == []:
            continue
        if (key not in controls) if controls is not None else (key in TASK_DATA_FIELDS):
            continue
        labelled = True
        value = _parse_cell(value)
        result_raw = _dumps({**where, name: value})
        if log_id is None:
            yield ParsedRecord(line=line, raw=result_raw, label=name, value=value, reject="missing log_id",
                               detail="the row has no log_id or id", **{k: v for k, v in common.items() if k != "log_id"})
        elif isinstance(value, list) and value and all(isinstance(v, dict) for v in value) and not all(
                "start" in v and "end" in v for v in value):
            kinds = sorted({k for v in value for k in v if k.endswith("labels")}) or ["region"]
            yield ParsedRecord(line=line, raw=result_raw, label=name, reject="unsupported result type",
                               detail=f"{'/'.join(kinds)} results are not labels of a log (only choices and "
                                      "text spans are)", **common)
        elif isinstance(value, list) and value and all(isinstance(v, dict) for v in value):
            for span in value:  # a labels (span) control: one record per span
                labels = span.get("labels")
                label_text = labels[0] if isinstance(labels, list) and labels else labels
                yield ParsedRecord(line=line, raw=result_raw, label=name, value=label_text,
                                   span_label=label_text, span_start=span.get("start"),
                                   span_end=span.get("end"), **common)
        else:
            record = ParsedRecord(line=line, raw=result_raw, label=name, **common)
            record.value = _text(_single(record, value, "choices"))
            yield record
    if not labelled:
        yield ParsedRecord(line=line, raw=_dumps(where), log_id=log_id, skip="annotation without results")


def _control_columns(row: dict) -> set[str] | None:
    """Return the control (label) columns of a JSON-MIN row from its key order, else None.

    The Converter writes the task data first, then ``id``, then one key per control,
    then ``annotator``: the keys between ``id`` and ``annotator`` are the controls. A
    CSV row has its columns sorted by name, so there the order says nothing (None).
    """
    keys = [str(k).lower() for k in row]
    if "id" not in keys or "annotator" not in keys:
        return None
    start, end = keys.index("id"), keys.index("annotator")
    if start > end or keys == sorted(keys):
        return None
    return set(keys[start + 1 : end])


def _parse_cell(value: Any) -> Any:
    """Return a CSV cell holding JSON (spans, several choices) parsed; other values as found."""
    if isinstance(value, str) and value.strip()[:1] in ("[", "{"):
        try:
            return json.loads(value)
        except ValueError:
            return value
    return value
