"""Classifiers that hold up on a new application and say when they cannot be trusted:
groups that cannot swallow a source, the served model refitted on every label, the trust
floor per task and source (untrusted scores do not move the slices), the per-source card."""

from __future__ import annotations

import json

import duckdb
import numpy as np
import pandas as pd
import pytest

from flywheel import store
from flywheel.annotations import build_consensus, import_inbox
from flywheel.annotations.queue import build_queue
from flywheel.classifiers.calibration import response
from flywheel.classifiers.evaluation import auroc_interval, compare_auroc
from flywheel.classifiers.registry import companion, load_artifact, resolve
from flywheel.classifiers.run import train_task
from flywheel.classifiers.scoring import score_day
from flywheel.classifiers.training import (assign_groups, default_factory, holdout_mask, load_training_data)
from flywheel.classifiers.trust import model_trust
from flywheel.ingest.loader import ingest_day
from flywheel.report import write_report
from flywheel.slicing import slice_day
from jobs.cli import summary_lines
from tests.conftest import land, rows

DAY = "2026-06-01"
CITIES = ["Paris", "Rome", "Berlin", "Madrid", "Vienna", "Lisbon", "Oslo", "Prague"]


def _land_and_label(settings, records: list[dict], labels: dict[str, int]) -> None:
    """Land ``records`` as one canonical file of DAY, ingest it, import ``labels``
    (log id -> hallucination) and build the consensus."""
    land(settings, DAY, "app.jsonl", "".join(json.dumps(r) + "\n" for r in records))
    settings.annotations_inbox.mkdir(parents=True, exist_ok=True)
    lines = ["log_id,annotator,label,value"] + [f"{k},ann1,hallucination,{v}" for k, v in labels.items()]
    (settings.annotations_inbox / "labels.csv").write_text("\n".join(lines) + "\n", encoding="utf-8")
    with store.connection(settings) as con:
        ingest_day(con, settings, DAY)
        import_inbox(con, settings)
        build_consensus(con)


def _tower(i: int, rng, *, bad: bool) -> tuple[str, str]:
    """Document ``i`` (the same text for the same ``i``) and an answer grounded in it or not."""
    doc = np.random.default_rng(i)
    city, year, height = CITIES[i % len(CITIES)], int(doc.integers(1800, 2000)), int(doc.integers(50, 500))
    context = f"The tower of {city} was built in {year} and is {height} metres tall (record {i})."
    output = (f"The {city} tower is {height + int(rng.integers(5, 90))} metres tall, built by Count Orlov in "
              f"{year + 7}." if bad else f"The tower of {city} is {height} metres tall and was built in {year}.")
    return context, output


def _app(n: int, seed: int, *, learnable: bool = True, feedback: bool = False) -> tuple[list[dict], dict[str, int]]:
    """Two sources: ``summaries`` (one constant instruction, the document in the context,
    three summaries per document, no session) and ``qa`` (distinct questions). With
    ``learnable`` False the labels are coin flips the text says nothing about."""
    rng = np.random.default_rng(seed)
    records, labels = [], {}
    for i in range(n):
        bad = bool(rng.random() < 0.5)
        summary = i % 2 == 0
        context, output = _tower(i // 6 if summary else 1000 + i, rng, bad=bad if learnable else bool(rng.random() < 0.5))
        record = {"log_id": f"a{seed}-{i}", "ts": f"{DAY}T{8 + i % 10:02d}:00:00Z",
                  "source": "summaries" if summary else "qa",
                  "input": "Summarize the passage." if summary else f"How tall is the tower? (ticket {i})",
                  "output": output, "context": context}
        if feedback and i % 3 == 0:
            record["feedback"] = -1 if i % 2 else 1
        records.append(record)
        labels[record["log_id"]] = int(bad)
    return records, labels


# --------------------------------------------------------------------------- groups


def test_a_constant_instruction_source_lands_on_both_sides_of_the_holdout(settings):
    records, labels = _app(600, seed=1)
    _land_and_label(settings, records, labels)
    with store.connection(settings) as con:
        data = load_training_data(con, "hallucination")
    frame = data.frame
    assert len(frame) == 600
    summaries = frame["source"] == "summaries"
    # the old key (normalized input alone) made the whole source one group
    assert frame.loc[summaries, "input"].nunique() == 1
    # now: one group per (instruction, document): the three summaries of a document together
    assert frame.loc[summaries, "group"].nunique() == 100
    assert frame.loc[summaries].groupby("context")["group"].nunique().max() == 1
    held = holdout_mask(frame["group"], frame["label"].to_numpy(), strata=frame["source"])
    on_both_sides = held[summaries.to_numpy()]
    assert 0.1 < on_both_sides.mean() < 0.45, on_both_sides.mean()
    # no group on both sides
    assert not (set(frame.loc[held, "group"]) & set(frame.loc[~held, "group"]))


def test_no_group_holds_more_than_its_share_of_the_rows():
    n = 2000
    session = pd.Series([None] * n, dtype=object)
    session.iloc[:300] = "one-long-session"  # 15% of the rows
    pair = pd.Series(["same-pair"] * 500 + [f"p{i}" for i in range(n - 500)])  # rows 300..499: one pair
    output = pd.Series([f"o{i % 10}" for i in range(n)])  # 30 and 20 rows per output in the big groups
    log_id = pd.Series([f"id{i}" for i in range(n)])
    keys = assign_groups(session, pair, output, log_id)
    sizes = pd.Series(keys).value_counts()
    assert sizes.max() <= 40  # 2% of 2000
    assert pd.Series(keys[:300]).str.startswith("s:one-long-session|o:").all()  # the session cut by output
    assert (pd.Series(keys[300:500]).str.startswith("q:same-pair|o:")).all()
    assert pd.Series(keys[500:]).str.startswith("q:p").all()  # small groups keep their key
    # a group still too large after the output is cut to single logs
    one = assign_groups(pd.Series([None] * n, dtype=object), pd.Series(["x"] * n), pd.Series(["same"] * n), log_id)
    assert len(set(one)) == n and one[0] == "id:id0"


# --------------------------------------------------------------------------- refit and trust


def _uncalibrated(model, frame) -> np.ndarray:
    """The served model's score before its sigmoid calibrator (the fitted pipeline's own)."""
    from sklearn.pipeline import Pipeline

    if isinstance(model, Pipeline):  # features + calibrated linear model
        inner = model.steps[-1][1].calibrated_classifiers_[0].estimator
        return response(Pipeline([*model.steps[:-1], ("classifier", inner)]), frame)
    return response(model.calibrated_classifiers_[0].estimator, frame)


def test_the_served_model_is_refitted_on_every_label_and_the_card_keeps_the_evaluation_figures(settings):
    records, labels = _app(600, seed=2)
    _land_and_label(settings, records, labels)
    with store.connection(settings) as con:
        report = train_task(con, settings, "hallucination")
        n_train, n_eval, metrics_json, path = con.execute(
            "SELECT n_train, n_eval, metrics, artifact_path FROM models WHERE version = ?", [report.version]).fetchone()
        data = load_training_data(con, "hallucination")
    assert report.status == "champion"
    metrics = json.loads(metrics_json)
    assert n_train == 600 == metrics["served_fit"]["n_train"]  # the registry records the served model
    assert metrics["evaluation_fit"]["n_train"] + n_eval == 600 and n_eval == metrics["n_eval"] > 100
    assert "fitted on all 600 labelled logs" in report.card and "evaluation fit" in report.card
    # the card has a held-out row per source, with that source's trust verdict beside its metrics
    per_source = {s["slice_value"]: s for s in metrics["slices"] if s["slice_type"] == "source"}
    assert set(per_source) == {"summaries", "qa"}
    assert sum(s["n_eval"] for s in per_source.values()) == n_eval
    for source, figures in per_source.items():
        row = next(line for line in report.card.splitlines() if line.startswith(f"| source={source} |"))
        cells = [c.strip() for c in row.strip("|").split("|")]
        assert cells[1] == str(figures["n_eval"]) and cells[-1].split()[0] in ("yes", "no")
        assert metrics["trust"]["sources"][source]["n_eval"] == figures["n_eval"]

    served = load_artifact(resolve(settings, path))
    evaluation = load_artifact(resolve(settings, metrics["evaluation_fit"]["artifact"]),
                               sha256=metrics["evaluation_fit"]["sha256"])
    frame = data.frame
    # the served model is the pipeline fitted on all 600 rows (the same fit, done again here)
    again = default_factory("hallucination", data.has_context).fit(frame, frame["label"])
    np.testing.assert_allclose(_uncalibrated(served, frame), response(again, frame), rtol=1e-9, atol=1e-9)
    # ... and not the evaluation fit, which never saw the held-out rows
    trained_on = set(pd.read_parquet(resolve(settings, metrics["evaluation_fit"]["train_ids"]))["log_id"])
    held = frame[~frame["log_id"].isin(trained_on)]
    assert len(held) == n_eval
    assert not np.allclose(served.predict_proba(held)[:, 1], evaluation.predict_proba(held)[:, 1])
    # the served model keeps the shape the fast scorer evaluates as matrices, with the same result
    import polars as pl

    from flywheel.classifiers.fast import FastScorer, linear_parts

    assert linear_parts(served) is not None
    fast = FastScorer({"hallucination": served}).score(pl.from_pandas(frame[["input", "output", "context", "source"]]))
    np.testing.assert_allclose(fast["hallucination"], served.predict_proba(frame)[:, 1], atol=1e-6)


def test_an_untrusted_model_scores_but_does_not_move_the_slices_nor_the_queue(settings):
    records, labels = _app(800, seed=3, learnable=False, feedback=True)
    _land_and_label(settings, records, dict(list(labels.items())[:600]))  # 200 logs left to queue
    with store.connection(settings) as con:
        before = slice_day(con, settings, DAY, write_reports=False)  # no model yet: feedback only
        report = train_task(con, settings, "hallucination")
        assert report.status == "champion" and report.metrics["trusted"] is False
        assert "not trusted" in report.message and "FLYWHEEL_CLASSIFIER_MIN_AUROC 0.65" in report.message
        scored = score_day(con, settings, DAY)
        assert scored.rows["hallucination"] == 800 and scored.trusted_rows["hallucination"] == 0
        assert "not trusted" in scored.untrusted["hallucination"]
        flags = con.execute("SELECT trusted, count(*) FROM log_scores GROUP BY 1").fetchall()
        assert flags == [(False, 800)]
        untrusted = slice_day(con, settings, DAY, write_reports=False)
        queue = build_queue(con, settings, DAY, size=20, shares={"uncertain": 0.5, "random": 0.5})
        # the same scores, trusted, would have moved them
        con.execute("UPDATE log_scores SET trusted = true")
        trusted = slice_day(con, settings, DAY, write_reports=False)
        lines = summary_lines(con, settings=settings)
    assert (untrusted.n_signal, untrusted.failures) == (before.n_signal, before.failures)
    assert before.n_signal < 800 and trusted.n_signal == 800
    assert (trusted.n_signal, trusted.failures) != (before.n_signal, before.failures)
    assert "not trusted" in queue.skipped["uncertain"]
    assert any("hallucination" in line and "NOT trusted" in line and "lower bound" in line for line in lines)


def test_the_report_says_why_a_model_is_not_trusted(settings):
    records, labels = _app(600, seed=4, learnable=False)
    _land_and_label(settings, records, labels)
    with store.connection(settings) as con:
        train_task(con, settings, "hallucination")
        score_day(con, settings, DAY)
        page = write_report(con, settings, DAY)
    assert "NOT trusted" in page.summary["classifier trust"]
    assert page.summary["trusted classifier scores (used by slices and queue)"] == 0
    assert "NOT trusted" in page.path.read_text(encoding="utf-8")


def test_trust_per_source_own_verdict_inherited_or_none():
    settings = __import__("flywheel.settings", fromlist=["load"]).load({"FLYWHEEL_HOME": "/tmp/unused"})
    metrics = {
        "auroc": 0.80, "n_eval": 900, "positives": 300,
        "labelled_sources": {"good": 2000, "bad": 1500, "small": 100, "trained_only": 20},
        "slices": [
            {"slice_type": "source", "slice_value": "good", "auroc": 0.90, "n_eval": 500, "positives": 170},
            {"slice_type": "source", "slice_value": "bad", "auroc": 0.56, "n_eval": 380, "positives": 120},
            {"slice_type": "source", "slice_value": "small", "auroc": 0.50, "n_eval": 20, "positives": 10},
            {"slice_type": "prompt_version", "slice_value": "v1", "auroc": 0.1, "n_eval": 900, "positives": 300},
        ],
    }
    trust = model_trust(metrics, settings)
    assert trust.task.trusted and trust.task.low == pytest.approx(auroc_interval(0.80, 300, 600)[0])
    assert trust.sources["good"].trusted and trust.sources["good"].basis == "own"
    assert not trust.sources["bad"].trusted and "0.560" in trust.sources["bad"].reason
    assert trust.sources["small"].trusted and trust.sources["small"].basis == "task"  # too few rows: task's
    assert trust.sources["trained_only"].trusted and trust.sources["trained_only"].basis == "task"
    never = trust.for_source("new-app")
    assert not never.trusted and never.basis == "none" and "no labelled logs" in never.reason
    assert set(trust.untrusted_sources()) == {"bad"}
    # a higher floor takes the task's trust away; a model from before the floor (no labelled_sources)
    # lets an unlisted source take the task's verdict
    assert not model_trust(metrics, settings.replace(classifier_min_auroc=0.8)).task.trusted
    legacy = model_trust({k: v for k, v in metrics.items() if k != "labelled_sources"}, settings)
    assert legacy.for_source("new-app").trusted and legacy.for_source("new-app").basis == "task"
    # too few held-out rows: not trusted, and the reason names the setting
    few = model_trust({"auroc": 0.99, "n_eval": 30, "positives": 15}, settings)
    assert not few.task.trusted and "FLYWHEEL_CLASSIFIER_MIN_TRUST_ROWS=50" in few.task.reason


def test_auroc_interval_and_the_delong_comparison_agree_with_a_bootstrap():
    rng = np.random.default_rng(0)
    y = np.r_[np.ones(300), np.zeros(700)].astype(int)
    a = y * 0.8 + rng.normal(0, 0.6, 1000)
    b = a + rng.normal(0, 0.3, 1000)
    pos, neg = np.flatnonzero(y == 1), np.flatnonzero(y == 0)
    from sklearn.metrics import roc_auc_score

    boots_a, boots_d = [], []
    for _ in range(400):
        idx = np.r_[rng.choice(pos, len(pos)), rng.choice(neg, len(neg))]
        boots_a.append(roc_auc_score(y[idx], a[idx]))
        boots_d.append(roc_auc_score(y[idx], b[idx]) - boots_a[-1])
    low, high = auroc_interval(roc_auc_score(y, a), 300, 700)
    assert (high - low) / 2 == pytest.approx(1.96 * np.std(boots_a), rel=0.2)
    comparison = compare_auroc(y, a, b)
    assert (comparison.high - comparison.low) / 2 == pytest.approx(1.96 * np.std(boots_d), rel=0.2)
    assert comparison.delta == pytest.approx(roc_auc_score(y, b) - roc_auc_score(y, a))


def test_an_older_database_gets_the_trusted_column_and_its_scores_still_count(settings):
    settings.home.mkdir(parents=True)
    raw = duckdb.connect(str(settings.database_path))
    raw.execute("""CREATE TABLE log_scores (log_id VARCHAR NOT NULL, day DATE NOT NULL, task VARCHAR NOT NULL,
                   model_version VARCHAR NOT NULL, score DOUBLE, scored_at TIMESTAMPTZ NOT NULL)""")
    raw.execute("INSERT INTO log_scores VALUES ('x1', DATE '2026-06-01', 'hallucination', 'm1', 0.9, now())")
    raw.close()
    with store.connection(settings) as con:
        assert con.execute("SELECT trusted FROM log_scores").fetchall() == [(None,)]
    assert rows(settings, "SELECT count(*) FROM log_scores WHERE coalesce(trusted, true)")[0][0] == 1
