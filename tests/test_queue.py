"""The annotation queue and its exports: strategies, shares, no repeats, and round trips.

The round trips play the people: our Label Studio tasks file becomes a Label Studio JSON
export (annotations with ``completed_by``, choices results, a cancelled annotation),
our Argilla records file an Argilla export (responses per user), and our CSV a filled
CSV in canonical form; the importer must put every label on the right log with the
right value and reject nothing.
"""

from __future__ import annotations

import csv
import io
import json
import shutil
import xml.etree.ElementTree as ET
from pathlib import Path

import pytest

from flywheel import store
from flywheel.annotations import import_inbox
from flywheel.annotations.export import (
    CSV_COLUMNS,
    export_queue,
    queue_csv_to_canonical,
)
from flywheel.annotations.queue import (
    DEFAULT_QUEUE_SIZE,
    STRATEGIES,
    QueueError,
    allocate,
    build_queue,
    normalize_shares,
)
from flywheel.demo import DemoSpec, generate
from flywheel.ingest.loader import ingest_day
from flywheel.settings import Settings, load

WORST = (("source", "partner"), ("source", "mobile"), ("source", "api"))  # ranks 1, 2, 3


# ---------------------------------------------------------------------------------------
# A demo home (3 days of 300 logs, the demo's own labels imported), copied per test
# ---------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def demo_template(tmp_path_factory) -> tuple[Path, list[str]]:
    home = tmp_path_factory.mktemp("queue-demo") / "home"
    summary = generate(home, DemoSpec(days=3, rows_per_day=300, seed=5))
    settings = load({"FLYWHEEL_HOME": str(home)})
    with store.connection(settings) as con:
        for day in summary.days:
            ingest_day(con, settings, day.day)
        report = import_inbox(con, settings)
    assert report.total("accepted") > 0 and report.total("rejected") == 0
    return home, [d.day for d in summary.days]


@pytest.fixture
def demo(demo_template, tmp_path) -> tuple[Settings, list[str]]:
    template, days = demo_template
    home = tmp_path / "home"
    shutil.copytree(template, home)
    return load({"FLYWHEEL_HOME": str(home)}), days


def add_scores(con) -> None:
    """Classifier scores of every log for both tasks (an older model version too)."""
    for version, salt in (("1", "old"), ("2", "")):
        con.execute(
            f"""INSERT INTO log_scores (log_id, day, task, model_version, score, scored_at)
                SELECT log_id, day, t, t || '-{version}', (hash(log_id || t || '{salt}') % 10007) / 10006.0, now()
                FROM logs CROSS JOIN (VALUES ('hallucination'), ('relevance')) v(t)""")


def add_verdicts(con) -> None:
    """LLM judge verdicts of trusted prompt versions (judge_alignment), on most logs; and
    verdicts of an untrusted version that must be ignored."""
    con.execute("""INSERT INTO judge_verdicts (log_id, criterion, prompt_version, verdict, judged_at)
                   SELECT log_id, 'hallucination', 'h1', hash(log_id || 'j') % 2 = 0, now()
                   FROM logs WHERE hash(log_id) % 5 <> 0
                   UNION ALL
                   SELECT log_id, 'relevance', 'r1', hash(log_id || 'r') % 4 <> 0, now()
                   FROM logs WHERE hash(log_id) % 3 = 0
                   UNION ALL
                   SELECT log_id, 'relevance', 'r0-untrusted', true, now()
                   FROM logs WHERE hash(log_id) % 3 = 1""")
    con.execute("""INSERT INTO judge_alignment (criterion, prompt_version, kappa, n, n_pos, n_neg, parse_failures,
                                                trusted, evaluated_at)
                   VALUES ('hallucination', 'h1', 0.8, 100, 50, 50, 0, true, now()),
                          ('relevance', 'r1', 0.7, 100, 50, 50, 0, true, now()),
                          ('relevance', 'r0-untrusted', 0.1, 100, 50, 50, 0, false, now())""")


def add_slices(con, worst=WORST) -> None:
    """Slices by source for every day, and the given worst slices for every day."""
    con.execute("INSERT INTO slice_membership (day, log_id, slice_type, slice_value) "
                "SELECT day, log_id, 'source', source FROM logs")
    for (day,) in con.execute("SELECT DISTINCT day FROM logs").fetchall():
        for rank, (slice_type, slice_value) in enumerate(worst, start=1):
            con.execute(
                """INSERT INTO worst_slices (day, rank, slice_type, slice_value, label, n_signal, failures,
                                             failure_rate, rest_rate, lift, test, p_value, q_value, signal)
                   VALUES (?, ?, ?, ?, 'hallucination', 40, 12, 0.3, 0.1, 3.0, 'fisher', 0.001, 0.004, 'scores')""",
                [day, rank, slice_type, slice_value])


def add_all(con) -> None:
    add_scores(con)
    add_verdicts(con)
    add_slices(con)


def queue_rows(con, day=None) -> list[tuple]:
    where, params = ("WHERE day = ?", [day]) if day else ("", [])
    return con.execute(f"SELECT day::VARCHAR, log_id, strategy, reason, priority, queued_at, detail::VARCHAR "
                       f"FROM annotation_queue {where} ORDER BY day, priority", params).fetchall()


def counts(con, day) -> dict[str, int]:
    return dict(con.execute("SELECT strategy, count(*) FROM annotation_queue WHERE day = ? GROUP BY 1",
                            [day]).fetchall())


def truth(settings: Settings, day: str) -> dict[str, tuple[int, int]]:
    """Return log_id -> (hallucinated, relevant) of the demo's ground truth."""
    path = settings.home / "demo" / f"truth-{day}.parquet"
    with store.connection(settings) as con:
        return {log_id: (h, r) for log_id, h, r in con.execute(
            f"SELECT log_id, hallucinated::INT, (NOT off_topic)::INT FROM read_parquet('{path}')").fetchall()}


# ---------------------------------------------------------------------------------------
# Round trips through Label Studio, Argilla and the CSV
# ---------------------------------------------------------------------------------------


def label_studio_export(tasks: list[dict], labels: dict[str, dict[str, tuple[int, int]]]) -> list[dict]:
    """Turn our import tasks into a Label Studio JSON export, as the tool writes it.

    ``labels``: annotator id -> log_id -> (hallucination, relevance). Annotator 10 is
    written as a plain id, annotator 11 as a user object; the first task also gets a
    cancelled annotation (skipped by the importer, not a label).
    """
    choice = {"hallucination": ("No", "Yes"), "relevance": ("Irrelevant", "Relevant")}
    exported = []
    for number, task in enumerate(tasks, start=1):
        log_id = task["data"]["log_id"]
        annotations = []
        for k, (user, by_log) in enumerate(sorted(labels.items())):
            if log_id not in by_log:
                continue
            h, r = by_log[log_id]
            annotations.append({
                "id": number * 100 + k,
                "completed_by": int(user) if k == 0 else {"id": int(user), "email": f"user{user}@acme.test",
                                                          "first_name": "", "last_name": ""},
                "result": [
                    {"id": f"h{number}{k}", "type": "choices", "value": {"choices": [choice["hallucination"][h]]},
                     "origin": "manual", "to_name": "output", "from_name": "hallucination"},
                    {"id": f"r{number}{k}", "type": "choices", "value": {"choices": [choice["relevance"][r]]},
                     "origin": "manual", "to_name": "output", "from_name": "relevance"},
                ],
                "was_cancelled": False, "ground_truth": False,
                "created_at": "2026-11-22T09:00:00.000000Z", "updated_at": "2026-11-22T09:00:00.000000Z",
                "lead_time": 12.5, "result_count": 0, "task": number, "project": 3, "parent_prediction": None,
            })
        if number == 1:
            annotations.append({
                "id": 99999, "completed_by": 12, "result": [], "was_cancelled": True, "ground_truth": False,
                "created_at": "2026-11-22T09:01:00Z", "updated_at": "2026-11-22T09:01:00Z", "task": number,
            })
        predictions = [{**p, "id": number * 10 + i, "task": number, "created_ago": "2 hours", "cluster": None,
                        "neighbors": None, "mislabeling": 0.0}
                       for i, p in enumerate(task.get("predictions", []))]
        exported.append({
            "id": number, "annotations": annotations, "file_upload": "labelstudio-tasks.json", "drafts": [],
            "predictions": predictions, "data": task["data"], "meta": {}, "created_at": "2026-11-22T08:00:00Z",
            "updated_at": "2026-11-22T09:01:00Z", "inner_id": number, "total_annotations": len(annotations),
            "cancelled_annotations": int(number == 1), "total_predictions": len(predictions),
            "comment_count": 0, "unresolved_comment_count": 0, "last_comment_updated_at": None,
            "project": 3, "updated_by": 10, "comment_authors": [],
        })
    return exported


def argilla_export(records: list[dict], labels: dict[str, dict[str, tuple[int, int]]]) -> list[dict]:
    """Turn our Argilla records into exported records with responses per user."""
    words = {"hallucination": ("no", "yes"), "relevance": ("irrelevant", "relevant")}
    exported = []
    for i, record in enumerate(records):
        responses: dict[str, list[dict]] = {"hallucination": [], "relevance": []}
        for user, by_log in sorted(labels.items()):
            if record["id"] in by_log:
                h, r = by_log[record["id"]]
                responses["hallucination"].append({"value": words["hallucination"][h], "user_id": user,
                                                   "status": "submitted"})
                responses["relevance"].append({"value": words["relevance"][r], "user_id": user,
                                               "status": "submitted"})
        exported.append({**record, "responses": responses, "status": "completed",
                         "_server_id": f"0b7c5a6e-0000-4000-8000-{i:012d}",
                         "inserted_at": "2026-11-22T08:00:00", "updated_at": "2026-11-22T10:00:00"})
    return exported


def flip(value: int) -> int:
    return 1 - value


def test_round_trip_label_studio_argilla_and_csv(demo):
    settings, days = demo
    day = days[0]
    with store.connection(settings) as con:
        add_all(con)
        report = build_queue(con, settings, day, seed=3)
        paths = export_queue(con, settings, day)
        queued = [r[1] for r in queue_rows(con, day)]
    assert report.queued == DEFAULT_QUEUE_SIZE == len(queued)
    outbox = settings.annotations_outbox
    assert paths == [outbox / f"labelstudio-tasks-{day}.json", outbox / "labelstudio-config.xml",
                     outbox / f"argilla-records-{day}.jsonl", outbox / f"queue-{day}.csv"]
    assert sorted(p.name for p in outbox.iterdir()) == sorted(p.name for p in paths)

    # The Label Studio tasks: data, and our scores as predictions.
    tasks = json.loads(paths[0].read_text(encoding="utf-8"))
    assert [t["data"]["log_id"] for t in tasks] == queued
    assert {"log_id", "input", "output", "context"} <= set(tasks[0]["data"])
    for task in tasks:
        versions = {p["model_version"] for p in task["predictions"]}
        assert versions == {"hallucination-2", "relevance-2"}  # the greatest version of each task
        for prediction in task["predictions"]:
            (result,) = prediction["result"]
            assert result["type"] == "choices" and result["to_name"] == "output"
            assert result["value"]["choices"][0] in {"hallucination": {"Yes", "No"},
                                                     "relevance": {"Relevant", "Irrelevant"}}[result["from_name"]]
            assert 0.5 <= result["score"] <= 1.0 and prediction["score"] == result["score"]

    # The labelling config: the text shown and the two questions on the output.
    config = ET.fromstring(paths[1].read_text(encoding="utf-8"))
    texts = {t.get("name"): t.get("value") for t in config.iter("Text")}
    assert texts == {"input": "$input", "context": "$context", "output": "$output"}
    questions = {c.get("name"): (c.get("toName"), [x.get("value") for x in c.iter("Choice")])
                 for c in config.iter("Choices")}
    assert questions == {"hallucination": ("output", ["Yes", "No"]),
                         "relevance": ("output", ["Relevant", "Irrelevant"])}

    # The Argilla records: id, fields, metadata, suggestions.
    records = [json.loads(line) for line in paths[2].read_text(encoding="utf-8").splitlines()]
    assert [r["id"] for r in records] == queued
    assert set(records[0]["fields"]) == {"input", "output", "context"}
    assert records[0]["metadata"]["strategy"] and records[0]["metadata"]["log_id"] == queued[0]
    assert all(set(r["suggestions"]) == {"hallucination", "relevance"} for r in records)
    assert all(r["suggestions"]["relevance"]["value"] in ("relevant", "irrelevant") for r in records)

    # The CSV: the items and the empty columns to fill.
    with paths[3].open(encoding="utf-8", newline="") as f:
        csv_rows = list(csv.DictReader(f))
    assert tuple(csv_rows[0]) == CSV_COLUMNS and [r["log_id"] for r in csv_rows] == queued
    assert all(r["annotator"] == r["hallucination"] == r["relevance"] == "" for r in csv_rows)
    assert all(r["strategy"] in STRATEGIES and r["reason"] for r in csv_rows)

    # People label: two in Label Studio (one disagrees on a few items), two in Argilla
    # (one labels half the items), one in the CSV.
    right = truth(settings, day)
    ls_labels = {"10": {i: right[i] for i in queued},
                 "11": {i: ((flip(right[i][0]), right[i][1]) if n % 7 == 0 else right[i])
                        for n, i in enumerate(queued)}}
    ar_labels = {"5c1e2f00-aaaa-4bbb-8ccc-000000000001": {i: right[i] for i in queued},
                 "9a7f0000-aaaa-4bbb-8ccc-000000000002": {i: right[i] for i in queued[::2]}}
    inbox = settings.annotations_inbox
    inbox.mkdir(parents=True, exist_ok=True)
    (inbox / f"project-3-at-2026-11-22-10-00-{day}.json").write_text(
        json.dumps(label_studio_export(tasks, ls_labels), indent=2), encoding="utf-8")
    (inbox / f"argilla-export-{day}.jsonl").write_text(
        "".join(json.dumps(r) + "\n" for r in argilla_export(records, ar_labels)), encoding="utf-8")
    words = {"hallucination": ("no", "Yes"), "relevance": ("Irrelevant", "relevant")}
    for n, row in enumerate(csv_rows):
        h, r = right[row["log_id"]]
        row.update(annotator="maria.k", hallucination=words["hallucination"][h] if n % 2 else str(h),
                   relevance=words["relevance"][r], comment="checked the context" if n == 0 else "")
    # The filled queue CSV goes back as it is: the importer reads its label columns.
    filled = inbox / f"labels-queue-{day}.csv"
    with filled.open("w", encoding="utf-8", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=CSV_COLUMNS)
        writer.writeheader()
        writer.writerows(csv_rows)

    with store.connection(settings) as con:
        before = con.execute("SELECT count(*) FROM annotations").fetchone()[0]
        rejected_before = con.execute("SELECT count(*) FROM rejected_annotations").fetchone()[0]
        result = import_inbox(con, settings)
        by_name = {Path(f.source_file).name: f for f in result.files}
        stored = con.execute(
            "SELECT log_id, annotator, label, value, source_format, comment FROM annotations "
            "WHERE source_file IN (SELECT unnest(?))", [[f.source_file for f in result.files]]
        ).fetchall()
        new = con.execute("SELECT count(*) FROM annotations").fetchone()[0] - before
        rejected = con.execute("SELECT count(*) FROM rejected_annotations").fetchone()[0] - rejected_before

    n = len(queued)
    ls_file = by_name[f"project-3-at-2026-11-22-10-00-{day}.json"]
    ar_file = by_name[f"argilla-export-{day}.jsonl"]
    csv_file_ = by_name[f"labels-queue-{day}.csv"]
    assert (ls_file.format, ls_file.accepted, ls_file.rejected, ls_file.skipped) == ("label_studio", 4 * n, 0, 1)
    assert ls_file.skipped_reasons == {"cancelled annotation": 1}
    half = len(queued[::2])
    assert (ar_file.format, ar_file.accepted, ar_file.rejected) == ("argilla", 2 * (n + half), 0)
    assert (csv_file_.format, csv_file_.accepted, csv_file_.rejected) == ("wide_csv", 2 * n, 0)
    assert result.reconciles and result.total("rejected") == 0 and rejected == 0
    assert result.total("duplicates") == 0 and new == 4 * n + 2 * (n + half) + 2 * n

    expected = set()
    for user, by_log in ls_labels.items():
        expected |= {(i, f"label-studio:{user}", "hallucination", h) for i, (h, _) in by_log.items()}
        expected |= {(i, f"label-studio:{user}", "relevance", r) for i, (_, r) in by_log.items()}
    for user, by_log in ar_labels.items():
        expected |= {(i, user, "hallucination", h) for i, (h, _) in by_log.items()}
        expected |= {(i, user, "relevance", r) for i, (_, r) in by_log.items()}
    expected |= {(i, "maria.k", "hallucination", right[i][0]) for i in queued}
    expected |= {(i, "maria.k", "relevance", right[i][1]) for i in queued}
    assert {row[:4] for row in stored} == expected and len(stored) == new
    assert {row[0] for row in stored if row[1] == "maria.k"} == set(queued)
    assert ("checked the context",) in {(row[5],) for row in stored if row[1] == "maria.k"}

    # Labelled now: the next build of another day, and a re-run of this day, keep them out
    # (a re-run keeps the day's own items and gives the same queue).
    with store.connection(settings) as con:
        again = build_queue(con, settings, day, seed=3)
        assert [r[1] for r in queue_rows(con, day)] == queued and again.labelled == report.labelled
        build_queue(con, settings, days[1], seed=3)
        labelled = {r[0] for r in con.execute("SELECT DISTINCT log_id FROM annotations").fetchall()}
        assert not labelled & {r[1] for r in queue_rows(con, days[1])}


def test_export_without_scores_and_of_an_empty_day(demo):
    settings, days = demo
    with store.connection(settings) as con:
        build_queue(con, settings, days[1], size=5)
        paths = export_queue(con, settings, days[1])
        empty = export_queue(con, settings, "2030-01-01")
    tasks = json.loads(paths[0].read_text(encoding="utf-8"))
    assert len(tasks) == 5 and all("predictions" not in t for t in tasks)
    records = [json.loads(line) for line in paths[2].read_text(encoding="utf-8").splitlines()]
    assert len(records) == 5 and all(r["suggestions"] == {} and r["responses"] == {} for r in records)
    assert json.loads(empty[0].read_text(encoding="utf-8")) == []
    assert empty[2].read_text(encoding="utf-8") == ""
    assert empty[3].read_text(encoding="utf-8").strip() == ",".join(CSV_COLUMNS)


def test_filled_csv_with_missing_annotator_and_bad_value_is_rejected_not_lost(demo, tmp_path):
    settings, days = demo
    with store.connection(settings) as con:
        build_queue(con, settings, days[2], size=3)
        paths = export_queue(con, settings, days[2])
    text = paths[3].read_text(encoding="utf-8")
    rows_ = list(csv.DictReader(io.StringIO(text)))
    rows_[0].update(annotator="a", hallucination="yes", relevance="")  # one label only
    rows_[1].update(annotator="", hallucination="no", relevance="relevant")  # no annotator
    rows_[2].update(annotator="a", hallucination="maybe", relevance="relevant")  # unmappable
    filled = tmp_path / "filled.csv"
    with filled.open("w", encoding="utf-8", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=CSV_COLUMNS, delimiter=";")  # as a spreadsheet saves it
        writer.writeheader()
        writer.writerows(rows_)
    settings.annotations_inbox.mkdir(parents=True, exist_ok=True)
    assert queue_csv_to_canonical(filled, settings.annotations_inbox / "labels.csv") == 5
    with store.connection(settings) as con:
        (f,) = import_inbox(con, settings).files
    assert (f.accepted, f.rejected) == (2, 3) and f.reconciles
    assert f.rejected_reasons == {"missing annotator": 2, "unmappable value": 1}
    with pytest.raises(ValueError, match="not a queue CSV"):
        queue_csv_to_canonical(settings.annotations_outbox / f"labelstudio-tasks-{days[2]}.json", tmp_path / "x.csv")


# ---------------------------------------------------------------------------------------
# The queue: no repeats, shares, reasons, idempotence
# ---------------------------------------------------------------------------------------


def test_queue_never_repeats_an_item_across_nights(demo):
    settings, days = demo
    with store.connection(settings) as con:
        add_all(con)
        labelled = {r[0] for r in con.execute("SELECT DISTINCT log_id FROM annotations").fetchall()}
        assert labelled  # the demo's own labels
        for day in days:
            report = build_queue(con, settings, day, seed=1)
            assert report.queued == DEFAULT_QUEUE_SIZE and report.labelled > 0
        everything = queue_rows(con)
        ids = [r[1] for r in everything]
        assert len(ids) == len(set(ids)) == 3 * DEFAULT_QUEUE_SIZE
        assert not set(ids) & labelled
        day_of = dict(con.execute("SELECT log_id, day::VARCHAR FROM logs").fetchall())
        assert all(day_of[log_id] == day for day, log_id, *_ in everything)

        # An item queued on another day is never picked again, even when every other
        # eligible item of its day is taken.
        earlier = [r[0] for r in con.execute(
            "SELECT log_id FROM logs WHERE day = ? AND log_id NOT IN (SELECT log_id FROM annotation_queue) "
            "AND log_id NOT IN (SELECT log_id FROM annotations) ORDER BY log_id LIMIT 20", [days[2]]).fetchall()]
        con.executemany("INSERT INTO annotation_queue (day, log_id, strategy, reason, priority, queued_at) "
                        "VALUES ('2026-11-01', ?, 'random', 'an earlier queue', 1, now())", [[i] for i in earlier])
        report = build_queue(con, settings, days[2], size=1000, seed=1)
        assert report.queued_elsewhere == 20 and report.queued == report.eligible
        assert report.queued == 300 - report.labelled - 20
        assert not set(earlier) & {r[1] for r in queue_rows(con, days[2])}
        ids = [r[0] for r in con.execute("SELECT log_id FROM annotation_queue").fetchall()]
        assert len(ids) == len(set(ids))


def test_shares_are_respected_and_reasons_recorded(demo):
    settings, days = demo
    day = days[0]
    with store.connection(settings) as con:
        add_all(con)
        report = build_queue(con, settings, day, seed=2)
        assert counts(con, day) == report.counts == {"worst_slice": 15, "uncertain": 15, "disagreement": 10,
                                                     "random": 10}
        assert report.skipped == {} and report.top_ups == 0

        rows_ = queue_rows(con, day)
        assert [r[4] for r in rows_] == list(range(1, 51))
        assert [r[2] for r in rows_[:4]] == ["disagreement", "uncertain", "worst_slice", "random"]
        assert all(r[3] for r in rows_)
        details = {r[1]: (r[2], r[3], json.loads(r[6])) for r in rows_}

        # worst_slice: members of the worst slices, with the slice in reason and detail.
        members = {(t, v): {r[0] for r in con.execute(
            "SELECT log_id FROM slice_membership WHERE day = ? AND slice_type = ? AND slice_value = ?",
            [day, t, v]).fetchall()} for t, v in WORST}
        for log_id, (strategy, reason, detail) in details.items():
            if strategy == "worst_slice":
                key = (detail["slice_type"], detail["slice_value"])
                assert log_id in members[key] and f"{key[0]}={key[1]}" in reason
                assert reason.startswith(f"worst slice #{detail['rank']}")
        ranks = [d["rank"] for s, _, d in details.values() if s == "worst_slice"]
        assert set(ranks) == {1, 2, 3} and max(ranks.count(r) for r in (1, 2, 3)) - min(
            ranks.count(r) for r in (1, 2, 3)) <= 1  # round-robin over the slices

        # uncertain: nearer 0.5 than any eligible item left out, with the current model.
        scores = dict(con.execute(
            "SELECT log_id, min(abs(score - 0.5)) FROM log_scores WHERE model_version LIKE '%-2' GROUP BY 1"
        ).fetchall())
        labelled = {r[0] for r in con.execute("SELECT log_id FROM annotations").fetchall()}
        left_out = [scores[i] for i, in con.execute("SELECT log_id FROM logs WHERE day = ?", [day]).fetchall()
                    if i not in details and i not in labelled]
        uncertain = [(i, d) for i, (s, _, d) in details.items() if s == "uncertain"]
        assert max(scores[i] for i, _ in uncertain) <= min(left_out)
        assert all(d["model_version"].endswith("-2") and abs(d["margin"] - scores[i]) < 1e-9 for i, d in uncertain)

        # disagreement: the classifier and the judge really disagree.
        for log_id, (strategy, reason, d) in details.items():
            if strategy == "disagreement":
                (score,) = con.execute("SELECT score FROM log_scores WHERE log_id = ? AND task = ? "
                                       "AND model_version LIKE '%-2'", [log_id, d["task"]]).fetchone()
                assert (score > 0.5) != (d["judge_value"] == 1) and d["verdict"] in reason

        # random: the uniform sample, said so.
        assert all("uniform sample" in r for s, r, _ in details.values() if s == "random")

        # Custom shares, and a small size with rounding.
        report = build_queue(con, settings, days[1], size=20, shares={"uncertain": 1, "random": 1})
        assert counts(con, days[1]) == {"uncertain": 10, "random": 10}
        report = build_queue(con, settings, days[1], size=7)
        assert report.quotas == {"worst_slice": 2, "uncertain": 2, "disagreement": 1, "random": 2}
        assert counts(con, days[1]) == {"worst_slice": 2, "uncertain": 2, "disagreement": 1, "random": 2}


def test_skipped_strategies_are_redistributed_and_random_never_shrinks(demo):
    settings, days = demo
    with store.connection(settings) as con:
        # Nothing but logs: no slices, no scores, no judges -> all random.
        report = build_queue(con, settings, days[0])
        assert counts(con, days[0]) == {"random": 50}
        assert set(report.skipped) == {"worst_slice", "uncertain", "disagreement"}
        assert "log_scores" in report.skipped["uncertain"] and "worst slices" in report.skipped["worst_slice"]

        # Slices only: worst_slice 0.3 and random 0.2 -> 30 and 20.
        add_slices(con)
        report = build_queue(con, settings, days[0])
        assert counts(con, days[0]) == {"worst_slice": 30, "random": 20}
        assert report.effective_shares["random"] == pytest.approx(0.4) and "| worst_slice |" in report.markdown()

        # Scores but no judges: disagreement's share goes to the others in proportion.
        add_scores(con)
        report = build_queue(con, settings, days[0])
        assert "judge_verdicts" in report.skipped["disagreement"]
        assert counts(con, days[0]) == {"worst_slice": 19, "uncertain": 18, "random": 13}

        # A strategy with fewer candidates than its quota: the rest are random top-ups.
        con.execute("DELETE FROM worst_slices WHERE day = ?", [days[1]])
        con.execute("""INSERT INTO worst_slices (day, rank, slice_type, slice_value, n_signal, failures,
                           failure_rate, test, p_value, q_value, signal)
                       VALUES (?, 1, 'keyword', 'refund', 3, 2, 0.67, 'fisher', 0.01, 0.02, 'scores')""", [days[1]])
        build_queue(con, settings, days[1], shares={"random": 1}, size=20)  # the first 20 random draws
        three = [r[0] for r in con.execute(
            "SELECT log_id FROM logs WHERE day = ? AND log_id NOT IN (SELECT log_id FROM annotations) "
            "AND log_id NOT IN (SELECT log_id FROM annotation_queue) ORDER BY log_id LIMIT 3", [days[1]]).fetchall()]
        con.executemany("INSERT INTO slice_membership VALUES (?, ?, 'keyword', 'refund')",
                        [[days[1], i] for i in three])
        report = build_queue(con, settings, days[1], shares={"worst_slice": 0.5, "random": 0.5}, size=20)
        assert report.shortfall == {"worst_slice": 7} and report.top_ups == 7
        assert counts(con, days[1]) == {"worst_slice": 3, "random": 17}
        top_ups = con.execute("SELECT count(*) FROM annotation_queue WHERE day = ? "
                              "AND json_extract(detail, '$.top_up')::BOOLEAN AND reason LIKE 'random (top-up%'",
                              [days[1]]).fetchone()[0]
        assert top_ups == 7

        # The random share never goes below its setting, whatever is skipped.
        report = build_queue(con, settings, days[2], shares={"disagreement": 0.9, "random": 0.1}, size=10)
        assert counts(con, days[2]) == {"random": 10} and report.effective_shares["random"] == 1.0


def test_rerun_is_idempotent_and_deterministic_with_the_seed(demo, tmp_path):
    settings, days = demo
    with store.connection(settings) as con:
        add_all(con)
        first = build_queue(con, settings, days[0], seed=7)
        before = queue_rows(con)
        again = build_queue(con, settings, days[0], seed=7)
        assert queue_rows(con) == before  # queued_at included: the first one is kept
        assert again.summary() | {"replaced": 0} == first.summary() | {"replaced": 0} and again.replaced == 50
        other = build_queue(con, settings, days[0], seed=8)
        random_of = lambda: {r[1] for r in queue_rows(con, days[0]) if r[2] == "random"}  # noqa: E731
        assert other.counts == first.counts
        seed8 = random_of()
        build_queue(con, settings, days[0], seed=7)
        assert random_of() != seed8 and [r[:5] for r in queue_rows(con)] == [r[:5] for r in before]

    # Another home with the same data and seed gives the same queue.
    twin = tmp_path / "twin"
    shutil.copytree(settings.home, twin)
    twin_settings = load({"FLYWHEEL_HOME": str(twin)})
    with store.connection(twin_settings) as con:
        con.execute("DELETE FROM annotation_queue")
        build_queue(con, twin_settings, days[0], seed=7)
        assert [r[:5] for r in queue_rows(con)] == [r[:5] for r in before]


def test_allocation_and_argument_checks():
    shares = normalize_shares(None)
    assert sum(shares.values()) == pytest.approx(1.0)
    every = {"worst_slice": True, "uncertain": True, "disagreement": True}
    assert allocate(50, shares, every)[1] == {"worst_slice": 15, "uncertain": 15, "disagreement": 10, "random": 10}
    assert allocate(3, shares, every)[1]["random"] == 1  # ceil(0.6): never below its share
    effective, quotas = allocate(10, shares, {"worst_slice": False, "uncertain": True, "disagreement": False})
    assert quotas == {"worst_slice": 0, "uncertain": 6, "disagreement": 0, "random": 4}
    assert effective["uncertain"] == pytest.approx(0.6) and effective["random"] == pytest.approx(0.4)
    assert allocate(0, shares, every)[1] == dict.fromkeys(STRATEGIES, 0)
    only = normalize_shares({"uncertain": 2})
    assert allocate(5, only, {})[1] == {"worst_slice": 0, "uncertain": 0, "disagreement": 0, "random": 5}
    for bad in ({"clusters": 1}, {"random": -1}, {"random": 0}, {"random": "a lot"}):
        with pytest.raises(QueueError):
            normalize_shares(bad)


def test_bad_arguments(settings):
    with store.connection(settings) as con:
        with pytest.raises(QueueError, match="date"):
            build_queue(con, settings, "yesterday")
        with pytest.raises(QueueError, match="size"):
            build_queue(con, settings, "2026-11-19", size=-1)
        report = build_queue(con, settings, "2026-11-19")  # no logs at all: an empty queue
        assert report.queued == 0 and report.eligible == 0
