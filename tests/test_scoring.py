"""Classifiers and log_scores through Dagster: a training run from the demo data, and
scores for every log of a partition."""

from __future__ import annotations

import datetime as dt
import json

import dagster as dg

from assets.annotations import annotations, consensus
from assets.classifiers import classifiers
from assets.ingest import logs
from assets.resources import FlywheelResource
from assets.scoring import log_scores
from flywheel.demo import DemoSpec, generate
from flywheel.settings import load
from tests.conftest import land, rows

START = dt.date(2026, 4, 1)


def _checks(result) -> dict[str, tuple[bool, str]]:
    return {
        e.asset_check_evaluation_data.check_name: (e.asset_check_evaluation_data.passed,
                                                    e.asset_check_evaluation_data.description)
        for e in result.all_events if e.event_type_value == "ASSET_CHECK_EVALUATION"
    }


def test_demo_labels_train_champions_through_dagster_and_every_log_is_scored(tmp_path, monkeypatch):
    monkeypatch.setenv("FLYWHEEL_MIN_LABELS_PER_CLASS", "15")  # a small demo: ~20-40 labels of the rarer class
    settings = load({"FLYWHEEL_HOME": str(tmp_path / "home"), "FLYWHEEL_MIN_LABELS_PER_CLASS": "15"})
    summary = generate(settings.home, DemoSpec(days=2, rows_per_day=1500, seed=1, start=START))
    days = [d.day for d in summary.days]
    resources = {"flywheel": FlywheelResource(home=str(settings.home))}
    with dg.instance_for_test() as instance:
        for day in days:
            assert dg.materialize([logs], partition_key=day, instance=instance, resources=resources).success
        trained = dg.materialize([annotations, consensus, classifiers], instance=instance, resources=resources)
        assert trained.success
        (mat,) = trained.asset_materializations_for_node("classifiers")
        passed, description = _checks(trained)["champion_gate"]
        assert passed, description
        for task in ("hallucination", "relevance"):
            card = mat.metadata[f"model_card_{task}"].value
            assert f"## {task}: {task}-" in card and "(champion)" in card and "| held out |" in card
            assert "data:image/png;base64," in card
        champions = dict(rows(settings, "SELECT task, version FROM models WHERE status = 'champion'"))
        assert set(champions) == {"hallucination", "relevance"}
        metrics = json.loads(rows(settings, "SELECT metrics FROM models WHERE task = 'hallucination'")[0][0])
        assert metrics["auroc"] > 0.6 and {"ap", "f1", "precision", "recall", "ece", "threshold", "n_eval"} <= set(metrics)

        day = days[1]
        for _ in range(2):  # idempotent: the second run replaces the day's rows
            scored = dg.materialize([log_scores], partition_key=day, instance=instance, resources=resources)
            assert scored.success
        (mat,) = scored.asset_materializations_for_node("log_scores")
    n_logs = rows(settings, "SELECT count(*) FROM logs WHERE day = ?", [day])[0][0]
    assert n_logs > 1000
    assert mat.metadata["dagster/row_count"].value == n_logs * 2
    assert rows(settings, "SELECT count(*) FROM log_scores WHERE day = ?", [day])[0][0] == n_logs * 2
    per_log = rows(settings, """
        SELECT count(*) FROM logs l WHERE l.day = ? AND (SELECT count(DISTINCT task) FROM log_scores s
               WHERE s.log_id = l.log_id AND s.score BETWEEN 0 AND 1) = 2""", [day])[0][0]
    assert per_log == n_logs
    versions = dict(rows(settings, "SELECT DISTINCT task, model_version FROM log_scores"))
    assert versions == champions


def test_no_champion_scores_nothing_and_says_so(settings):
    day = "2026-04-03"
    land(settings, day, "app.jsonl", "".join(
        json.dumps({"log_id": f"x{i}", "ts": f"{day}T10:00:00Z", "input": "Where is my order?",
                    "output": f"Order {i} shipped."}) + "\n" for i in range(60)))
    resources = {"flywheel": FlywheelResource(home=str(settings.home))}
    with dg.instance_for_test() as instance:
        assert dg.materialize([logs], partition_key=day, instance=instance, resources=resources).success
        result = dg.materialize([log_scores], partition_key=day, instance=instance, resources=resources)
    assert result.success
    (mat,) = result.asset_materializations_for_node("log_scores")
    assert mat.metadata["dagster/row_count"].value == 0
    assert "no champion" in mat.metadata["skipped"].value["hallucination"]
    assert rows(settings, "SELECT count(*) FROM log_scores")[0][0] == 0
