"""The application protocol of the quality benchmark: the shared data sets as ONE app.

`python -m benchmarks quality --protocol app` lands the four shared sets as the logs of one
application, one source each (``halueval_general`` and ``truthfulqa_truth`` /
``truthfulqa_info``: questions without a context; ``begin_wow``: the dialogue turn as the
input, the knowledge passage as the context), plus a fifth source, ``begin_instruct``: the
BEGIN rows again, every one with the same instruction as its input and the knowledge and
the dialogue turn in the context (an app whose variable part is all in the context, like a
summarizer).

It runs the real Dagster path in a temporary ``FLYWHEEL_HOME`` with a temporary Dagster
instance: canonical JSON-line logs in the day's landing folder, canonical annotation
records in the inbox, then ``logs``, ``annotations``, ``consensus``, ``classifiers`` and
``log_scores`` materialized. 70% of the labels go to the inbox; 30% are held back by group
(HaluEval: the query; TruthfulQA: the question, for both of its sources; BEGIN: the
knowledge passage, for both of its sources, so the same turn never sits on both sides).
It reports the AUROC of ``log_scores`` on the held-back rows per source, next to the
per-set figures of the cross-validation protocol (:mod:`benchmarks.quality`) run in the same
process.
"""

from __future__ import annotations

import datetime as dt
import hashlib
import json
import os
import tempfile
import time
from pathlib import Path

import numpy as np
import pandas as pd
from sklearn.metrics import roc_auc_score

from benchmarks.common import peak_rss_mb, say

DAY = "2025-06-02"
INSTRUCTION = "Answer the last message of the conversation using only the passage."
HELD_OUT = 0.3
ANNOTATOR = "benchmark"
# source -> (task, the per-set figure it is compared with)
SOURCES = {
    "halueval_general": ("hallucination", "halueval_general"),
    "truthfulqa_truth": ("hallucination", "truthfulqa_truth"),
    "truthfulqa_info": ("relevance", "truthfulqa_info"),
    "begin_wow": ("hallucination", "begin_wow"),
    "begin_instruct": ("hallucination", "begin_wow"),
}
TARGET_INSTRUCT = 0.90  # the constant-instruction source's AUROC target
TOLERANCE = 0.02  # every source within this of its per-set figure (or above it)


def app_frame(data: Path) -> pd.DataFrame:
    """The application's logs with their labels: one row per log and task label, columns
    log_id, source, input, output, context, task, label and group (what is held back
    together: the family of data sets and the query, question or passage)."""
    from benchmarks.quality import load_begin, load_halueval, load_truthfulqa

    parts = []
    halueval = load_halueval(data).assign(source="halueval_general", task="hallucination")
    halueval["group"] = "halueval:" + halueval["group"]
    parts.append(halueval)
    for which, task in (("truth", "hallucination"), ("info", "relevance")):
        frame = load_truthfulqa(data, which).assign(source=f"truthfulqa_{which}", task=task)
        frame["group"] = "truthfulqa:" + frame["group"]
        parts.append(frame)
    begin = load_begin(data)
    begin["group"] = "begin:" + begin["group"]
    parts.append(begin.assign(source="begin_wow", task="hallucination"))
    instruct = begin.assign(source="begin_instruct", task="hallucination", input=INSTRUCTION,
                            context=begin["context"] + "\n\nConversation: " + begin["input"])
    parts.append(instruct)
    frame = pd.concat(parts, ignore_index=True)
    frame["log_id"] = frame["source"] + "-" + frame.groupby("source").cumcount().astype(str)
    return frame[["log_id", "source", "input", "output", "context", "task", "label", "group"]]


def held_out(groups: pd.Series, *, share: float = HELD_OUT, seed: int = 0) -> np.ndarray:
    """Whether each row's group is held back: a stable hash of (seed, group) below
    ``share``, so a group is always on one side."""
    def unit(group: str) -> float:
        digest = hashlib.sha256(f"{seed}:{group}".encode()).digest()
        return int.from_bytes(digest[:8], "big") / 2.0 ** 64

    keys = groups.drop_duplicates()
    chosen = dict(zip(keys, (unit(g) < share for g in keys)))
    return groups.map(chosen).to_numpy(dtype=bool)


def land(home: Path, frame: pd.DataFrame, held: np.ndarray, *, day: str = DAY) -> dict:
    """Write the logs of ``frame`` as one canonical JSON-lines file in ``home``'s landing
    folder of ``day`` and the labels of the rows not ``held`` as canonical annotation
    records in its inbox; return what was written."""
    landing = home / "landing" / day
    inbox = home / "annotations" / "inbox"
    landing.mkdir(parents=True, exist_ok=True)
    inbox.mkdir(parents=True, exist_ok=True)
    ts = f"{day}T12:00:00Z"
    with (landing / "app.jsonl").open("w", encoding="utf-8") as f:
        for row in frame.itertuples(index=False):
            record = {"log_id": row.log_id, "ts": ts, "source": row.source, "input": row.input,
                      "output": row.output}
            if isinstance(row.context, str) and row.context:
                record["context"] = row.context
            f.write(json.dumps(record) + "\n")
    given = frame[~held]
    with (inbox / "labels.jsonl").open("w", encoding="utf-8") as f:
        for row in given.itertuples(index=False):
            f.write(json.dumps({"log_id": row.log_id, "annotator": ANNOTATOR, "label": row.task,
                                "value": "yes" if row.label else "no"}) + "\n")
    return {"logs": int(len(frame)), "labels": int(len(given)), "held_out": int(held.sum())}


def run_dagster(home: Path, *, day: str = DAY) -> dict:
    """Materialize logs, annotations, consensus, classifiers and log_scores of ``day`` in
    ``home`` with a temporary Dagster instance; return each step's seconds."""
    import dagster as dg

    from assets.annotations import annotations, consensus
    from assets.classifiers import classifiers
    from assets.ingest import logs
    from assets.resources import FlywheelResource
    from assets.scoring import log_scores

    resources = {"flywheel": FlywheelResource(home=str(home))}
    seconds = {}
    with dg.instance_for_test() as instance:
        for name, assets, partition in (("logs", [logs], day), ("labels", [annotations, consensus], None),
                                        ("classifiers", [classifiers], None), ("log_scores", [log_scores], day)):
            started = time.perf_counter()
            result = dg.materialize(assets, partition_key=partition, instance=instance, resources=resources)
            if not result.success:
                raise RuntimeError(f"materializing {name} failed")
            seconds[name] = round(time.perf_counter() - started, 1)
            say(f"{name}: {seconds[name]} s")
    return seconds


def scores_of(home: Path) -> pd.DataFrame:
    """The rows of ``log_scores`` in ``home``: log_id, task, score, trusted (the trust floor's
    verdict for the log's source)."""
    from flywheel import store
    from flywheel.settings import load

    with store.connection(load({"FLYWHEEL_HOME": str(home)})) as con:
        return con.execute("SELECT log_id, task, score, coalesce(trusted, true) AS trusted FROM log_scores").df()


def source_metrics(frame: pd.DataFrame, held: np.ndarray, scores: pd.DataFrame) -> dict:
    """Per source: the AUROC of its task's scores on its held-back rows (None when the task
    has no scores)."""
    test = frame[held].merge(scores, on=["log_id", "task"], how="left")
    out = {}
    for source, (task, _) in SOURCES.items():
        rows = test[test["source"] == source]
        scored = rows.dropna(subset=["score"])
        auroc = (round(float(roc_auc_score(scored["label"], scored["score"])), 4)
                 if len(scored) and scored["label"].nunique() == 2 else None)
        out[source] = {"task": task, "auroc": auroc, "held_out": int(len(rows)), "scored": int(len(scored)),
                       "positives": int(rows["label"].sum()),
                       "trusted": bool(len(scored)) and bool(scored["trusted"].astype(bool).all())}
    return out


def run(data: Path, *, folds: int = 5, seed: int = 0, per_set: bool = True) -> dict:
    """The app protocol end to end; returns the benchmark's JSON-ready result."""
    from benchmarks.quality import DATASETS, evaluate

    started = time.perf_counter()
    frame = app_frame(data)
    held = held_out(frame["group"], seed=seed)
    with tempfile.TemporaryDirectory() as tmp:
        home = Path(tmp) / "home"
        landed = land(home, frame, held)
        say(f"landed {landed}")
        # the inbox file is complete when written: no need to wait for it to settle
        previous = os.environ.get("FLYWHEEL_INBOX_SETTLE_SECONDS")
        os.environ["FLYWHEEL_INBOX_SETTLE_SECONDS"] = "0"
        try:
            steps = run_dagster(home)
        finally:
            if previous is None:
                os.environ.pop("FLYWHEEL_INBOX_SETTLE_SECONDS", None)
            else:
                os.environ["FLYWHEEL_INBOX_SETTLE_SECONDS"] = previous
        sources = source_metrics(frame, held, scores_of(home))
    figures = {}
    if per_set:
        figures = {name: evaluate(name, data, folds, seed)["auroc"] for name in DATASETS}
    ok = True
    for source, (_, figure) in SOURCES.items():
        entry = sources[source]
        entry["per_set_auroc"] = figures.get(figure)
        if entry["auroc"] is None:
            ok = False
            continue
        if figures:
            entry["delta"] = round(entry["auroc"] - figures[figure], 4)
            ok = ok and entry["delta"] >= -TOLERANCE
    ok = ok and (sources["begin_instruct"]["auroc"] or 0.0) >= TARGET_INSTRUCT
    return {
        "name": "quality", "protocol": "app", "ok": ok, "day": DAY, **landed,
        "sources": sources, "per_set_auroc": figures, "steps_seconds": steps,
        "seconds": round(time.perf_counter() - started, 1), "peak_rss_mb": peak_rss_mb(),
        "date": dt.date.today().isoformat(),
    }


# --------------------------------------------------------------------------- regimes


# variant -> build_pipeline's parameters: dense features per regime, and with them the
# output's word n-grams per regime too
REGIME_VARIANTS = {
    "none": {},
    "context": {"regimes": "context"},
    "source": {"regimes": "source"},
    "source+words": {"regimes": "source", "regime_words": True},
}


def regime_cv(data: Path, *, folds: int = 5, seed: int = 0, variants=None) -> dict:
    """Grouped cross-validation of the hallucination pipeline on the app's labelled rows
    (four sources: the task's rows of :func:`app_frame`) with each way of handling
    regimes of ``LogFeatures`` (:data:`REGIME_VARIANTS`); returns per variant the
    out-of-fold AUROC per source and over all rows. The folds are the same for every
    variant (grouped as the app protocol holds back)."""
    from sklearn.model_selection import StratifiedGroupKFold

    from benchmarks.quality import out_of_fold
    from flywheel.classifiers import build_pipeline

    frame = app_frame(data)
    frame = frame[frame["task"] == "hallucination"].reset_index(drop=True)
    y = frame["label"].to_numpy()
    splitter = StratifiedGroupKFold(n_splits=folds, shuffle=True, random_state=seed)
    split = list(splitter.split(frame, y, groups=frame["group"]))
    out = {}
    for name in variants or REGIME_VARIANTS:
        started = time.perf_counter()
        scores = out_of_fold(lambda: build_pipeline("hallucination", has_context=True, calibrate=False,
                                                    **REGIME_VARIANTS[name]), frame, split)
        per_source = {source: round(float(roc_auc_score(y[mask], scores[mask])), 4)
                      for source in frame["source"].unique() for mask in [(frame["source"] == source).to_numpy()]}
        out[name] = {"all": round(float(roc_auc_score(y, scores)), 4), **per_source,
                     "seconds": round(time.perf_counter() - started, 1)}
        say(f"regimes {name}: {json.dumps(out[name])}")
    return {"name": "quality", "protocol": "regimes", "rows": int(len(frame)), "folds": folds, "variants": out,
            "peak_rss_mb": peak_rss_mb()}
