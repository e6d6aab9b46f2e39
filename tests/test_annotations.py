"""Annotations: import from the inbox (every format), rejections, duplicates, consensus, kappa."""

from __future__ import annotations

import collections
import csv
import io
import json
import os
import pathlib
import shutil
import subprocess
import sys

import pytest

from flywheel import store
from flywheel.annotations import (
    AGREEMENT_WARNING_THRESHOLD,
    REJECTION_REASONS,
    MappingError,
    ValueMapping,
    archive_dir,
    build_consensus,
    cohen_kappa,
    fleiss_kappa,
    import_file,
    import_inbox,
)
from flywheel.demo import DemoSpec, generate
from flywheel.ingest.loader import ingest_day
from tests.conftest import land, rows, shared_data

DAY = "2025-01-01"
CSV_HEADER = "log_id,annotator,label,value,comment,created_at,span_start,span_end\n"


# ---------------------------------------------------------------------------------------
# helpers
# ---------------------------------------------------------------------------------------


def ingest_logs(settings, ids, *, day=DAY, records=None):
    """Land canonical log records (one per id, or ``records``) for ``day`` and ingest them."""
    records = records if records is not None else [
        {"log_id": i, "ts": f"{day}T12:00:00Z", "input": f"question {i}", "output": f"answer {i}"} for i in ids
    ]
    land(settings, day, "logs.jsonl", "".join(json.dumps(r) + "\n" for r in records))
    with store.connection(settings) as con:
        return ingest_day(con, settings, day)


def inbox(settings, name, content):
    """Write one file into the annotations inbox and return its path."""
    settings.annotations_inbox.mkdir(parents=True, exist_ok=True)
    path = settings.annotations_inbox / name
    if isinstance(content, (dict, list)):
        content = json.dumps(content, indent=2)
    path.write_text(content, encoding="utf-8")
    settled = path.stat().st_mtime - 60  # written a while ago: no settle wait (see the settle tests)
    os.utime(path, (settled, settled))
    return path


def run_import(settings, **kwargs):
    with store.connection(settings) as con:
        return import_inbox(con, settings, **kwargs)


def run_consensus(settings, **kwargs):
    with store.connection(settings) as con:
        return build_consensus(con, **kwargs)


def by_name(report):
    return {f.source_file.rsplit("/", 1)[-1]: f for f in report.files}


def consensus(settings, label=None):
    """Return {(log_id, label): (value, n_annotators, agreement, status)}."""
    where = "WHERE label = ?" if label else ""
    return {
        (log_id, lab): (value, n, round(agreement, 4), status)
        for log_id, lab, value, n, agreement, status in rows(
            settings,
            f"SELECT log_id, label, value, n_annotators, agreement, status FROM consensus {where}",
            [label] if label else [],
        )
    }


# ---------------------------------------------------------------------------------------
# Real Label Studio exports
# ---------------------------------------------------------------------------------------


def test_real_label_studio_exports_import_with_reasons(settings):
    # Rule for tasks without a log id (these are Label Studio's own test fixtures, not
    # our tasks): data.log_id, else data.id, else the task id as "ls-<id>"; tasks with
    # none of them (humor_dataset_2_annotations.json has no ids at all) are rejected.
    folder = shared_data("label-studio")
    ingest_logs(settings, ["ls-1", "ls-2", "ls-6141"])
    settings.annotations_inbox.mkdir(parents=True)
    for path in sorted(folder.glob("*.json")):
        shutil.copy(path, settings.annotations_inbox / path.name)
    report = run_import(settings)
    files = by_name(report)
    assert set(files) == {"csv_test.json", "csv_test_history.json", "humor_dataset_2_annotations.json"}
    assert all(f.format == "label_studio" and f.reconciles and not f.error for f in files.values())
    # csv_test.json: image boxes (rectanglelabels) on tasks 1 and 2: 1 + 2 results.
    assert (files["csv_test.json"].read, files["csv_test.json"].rejected_reasons) == (3, {"unsupported result type": 3})
    # csv_test_history.json: a "sentiment" choice on task 6141: not a label of ours.
    assert files["csv_test_history.json"].rejected_reasons == {"unknown label": 1}
    # humor_dataset_2_annotations.json: two tasks with neither data.log_id nor an id.
    assert files["humor_dataset_2_annotations.json"].rejected_reasons == {"missing log_id": 2}
    assert report.total("accepted") == 0 and report.total("rejected") == 6
    rejected = rows(settings, "SELECT source_file, line, reason, detail, raw FROM rejected_annotations ORDER BY 1, 2")
    assert len(rejected) == 6
    assert all(line is not None and reason in REJECTION_REASONS and raw for _, line, reason, _, raw in rejected)
    history = [r for r in rejected if r[0].endswith("csv_test_history.json")][0]
    assert history[1] == 2 and "sentiment" in history[3] and '"Positive"' in history[4]
    humor_lines = [r[1] for r in rejected if r[0].endswith("humor_dataset_2_annotations.json")]
    assert humor_lines == [2, 28]  # where each task starts in the file
    assert sorted(p.name for p in archive_dir(settings).iterdir()) == sorted(files)
    assert not any(settings.annotations_inbox.iterdir())

    # The mapping makes the sentiment question usable, for Label Studio only. The file's
    # content was imported before: only a forced re-import reads it again.
    mapping_file = settings.home / "annotations" / "mapping.toml"
    mapping_file.write_text(
        '[sources.label_studio.labels]\nsentiment = "relevance"\n'
        '[sources.label_studio.values.relevance]\nPositive = 1\nNegative = 0\n',
        encoding="utf-8",
    )
    again = inbox(settings, "csv_test_history.json", (folder / "csv_test_history.json").read_text())
    assert run_import(settings).files[0].already_imported
    with store.connection(settings) as con:
        forced = import_file(con, settings, archive_dir(settings) / again.name, force=True)
    assert (forced.read, forced.accepted, forced.rejected) == (1, 1, 0)
    got = rows(settings, "SELECT log_id, annotator, label, value, raw_value, created_at::VARCHAR FROM annotations")
    assert got == [("ls-6141", "label-studio:14", "relevance", 1, "Positive", "2024-05-15 12:09:16.789563+00")]


# ---------------------------------------------------------------------------------------
# HaluEval and TruthfulQA through the canonical CSV path
# ---------------------------------------------------------------------------------------


def test_halueval_labels_land_in_consensus(settings):
    data = [json.loads(line) for line in shared_data("halueval/general_data.json").open(encoding="utf-8")]
    assert len(data) == 4507 and sum(r["hallucination"] == "yes" for r in data) == 815
    ingest = ingest_logs(settings, None, records=[
        {"log_id": f"halueval-{r['ID']}", "ts": f"{DAY}T00:00:00Z", "input": r["user_query"],
         "output": r["chatgpt_response"], "source": "halueval"} for r in data
    ])
    buffer = io.StringIO()
    writer = csv.writer(buffer)
    writer.writerow(["log_id", "annotator", "label", "value"])
    for r in data:
        writer.writerow([f"halueval-{r['ID']}", "halueval", "hallucination", r["hallucination"]])
    inbox(settings, "halueval.csv", buffer.getvalue())
    report = run_import(settings)
    file = report.files[0]
    assert (file.read, file.accepted, file.rejected, file.duplicates) == (4507, 4507, 0, 0)
    assert rows(settings, "SELECT count(*), sum(value) FROM annotations") == [(4507, 815)]

    # The data has one ID twice: "ID" (two different items, labelled yes then no). The log
    # ingest keeps the first as halueval-ID and counts the second as a duplicate log, so
    # there are 4,506 logs. Both labels import (their values differ, so they are not
    # duplicates); as the same annotator's later label, "no" is the vote for halueval-ID.
    ids = collections.Counter(r["ID"] for r in data)
    assert [i for i, n in ids.items() if n > 1] == ["ID"]
    assert [r["hallucination"] for r in data if r["ID"] == "ID"] == ["yes", "no"]
    assert ingest.total("accepted") == 4506 and ingest.total("duplicates") == 1
    latest = {f"halueval-{r['ID']}": int(r["hallucination"] == "yes") for r in data}  # later rows win
    report = run_consensus(settings)
    info = report.labels["hallucination"]
    assert (info["items"], info["positive"], info["negative"], info["ties"]) == (4506, 814, 3692, 0)
    assert info["positive"] == sum(latest.values())
    assert dict(rows(settings, "SELECT log_id, value FROM consensus")) == latest
    # So: all 815 "yes" labels of the 4,507 rows are in annotations; consensus has 815
    # hallucinated of 4,507 minus the one item whose id collides with a "no" item.
    assert info["positive"] + 1 == 815 and info["items"] + 1 == 4507


def _truthfulqa(name):
    out = []
    for line in shared_data(f"truthfulqa/{name}").open(encoding="utf-8"):
        record = json.loads(line)
        question, answer = record["prompt"].split("\nA:", 1)
        answer = answer.rsplit("\n", 1)[0].strip()  # drop "\nTrue:" / "\nHelpful:"
        out.append((question.removeprefix("Q: "), answer, record["completion"].strip()))
    return out


def test_truthfulqa_labels_land_in_consensus(settings):
    truth, info = _truthfulqa("finetune_truth.jsonl"), _truthfulqa("finetune_info.jsonl")
    assert len(truth) == len(info) == 22434
    # Each row is one model's answer: one log per row of the truth file. The info file has
    # the same (question, answer) pairs in another order; the k-th occurrence of a pair
    # there is the k-th occurrence in the truth file.
    seen, log_of = collections.Counter(), {}
    for n, (q, a, _) in enumerate(truth, start=1):
        seen[q, a] += 1
        log_of[q, a, seen[q, a]] = f"truthfulqa-{n}"
    ingest = ingest_logs(settings, None, records=[
        {"log_id": f"truthfulqa-{n}", "ts": f"{DAY}T00:00:00Z", "input": q, "output": a, "source": "truthfulqa"}
        for n, (q, a, _) in enumerate(truth, start=1)
    ])
    buffer = io.StringIO()
    writer = csv.writer(buffer)
    writer.writerow(["log_id", "annotator", "label", "value"])
    relevance = {}
    for n, (_, _, label) in enumerate(truth, start=1):  # hallucination = not true
        writer.writerow([f"truthfulqa-{n}", "truthfulqa", "hallucination", "false" if label == "yes" else "true"])
    seen.clear()
    for q, a, label in info:
        seen[q, a] += 1
        relevance[log_of[q, a, seen[q, a]]] = label
        writer.writerow([log_of[q, a, seen[q, a]], "truthfulqa", "relevance", label])
    inbox(settings, "truthfulqa.csv", buffer.getvalue())
    report = run_import(settings).files[0]

    # 67 answers are empty: the log ingest rejects them ("empty output"), so their 2 x 67
    # labels wait for their logs (pending): nothing is lost, all is counted.
    empty = {f"truthfulqa-{n}" for n, (_, a, _) in enumerate(truth, start=1) if not a}
    assert len(empty) == 67 and ingest.total("accepted") == 22434 - 67
    assert (report.read, report.accepted, report.rejected, report.pending) == (44868, 44868 - 134, 0, 134)
    hallucinated = sum(label == "no" for _, _, label in truth)
    relevant = sum(label == "yes" for _, _, label in info)
    assert (hallucinated, relevant) == (12950, 18076)  # the figures of the data README
    kept_hallucinated = sum(label == "no" for n, (_, a, label) in enumerate(truth, start=1) if a)
    kept_relevant = sum(v == "yes" for log_id, v in relevance.items() if log_id not in empty)
    assert (kept_hallucinated, kept_relevant) == (12949, 18073)
    labels = run_consensus(settings).labels
    assert (labels["hallucination"]["items"], labels["hallucination"]["positive"]) == (22367, 12949)
    assert (labels["relevance"]["items"], labels["relevance"]["positive"]) == (22367, 18073)


# ---------------------------------------------------------------------------------------
# Rejections, duplicates, archive
# ---------------------------------------------------------------------------------------


def test_every_rejection_reason_is_recorded_with_file_line_and_raw(settings):
    ingest_logs(settings, ["l-1", "l-2"])
    inbox(settings, "a-labels.csv", CSV_HEADER + (
        "l-1,ann,hallucination,yes,,2025-01-02T10:00:00Z,,\n"       # 2 accepted
        "l-1,ann,hallucination,yes,,,,,one too many\n"              # 3 malformed
        ",ann,hallucination,yes,,,,\n"                              # 4 missing log_id
        "nope-404,ann,hallucination,yes,,,,\n"                      # 5 pending: no such log (yet)
        "l-2,,hallucination,yes,,,,\n"                              # 6 missing annotator
        "l-2,ann,toxicity,yes,,,,\n"                                # 7 unknown label
        "l-2,ann,relevance,,,,,\n"                                  # 8 missing value
        "l-2,ann,relevance,maybe,,,,\n"                             # 9 unmappable value
        "l-2,ann,hallucination,1,,,10,5\n"                          # 10 bad span
        "l-2,ann,hallucination,1,,yesterday,,\n"                    # 11 bad created_at
        "l-1,ann,hallucination,yes,,2025-01-02T10:00:00Z,,\n"       # 12 duplicate of line 2
        "\n"                                                        # a blank line: nothing
        "l-2,ann,relevance,Irrelevant,\"multi\nline comment\",,,\n"  # 14-15 accepted
    ))
    inbox(settings, "b-label-studio.json", [
        {"id": 5, "data": {"log_id": "l-1"}, "annotations": [{"id": 50, "completed_by": 3, "result": [
            {"type": "rectanglelabels", "from_name": "box", "to_name": "image",
             "value": {"x": 1, "y": 2, "width": 3, "height": 4, "rectanglelabels": ["Car"]}}]}]},
    ])
    inbox(settings, "c-labels.jsonl", (
        '{"log_id": "l-2", "annotator": "bo", "label": "relevance", "value": true}\n'
        '{"log_id": "l-2", "annotator": "bo", "label": \n'
        '[1, 2]\n'
    ))
    report = run_import(settings)
    files = by_name(report)
    assert report.reconciles
    assert (files["a-labels.csv"].read, files["a-labels.csv"].accepted, files["a-labels.csv"].duplicates) == (12, 2, 1)
    assert (files["c-labels.jsonl"].read, files["c-labels.jsonl"].accepted) == (3, 1)
    rejected = rows(settings, "SELECT source_file, line, reason, raw, detail FROM rejected_annotations ORDER BY 1, 2")
    assert {reason for _, _, reason, _, _ in rejected} == set(REJECTION_REASONS)
    assert report.rejected_reasons == dict(collections.Counter(r[2] for r in rejected))
    csv_lines = {line: reason for f, line, reason, _, _ in rejected if f.endswith("a-labels.csv")}
    assert csv_lines == {3: "malformed", 4: "missing log_id", 6: "missing annotator",
                         7: "unknown label", 8: "missing value", 9: "unmappable value", 10: "bad span",
                         11: "bad created_at"}
    assert files["a-labels.csv"].pending == 1
    assert rows(settings, "SELECT log_id, line FROM pending_annotations") == [("nope-404", 5)]
    jsonl = [(line, reason, raw) for f, line, reason, raw, _ in rejected if f.endswith("c-labels.jsonl")]
    assert jsonl == [(2, "malformed", '{"log_id": "l-2", "annotator": "bo", "label": '),
                     (3, "malformed", "[1, 2]")]
    assert all(line and raw for _, line, _, raw, _ in rejected)
    comment = rows(settings, "SELECT comment, line FROM annotations WHERE label = 'relevance' AND annotator = 'ann'")
    assert comment == [("multi\nline comment", 14)]
    counts = rows(settings, "SELECT source_file, read, accepted, rejected, duplicates, pending FROM annotation_files")
    assert all(read == accepted + rejected + duplicates + pending
               for _, read, accepted, rejected, duplicates, pending in counts)


def test_double_import_adds_nothing_and_files_are_archived_not_deleted(settings):
    ingest_logs(settings, ["l-1", "l-2", "l-3"])
    content = CSV_HEADER + "l-1,ann,hallucination,yes,,,,\nl-2,ann,hallucination,no,,,,\n"
    inbox(settings, "labels.csv", content)
    first = run_import(settings)
    assert first.total("accepted") == 2
    snapshot = rows(settings, "SELECT * FROM annotations ORDER BY ALL")

    inbox(settings, "labels-again.csv", content)  # same bytes, another name
    second = run_import(settings)
    assert second.files[0].already_imported and second.total("read") == 0
    assert rows(settings, "SELECT * FROM annotations ORDER BY ALL") == snapshot
    assert rows(settings, "SELECT count(*) FROM annotation_files") == [(1,)]

    # The same labels in a new file (an export that grew): old ones are duplicates.
    inbox(settings, "labels.csv", content + "l-3,ann,hallucination,yes,,,,\nl-3,ann,hallucination,yes,,,,\n")
    third = run_import(settings).files[0]
    assert (third.read, third.accepted, third.duplicates, third.rejected) == (4, 1, 3, 0)
    # A forced re-read of an archived file: every record a duplicate.
    with store.connection(settings) as con:
        forced = import_file(con, settings, archive_dir(settings) / "labels.csv", force=True)
    assert (forced.read, forced.duplicates, forced.accepted) == (2, 2, 0)
    assert rows(settings, "SELECT count(*) FROM annotations") == [(3,)]
    archived = sorted(p.name for p in archive_dir(settings).iterdir())
    assert len(archived) == 3 and "labels.csv" in archived and "labels-again.csv" in archived
    assert [n for n in archived if n.startswith("labels.") and n != "labels.csv"][0].endswith(".csv")
    assert not any(settings.annotations_inbox.iterdir())

    # Consensus is a rebuild: twice gives the same table.
    run_consensus(settings)
    once = rows(settings, "SELECT log_id, label, value, n_annotators, agreement, status FROM consensus ORDER BY ALL")
    run_consensus(settings)
    assert rows(settings, "SELECT log_id, label, value, n_annotators, agreement, status FROM consensus "
                          "ORDER BY ALL") == once


def test_unreadable_file_is_recorded_archived_and_retried(settings):
    inbox(settings, "notes.txt", "just some notes, not labels\nsecond line\n")
    inbox(settings, "binary.csv.gz", "")
    (settings.annotations_inbox / "binary.csv.gz").write_bytes(b"\x1f\x8b\x08\x00broken")
    inbox(settings, ".hidden.csv", "x")
    inbox(settings, "upload.csv.part", "x")
    report = run_import(settings)
    files = by_name(report)
    assert set(files) == {"notes.txt", "binary.csv.gz"}
    assert "no known annotation format" in files["notes.txt"].error
    assert "gzip" in files["binary.csv.gz"].error
    assert report.summary()["unreadable_files"] == ["binary.csv.gz", "notes.txt"]
    assert sorted(rows(settings, "SELECT source_file, error IS NOT NULL FROM annotation_files")) == [
        ("annotations/inbox/binary.csv.gz", True), ("annotations/inbox/notes.txt", True)]
    assert sorted(p.name for p in settings.annotations_inbox.iterdir()) == [".hidden.csv", "upload.csv.part"]
    # An unreadable file is not "imported": the same bytes dropped again are read again.
    inbox(settings, "notes.txt", "just some notes, not labels\nsecond line\n")
    assert not run_import(settings).files[0].already_imported

    # Empty files are fine (nothing to read); a cut-off export keeps what came before.
    ingest_logs(settings, ["x-1"])
    inbox(settings, "empty.csv", "")
    inbox(settings, "empty.json", "[]")
    inbox(settings, "cut.json", '[{"id": 1, "data": {"log_id": "x-1"}, "annotations": [{"completed_by": 4, "result": '
                                '[{"type": "choices", "from_name": "relevance", "value": {"choices": ["Relevant"]}}]}]},'
                                '\n{"id": 2, "data": {"log_')
    files = by_name(run_import(settings))
    assert (files["empty.csv"].format, files["empty.json"].format, files["empty.csv"].read) == ("empty", "empty", 0)
    cut = files["cut.json"]
    assert (cut.format, cut.read, cut.accepted, cut.rejected_reasons) == ("label_studio", 2, 1, {"malformed": 1})
    assert rows(settings, "SELECT line, reason FROM rejected_annotations WHERE source_file LIKE '%cut.json'") == [
        (2, "malformed")]


# ---------------------------------------------------------------------------------------
# The tools' formats
# ---------------------------------------------------------------------------------------


def test_label_studio_choices_spans_annotators_and_cancelled(settings):
    ingest_logs(settings, ["l-1", "l-2"])
    inbox(settings, "project-7.json", [
        {"id": 101, "data": {"log_id": "l-1", "input": "q", "output": "a"}, "annotations": [
            {"id": 1, "completed_by": 10, "was_cancelled": False, "created_at": "2025-01-02T09:00:00Z", "result": [
                {"id": "a", "type": "choices", "from_name": "hallucination", "to_name": "output",
                 "value": {"choices": ["Yes"]}},
                {"id": "b", "type": "choices", "from_name": "relevance", "to_name": "output",
                 "value": {"choices": ["Irrelevant"]}},
                {"id": "c", "type": "textarea", "from_name": "comment", "to_name": "output",
                 "value": {"text": ["made-up refund window"]}}]},
            {"id": 2, "completed_by": {"id": 11, "email": "devon@acme.example"}, "created_at": "2025-01-02T10:00:00Z",
             "updated_at": "2025-01-03T08:00:00Z", "result": [
                {"type": "choices", "from_name": "hallucination", "to_name": "output", "value": {"choices": ["No"]}}]},
            {"id": 3, "completed_by": 13, "was_cancelled": True, "result": [
                {"type": "choices", "from_name": "hallucination", "to_name": "output", "value": {"choices": ["No"]}},
                {"type": "choices", "from_name": "relevance", "to_name": "output", "value": {"choices": ["Relevant"]}}]},
            {"id": 4, "completed_by": 12, "result": []},
        ], "predictions": [{"model_version": "h-3", "score": 0.9, "result": [
            {"type": "choices", "from_name": "hallucination", "to_name": "output", "value": {"choices": ["Yes"]}}]}]},
        {"id": 102, "data": {"log_id": "l-2", "output": "The plan costs $12 and has 50 seats."}, "annotations": [
            {"id": 5, "completed_by": {"id": 10, "email": "maria@acme.example"}, "result": [
                {"type": "labels", "from_name": "hallucination_spans", "to_name": "output",
                 "value": {"start": 15, "end": 18, "text": "$12", "labels": ["Hallucination"]}},
                {"type": "labels", "from_name": "spans", "to_name": "output",
                 "value": {"start": 27, "end": 35, "text": "50 seats", "labels": ["Hallucinated"]}}]}]},
    ])
    file = run_import(settings).files[0]
    assert (file.format, file.read, file.accepted, file.rejected, file.skipped) == ("label_studio", 5, 5, 0, 3)
    assert file.skipped_reasons == {"cancelled annotation": 2, "annotation without results": 1}
    got = rows(settings, "SELECT log_id, annotator, label, value, comment, span_start, span_end, line, "
                         "created_at::VARCHAR FROM annotations ORDER BY log_id, annotator, label, span_start")
    assert got == [
        ("l-1", "label-studio:10", "hallucination", 1, "made-up refund window", None, None, 2,
         "2025-01-02 09:00:00+00"),
        ("l-1", "label-studio:10", "relevance", 0, "made-up refund window", None, None, 2, "2025-01-02 09:00:00+00"),
        ("l-1", "label-studio:11", "hallucination", 0, None, None, None, 2, "2025-01-03 08:00:00+00"),
        ("l-2", "label-studio:10", "hallucination", 1, None, 15, 18, 124, None),
        ("l-2", "label-studio:10", "hallucination", 1, None, 27, 35, 124, None),
    ]
    run_consensus(settings)
    assert consensus(settings) == {
        ("l-1", "hallucination"): (None, 2, 0.5, "tie"),
        ("l-1", "relevance"): (0, 1, 1.0, "single"),
        ("l-2", "hallucination"): (1, 1, 1.0, "single"),
    }


def test_argilla_and_langfuse_exports(settings):
    ingest_logs(settings, ["l-1", "l-2", "l-3", "trace-9"])
    inbox(settings, "argilla.jsonl", "\n".join(json.dumps(r) for r in [
        {"id": "l-1", "fields": {"input": "q", "output": "a"}, "metadata": {"source": "acme"}, "status": "completed",
         "suggestions": {"relevance": {"value": "relevant", "score": 0.8, "agent": "rel-2"}},
         "responses": {"relevance": [{"value": "relevant", "user_id": "u-1"},
                                     {"value": "unrelated", "user_id": "u-2", "status": "submitted"},
                                     {"value": "relevant", "user_id": "u-3", "status": "discarded"}],
                       "hallucination": [{"value": ["no"], "user_id": "u-1"}]}},
        {"id": "rec-7", "metadata": {"log_id": "l-2"}, "fields": {},
         "responses": {"hallucination": [{"value": [{"start": 0, "end": 4, "label": "hallucinated"}],
                                          "user_id": "u-2"}]}},
        {"id": "l-3", "input": "q", "relevance.responses": ["Relevant", "off-topic"],
         "relevance.responses.users": ["u-1", "u-2"], "relevance.responses.status": ["submitted", "submitted"]},
        {"id": "l-3", "fields": {}, "status": "pending", "responses": {}},
    ]) + "\n")
    inbox(settings, "langfuse-scores.csv", (
        "id,traceId,sessionId,datasetRunId,timestamp,source,name,dataType,value,stringValue,comment,metadata,"
        "observationId,traceName,userId,traceTags,environment\n"
        'sc-1,trace-9,s-1,,2025-01-02T10:00:00Z,ANNOTATION,hallucination,BOOLEAN,1,True,invented fee,'
        '"{""annotator"":""lena@acme.example""}",o-1,qa,u-7,"[""prod""]",production\n'
        'sc-2,trace-9,s-1,,2025-01-02T10:00:00Z,ANNOTATION,relevance,CATEGORICAL,,relevant,,,o-1,qa,u-7,[],production\n'
        "sc-3,trace-9,s-1,,2025-01-02T10:00:00Z,API,user-feedback,BOOLEAN,0,False,,,o-1,qa,u-7,[],production\n"
        "sc-4,trace-9,s-1,,2025-01-02T10:00:00Z,EVAL,hallucination,NUMERIC,0.82,,,,o-1,qa,u-7,[],production\n"
    ))
    files = by_name(run_import(settings))
    argilla, langfuse = files["argilla.jsonl"], files["langfuse-scores.csv"]
    assert (argilla.format, argilla.read, argilla.accepted, argilla.skipped) == ("argilla", 6, 6, 1)
    assert argilla.skipped_reasons == {"discarded response": 1}
    assert (langfuse.format, langfuse.read, langfuse.accepted, langfuse.skipped) == ("langfuse_scores", 2, 2, 2)
    assert langfuse.skipped_reasons == {"not a human label (source=API)": 1, "not a human label (source=EVAL)": 1}
    got = rows(settings, "SELECT log_id, annotator, label, value, span_start, span_end, comment, source_format "
                         "FROM annotations ORDER BY ALL")
    assert got == [
        ("l-1", "u-1", "hallucination", 0, None, None, None, "argilla"),
        ("l-1", "u-1", "relevance", 1, None, None, None, "argilla"),
        ("l-1", "u-2", "relevance", 0, None, None, None, "argilla"),
        ("l-2", "u-2", "hallucination", 1, 0, 4, None, "argilla"),
        ("l-3", "u-1", "relevance", 1, None, None, None, "argilla"),
        ("l-3", "u-2", "relevance", 0, None, None, None, "argilla"),
        ("trace-9", "langfuse", "relevance", 1, None, None, None, "langfuse_scores"),
        ("trace-9", "lena@acme.example", "hallucination", 1, None, None, "invented fee", "langfuse_scores"),
    ]


# ---------------------------------------------------------------------------------------
# Value mapping
# ---------------------------------------------------------------------------------------


def test_value_mapping_defaults_and_overrides(settings):
    m = ValueMapping()
    for raw, expected in [("yes", 1), ("True", 1), (1, 1), ("1.0", 1), (True, 1), ("hallucinated", 1),
                          ("no", 0), ("FALSE", 0), (0, 0), ("not_hallucinated", 0), ("Faithful", 0)]:
        assert m.value_for("canonical", "hallucination", raw) == expected, raw
    for raw, expected in [("Relevant", 1), ("on-topic", 1), ("Irrelevant", 0), ("unrelated", 0), ("off_topic", 0)]:
        assert m.value_for("argilla", "relevance", raw) == expected, raw
    for raw in ["maybe", "2", 0.7, "", None, ["yes", "no"], "relevant"]:
        assert m.value_for("canonical", "hallucination", raw) is None, raw
    assert m.label_for("label_studio", "Hallucination_Spans") == "hallucination"
    assert m.label_for("label_studio", "is-relevant") == "relevance"
    assert m.label_for("label_studio", "sentiment") is None

    path = settings.home / "annotations" / "mapping.toml"
    path.parent.mkdir(parents=True)
    path.write_text(
        '[labels]\n"is_hallucinated" = "hallucination"\n'
        '[values.any]\n"ja" = 1\n"nein" = 0\n'
        '[values.relevance]\n"partly relevant" = true\n'
        '[annotators]\n"label-studio:10" = "maria.k"\n'
        '[sources.argilla.values.hallucination]\n"yes" = 0\n', encoding="utf-8")
    m = ValueMapping.load(settings)
    assert m.label_for("canonical", "Is Hallucinated") == "hallucination"
    assert m.value_for("canonical", "hallucination", "JA") == 1
    assert m.value_for("langfuse", "relevance", "Partly-Relevant") == 1
    assert m.value_for("argilla", "hallucination", "yes") == 0  # per source, before the defaults
    assert m.value_for("canonical", "hallucination", "yes") == 1
    assert m.annotator_for("label-studio:10") == "maria.k"

    for bad, message in [({"values": {"relevance": {"x": 2}}}, "values are 0 or 1"),
                         ({"labels": {"x": "toxicity"}}, "not one of"),
                         ({"sources": {"excel": {}}}, "unknown tool"),
                         ({"colours": {}}, "unknown tables")]:
        with pytest.raises(MappingError, match=message):
            ValueMapping.from_dict(bad)
    path.write_text("[labels\n", encoding="utf-8")
    with pytest.raises(MappingError, match="not valid TOML"):
        ValueMapping.load(settings)


# ---------------------------------------------------------------------------------------
# Consensus and agreement
# ---------------------------------------------------------------------------------------


def test_consensus_majority_ties_and_latest_vote(settings):
    ingest_logs(settings, [f"t-{i}" for i in range(1, 6)])
    inbox(settings, "votes.csv", CSV_HEADER + (
        "t-1,a,hallucination,1,,,,\nt-1,b,hallucination,0,,,,\n"                          # 1:1 -> tie
        "t-2,a,hallucination,1,,,,\nt-2,b,hallucination,yes,,,,\nt-2,c,hallucination,0,,,,\n"  # 2:1 -> 1
        "t-3,a,hallucination,1,,,,\n"                                                      # single
        "t-4,a,hallucination,1,,2025-01-03T00:00:00Z,,\n"                                  # a changed
        "t-4,a,hallucination,0,,2025-01-04T00:00:00Z,,\n"                                  # their mind:
        "t-4,b,hallucination,0,,2025-01-02T00:00:00Z,,\n"                                  # 0, 0
        "t-5,a,relevance,0,,,,\nt-5,b,relevance,0,,,,\nt-5,c,relevance,1,,,,\nt-5,d,relevance,1,,,,\n"  # 2:2 tie
    ))
    run_import(settings)
    report = run_consensus(settings)
    assert consensus(settings) == {
        ("t-1", "hallucination"): (None, 2, 0.5, "tie"),
        ("t-2", "hallucination"): (1, 3, 0.6667, "majority"),
        ("t-3", "hallucination"): (1, 1, 1.0, "single"),
        ("t-4", "hallucination"): (0, 2, 1.0, "unanimous"),
        ("t-5", "relevance"): (None, 4, 0.5, "tie"),
    }
    assert report.labels["hallucination"]["ties"] == 1 and report.labels["relevance"]["ties"] == 1
    # Ties are left out of training: the labels a classifier may use are the non-null ones.
    assert rows(settings, "SELECT count(*) FROM consensus WHERE value IS NOT NULL") == [(3,)]


def test_kappa_on_a_hand_checked_example(settings):
    # hallucination, two annotators a and b on ten items:
    #   a: 1 1 1 1 1 0 0 0 0 0
    #   b: 1 1 1 1 0 0 0 0 0 1
    # observed agreement po = 8/10 = 0.8; a says 1 on 5/10, b on 5/10, so chance agreement
    # pe = 0.5*0.5 + 0.5*0.5 = 0.5; Cohen's kappa = (po - pe) / (1 - pe) = 0.3/0.5 = 0.6.
    a = [1, 1, 1, 1, 1, 0, 0, 0, 0, 0]
    b = [1, 1, 1, 1, 0, 0, 0, 0, 0, 1]
    # relevance, three annotators a, b, c on four items (count of 1s: 3, 0, 2, 1):
    #   a: 1 0 1 0   b: 1 0 1 0   c: 1 0 0 1
    # Fleiss: per item P_i = (sum_j n_ij^2 - 3) / (3*2): 1, 1, (4+1-3)/6 = 1/3, 1/3, so
    # P_bar = (8/3)/4 = 2/3; category shares p_1 = 6/12 = 0.5, p_0 = 0.5, P_e = 0.5;
    # kappa = (2/3 - 1/2) / (1 - 1/2) = 1/3.
    # Pairs: a/b agree on all four, with 1 on half: kappa 1. a/c: po = 2/4 = 0.5, pe = 0.5:
    # kappa 0. b/c likewise 0.
    rel = {"a": [1, 0, 1, 0], "b": [1, 0, 1, 0], "c": [1, 0, 0, 1]}
    ingest_logs(settings, [f"k-{i}" for i in range(10)])
    lines = [f"k-{i},{who},hallucination,{v},,,," for who, vs in (("a", a), ("b", b)) for i, v in enumerate(vs)]
    lines += [f"k-{i},{who},relevance,{v},,,," for who, vs in rel.items() for i, v in enumerate(vs)]
    inbox(settings, "kappa.csv", CSV_HEADER + "\n".join(lines) + "\n")
    run_import(settings)
    report = run_consensus(settings)

    hall, relevance = report.labels["hallucination"], report.labels["relevance"]
    assert (hall["kappa_method"], hall["kappa_items"]) == ("cohen", 10)
    assert hall["kappa"] == pytest.approx(0.6)
    assert (relevance["kappa_method"], relevance["kappa_items"], relevance["raters_per_item"]) == ("fleiss", 4, 3)
    assert relevance["kappa"] == pytest.approx(1 / 3)
    pairs = report.pair_kappas()
    assert pairs["hallucination"] == {"a / b": pytest.approx(0.6)}
    assert pairs["relevance"] == {"a / b": pytest.approx(1.0), "a / c": pytest.approx(0.0),
                                  "b / c": pytest.approx(0.0)}
    assert cohen_kappa(a, b) == pytest.approx(0.6)
    assert fleiss_kappa([[0, 3], [3, 0], [1, 2], [2, 1]]) == pytest.approx(1 / 3)
    assert cohen_kappa([1, 1], [1, 1]) is None  # everyone says 1: kappa undefined

    # Agreement below the threshold (0.4) warns for relevance only.
    assert AGREEMENT_WARNING_THRESHOLD == 0.4
    assert report.low_agreement == ["relevance"]
    assert len(report.warnings) == 1 and "relevance: fleiss kappa 0.33 < 0.4" in report.warnings[0]
    assert {(p["annotator_a"], p["annotator_b"]) for p in report.low_agreement_pairs} == {("a", "c"), ("b", "c")}
    markdown = report.markdown()
    assert "| relevance | 4 |" in markdown and "| hallucination | a | b | 10 | 0.800 | 0.600 |" in markdown
    summary = report.summary()
    json.dumps(summary)  # plain values for asset metadata
    assert summary["label_kappas"]["hallucination"] == pytest.approx(0.6)
    stored = rows(settings, "SELECT label, annotator_a, annotator_b, method, round(kappa, 4), n_items "
                            "FROM annotation_agreement ORDER BY ALL")
    assert ("hallucination", None, None, "cohen", 0.6, 10) in stored
    assert ("relevance", None, None, "fleiss", 0.3333, 4) in stored
    assert ("relevance", "a", "c", "cohen", 0.0, 4) in stored


# ---------------------------------------------------------------------------------------
# The demo's inbox
# ---------------------------------------------------------------------------------------


def test_demo_inbox_imports_and_reconciles_per_file(settings):
    summary = generate(settings.home, DemoSpec(days=1, rows_per_day=300, seed=3))
    day = summary.days[0]
    with store.connection(settings) as con:
        ingest_day(con, settings, day.day)
    messages = []
    report = run_import(settings, progress=messages.append)
    files = by_name(report)
    assert set(files) == set(day.annotation_files) and len(messages) == 4
    for name, expected in day.annotation_labels.items():
        f = files[name]
        assert (f.read, f.accepted, f.rejected, f.duplicates) == (expected, expected, 0, 0), name
        assert f.reconciles and f.archived_to == f"annotations/archive/{name}"
    assert {name: f.format for name, f in files.items()} == {
        day.annotation_files[0]: "canonical_csv", day.annotation_files[1]: "label_studio",
        day.annotation_files[2]: "argilla", day.annotation_files[3]: "langfuse_scores"}
    assert files[day.annotation_files[1]].skipped_reasons == {"cancelled annotation": 2}
    assert report.summary()["accepted"] == sum(day.annotation_labels.values())
    table = rows(settings, "SELECT source_file, read, accepted, rejected, duplicates FROM annotation_files")
    assert {s.rsplit("/", 1)[-1]: r for s, r, *_ in table} == day.annotation_labels
    assert "| yes |" in report.markdown() and "**NO**" not in report.markdown()
    assert not any(settings.annotations_inbox.iterdir())

    # Consensus agrees with the planted truth on nearly every resolved item.
    cons = run_consensus(settings)
    assert set(cons.labels) == {"hallucination", "relevance"}
    truth = rows(settings, f"SELECT log_id, hallucinated::INT, (NOT off_topic)::INT "
                           f"FROM read_parquet('{settings.home / 'demo' / f'truth-{day.day}.parquet'}')")
    truth = {log_id: {"hallucination": h, "relevance": r} for log_id, h, r in truth}
    resolved = rows(settings, "SELECT log_id, label, value FROM consensus WHERE value IS NOT NULL")
    right = sum(truth[log_id][label] == value for log_id, label, value in resolved)
    assert len(resolved) > 50 and right / len(resolved) > 0.85

    # Importing again: everything already imported, nothing added.
    before = rows(settings, "SELECT count(*) FROM annotations")
    for path in archive_dir(settings).iterdir():
        shutil.copy(path, settings.annotations_inbox / path.name)
    again = run_import(settings)
    assert all(f.already_imported for f in again.files) and rows(settings, "SELECT count(*) FROM annotations") == before


def test_flywheel_annotations_does_not_import_dagster():
    code = "import sys, flywheel.annotations; sys.exit('dagster' in sys.modules)"
    assert subprocess.run([sys.executable, "-c", code], cwd=pathlib.Path(__file__).parents[1]).returncode == 0


# ---------------------------------------------------------------------------------------
# Exports written by the tools themselves (tests/fixtures/annotations/tools, ORIGIN.md)
# ---------------------------------------------------------------------------------------

TOOL_EXPORTS = pathlib.Path(__file__).parent / "fixtures" / "tools" / "annotations"


@pytest.mark.parametrize("name,fmt", [("label_studio_min.json", "label_studio_min"),
                                      ("label_studio.csv", "label_studio_csv"),
                                      ("label_studio.tsv", "label_studio_csv")])
def test_label_studio_json_min_csv_and_tsv_exports_read_field_by_field(name, fmt):
    from flywheel.annotations.formats import parse_file

    rows_min = json.loads((TOOL_EXPORTS / "label_studio_min.json").read_text())
    got_fmt, records = parse_file(TOOL_EXPORTS / name)
    records = list(records)
    assert got_fmt == fmt
    got = [(r.log_id, r.annotator, r.label, r.value, r.comment, r.created_at, r.reject) for r in records]
    expected = []
    for row in rows_min:  # what the JSON-MIN rows say, label column by label column
        for label in ("hallucination", "relevance"):
            if row.get(label):
                expected.append((row["log_id"], row["annotator"], label, row[label], row.get("comment"),
                                 row["updated_at"], None))
    assert sorted(got) == sorted(expected) and len(got) == 3
    assert "fine\u2028answer" in {r.comment for r in records}


def test_label_studio_exports_import_with_distinct_annotators(settings):
    ingest_logs(settings, ["log-0001"])
    settings.annotations_inbox.mkdir(parents=True, exist_ok=True)
    shutil.copy(TOOL_EXPORTS / "label_studio.tsv", settings.annotations_inbox / "project.tsv")  # bytes as written
    report = run_import(settings)
    [file] = report.files
    assert (file.format, file.accepted, file.rejected) == ("label_studio_csv", 3, 0)
    got = rows(settings, "SELECT annotator, label, value FROM annotations ORDER BY ALL")
    assert got == [("ana@example.com", "hallucination", 0), ("ana@example.com", "relevance", 1),
                   ("ben@example.com", "hallucination", 1)]


def test_langfuse_score_csv_with_json_encoded_dates_and_author_names(settings):
    from flywheel.annotations.formats import parse_file

    table = list(csv.DictReader(open(TOOL_EXPORTS / "langfuse_scores.csv", newline="")))
    assert table[0]["timestamp"].startswith('"') and "authorUserId" not in table[0]
    fmt, records = parse_file(TOOL_EXPORTS / "langfuse_scores.csv")
    records = list(records)
    assert fmt == "langfuse_scores"
    human = [r for r in records if r.skip is None]
    assert [(r.log_id, r.annotator, r.label, r.value, r.created_at) for r in human] == [
        (row["traceId"], row["authorUserName"], row["name"], row["value"], json.loads(row["timestamp"]))
        for row in table if row["source"] == "ANNOTATION"]
    assert [r.skip for r in records if r.skip] == ["not a human label (source=API)"]
    # Imported: every human score lands, and two people who disagree stay two annotators.
    ingest_logs(settings, ["trace-0001", "trace-0002"])
    settings.annotations_inbox.mkdir(parents=True, exist_ok=True)
    shutil.copy(TOOL_EXPORTS / "langfuse_scores.csv", settings.annotations_inbox / "scores.csv")
    [file] = run_import(settings).files
    assert (file.accepted, file.rejected) == (4, 0)
    assert rows(settings, "SELECT log_id, count(DISTINCT annotator), count(*) FROM annotations GROUP BY 1 ORDER BY 1") == [
        ("trace-0001", 2, 2), ("trace-0002", 2, 2)]
    assert rows(settings, "SELECT min(created_at)::VARCHAR FROM annotations")[0][0].startswith("2026-11-21 09:00:00")


def test_a_line_separator_inside_a_comment_does_not_split_the_record(settings):
    # U+2028 is legal raw inside a JSON string (json.dumps(..., ensure_ascii=False) keeps it),
    # but str.splitlines() ends a line there.
    record = {"log_id": "l-1", "annotator": "ann", "label": "hallucination", "value": "yes",
              "comment": "first part\u2028second part"}
    text = json.dumps(record, ensure_ascii=False) + "\n" + json.dumps({**record, "annotator": "bob"}) + "\n"
    assert "\u2028" in text and len(text.splitlines()) == 3
    from flywheel.annotations.formats import parse_file

    path = inbox(settings, "labels.jsonl", text)
    fmt, records = parse_file(path)
    records = list(records)
    assert fmt == "canonical_json"
    assert [(r.line, r.annotator, r.comment, r.reject) for r in records] == [
        (1, "ann", "first part\u2028second part", None), (2, "bob", "first part\u2028second part", None)]


def test_argilla_record_to_dict_export_read_field_by_field():
    from flywheel.annotations.formats import parse_file

    lines = [json.loads(line) for line in open(TOOL_EXPORTS / "argilla_records.jsonl")]
    fmt, records = parse_file(TOOL_EXPORTS / "argilla_records.jsonl")
    got = [(r.line, r.log_id, r.annotator, r.label, r.value, r.reject, r.skip) for r in records]
    expected = [
        (n, line["metadata"]["log_id"], response["user_id"], question, response["value"], None, None)
        for n, line in enumerate(lines, 1)
        for question, responses in line["responses"].items()
        for response in responses
    ]
    assert fmt == "argilla" and got == expected and len(got) == 4
    # Two people who disagree on one question stay two annotators.
    relevance = [g for g in got if g[3] == "relevance"]
    assert len({g[2] for g in relevance}) == 2 and {g[4] for g in relevance} == {"relevant", "unrelated"}
    # to_dict() drops each response's status: the draft of log-0002 cannot be told from a
    # submitted answer here (README: export submitted responses only).
    assert "status" not in lines[1]["responses"]["hallucination"][0]


def test_label_studio_json_min_of_label_studios_own_image_export():
    """label-studio-sdk's Converter on Label Studio's test-suite export csv_test.json: the
    task data columns (text, audio, image) are not read as labels, the rectangle is
    rejected with a reason, annotator and dates come from the row."""
    from flywheel.annotations.formats import parse_file

    rows_min = json.loads((TOOL_EXPORTS / "label_studio_image_min.json").read_text())
    fmt, records = parse_file(TOOL_EXPORTS / "label_studio_image_min.json")
    got = [(r.log_id, r.annotator, r.label, r.created_at, r.reject) for r in records]
    assert fmt == "label_studio_min"
    assert got == [(f"ls-{row['id']}", row["annotator"], "label", row["updated_at"], "unsupported result type")
                   for row in rows_min]
# Pending labels (#13): labels that arrive before their logs wait, and join later
# ---------------------------------------------------------------------------------------


def test_labels_before_their_logs_wait_and_join_when_the_logs_land(settings):
    from flywheel.annotations import join_pending

    ingest_logs(settings, ["l-1"], day="2025-01-01")
    inbox(settings, "early.csv", CSV_HEADER + (
        "l-1,ann,hallucination,yes,,,,\n"      # its log is there: accepted
        "l-2,ann,hallucination,no,,,,\n"       # the log lands tomorrow: pending
        "l-2,bo,hallucination,yes,,,,\n"       # pending
        "l-2,bo,hallucination,yes,,,,\n"       # the same again: a duplicate, not a second pending row
    ))
    first = run_import(settings).files[0]
    assert (first.read, first.accepted, first.pending, first.duplicates, first.rejected) == (4, 1, 2, 1, 0)
    assert first.reconciles
    assert rows(settings, "SELECT count(*) FROM rejected_annotations") == [(0,)]
    # The same label in a later file, still before its log: a duplicate of the pending one.
    inbox(settings, "again.csv", CSV_HEADER + "l-2,ann,hallucination,no,,,,\n")
    again = run_import(settings).files[0]
    assert (again.pending, again.duplicates) == (0, 1)

    # The day of l-2 is ingested: the waiting labels join (the `logs` asset and every import call this).
    ingest_logs(settings, ["l-2"], day="2025-01-02")
    with store.connection(settings) as con:
        joined = join_pending(con)
        assert (joined.joined, joined.duplicates, joined.waiting) == (2, 0, 0)
        assert join_pending(con).joined == 0  # idempotent
    assert rows(settings, "SELECT log_id, annotator, value, line FROM annotations ORDER BY ALL") == [
        ("l-1", "ann", 1, 2), ("l-2", "ann", 0, 3), ("l-2", "bo", 1, 4)]
    assert rows(settings, "SELECT count(*) FROM pending_annotations") == [(0,)]
    # The file's own counts follow: everything it held is now accepted or a duplicate.
    assert rows(settings, "SELECT read, accepted, pending, duplicates FROM annotation_files "
                          "WHERE source_file LIKE '%early.csv'") == [(4, 3, 0, 1)]
    assert run_consensus(settings).labels["hallucination"]["items"] == 2


def test_the_next_import_joins_pending_labels_and_a_label_given_twice_meanwhile_counts_once(settings):
    inbox(settings, "first.csv", CSV_HEADER + "l-9,ann,relevance,yes,,,,\n")
    assert run_import(settings).files[0].pending == 1
    ingest_logs(settings, ["l-9"])
    # The same label arrives again once the log is in: accepted from this file; the
    # pending copy of the first file becomes its duplicate when it joins.
    inbox(settings, "second.csv", CSV_HEADER + "l-9,ann,relevance,yes,,,,\nl-9,bo,relevance,no,,,,\n")
    report = run_import(settings)
    assert (report.pending.joined, report.pending.duplicates, report.pending.waiting) == (1, 0, 0)
    assert report.files[0].duplicates == 1 and report.files[0].accepted == 1
    assert rows(settings, "SELECT count(*) FROM annotations") == [(2,)]
    counts = rows(settings, "SELECT read, accepted + rejected + duplicates + pending FROM annotation_files")
    assert all(read == total for read, total in counts)


# ---------------------------------------------------------------------------------------
# Files still being copied into the inbox (#13)
# ---------------------------------------------------------------------------------------

# A real second process that copies an annotation file into the inbox in two chunks: the
# first 499 labels, then (when told "go" on stdin) the other 501, through the same open file.
COPIER = r"""
import sys
path = sys.argv[1]
with open(path, "w", encoding="utf-8") as f:
    f.write("log_id,annotator,label,value\n")
    f.writelines(f"l-{i},ann,hallucination,{i % 2}\n" for i in range(499))
    f.flush()
    print("half", flush=True)
    sys.stdin.readline()
    f.writelines(f"l-{i},ann,hallucination,{i % 2}\n" for i in range(499, 1000))
print("done", flush=True)
"""


def start_copier(path):
    process = subprocess.Popen([sys.executable, "-c", COPIER, str(path)], stdin=subprocess.PIPE,
                               stdout=subprocess.PIPE, text=True)
    assert process.stdout.readline().strip() == "half"
    return process


def finish_copy(process):
    process.stdin.write("go\n")
    process.stdin.flush()
    assert process.stdout.readline().strip() == "done"
    process.wait(timeout=30)


def test_a_file_still_being_copied_is_left_for_the_next_import(settings):
    ingest_logs(settings, [f"l-{i}" for i in range(1000)])
    settings = settings.replace(inbox_settle_seconds=2.0)
    settings.annotations_inbox.mkdir(parents=True)
    target = settings.annotations_inbox / "labels.csv"
    copier = start_copier(target)
    waited = []

    def sleep(seconds):  # the import waits for the file to settle: the copy goes on meanwhile
        waited.append(seconds)
        finish_copy(copier)

    report = run_import(settings, sleep=sleep)
    assert 0 < waited[0] <= 2.0
    assert report.files == [] and report.unsettled == ["labels.csv"] and target.exists()
    assert rows(settings, "SELECT count(*) FROM annotations") == [(0,)]
    # Untouched for the settle time: the next import reads it whole.
    os.utime(target, (target.stat().st_mtime - 5, target.stat().st_mtime - 5))
    (whole,) = run_import(settings, sleep=waited.append).files
    assert (whole.read, whole.accepted) == (1000, 1000) and len(waited) == 1


def test_an_archived_file_that_grew_after_its_import_is_read_again(settings):
    ingest_logs(settings, [f"l-{i}" for i in range(1000)])
    settings = settings.replace(inbox_settle_seconds=0.0)  # e.g. a copy that stalled longer than the settle time
    settings.annotations_inbox.mkdir(parents=True)
    copier = start_copier(settings.annotations_inbox / "labels.csv")
    (half,) = run_import(settings).files
    assert (half.read, half.accepted) == (499, 499)
    # The copy goes on writing into the file, which the import moved to the archive.
    finish_copy(copier)
    archived = archive_dir(settings) / "labels.csv"
    assert len(archived.read_text().splitlines()) == 1001
    (rest,) = run_import(settings).files
    assert rest.regrown and (rest.read, rest.accepted, rest.duplicates) == (1000, 501, 499)
    assert rows(settings, "SELECT count(*), count(DISTINCT log_id) FROM annotations") == [(1000, 1000)]
    assert run_import(settings).files == []  # read once more only when it changes again
