"""Export a day's annotation queue for people to label, in the tools they already use.

:func:`export_queue` writes into ``$FLYWHEEL_HOME/annotations/outbox/``:

============================  ===============================================================
file                          what it is
============================  ===============================================================
``labelstudio-tasks-DAY.json``  Label Studio import file: one task per queued item with
                              ``data`` {log_id, input, output, context, plus source, day,
                              strategy, reason, priority as Data Manager columns} and, when
                              classifier scores exist, ``predictions`` (one per model
                              version) with the predicted choices
``labelstudio-config.xml``    the Label Studio labelling config for those tasks: input,
                              context and output shown; Choices ``hallucination`` (Yes/No)
                              and ``relevance`` (Relevant/Irrelevant) on the output; an
                              optional comment box
``argilla-records-DAY.jsonl`` Argilla v2 records (``record.to_dict()`` shape): ``id`` =
                              log_id, ``fields`` input/output/context, ``metadata``,
                              ``suggestions`` for the questions ``hallucination``
                              (yes/no) and ``relevance`` (relevant/irrelevant) when
                              scores exist, empty ``responses``
``queue-DAY.csv``             a plain CSV: ``log_id,input,output,context,strategy,reason``
                              and empty ``annotator,hallucination,relevance,comment``
                              columns for people to fill
============================  ===============================================================

Scores in predictions and suggestions: the choice is the classifier's (score of the
positive class >= 0.5: ``Yes`` / ``Relevant``), its ``score`` the probability of that
choice (``p`` or ``1 - p``), the way both tools read a score: the model's confidence.
A Label Studio prediction's own ``score`` is the lowest of its results', so that
sorting by prediction score in the Data Manager puts the least sure items first.

Everything comes back through :func:`flywheel.annotations.import_inbox`: the Label Studio
JSON export and the Argilla record export of these projects as the tools write them,
and the filled CSV once :func:`queue_csv_to_canonical` has turned it into the canonical
``log_id,annotator,label,value,comment`` CSV. The choice words of both tools are words
of the default value mapping (:mod:`flywheel.annotations.values`).

Files are written atomically (a temporary name, then renamed) and byte-identical for
the same queue and data.
"""

from __future__ import annotations

import csv
import io
import json
import os
from pathlib import Path
from typing import Any
from xml.sax.saxutils import quoteattr

import duckdb

from flywheel import pii
from flywheel.annotations.queue import current_scores_sql, queue_day
from flywheel.settings import Settings

LABEL_STUDIO_CHOICES: dict[str, tuple[str, str]] = {
    "hallucination": ("Yes", "No"),
    "relevance": ("Relevant", "Irrelevant"),
}
"""Label Studio choices of each label: (value 1, value 0)."""

ARGILLA_VALUES: dict[str, tuple[str, str]] = {
    "hallucination": ("yes", "no"),
    "relevance": ("relevant", "irrelevant"),
}
"""Argilla label question values of each label: (value 1, value 0)."""

QUESTIONS: dict[str, str] = {
    "hallucination": "Does the output state anything that the context (or common knowledge) does not support?",
    "relevance": "Does the output address what the input asks?",
}
"""The question people answer for each label (shown in Label Studio)."""

CSV_COLUMNS: tuple[str, ...] = (
    "log_id", "input", "output", "context", "strategy", "reason",
    "annotator", "hallucination", "relevance", "comment",
)
"""Columns of ``queue-DAY.csv``; the last four are left empty for people to fill."""

CANONICAL_COLUMNS: tuple[str, ...] = ("log_id", "annotator", "label", "value", "comment")
"""Columns of the canonical CSV that :func:`queue_csv_to_canonical` writes."""

CONFIG_FILE = "labelstudio-config.xml"


def tasks_file(day: str) -> str:
    return f"labelstudio-tasks-{day}.json"


def argilla_file(day: str) -> str:
    return f"argilla-records-{day}.jsonl"


def csv_file(day: str) -> str:
    return f"queue-{day}.csv"


def export_queue(con: duckdb.DuckDBPyConnection, settings: Settings, day: str) -> list[Path]:
    """Write the queue of ``day`` as Label Studio, Argilla and CSV files into the outbox.

    Returns the paths written: the Label Studio tasks, the Label Studio config, the
    Argilla records and the CSV (in that order). A day without a queue gives files
    without items.
    """
    day = queue_day(day)
    items = queue_items(con, day)
    if settings.pii_mode != "off":
        # Files for people outside the database: in flag mode the logs keep their PII,
        # the files never do.
        items = [{**item, **{name: pii.scan(item[name])[0] for name in _TEXT_FIELDS}} for item in items]
    outbox = settings.annotations_outbox
    outbox.mkdir(parents=True, exist_ok=True)
    written = [
        _write(outbox / tasks_file(day), json.dumps(label_studio_tasks(items), ensure_ascii=False, indent=2) + "\n"),
        _write(outbox / CONFIG_FILE, label_studio_config()),
        _write(outbox / argilla_file(day), "".join(
            json.dumps(r, ensure_ascii=False) + "\n" for r in argilla_records(items))),
        _write(outbox / csv_file(day), queue_csv(items)),
    ]
    return written


_TEXT_FIELDS = ("input", "output", "context")


def queue_items(con: duckdb.DuckDBPyConnection, day: str) -> list[dict[str, Any]]:
    """Return the queued items of ``day`` in priority order, with their log and scores.

    Each item: ``log_id, day, strategy, reason, priority, detail`` (dict), the log's
    ``input, output, context, source, model, prompt_version`` and ``scores``:
    {task: (score, model_version)} of the current classifiers.
    """
    rows = con.execute(
        """
        SELECT q.log_id, q.day::VARCHAR, q.strategy, q.reason, q.priority, q.detail::VARCHAR,
               l.input, l.output, l.context, l.source, l.model, l.prompt_version
        FROM annotation_queue q
        LEFT JOIN (SELECT * FROM logs WHERE day = $day) l USING (log_id)
        WHERE q.day = $day
        ORDER BY q.priority, q.log_id
        """,
        {"day": day},
    ).fetchall()
    names = ("log_id", "day", "strategy", "reason", "priority", "detail", "input", "output", "context",
             "source", "model", "prompt_version")
    items = [dict(zip(names, row)) for row in rows]
    for item in items:
        item["detail"] = json.loads(item["detail"]) if item["detail"] else {}
        item["scores"] = {}
    sql = current_scores_sql(con, "(SELECT log_id FROM annotation_queue WHERE day = $day)")
    if sql is not None and items:
        by_id = {item["log_id"]: item for item in items}
        for log_id, task, model_version, score in con.execute(
                f"SELECT * FROM ({sql}) ORDER BY log_id, task", {"day": day}).fetchall():
            by_id[log_id]["scores"][task] = (float(score), model_version)
    return items


# ---------------------------------------------------------------------------------------
# Label Studio
# ---------------------------------------------------------------------------------------


def _choice(task: str, score: float) -> tuple[int, float]:
    """Return (predicted value 1/0, probability of that value) for a positive-class score."""
    value = 1 if score >= 0.5 else 0
    return value, round(score if value else 1.0 - score, 6)


def label_studio_tasks(items: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Return the Label Studio import tasks of the queued items (see the module docstring)."""
    tasks = []
    for item in items:
        task: dict[str, Any] = {
            "data": {
                "log_id": item["log_id"],
                "input": item["input"] or "",
                "output": item["output"] or "",
                "context": item["context"] or "",
                "source": item["source"],
                "day": item["day"],
                "strategy": item["strategy"],
                "reason": item["reason"],
                "priority": item["priority"],
            }
        }
        by_model: dict[str, list[dict[str, Any]]] = {}
        for label, (score, model_version) in sorted(item["scores"].items()):
            value, confidence = _choice(label, score)
            by_model.setdefault(model_version, []).append({
                "from_name": label,
                "to_name": "output",
                "type": "choices",
                "value": {"choices": [LABEL_STUDIO_CHOICES[label][0 if value else 1]]},
                "score": confidence,
            })
        if by_model:
            task["predictions"] = [
                {"model_version": model_version, "score": min(r["score"] for r in results), "result": results}
                for model_version, results in sorted(by_model.items())
            ]
        tasks.append(task)
    return tasks


def label_studio_config() -> str:
    """Return the Label Studio labelling config XML of the hallucination and relevance questions."""
    def choices(label: str) -> str:
        yes, no = LABEL_STUDIO_CHOICES[label]
        return (
            f'  <Header value={quoteattr(QUESTIONS[label])}/>\n'
            f'  <Choices name="{label}" toName="output" choice="single-radio" required="true" showInline="true">\n'
            f'    <Choice value={quoteattr(yes)}/>\n'
            f'    <Choice value={quoteattr(no)}/>\n'
            f'  </Choices>\n'
        )

    return (
        "<View>\n"
        '  <Header value="Input"/>\n'
        '  <Text name="input" value="$input"/>\n'
        '  <Header value="Context"/>\n'
        '  <Text name="context" value="$context"/>\n'
        '  <Header value="Output"/>\n'
        '  <Text name="output" value="$output"/>\n'
        + choices("hallucination")
        + choices("relevance")
        + '  <Header value="Comment (optional)"/>\n'
        '  <TextArea name="comment" toName="output" rows="2" maxSubmissions="1" editable="true"/>\n'
        "</View>\n"
    )


# ---------------------------------------------------------------------------------------
# Argilla
# ---------------------------------------------------------------------------------------


def argilla_records(items: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Return Argilla v2 records (``record.to_dict()`` shape) of the queued items."""
    records = []
    for item in items:
        metadata = {
            "log_id": item["log_id"], "day": item["day"], "source": item["source"], "model": item["model"],
            "prompt_version": item["prompt_version"], "strategy": item["strategy"], "reason": item["reason"],
            "priority": item["priority"],
        }
        suggestions = {}
        for label, (score, model_version) in sorted(item["scores"].items()):
            value, confidence = _choice(label, score)
            suggestions[label] = {"value": ARGILLA_VALUES[label][0 if value else 1], "score": confidence,
                                  "agent": model_version}
        records.append({
            "id": item["log_id"],
            "fields": {"input": item["input"] or "", "output": item["output"] or "",
                       "context": item["context"] or ""},
            "metadata": {k: v for k, v in metadata.items() if v is not None},
            "suggestions": suggestions,
            "responses": {},
            "vectors": {},
            "status": "pending",
        })
    return records


# ---------------------------------------------------------------------------------------
# CSV
# ---------------------------------------------------------------------------------------


def queue_csv(items: list[dict[str, Any]]) -> str:
    """Return ``queue-DAY.csv`` text: the items and empty columns to fill (:data:`CSV_COLUMNS`)."""
    out = io.StringIO(newline="")
    writer = csv.writer(out, lineterminator="\n")
    writer.writerow(CSV_COLUMNS)
    for item in items:
        writer.writerow([neutralize_cell(cell) for cell in (
            item["log_id"], item["input"] or "", item["output"] or "", item["context"] or "",
            item["strategy"], item["reason"])] + ["", "", "", ""])
    return out.getvalue()


# A cell starting with one of these is a formula in Excel, LibreOffice and Google Sheets
# (tab and carriage return too: some programs drop them and read what follows).
FORMULA_STARTS = ("=", "+", "-", "@", "\t", "\r", "\uff1d", "\uff0b", "\uff0d", "\uff20")


def neutralize_cell(value: object) -> str:
    """Return a CSV cell that a spreadsheet shows as text: a leading ``'`` before a cell
    that would start a formula (``=HYPERLINK(...)``, ``+1``, ``-2``, ``@SUM``), as OWASP
    recommends; other cells unchanged."""
    text = "" if value is None else str(value)
    return "'" + text if text.startswith(FORMULA_STARTS) else text


def _restore_cell(text: str) -> str:
    """Undo :func:`neutralize_cell` (a filled queue CSV comes back with it)."""
    return text[1:] if text.startswith("'") and text[1:].startswith(FORMULA_STARTS) else text


def queue_csv_to_canonical(source: Path, dest: Path) -> int:
    """Turn a filled ``queue-DAY.csv`` into a canonical annotation CSV; return its rows.

    Every non-empty ``hallucination`` or ``relevance`` cell becomes one row
    ``log_id,annotator,label,value,comment`` with the value as written (the importer
    maps ``yes``/``no``/``1``/``0``/``relevant``/... and rejects what it cannot). Rows
    with no annotator keep it empty, so the importer rejects them as ``missing
    annotator`` rather than losing them. Comma, tab or semicolon separated (as
    spreadsheets save it) are read alike.
    """
    text = Path(source).read_text(encoding="utf-8-sig")
    header = text.split("\n", 1)[0]
    delimiter = max((",", "\t", ";"), key=header.count)
    reader = csv.DictReader(io.StringIO(text, newline=""), delimiter=delimiter)
    names = {(name or "").strip().lower(): name for name in reader.fieldnames or []}
    missing = {"log_id", "hallucination", "relevance"} - set(names)
    if missing:
        raise ValueError(f"{source}: not a queue CSV, no column(s) {', '.join(sorted(missing))}")
    out = io.StringIO(newline="")
    writer = csv.writer(out, lineterminator="\n")
    writer.writerow(CANONICAL_COLUMNS)
    count = 0
    for row in reader:
        def cell(name: str) -> str:
            key = names.get(name)
            return _restore_cell((row.get(key) or "").strip()) if key else ""

        for label in ("hallucination", "relevance"):
            value = cell(label)
            if value:
                writer.writerow([cell("log_id"), cell("annotator"), label, value, cell("comment")])
                count += 1
    _write(Path(dest), out.getvalue())
    return count


def _write(path: Path, text: str) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.tmp")
    tmp.write_text(text, encoding="utf-8", newline="")
    os.replace(tmp, path)
    return path
