"""Training data and honest evaluation of one classifier task.

The training data of a task is ``logs`` joined with ``consensus`` (label = task, a resolved
value: ties are left out). Rows are grouped so that the same conversation or the same
query never sits on both sides of a split (:func:`assign_groups`): by session
(``session_id``) or, without one, by the normalized (input, context) pair; a group may not
hold more than :data:`GROUP_MAX_SHARE` of the task's rows (at least :data:`GROUP_MIN_ROWS`),
larger ones are cut by finer keys (+ the normalized output, then the log id). So an
application whose every log has the same instruction ("Summarize the passage.") is not one
group that the hash puts on one side whole.

- **Hold-out** (:func:`holdout_mask`): a fixed quarter of the groups, chosen by a hash of
  the group key, so the same groups are held out at every retraining; a class or a source
  that no held-out group has gets some of its groups added. Every model of the task is
  judged on held-out rows its evaluation fit was not trained on; that makes the comparison
  with the champion fair and gives the trust verdicts (:mod:`flywheel.classifiers.trust`).
- **One grouped out-of-fold pass** on the training part gives the CV metrics, the decision
  threshold (best F1; never chosen on the held-out rows) and the sigmoid calibration
  (:mod:`flywheel.classifiers.calibration`): each pipeline is fitted once per fold, not
  once more per calibration fold.
- **Time split** when the labels span several days: fitted on the earlier days, scored on
  the latest day (groups seen earlier are dropped from it).
- **Served model**: once evaluated, the pipeline is fitted again on every labelled row
  (:attr:`TrainedModel.pipeline`); its calibrator is fitted on all out-of-sample scores
  (out-of-fold and held out). The model card keeps the figures of the evaluation fit.
"""

from __future__ import annotations

import hashlib
import time
from concurrent.futures import Executor, ThreadPoolExecutor
from collections.abc import Callable
from dataclasses import dataclass, field

import duckdb
import numpy as np
import pandas as pd
from sklearn.model_selection import StratifiedGroupKFold
from sklearn.pipeline import Pipeline

from flywheel.classifiers.calibration import calibrated, fit_sigmoid, response
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
GROUP_MAX_SHARE = 0.02  # no group holds more of a task's rows than this ...
GROUP_MIN_ROWS = 20  # ... unless it is at most this many rows
FULL_CV_ROWS = 20_000  # training rows up to which every fold is fitted (above: one validation fold)
FIT_WORKERS = 2  # fits run side by side (scikit-learn's liblinear and the feature kernels release the GIL)
STRATIFIED_GROUP_LIMIT = 5_000  # more groups than this: folds by hash (StratifiedGroupKFold is slow)
SLICE_COLUMNS = ("source", "prompt_version")

PipelineFactory = Callable[[str, bool], Pipeline]


def default_factory(task: str, has_context: bool) -> Pipeline:
    """The production pipeline of ``task`` (:func:`flywheel.classifiers.build_pipeline`),
    uncalibrated: training calibrates it from out-of-fold scores."""
    return build_pipeline(task, has_context=has_context, calibrate=False)


@dataclass
class TrainingData:
    """The labelled rows of one task and what identifies them."""

    task: str
    frame: pd.DataFrame  # log_id, day, source, prompt_version, input, output, context, label, group
    has_context: bool
    data_hash: str
    seconds: float = 0.0  # how long loading took

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
               nullif(trim(l.session_id), '') AS _session,
               md5(regexp_replace(lower(trim(l.input)), '\\s+', ' ', 'g') || chr(31)
                   || regexp_replace(lower(trim(coalesce(l.context, ''))), '\\s+', ' ', 'g')) AS _pair,
               md5(regexp_replace(lower(trim(l.output)), '\\s+', ' ', 'g')) AS _output,
               md5(concat_ws(chr(31), l.log_id, c.value::VARCHAR, l.input, l.output, coalesce(l.context, ''))) AS row_hash
        FROM consensus c JOIN logs l USING (log_id)
        WHERE c.label = ? AND c.value IS NOT NULL
        ORDER BY l.log_id
        """,
        [task],
    ).df()
    frame["group"] = assign_groups(frame["_session"], frame["_pair"], frame["_output"], frame["log_id"])
    frame = frame.drop(columns=["_session", "_pair", "_output"])
    digest = hashlib.sha256("\n".join(frame["row_hash"].tolist()).encode()).hexdigest()
    frame = frame.drop(columns=["row_hash"])
    has_context = bool(len(frame)) and bool(frame["context"].fillna("").str.strip().ne("").any())
    return TrainingData(task=task, frame=frame.reset_index(drop=True), has_context=has_context, data_hash=digest)


def assign_groups(session: pd.Series, pair: pd.Series, output: pd.Series, log_id: pd.Series, *,
                  max_share: float = GROUP_MAX_SHARE, min_rows: int = GROUP_MIN_ROWS) -> np.ndarray:
    """Return the group key of each row: ``s:<session>`` or ``q:<input+context hash>``;
    rows of a group larger than ``max(min_rows, ceil(max_share * rows))`` get the finer
    key ``...|o:<output hash>``, and rows of a group still too large ``id:<log_id>``."""
    n = len(log_id)
    cap = max(min_rows, int(np.ceil(max_share * n)))
    has_session = session.notna().to_numpy()
    coarse = np.where(has_session, "s:" + session.fillna("").astype(str), "q:" + pair.astype(str))
    finer = [np.char.add(coarse.astype(str), ("|o:" + output.astype(str)).to_numpy().astype(str)),
             ("id:" + log_id.astype(str)).to_numpy()]
    key = coarse.astype(object)
    for level in finer:
        sizes = pd.Series(key).map(pd.Series(key).value_counts()).to_numpy()
        big = sizes > cap
        if not big.any():
            break
        key = np.where(big, level.astype(object), key)
    return key


def _key_hashes(keys: np.ndarray) -> np.ndarray:
    """SHA-1 of each key (first 32 bits): the same on every run and every machine."""
    return np.array([int(hashlib.sha1(k.encode()).hexdigest()[:8], 16) for k in keys], dtype=np.int64)


def holdout_mask(groups: pd.Series, y: np.ndarray | None = None, *, strata: pd.Series | None = None,
                 buckets: int = HOLDOUT_BUCKETS) -> np.ndarray:
    """Return which rows are held out: those whose group key hashes to bucket 0 of
    ``buckets`` (SHA-1 of the key: the same groups at every run and on every machine).

    With labels ``y``, a class that no held-out row has (a rare class in little data)
    gets the groups holding it with the smallest hashes added, up to 1/``buckets`` of
    that class's rows, as long as the training side keeps some of it. The same is done
    for each value of ``strata`` (the source) with at least two groups: no source is
    left out of the hold-out by the luck of the hash.
    """
    keys = groups.astype(str).to_numpy()
    hashes = _key_hashes(keys)
    held = hashes % buckets == 0
    if y is None:
        return held
    y = np.asarray(y)
    masks = [y == cls for cls in (0, 1)]
    if strata is not None:
        values = strata.astype(str).to_numpy()
        masks += [values == v for v in pd.unique(values)]
    for rows in masks:
        if not rows.any() or (held & rows).any() or len(set(keys[rows])) < 2:
            continue
        need = max(1, int(np.ceil(rows.sum() / buckets)))
        for key in pd.unique(keys[rows][np.argsort(hashes[rows], kind="stable")]):
            group = keys == key
            if (held & rows).sum() >= need or (rows & ~held & ~group).sum() == 0:
                break
            held |= group
    return held


def grouped_folds(y: np.ndarray, groups: np.ndarray, *, folds: int = CV_FOLDS, seed: int = 0):
    """Return grouped folds (train, test index pairs); fewer folds when a class or the
    groups are too few (at least 2), or an empty list when even that is impossible.

    Up to :data:`STRATIFIED_GROUP_LIMIT` groups the folds are stratified
    (``StratifiedGroupKFold``); with more, each group goes to the fold its key hashes to
    (stratification matters little then, and the stratified search is slow)."""
    distinct = pd.unique(np.asarray(groups, dtype=object))
    n_splits = min(folds, int(y.sum()), int(len(y) - y.sum()), len(distinct))
    if n_splits < 2:
        return []
    if len(distinct) <= STRATIFIED_GROUP_LIMIT:
        splitter = StratifiedGroupKFold(n_splits=n_splits, shuffle=True, random_state=seed)
        pairs = splitter.split(np.zeros(len(y)), y, groups=groups)
    else:
        codes, uniques = pd.factorize(np.asarray(groups, dtype=object))
        fold_of_group = (_key_hashes(np.asarray([f"{seed}:{u}" for u in uniques])) // HOLDOUT_BUCKETS) % n_splits
        fold = fold_of_group[codes]
        pairs = ((np.flatnonzero(fold != k), np.flatnonzero(fold == k)) for k in range(n_splits))
    return [(tr, te) for tr, te in pairs if len(te) and both_classes(y[tr])]


@dataclass
class Evaluation:
    """What the model card shows for one trained model (figures of the evaluation fit)."""

    holdout: dict  # metrics_at on the held-out rows
    cv: dict | None  # grouped out-of-fold scores of the training part
    time_split: dict | None  # fitted on earlier days, scored on the latest day
    slices: list[dict] = field(default_factory=list)
    plots: str = ""
    notes: list[str] = field(default_factory=list)
    labelled_sources: dict[str, int] = field(default_factory=dict)  # source -> labelled rows
    seconds: dict[str, float] = field(default_factory=dict)  # stage -> seconds


@dataclass
class TrainedModel:
    """The served pipeline, the evaluation fit, and how it was evaluated.

    ``pipeline`` is fitted on every labelled row (what is saved and served);
    ``eval_pipeline`` is fitted on the training part only: its held-out scores
    (``eval_scores``) give the card's figures, the trust verdicts and the gate."""

    task: str
    pipeline: object
    eval_pipeline: object
    data: TrainingData
    train_mask: np.ndarray  # rows the evaluation fit was fitted on
    held_mask: np.ndarray  # the held-out rows (neither the evaluation fit nor its calibration saw them)
    eval_scores: np.ndarray  # the evaluation fit's scores on the held-out rows
    threshold: float
    evaluation: Evaluation

    @property
    def eval_frame(self) -> pd.DataFrame:
        return self.data.frame[self.held_mask]

    @property
    def eval_labels(self) -> np.ndarray:
        return self.eval_frame["label"].to_numpy()

    @property
    def n_served(self) -> int:
        """Rows the served pipeline was fitted on (all labelled rows)."""
        return len(self.data.frame)


def fit_and_evaluate(data: TrainingData, *, factory: PipelineFactory = default_factory,
                     folds: int = CV_FOLDS, full_cv_rows: int = FULL_CV_ROWS,
                     workers: int = FIT_WORKERS, pool: Executor | None = None) -> TrainedModel:
    """Fit the task's pipeline, evaluate it honestly, and fit it again on every row.

    Returns a :class:`TrainedModel`: hold-out metrics of the evaluation fit, out-of-fold
    (CV) metrics on the training part, a time-split evaluation where the data span several
    days, per-slice hold-out metrics, the ROC / calibration plots, and the served pipeline
    fitted on all rows. The out-of-fold scores choose the threshold and fit the sigmoid
    calibration. Up to ``full_cv_rows`` training rows every fold is fitted and the
    evaluation fit is fitted on the whole training part; above, only the first fold is
    fitted and it is the evaluation fit (its validation rows are a fifth of the training
    part: plenty for two calibration parameters and a threshold), so training costs two
    fits (evaluation and served, run side by side by ``workers`` threads, or by ``pool``
    when given: several tasks share one) and grows linearly with the labels. Raises
    ValueError when the hold-out or the training part lacks a class.
    """
    clock = _Clock()
    frame = data.frame
    y = frame["label"].to_numpy()
    groups = frame["group"].to_numpy()
    held = holdout_mask(frame["group"], y, strata=frame["source"] if "source" in frame else None)
    if not both_classes(y[held]) or not both_classes(y[~held]):
        raise ValueError(
            f"{data.task}: the held-out groups ({int(held.sum())} rows, {int(y[held].sum())} positive) or the "
            f"training groups ({int((~held).sum())} rows, {int(y[~held].sum())} positive) lack a class")
    notes = []
    train_idx, held_idx = np.flatnonzero(~held), np.flatnonzero(held)
    y_train = y[train_idx]
    cv_folds = grouped_folds(y_train, groups[train_idx], folds=folds)
    full = len(train_idx) <= full_cv_rows or not cv_folds
    if not full:
        cv_folds = cv_folds[:1]
        notes.append(f"{len(train_idx)} training rows (more than {full_cv_rows}): one validation fold of the "
                     "training part calibrates, sets the threshold and is the evaluation fit")

    # every fit of the training, largest first, run by `workers` threads (the fits release the GIL)
    jobs: dict[str, np.ndarray] = {"served": np.arange(len(frame))}
    if full:
        jobs["evaluation"] = train_idx
    jobs.update({f"fold{k}": train_idx[tr] for k, (tr, _) in enumerate(cv_folds)})
    split = _time_split_rows(frame, y, notes, limit=None if full else full_cv_rows)
    if split is not None:
        jobs["time_split"] = split[0]
    fitted = _fit_all(jobs, frame, y, lambda: factory(data.task, data.has_context), workers=workers, pool=pool)
    clock.lap("fits")

    eval_model = fitted["evaluation"] if full else fitted["fold0"]
    eval_rows = train_idx if full else train_idx[cv_folds[0][0]]
    oof = np.full(len(train_idx), np.nan)
    for k, (_, te) in enumerate(cv_folds):
        oof[te] = response(fitted.pop(f"fold{k}") if full else fitted[f"fold{k}"], frame.iloc[train_idx[te]])
    scored = ~np.isnan(oof)
    held_response = response(eval_model, frame.iloc[held_idx])

    cv, threshold = None, 0.5
    if scored.any() and both_classes(y_train[scored]):
        calibrator = fit_sigmoid(oof[scored], y_train[scored])
        cv_scores = calibrator.predict(oof[scored])
        threshold = best_threshold(y_train[scored], cv_scores)
        cv = {**metrics_at(y_train[scored], cv_scores, threshold), "folds": len(cv_folds)}
    else:
        calibrator = fit_sigmoid(response(eval_model, frame.iloc[train_idx]), y_train)
        notes.append("too few groups for cross-validation on the training part: threshold 0.5, calibrated on "
                     "the training rows themselves")
    eval_scores = calibrator.predict(held_response)
    holdout = metrics_at(y[held], eval_scores, threshold)
    slices = slice_metrics(frame[held], y[held], eval_scores, threshold, columns=SLICE_COLUMNS)
    time_split = None
    if split is not None:
        test = split[1]
        scores = calibrator.predict(response(fitted["time_split"], frame.iloc[test]))
        time_split = {**metrics_at(y[test], scores, threshold), **split[2]}

    # the served model learns from every label; its calibrator from every out-of-sample score
    out_of_sample = np.concatenate([oof[scored], held_response]) if cv else held_response
    out_labels = np.concatenate([y_train[scored], y[held]]) if cv else y[held]
    served = calibrated(fitted["served"], fit_sigmoid(out_of_sample, out_labels))
    clock.lap("scores")
    plots = plots_markdown(y[held], eval_scores, title=f"{data.task}, held out")
    labelled = frame["source"].astype("object").where(frame["source"].notna(), "(none)").astype(str)
    train_mask = np.zeros(len(frame), dtype=bool)
    train_mask[eval_rows] = True
    return TrainedModel(
        task=data.task, pipeline=served, eval_pipeline=calibrated(eval_model, calibrator), data=data,
        train_mask=train_mask, held_mask=held, eval_scores=eval_scores, threshold=threshold,
        evaluation=Evaluation(holdout=holdout, cv=cv, time_split=time_split, slices=slices, plots=plots,
                              notes=notes, labelled_sources={str(k): int(v) for k, v in
                                                             labelled.value_counts().sort_index().items()},
                              seconds=clock.laps),
    )


def _fit_all(jobs: dict[str, np.ndarray], frame: pd.DataFrame, y: np.ndarray, make, *,
             workers: int, pool: Executor | None = None) -> dict[str, object]:
    """Return name -> a new pipeline fitted on the rows ``jobs[name]``; the largest fits
    start first, on ``pool`` or ``workers`` threads at a time."""
    order = sorted(jobs, key=lambda name: -len(jobs[name]))

    def fit(name: str):
        rows = jobs[name]
        return make().fit(frame.iloc[rows], y[rows])

    if pool is not None:
        futures = {name: pool.submit(fit, name) for name in order}
        return {name: future.result() for name, future in futures.items()}
    if workers <= 1 or len(order) == 1:
        return {name: fit(name) for name in order}
    with ThreadPoolExecutor(max_workers=workers) as own:
        futures = {name: own.submit(fit, name) for name in order}
        return {name: future.result() for name, future in futures.items()}


class _Clock:
    """Seconds spent per stage of a training."""

    def __init__(self):
        self.laps: dict[str, float] = {}
        self._last = time.perf_counter()

    def lap(self, name: str) -> None:
        now = time.perf_counter()
        self.laps[name] = round(now - self._last, 2)
        self._last = now


def _time_split_rows(frame: pd.DataFrame, y: np.ndarray, notes: list[str], *,
                     limit: int | None) -> tuple[np.ndarray, np.ndarray, dict] | None:
    """Return (rows to fit: the earlier days, rows to test: the latest day's groups not
    seen before, what the card says of it), or None (with a note) when there is no time
    split: one day, a side without both classes, or more than ``limit`` earlier rows
    (another fit as large as the evaluation fit; the hold-out covers the evaluation)."""
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
    if limit is not None and earlier.sum() > limit:
        notes.append(f"time split skipped: {int(earlier.sum())} labelled rows before {_day(latest)} (more than "
                     f"{limit}: the held-out rows evaluate the model)")
        return None
    return np.flatnonzero(earlier), np.flatnonzero(test), {"train_days": f"{_day(days[0])}..{_day(days[-2])}",
                                                           "test_day": _day(latest)}


def _day(value) -> str:
    return str(pd.Timestamp(value).date())
