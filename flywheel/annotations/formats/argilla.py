"""Argilla v2 records (``record.to_dict()``, or the flattened ``to_list()``): one record
per response of one user to one question.

Log id: ``metadata.log_id``, else ``fields.log_id``, else the record ``id``. Annotator:
the response's ``user_id``. Discarded and draft responses are skipped where the file says
so (``to_list()``, API dumps); ``record.to_dict()`` (argilla 2.8) drops each response's
status, so there a draft reads as an answer.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

from flywheel.annotations.formats.records import ParsedRecord, _dumps, _first_present, _single, _text


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
