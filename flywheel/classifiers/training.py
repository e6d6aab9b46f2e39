"""Training data and honest evaluation of one classifier task.

The training data of a task is ``logs`` joined with ``consensus`` (label = task, a resolved
value: ties are left out). Rows are grouped by session (``session_id``) or, without one, by
the normalized input text, so that the same conversation or the same query never sits on
both sides of a split.

- **Hold-out** (:func:`holdout_mask`): a fixed quarter of the groups, chosen by a hash of
  the group key, so the same groups are held out at every retraining. The model is fitted
  on the other groups and every model of the task is judged on held-out rows no model of
  the task was trained on; that makes the comparison with the champion fair.
- **Grouped cross-validation** on the training part: out-of-fold scores give the CV
  metrics and the decision threshold (best F1), never chosen on the held-out rows.
- **Time split** when the labels span several days: fitted on the earlier days, scored on
  the latest day (groups seen earlier are dropped from it).
"""

from __future__ import annotations

import hashlib
from collections.abc import Callable
from dataclasses import dataclass, field

import duckdb
import numpy as np
import pandas as pd
from sklearn.model_selection import StratifiedGroupKFold
from sklearn.pipeline import Pipeline

from flywheel.classifiers.evaluation import (
    best_threshold,
    both_classes,
    metrics_at,
    plots_markdown,
    slice_metrics,
)
from flywheel.classifiers.model import TASKS, build_pipeline

HOLDOUT_BUCKETS = 4  # one bucket of four is held out
CV_FOLDS = 5
SLICE_COLUMNS = ("source", "prompt_version")

PipelineFactory = Callable[[str, bool], Pipeline]


def default_factory(task: str, has_context: bool) -> Pipeline:
    """The production pipeline of ``task`` (:func:`flywheel.classifiers.build_pipeline`)."""
    return build_pipeline(task, has_context=has_context)


@dataclass
class TrainingData:
    """The labelled rows of one task and what identifies them."""

    task: str
    frame: pd.DataFrame  # log_id, day, source, prompt_version, input, output, context, label, group
    has_context: bool
    data_hash: str

    @property
    def positives(self) -> int:
        return int(self.frame["label"].sum())

    @property
    def negatives(self) -> int:
        return int(len(self.frame) - self.frame["label"].sum())


def load_training_data(con: duckdb.DuckDBPyConnection, task: str) -> TrainingData:
    """Return the consensus-labelled logs of ``task`` (ties and unknown log ids left out).

    ``data_hash`` is a SHA-256 over (log_id, label, input, output, context) of every row,
    in log_id order: the same labels on the same logs give the same hash.
    """
    if task not in TASKS:
        raise ValueError(f"unknown task {task!r}: expected one of {', '.join(TASKS)}")
    frame = con.execute(
        """
        SELECT l.log_id, l.day, l.ts, l.source, l.prompt_version, l.session_id,
               l.input, l.output, l.context, c.value::INTEGER AS label,
               coalesce(nullif(trim(l.session_id), ''),
                        'q:' || regexp_replace(lower(trim(l.input)), '\\s+', ' ', 'g')) AS "group",
               md5(concat_ws(chr(31), l.log_id, c.value::VARCHAR, l.input, l.output, coalesce(l.context, ''))) AS row_hash
        FROM consensus c JOIN logs l USING (log_id)
        WHERE c.label = ? AND c.value IS NOT NULL
        ORDER BY l.log_id
        """,
        [task],
    ).df()
    digest = hashlib.sha256("\n".join(frame["row_hash"].tolist()).encode()).hexdigest()
    frame = frame.drop(columns=["row_hash"])
    has_context = bool(len(frame)) and bool(frame["context"].fillna("").str.strip().ne("").any())
    return TrainingData(task=task, frame=frame.reset_index(drop=True), has_context=has_context, data_hash=digest)


def holdout_mask(groups: pd.Series, y: np.ndarray | None = None, *, buckets: int = HOLDOUT_BUCKETS) -> np.ndarray:
    """Return which rows are held out: those whose group key hashes to bucket 0 of
    ``buckets`` (SHA-1 of the key: the same groups at every run and on every machine).

    With labels ``y``, a class that no held-out row has (a rare class in little data)
    gets the groups holding it with the smallest hashes added, up to 1/``buckets`` of
    that class's rows, as long as the training side keeps some of it.
    """
    keys = groups.astype(str).to_numpy()
    hashes = np.array([int(hashlib.sha1(k.encode()).hexdigest()[:8], 16) for k in keys], dtype=np.int64)
    held = hashes % buckets == 0
    if y is None:
        return held
    y = np.asarray(y)
    for cls in (0, 1):
        rows = y == cls
        if not rows.any() or (held & rows).any():
            continue
        need = max(1, int(np.ceil(rows.sum() / buckets)))
        for key in pd.unique(keys[rows][np.argsort(hashes[rows], kind="stable")]):
            group = keys == key
            if (held & rows).sum() >= need or (rows & ~held & ~group).sum() == 0:
                break
            held |= group
    return held


def grouped_folds(y: np.ndarray, groups: np.ndarray, *, folds: int = CV_FOLDS, seed: int = 0):
    """Return stratified, grouped folds (train, test index pairs); fewer folds when a class
    or the groups are too few (at least 2), or an empty list when even that is impossible."""
    n_splits = min(folds, int(y.sum()), int(len(y) - y.sum()), len(set(groups)))
    if n_splits < 2:
        return []
    splitter = StratifiedGroupKFold(n_splits=n_splits, shuffle=True, random_state=seed)
    return [(tr, te) for tr, te in splitter.split(np.zeros(len(y)), y, groups=groups)
            if both_classes(y[tr])]


@dataclass
class Evaluation:
    """What the model card shows for one trained model."""

    holdout: dict  # metrics_at on the held-out rows
    cv: dict | None  # grouped cross-validation on the training part
    time_split: dict | None  # fitted on earlier days, scored on the latest day
    slices: list[dict] = field(default_factory=list)
    plots: str = ""
    notes: list[str] = field(default_factory=list)


@dataclass
class TrainedModel:
    """A fitted pipeline and how it was evaluated."""

    task: str
    pipeline: Pipeline
    data: TrainingData
    train_mask: np.ndarray  # rows it was fitted on (the rest: held out)
    eval_scores: np.ndarray  # its scores on the held-out rows
    threshold: float
    evaluation: Evaluation

    @property
    def eval_frame(self) -> pd.DataFrame:
        return self.data.frame[~self.train_mask]

    @property
    def eval_labels(self) -> np.ndarray:
        return self.eval_frame["label"].to_numpy()


def fit_and_evaluate(data: TrainingData, *, factory: PipelineFactory = default_factory,
                     folds: int = CV_FOLDS) -> TrainedModel:
    """Fit the task's pipeline on the training groups and evaluate it honestly.

    Returns the model fitted on the non-held-out rows with its hold-out metrics (at the
    threshold chosen on out-of-fold scores of the training part), grouped CV metrics, a
    time-split evaluation where the data spans several days, per-slice hold-out metrics
    and the ROC / calibration plots. Raises ValueError when the hold-out or the training
    part lacks a class.
    """
    frame = data.frame
    y = frame["label"].to_numpy()
    groups = frame["group"].to_numpy()
    held = holdout_mask(frame["group"], y)
    if not both_classes(y[held]) or not both_classes(y[~held]):
        raise ValueError(
            f"{data.task}: the held-out groups ({int(held.sum())} rows, {int(y[held].sum())} positive) or the "
            f"training groups ({int((~held).sum())} rows, {int(y[~held].sum())} positive) lack a class")
    make = lambda: factory(data.task, data.has_context)  # noqa: E731
    notes = []

    train_idx = np.flatnonzero(~held)
    cv_folds = grouped_folds(y[train_idx], groups[train_idx], folds=folds)
    cv = None
    threshold = 0.5
    if cv_folds:
        oof = np.full(len(train_idx), np.nan)
        for tr, te in cv_folds:
            model = make().fit(frame.iloc[train_idx[tr]], y[train_idx[tr]])
            oof[te] = model.predict_proba(frame.iloc[train_idx[te]])[:, 1]
        scored = ~np.isnan(oof)
        threshold = best_threshold(y[train_idx][scored], oof[scored])
        cv = {**metrics_at(y[train_idx][scored], oof[scored], threshold), "folds": len(cv_folds)}
    else:
        notes.append("too few groups for cross-validation on the training part: threshold 0.5")

    pipeline = make().fit(frame.iloc[train_idx], y[train_idx])
    eval_scores = pipeline.predict_proba(frame.iloc[np.flatnonzero(held)])[:, 1]
    holdout = metrics_at(y[held], eval_scores, threshold)
    slices = slice_metrics(frame[held], y[held], eval_scores, threshold, columns=SLICE_COLUMNS)

    time_split = _time_split(frame, y, make, threshold, notes)
    plots = plots_markdown(y[held], eval_scores, title=f"{data.task}, held out")
    return TrainedModel(
        task=data.task, pipeline=pipeline, data=data, train_mask=~held, eval_scores=eval_scores,
        threshold=threshold,
        evaluation=Evaluation(holdout=holdout, cv=cv, time_split=time_split, slices=slices, plots=plots,
                              notes=notes),
    )


def _time_split(frame: pd.DataFrame, y: np.ndarray, make, threshold: float, notes: list[str]) -> dict | None:
    days = sorted(frame["day"].dropna().unique())
    if len(days) < 2:
        notes.append("labels from one day only: no time split")
        return None
    latest = days[-1]
    later = (frame["day"] == latest).to_numpy()
    earlier = ~later
    seen = set(frame.loc[earlier, "group"])
    test = later & ~frame["group"].isin(seen).to_numpy()
    if not both_classes(y[earlier]) or not both_classes(y[test]):
        notes.append(f"time split skipped: the earlier days or {_day(latest)} (groups not seen before) lack a class")
        return None
    model = make().fit(frame[earlier], y[earlier])
    scores = model.predict_proba(frame[test])[:, 1]
    return {**metrics_at(y[test], scores, threshold), "train_days": f"{_day(days[0])}..{_day(days[-2])}",
            "test_day": _day(latest)}


def _day(value) -> str:
    return str(pd.Timestamp(value).date())
