"""The model registry: training from the labels, the champion gate, too few labels, and
corrupt or missing artifacts (the previous champion keeps serving)."""

from __future__ import annotations

import json

import numpy as np
import pandas as pd
import pytest
from sklearn.dummy import DummyClassifier
from sklearn.pipeline import Pipeline

from flywheel import store
from flywheel.annotations import build_consensus, import_inbox
from flywheel.classifiers.evaluation import best_threshold, compare_auroc, expected_calibration_error
from flywheel.classifiers.features import LogFeatures
from flywheel.classifiers.registry import (ArtifactError, champion_scorer, companion, load_artifact, resolve,
                                          save_artifact)
from flywheel.classifiers.run import train_task
from flywheel.ingest.loader import ingest_day
from tests.conftest import land

DAYS = ("2026-05-01", "2026-05-02")
CITIES = ["Paris", "Rome", "Berlin", "Madrid", "Vienna", "Lisbon", "Oslo", "Prague"]


def _records(n: int, seed: int) -> list[dict]:
    """Logs where half the answers contradict their context (new numbers and names)."""
    rng = np.random.default_rng(seed)
    rows = []
    for i in range(n):
        city, year, height = CITIES[i % len(CITIES)], int(rng.integers(1800, 2000)), int(rng.integers(50, 500))
        context = f"The tower of {city} was built in {year} and is {height} metres tall."
        bad = bool(rng.random() < 0.5)
        output = (f"The {city} tower is {height + int(rng.integers(5, 90))} metres tall, built by Count Orlov in "
                  f"{year + 7}." if bad else f"The tower of {city} is {height} metres tall and was built in {year}.")
        day = DAYS[i % 2]
        rows.append({"log_id": f"s{seed}-{i}", "ts": f"{day}T{8 + i % 10:02d}:00:00Z", "input":
                     f"How tall is the tower in {city}? (ticket {seed}-{i})", "output": output, "context": context,
                     "source": ["web", "mobile"][i % 2], "session_id": f"sess-{seed}-{i // 2}",
                     "bad": bad})
    return rows


def _home(settings, n: int = 200, seed: int = 3) -> list[dict]:
    """Land, ingest and label ``n`` logs (hallucination label = bad answer)."""
    records = _records(n, seed)
    for day in DAYS:
        lines = [json.dumps({k: v for k, v in r.items() if k != "bad"}) for r in records if r["ts"].startswith(day)]
        land(settings, day, "app.jsonl", "\n".join(lines) + "\n")
    settings.annotations_inbox.mkdir(parents=True, exist_ok=True)
    labels = ["log_id,annotator,label,value"] + [f"{r['log_id']},ann1,hallucination,{int(r['bad'])}" for r in records]
    (settings.annotations_inbox / "labels.csv").write_text("\n".join(labels) + "\n", encoding="utf-8")
    with store.connection(settings) as con:
        for day in DAYS:
            ingest_day(con, settings, day)
        import_inbox(con, settings)
        build_consensus(con)
    return records


def _dummy(task: str, has_context: bool) -> Pipeline:
    """A model that knows nothing: the same score for every log."""
    return Pipeline([("features", LogFeatures(has_context=has_context)), ("classifier", DummyClassifier())])


@pytest.fixture
def home(settings):
    _home(settings)
    return settings


def _models(settings) -> dict[str, tuple]:
    with store.connection(settings) as con:
        return {r[0]: r[1:] for r in con.execute(
            "SELECT version, status, reason, artifact_path FROM models ORDER BY trained_at").fetchall()}


def test_too_few_labels_means_no_training_and_a_clear_message(settings):
    _home(settings, n=60)
    with store.connection(settings) as con:
        report = train_task(con, settings, "hallucination")
        assert champion_scorer(con, settings, "hallucination") is None
    assert report.status == "skipped" and report.version is None
    assert "FLYWHEEL_MIN_LABELS_PER_CLASS=50 needs at least 50 of each: not trained" in report.message
    assert f"{report.positives} positive and {report.negatives} negative" in report.message
    assert report.positives + report.negatives == 60
    assert _models(settings) == {}


def test_worse_model_is_not_promoted_and_says_why(home):
    settings = home
    with store.connection(settings) as con:
        first = train_task(con, settings, "hallucination")
        worse = train_task(con, settings, "hallucination", factory=_dummy)
        serving = champion_scorer(con, settings, "hallucination")
    assert first.status == "champion" and first.metrics["auroc"] > 0.9
    assert worse.status == "candidate" and worse.blocked
    assert f"worse than champion {first.version} beyond the noise" in worse.message
    comparison = worse.gate["comparison"]
    assert comparison["high"] < 0 and comparison["candidate_auroc"] == 0.5
    assert comparison["n"] == first.metrics["n_eval"]  # the same held-out rows
    models = _models(settings)
    assert models[first.version][0] == "champion" and models[worse.version][0] == "candidate"
    assert "not promoted" in models[worse.version][1]
    assert serving.version == first.version


def test_better_model_is_promoted_and_the_old_champion_retired(home):
    settings = home
    with store.connection(settings) as con:
        weak = train_task(con, settings, "hallucination", factory=_dummy)
        strong = train_task(con, settings, "hallucination")
        again = train_task(con, settings, "hallucination")
    assert weak.status == "champion"
    assert strong.status == "champion" and "not worse than champion" in strong.message
    assert strong.gate["comparison"]["low"] > 0
    assert again.status == "unchanged" and again.version == strong.version
    models = _models(settings)
    assert [m[0] for m in models.values()] == ["retired", "champion"]
    card = strong.card
    assert "| held out |" in card and "grouped CV" in card and "time split" in card
    assert "source=web" in card and "data:image/png;base64," in card


def test_corrupt_or_missing_artifact_the_previous_champion_keeps_serving(home, caplog):
    settings = home
    with store.connection(settings) as con:
        old = train_task(con, settings, "hallucination", factory=_dummy)
        new = train_task(con, settings, "hallucination")
    path = resolve(settings, _models(settings)[new.version][2])
    frame = pd.DataFrame({"input": ["How tall?"], "output": ["It is 300 metres."], "context": [None]})

    path.write_bytes(path.read_bytes()[: len(path.read_bytes()) // 2])  # truncated
    with pytest.raises(ArtifactError, match=f"{path}.*corrupt"):
        load_artifact(path, sha256=_sha(settings, new.version))
    with store.connection(settings) as con:
        scorer = champion_scorer(con, settings, "hallucination")
    assert scorer.version == old.version
    assert str(path) in scorer.problems[0] and "corrupt" in scorer.problems[0]
    assert str(path) in caplog.text
    assert scorer.score(frame).shape == (1,)

    path.unlink()
    with store.connection(settings) as con:
        scorer = champion_scorer(con, settings, "hallucination")
    assert scorer.version == old.version and f"model artifact {path} is missing" in scorer.problems[0]

    resolve(settings, _models(settings)[old.version][2]).write_bytes(b"not a zip file")
    with store.connection(settings) as con:
        assert champion_scorer(con, settings, "hallucination") is None


def test_a_model_fitted_by_other_feature_code_is_refused_and_the_next_training_promotes(home):
    """After an upgrade that changes the features, the stored champion cannot be scored by
    the new code: loading it names the file and says to retrain, scoring skips the task,
    and the next training is promoted in its place."""
    settings = home
    with store.connection(settings) as con:
        first = train_task(con, settings, "hallucination")
    path = resolve(settings, _models(settings)[first.version][2])
    pipeline = load_artifact(path)
    del pipeline.named_steps["features"].features_version_  # as the first feature code saved it
    sha256 = save_artifact(pipeline, path)
    # its evaluation fit was fitted by the same older code (the gate cannot use it either)
    eval_path = companion(path, "eval")
    eval_pipeline = load_artifact(eval_path)
    del eval_pipeline.named_steps["features"].features_version_
    save_artifact(eval_pipeline, eval_path)
    with store.connection(settings) as con:
        con.execute("UPDATE models SET artifact_sha256 = ?, code_version = 'the older code' WHERE version = ?",
                    [sha256, first.version])
    with pytest.raises(ArtifactError, match=f"{path} was fitted by other feature code.*train the task again"):
        load_artifact(path, sha256=sha256)
    with store.connection(settings) as con:
        assert champion_scorer(con, settings, "hallucination") is None
        again = train_task(con, settings, "hallucination")
        assert "no loadable champion evaluation fit" in again.message and "promoted" in again.message
        assert champion_scorer(con, settings, "hallucination").version == again.version


def _sha(settings, version: str) -> str:
    with store.connection(settings) as con:
        return con.execute("SELECT artifact_sha256 FROM models WHERE version = ?", [version]).fetchone()[0]


def test_paired_delong_test_sees_noise_and_real_losses():
    rng = np.random.default_rng(0)
    y = np.r_[np.ones(60), np.zeros(140)].astype(int)
    good = y * 0.6 + rng.random(200) * 0.7
    noisy_twin = good + rng.normal(0, 0.02, 200)
    same = compare_auroc(y, good, noisy_twin)
    assert not same.worse and same.low < 0 < same.high
    lost = compare_auroc(y, good, rng.random(200))
    assert lost.worse and lost.high < 0 and lost.p_worse > 0.99


def test_calibration_error_and_threshold():
    y = np.array([1, 1, 1, 1, 0, 0, 0, 0])
    assert expected_calibration_error(y, np.full(8, 0.5)) == pytest.approx(0.0)
    assert expected_calibration_error(np.ones(4), np.full(4, 0.9)) == pytest.approx(0.1)
    scores = np.array([0.9, 0.8, 0.7, 0.2, 0.6, 0.1, 0.1, 0.05])
    # cut at 0.2: all 4 positives and 1 false positive, F1 8/9, beats 0.7 (3 and 0, F1 6/7)
    assert best_threshold(y, scores) == pytest.approx(0.2)
