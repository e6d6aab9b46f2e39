"""Classifiers and log_scores through Dagster: a training run from the demo data, and
scores for every log of a partition."""

from __future__ import annotations

import datetime as dt
import json

import pytest

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
        # the per-source card: held-out figures and a trust verdict per source, in the table and the metadata
        sources = {s["slice_value"] for s in metrics["slices"] if s["slice_type"] == "source"}
        assert sources and sources <= set(metrics["trust"]["sources"]) and set(metrics["labelled_sources"]) == sources
        assert mat.metadata["trust"].value["hallucination"]["sources"].keys() == metrics["trust"]["sources"].keys()
        assert "| trusted |" in mat.metadata["tasks"].value and "AUROC 95% low | trusted |" in card

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
    # every score carries the verdict of its model for its log's source
    assert rows(settings, "SELECT count(*) FROM log_scores WHERE trusted IS NULL")[0][0] == 0
    assert mat.metadata["trusted_rows"].value["hallucination"] == rows(
        settings, "SELECT count(*) FROM log_scores WHERE day = ? AND task = 'hallucination' AND trusted", [day])[0][0]


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


class _Broken:
    """A model that fails while scoring."""

    def predict_proba(self, frame):
        raise ValueError("the model broke while scoring")


def test_a_failure_while_scoring_keeps_the_days_scores_and_duckdb_threads(settings, tmp_path):
    """Scoring a day is one transaction: a model that fails halfway leaves the day's
    previous scores as they were, the error is the model's own, and DuckDB's thread
    setting (lowered while scoring) is restored."""
    from flywheel import store
    from flywheel.classifiers.registry import Scorer
    from flywheel.classifiers.scoring import score_day
    from flywheel.ingest.loader import ingest_day

    day = "2026-04-04"
    land(settings, day, "app.jsonl", "".join(
        json.dumps({"log_id": f"y{i}", "ts": f"{day}T10:00:00Z", "input": "Where is my order?",
                    "output": f"Order {i} shipped."}) + "\n" for i in range(50)))
    good = Scorer(task="hallucination", version="good", pipeline=_Constant(), artifact_path=tmp_path / "none")
    broken = Scorer(task="hallucination", version="broken", pipeline=_Broken(), artifact_path=tmp_path / "none")
    with store.connection(settings) as con:
        ingest_day(con, settings, day)
        con.execute("SET threads = 2")
        report = score_day(con, settings, day, tasks=("hallucination",), scorers={"hallucination": good})
        assert report.rows == {"hallucination": 50}
        with pytest.raises(ValueError, match="the model broke while scoring"):
            score_day(con, settings, day, tasks=("hallucination",), scorers={"hallucination": broken})
        assert con.execute("SELECT count(*), min(model_version) FROM log_scores WHERE day = ?", [day]).fetchone() \
            == (50, "good")
        assert con.execute("SELECT current_setting('threads')").fetchone()[0] == 2


class _Constant:
    """A model that gives every log 0.25."""

    def predict_proba(self, frame):
        import numpy as np

        return np.tile([0.75, 0.25], (len(frame), 1))


def _fast_rows(n: int, seed: int):
    import pandas as pd

    from tests.test_classifiers import _synthetic

    frame = _synthetic(n, seed)
    extra = pd.DataFrame([
        {"input": "When was it built?", "output": "It opened on March 31, 1889 in Paris, Paris, Paris.",
         "context": "Built 1887-1889; opened March 31, 1889.", "label": 0, "group": -1},
        {"input": "Anything?", "output": None, "context": None, "label": 1, "group": -2},
        {"input": None, "output": "I don't know. I don't know.", "context": "", "label": 1, "group": -3},
    ])
    return pd.concat([frame, extra], ignore_index=True)


def test_fast_scorer_equals_the_pipelines_predict_proba(monkeypatch, tmp_path):
    """The fast path (shared tokens, union vocabulary, matrix products) gives the same
    probabilities as each fitted pipeline's own predict_proba, for calibrated and plain
    models, with and without a context, on batches with and without missing contexts."""
    import numpy as np
    import polars as pl

    from flywheel.classifiers import build_pipeline
    import pandas as pd

    from sklearn.linear_model import LogisticRegression
    from sklearn.pipeline import Pipeline

    from flywheel.classifiers import scoring
    from flywheel.classifiers.fast import FastScorer, linear_parts
    from flywheel.classifiers.features import LogFeatures
    from flywheel.classifiers.registry import Scorer

    train, test = _fast_rows(240, 1), _fast_rows(90, 2)
    pipelines = {
        "hallucination": build_pipeline("hallucination", has_context=True),
        "relevance": build_pipeline("relevance", has_context=True, ngram_range=(1, 2)),
        "plain": build_pipeline("hallucination", has_context=True, calibrate=False),
        "no_context": build_pipeline("relevance", has_context=False),
        "query_grounding": Pipeline([("features", LogFeatures(has_context=True, query_grounding=True, min_df=1)),
                                     ("classifier", LogisticRegression(max_iter=1000))]),
    }
    for name, pipeline in pipelines.items():
        labels = train["label"] if name != "relevance" else 1 - train["label"]
        pipeline.fit(train, labels)
    assert all(linear_parts(p) is not None for p in pipelines.values())
    fast = FastScorer(pipelines)
    assert len(fast.groups) == 1 and not fast.other  # one union vocabulary for all of them
    for frame in (pl.from_pandas(test.drop(columns=["label", "group"])),
                  pl.from_pandas(test.dropna(subset=["context"]).drop(columns=["label", "group"]))):
        scores = fast.score(frame)
        for name, pipeline in pipelines.items():
            expected = pipeline.predict_proba(frame)[:, 1]
            np.testing.assert_allclose(scores[name], expected, rtol=0, atol=1e-6, err_msg=name)
            assert expected.std() > 0.05  # the models do separate something
    # split over threads: the same scores in the same order
    scorers = {name: Scorer(task=name, version="v", pipeline=p, artifact_path=tmp_path / "none")
               for name, p in pipelines.items()}
    frame = pl.from_pandas(pd.concat([test] * 5, ignore_index=True).drop(columns=["label", "group"]))
    monkeypatch.setattr(scoring, "MIN_PARALLEL_ROWS", 100)
    threaded = scoring.score_frame(scorers, frame, threads=3)
    for name, pipeline in pipelines.items():
        np.testing.assert_allclose(threaded[name], pipeline.predict_proba(frame)[:, 1], rtol=0, atol=1e-6)
    # more chunks than threads (a batch bigger than CHUNK_ROWS), and texts that never
    # repeat (no gather back to the rows: the distinct values are the rows)
    monkeypatch.setattr(scoring, "CHUNK_ROWS", 70)
    distinct = frame.with_columns(
        [(pl.col(c).fill_null("") + " ref" + pl.int_range(pl.len()).cast(pl.String)).alias(c)
         for c in ("input", "output", "context")])
    assert distinct.get_column("output").n_unique() == distinct.height
    chunked = scoring.score_frame(scorers, distinct, threads=2)
    for name, pipeline in pipelines.items():
        expected = pipeline.predict_proba(distinct)[:, 1]
        np.testing.assert_allclose(chunked[name], expected, rtol=0, atol=1e-6, err_msg=name)
        assert expected.std() > 0.05


def test_fast_scorer_scores_per_regime_models_like_predict_proba():
    """Pipelines with dense features per regime (per source, or with / without a context)
    and with word n-grams per source are scored by the fast path exactly as by predict_proba, also for sources unseen in
    training (global weights only) and for frames without a source column."""
    import numpy as np
    import polars as pl

    from flywheel.classifiers import build_pipeline
    from flywheel.classifiers.fast import FastScorer, linear_parts
    from flywheel.classifiers.features import Batch

    def with_sources(frame, seed):
        rng = np.random.default_rng(seed)
        return frame.assign(source=rng.choice(["chat", "summaries", "rare"], size=len(frame), p=[0.5, 0.45, 0.05]))

    train, test = with_sources(_fast_rows(400, 3), 3), with_sources(_fast_rows(120, 4), 4)
    test.loc[test.index[:5], "source"] = "never-seen"
    pipelines = {
        "by_source": build_pipeline("hallucination", has_context=True, regimes="source"),
        "by_context": build_pipeline("hallucination", has_context=True, calibrate=False, regimes="context"),
        "words_by_source": build_pipeline("hallucination", has_context=True, regimes="source", regime_words=True),
        "global": build_pipeline("relevance", has_context=True),
    }
    for name in ("by_source", "words_by_source"):
        pipelines[name].set_params(features__min_regime_rows=60)
    for pipeline in pipelines.values():
        pipeline.fit(train, train["label"])
    features = pipelines["by_source"].named_steps["features"]
    assert features.regimes_ == ["chat", "summaries"]  # "rare" has too few rows: global weights only
    n_dense = features.scaler_.n_features_in_
    assert features.transform(train).shape[1] == len(features.get_feature_names_out())
    dense = features.dense_block(Batch(test))
    assert dense.shape[1] == 3 * n_dense
    chat = (test["source"] == "chat").to_numpy()
    np.testing.assert_array_equal(dense[~chat, n_dense:2 * n_dense], 0.0)
    np.testing.assert_array_equal(dense[chat, n_dense:2 * n_dense], dense[chat, :n_dense])
    words = pipelines["words_by_source"].named_steps["features"].vectorizers_[-1]
    assert words.kind == "regime_words" and words.regime_values == ("chat", "summaries") and len(words.vocabulary_)
    assert all(linear_parts(p) is not None for p in pipelines.values())
    fast = FastScorer(pipelines)
    assert len(fast.groups) == 1 and not fast.other
    frames = (pl.from_pandas(test.drop(columns=["label", "group"])),
              pl.from_pandas(test.drop(columns=["label", "group", "source"])))
    for frame in frames:
        scores = fast.score(frame)
        for name, pipeline in pipelines.items():
            np.testing.assert_allclose(scores[name], pipeline.predict_proba(frame)[:, 1], rtol=0, atol=1e-6,
                                       err_msg=name)
    # without a source column every row gets the global weights: other scores than with it
    assert not np.allclose(fast.score(frames[0])["by_source"], fast.score(frames[1])["by_source"])
