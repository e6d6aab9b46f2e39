"""Quality of the hallucination and relevance classifiers on real, human-labelled data.

`python -m benchmarks quality [--data DIR] [--folds 5] [--datasets a,b]` reads the data sets
of ``../shared/data`` (see its README) as logs plus labels and runs grouped k-fold
cross-validation of :func:`flywheel.classifiers.build_pipeline` and, in the same run and on
the same folds, of the plain baseline (TF-IDF word 1-2 grams + logistic regression on the
output text; on question + answer for TruthfulQA, as the README's reference did).

Per data set it reports out-of-fold AUROC, average precision and F1 of the positive class,
the F1 at a threshold chosen on the other folds' out-of-fold scores (never on the fold it
is applied to), and the baseline's figures beside ours.

`--protocol app` lands the same sets as one application and scores them through the real
Dagster path instead (:mod:`benchmarks.quality_app`).

Splits: HaluEval by query text (the IDs are unique, so this is at least as strict as the
README's stratified split); TruthfulQA by question; BEGIN by knowledge passage (the same
dialogue turn answered by several models never sits on both sides).
"""

from __future__ import annotations

import argparse
import csv
import json
import time
from pathlib import Path

import numpy as np
import pandas as pd
from joblib import Parallel, delayed
from sklearn.feature_extraction.text import TfidfVectorizer
from sklearn.linear_model import LogisticRegression
from sklearn.metrics import average_precision_score, f1_score, roc_auc_score
from sklearn.model_selection import StratifiedGroupKFold
from sklearn.pipeline import Pipeline

from benchmarks.common import peak_rss_mb, say
from flywheel.classifiers import build_pipeline
from flywheel.classifiers.features import TextColumn

DATA = Path(__file__).resolve().parents[1] / ".." / "shared" / "data"
N_JOBS = 2
DATASETS = ("halueval_general", "truthfulqa_truth", "truthfulqa_info", "begin_wow")


# --------------------------------------------------------------------------- loading


def load_halueval(data: Path) -> pd.DataFrame:
    rows = []
    with (data / "halueval" / "general_data.json").open(encoding="utf-8") as f:
        for line in f:
            if line.strip():
                item = json.loads(line)
                rows.append({"log_id": f"halueval-{item['ID']}", "input": item["user_query"],
                             "output": item["chatgpt_response"], "context": None,
                             "label": int(item["hallucination"] == "yes"), "group": item["user_query"]})
    return pd.DataFrame(rows)


def load_truthfulqa(data: Path, which: str) -> pd.DataFrame:
    """``which`` is ``truth`` (label 1 = not true: hallucinated) or ``info`` (label 1 = informative)."""
    rows = []
    with (data / "truthfulqa" / f"finetune_{which}.jsonl").open(encoding="utf-8") as f:
        for line in f:
            if not line.strip():
                continue
            item = json.loads(line)
            question, _, answer = item["prompt"].partition("\nA:")
            question = question.removeprefix("Q:").strip()
            for tail in ("\nTrue:", "\nHelpful:"):
                answer = answer.removesuffix(tail)
            value = item["completion"].strip() == "yes"
            label = int(not value) if which == "truth" else int(value)
            rows.append({"input": question, "output": answer.strip(), "context": None, "label": label, "group": question})
    return pd.DataFrame(rows)


def load_begin(data: Path) -> pd.DataFrame:
    rows = []
    for name in ("begin_test_wow.tsv", "begin_dev_wow.tsv"):
        with (data / "begin" / name).open(encoding="utf-8", newline="") as f:
            for item in csv.DictReader(f, delimiter="\t", quoting=csv.QUOTE_NONE):
                if item["begin_label"] == "Generic":
                    continue
                rows.append({"input": item["message"], "output": item["response"], "context": item["knowledge"],
                             "label": int(item["begin_label"] == "Not fully attributable"),
                             "group": item["knowledge"]})
    return pd.DataFrame(rows)


def load(name: str, data: Path) -> tuple[pd.DataFrame, str, bool, tuple[str, ...] | None]:
    """Return (frame, task, has_context, baseline text columns joined)."""
    if name == "halueval_general":
        return load_halueval(data), "hallucination", False, None
    if name == "truthfulqa_truth":
        return load_truthfulqa(data, "truth"), "hallucination", False, ("input", "output")
    if name == "truthfulqa_info":
        return load_truthfulqa(data, "info"), "relevance", False, ("input", "output")
    if name == "begin_wow":
        return load_begin(data), "hallucination", True, None
    raise ValueError(f"unknown data set {name!r}")


# --------------------------------------------------------------------------- evaluation


def baseline_pipeline(join: tuple[str, ...] | None) -> Pipeline:
    """The README's plain baseline: TF-IDF word 1-2 grams + logistic regression."""
    return Pipeline([
        ("select", TextColumn(name="output", join=join)),
        ("tfidf", TfidfVectorizer(ngram_range=(1, 2))),
        ("classifier", LogisticRegression(max_iter=2000)),
    ])


def out_of_fold(make, frame: pd.DataFrame, folds: list[tuple[np.ndarray, np.ndarray]]) -> np.ndarray:
    """Out-of-fold scores of ``make()`` models, the folds fitted two at a time (2 cores)."""
    y = frame["label"].to_numpy()

    def one(train, test):
        model = make()
        model.fit(frame.iloc[train], y[train])
        return test, model.predict_proba(frame.iloc[test])[:, 1]

    scores = np.zeros(len(frame))
    for test, fold_scores in Parallel(n_jobs=N_JOBS)(delayed(one)(train, test) for train, test in folds):
        scores[test] = fold_scores
    return scores


def best_threshold(y: np.ndarray, scores: np.ndarray) -> float:
    """The threshold that maximizes F1 of the positive class on (y, scores)."""
    order = np.argsort(-scores)
    s, t = scores[order], y[order]
    tp = np.cumsum(t)
    fp = np.cumsum(1 - t)
    f1 = 2 * tp / (tp + fp + t.sum())
    last = np.r_[s[1:] != s[:-1], True]  # only cut between distinct scores
    i = int(np.argmax(np.where(last, f1, -1)))
    return float(s[i])


def metrics(y: np.ndarray, scores: np.ndarray, folds) -> dict:
    """AUROC, AP, and F1 at thresholds chosen on the other folds' out-of-fold scores."""
    predicted = np.zeros(len(y), dtype=int)
    for _, test in folds:
        others = np.ones(len(y), dtype=bool)
        others[test] = False
        predicted[test] = scores[test] >= best_threshold(y[others], scores[others])
    return {
        "auroc": round(float(roc_auc_score(y, scores)), 4),
        "ap": round(float(average_precision_score(y, scores)), 4),
        "f1": round(float(f1_score(y, predicted)), 4),
        "f1_at_0.5": round(float(f1_score(y, scores >= 0.5)), 4),
    }


def evaluate(name: str, data: Path, n_folds: int, seed: int) -> dict:
    frame, task, has_context, join = load(name, data)
    y = frame["label"].to_numpy()
    splitter = StratifiedGroupKFold(n_splits=n_folds, shuffle=True, random_state=seed)
    folds = list(splitter.split(frame, y, groups=frame["group"]))
    started = time.perf_counter()
    ours = out_of_fold(lambda: build_pipeline(task, has_context=has_context), frame, folds)
    ours_seconds = time.perf_counter() - started
    started = time.perf_counter()
    base = out_of_fold(lambda: baseline_pipeline(join), frame, folds)
    base_seconds = time.perf_counter() - started
    ours_m, base_m = metrics(y, ours, folds), metrics(y, base, folds)
    result = {
        **ours_m,
        "baseline_auroc": base_m["auroc"], "baseline_ap": base_m["ap"], "baseline_f1": base_m["f1"],
        "task": task, "rows": int(len(frame)), "positives": int(y.sum()), "groups": int(frame["group"].nunique()),
        "folds": n_folds, "seconds": round(ours_seconds, 1), "baseline_seconds": round(base_seconds, 1),
    }
    say(f"{name}: {json.dumps(result)}")
    return result


def main(argv: list[str]) -> dict:
    parser = argparse.ArgumentParser(prog="python -m benchmarks quality", description=__doc__.splitlines()[0])
    parser.add_argument("--data", type=Path, default=DATA, help="the shared data folder")
    parser.add_argument("--folds", type=int, default=5)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--datasets", default=",".join(DATASETS), help="comma-separated subset of " + ", ".join(DATASETS))
    parser.add_argument("--protocol", choices=("sets", "app", "regimes"), default="sets",
                        help="sets: grouped cross-validation per data set; app: the sets landed as one "
                        "application and run through Dagster (benchmarks/quality_app.py); regimes: grouped "
                        "cross-validation of the ways of handling the app's sources")
    parser.add_argument("--variants", default="", help="with --protocol regimes: comma-separated variants "
                        "(default: all of benchmarks.quality_app.REGIME_VARIANTS)")
    parser.add_argument("--no-per-set", action="store_true",
                        help="with --protocol app: skip the per-set figures (faster, no comparison)")
    args = parser.parse_args(argv)
    if args.protocol == "app":
        from benchmarks.quality_app import run

        return run(args.data.resolve(), folds=args.folds, seed=args.seed, per_set=not args.no_per_set)
    if args.protocol == "regimes":
        from benchmarks.quality_app import regime_cv

        variants = [v.strip() for v in args.variants.split(",")] if args.variants else None
        return regime_cv(args.data.resolve(), folds=args.folds, seed=args.seed, variants=variants)
    started = time.perf_counter()
    names = [n.strip() for n in args.datasets.split(",") if n.strip()]
    results = {name: evaluate(name, args.data.resolve(), args.folds, args.seed) for name in names}
    return {
        "name": "quality",
        "rows": sum(r["rows"] for r in results.values()),
        "datasets": results,
        "seconds": round(time.perf_counter() - started, 1),
        "peak_rss_mb": peak_rss_mb(),
    }
