"""The queue CSV of the outbox filled in by a person (``wide_csv``): one record per
filled label column (``hallucination``, ``relevance``) of a row with ``log_id`` and
``annotator``; a row with none filled is skipped (not labelled).
"""

from __future__ import annotations

from collections.abc import Iterator

from flywheel.annotations.formats.records import ParsedRecord, _text


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
