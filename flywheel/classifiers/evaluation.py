"""Honest evaluation of a classifier: metrics at a threshold, calibration, per-slice
figures, the paired comparison of two models on one evaluation set, and plots.

Everything here works on plain arrays: ``y`` (0/1 labels) and ``scores`` (probabilities
of the positive class). Figures that need both classes (AUROC, AP) are ``None`` when the
set lacks one.
"""

from __future__ import annotations

import base64
import io
from dataclasses import asdict, dataclass

import numpy as np
import pandas as pd
from scipy.stats import norm, rankdata
from sklearn.metrics import (
    average_precision_score,
    brier_score_loss,
    f1_score,
    precision_score,
    recall_score,
    roc_auc_score,
    roc_curve,
)

ECE_BINS = 10


def best_threshold(y: np.ndarray, scores: np.ndarray) -> float:
    """Return the score threshold that maximizes F1 of the positive class on (y, scores)
    (predict positive when ``score >= threshold``); 0.5 when y has no positive."""
    y = np.asarray(y, dtype=int)
    scores = np.asarray(scores, dtype=float)
    if not len(y) or y.sum() == 0:
        return 0.5
    order = np.argsort(-scores, kind="stable")
    s, t = scores[order], y[order]
    tp = np.cumsum(t)
    fp = np.cumsum(1 - t)
    f1 = 2 * tp / (tp + fp + t.sum())
    last = np.r_[s[1:] != s[:-1], True]  # only cut between distinct scores
    return float(s[int(np.argmax(np.where(last, f1, -1)))])


def expected_calibration_error(y: np.ndarray, scores: np.ndarray, bins: int = ECE_BINS) -> float:
    """Return the expected calibration error: the mean over ``bins`` equal-width score
    bins of |mean score - positive rate|, weighted by the bin's share of rows."""
    y = np.asarray(y, dtype=float)
    scores = np.clip(np.asarray(scores, dtype=float), 0.0, 1.0)
    if not len(y):
        return float("nan")
    which = np.minimum((scores * bins).astype(int), bins - 1)
    counts = np.bincount(which, minlength=bins)
    gap = np.abs(np.bincount(which, weights=scores, minlength=bins) - np.bincount(which, weights=y, minlength=bins))
    return float(gap.sum() / counts.sum())


def both_classes(y) -> bool:
    """Return whether ``y`` holds at least one positive and one negative."""
    y = np.asarray(y)
    return bool(len(y) and 0 < y.sum() < len(y))


def metrics_at(y: np.ndarray, scores: np.ndarray, threshold: float) -> dict:
    """Return the metrics of the model card for one set: ``auroc``, ``ap``, ``f1``,
    ``precision``, ``recall`` (at ``threshold``), ``ece``, ``brier``, ``threshold``,
    ``n_eval``, ``positives``."""
    y = np.asarray(y, dtype=int)
    scores = np.asarray(scores, dtype=float)
    predicted = (scores >= threshold).astype(int)
    two = both_classes(y)
    return {
        "auroc": _round(roc_auc_score(y, scores)) if two else None,
        "ap": _round(average_precision_score(y, scores)) if two else None,
        "f1": _round(f1_score(y, predicted, zero_division=0)),
        "precision": _round(precision_score(y, predicted, zero_division=0)),
        "recall": _round(recall_score(y, predicted, zero_division=0)),
        "ece": _round(expected_calibration_error(y, scores)) if len(y) else None,
        "brier": _round(brier_score_loss(y, scores)) if len(y) else None,
        "threshold": _round(threshold),
        "n_eval": int(len(y)),
        "positives": int(y.sum()),
    }


def slice_metrics(frame: pd.DataFrame, y: np.ndarray, scores: np.ndarray, threshold: float, *,
                  columns: tuple[str, ...] = ("source", "prompt_version"), min_rows: int = 1) -> list[dict]:
    """Return one row of :func:`metrics_at` per value of each slice column of ``frame``
    (aligned with ``y`` and ``scores``), with ``slice_type`` and ``slice_value``."""
    out = []
    for col in columns:
        if col not in frame.columns:
            continue
        values = frame[col].astype("object").where(frame[col].notna(), "(none)").astype(str).to_numpy()
        for value in sorted(set(values)):
            mask = values == value
            if mask.sum() < min_rows:
                continue
            out.append({"slice_type": col, "slice_value": value, **metrics_at(y[mask], scores[mask], threshold)})
    return out


def _delong(y: np.ndarray, score_sets: list[np.ndarray]) -> tuple[np.ndarray, np.ndarray]:
    """Return the AUROCs of each score set on labels ``y`` and their DeLong covariance
    matrix (the fast midrank form of Sun and Xu, 2014: O(n log n), no resampling)."""
    pos, neg = y == 1, y == 0
    m, n = int(pos.sum()), int(neg.sum())
    aucs, v_pos, v_neg = [], [], []
    for scores in score_sets:
        x, z = scores[pos], scores[neg]
        all_ranks = rankdata(np.concatenate([x, z]))
        rx, rz = all_ranks[:m], all_ranks[m:]
        # structural components: each positive's share of negatives below it, and each
        # negative's share of positives above it (ties count half)
        v01 = (rx - rankdata(x)) / n
        v10 = 1.0 - (rz - rankdata(z)) / m
        aucs.append(v01.mean())
        v_pos.append(v01)
        v_neg.append(v10)
    s01 = np.atleast_2d(np.cov(np.vstack(v_pos))) if m > 1 else np.zeros((len(score_sets),) * 2)
    s10 = np.atleast_2d(np.cov(np.vstack(v_neg))) if n > 1 else np.zeros((len(score_sets),) * 2)
    return np.asarray(aucs), s01 / m + s10 / n


def auroc_interval(auroc: float, positives: int, negatives: int, *, confidence: float = 0.95) -> tuple[float, float]:
    """Return the two-sided ``confidence`` interval (low, high) of an AUROC measured on
    ``positives`` and ``negatives`` rows: the Hanley-McNeil (1982) standard error with a
    normal approximation, clipped to [0, 1]. It needs only the three numbers, so a model
    card's stored figures are enough to judge a model again under other settings."""
    a = float(auroc)
    q1, q2 = a / (2.0 - a), 2.0 * a * a / (1.0 + a)
    variance = (a * (1 - a) + (positives - 1) * (q1 - a * a) + (negatives - 1) * (q2 - a * a)) / (positives * negatives)
    half = norm.ppf(0.5 + confidence / 2) * np.sqrt(max(variance, 0.0))
    return max(0.0, a - half), min(1.0, a + half)


@dataclass
class Comparison:
    """A candidate against the champion on the same evaluation set (AUROC)."""

    champion_auroc: float
    candidate_auroc: float
    delta: float  # candidate - champion
    low: float  # lower bound of the two-sided interval of delta
    high: float  # upper bound
    p_worse: float  # probability (normal approximation) that the candidate is not better
    confidence: float
    n: int
    method: str  # how the interval was made
    worse: bool  # the candidate is worse beyond the noise: high < 0

    def to_dict(self) -> dict:
        return {k: (_round(v) if isinstance(v, float) else v) for k, v in asdict(self).items()}

    def describe(self) -> str:
        return (f"AUROC {self.candidate_auroc:.4f} vs champion {self.champion_auroc:.4f} on the same {self.n} "
                f"held-out items: difference {self.delta:+.4f}, {self.confidence:.0%} interval "
                f"[{self.low:+.4f}, {self.high:+.4f}]")


def compare_auroc(y: np.ndarray, champion: np.ndarray, candidate: np.ndarray, *,
                  confidence: float = 0.95) -> Comparison:
    """Paired DeLong test of the AUROC difference candidate - champion on the same rows.

    The variance of the difference comes from both models' structural components on the
    same positives and negatives (their correlation is accounted for), so the interval
    is the one a paired bootstrap approximates, at the cost of three sorts instead of
    thousands of resamples. ``worse`` is True when the whole ``confidence`` interval of
    the difference lies below zero, i.e. the candidate is worse beyond the noise of this
    set. Raises ValueError when ``y`` lacks a class.
    """
    y = np.asarray(y, dtype=int)
    champion = np.asarray(champion, dtype=float)
    candidate = np.asarray(candidate, dtype=float)
    if not both_classes(y):
        raise ValueError("the evaluation set needs both classes to compare AUROC")
    (base_c, base_n), cov = _delong(y, [champion, candidate])
    delta = float(base_n - base_c)
    se = float(np.sqrt(max(cov[0, 0] + cov[1, 1] - 2 * cov[0, 1], 0.0)))
    z = norm.ppf(0.5 + confidence / 2)
    if se > 0:
        p_worse = float(norm.cdf(-delta / se))
    else:  # identical rankings (or a degenerate set): no noise to speak of
        p_worse = 1.0 if delta <= 0 else 0.0
    low, high = delta - z * se, delta + z * se
    return Comparison(
        champion_auroc=float(base_c), candidate_auroc=float(base_n), delta=delta,
        low=float(low), high=float(high), p_worse=p_worse, confidence=confidence, n=int(len(y)),
        method="paired DeLong test", worse=bool(high < 0),
    )


# --------------------------------------------------------------------------- plots


def plots_markdown(y: np.ndarray, scores: np.ndarray, *, title: str) -> str:
    """Return markdown with two inline PNG plots: the ROC curve and the reliability
    diagram (calibration) of ``scores``; empty when the set lacks a class."""
    if not both_classes(y):
        return ""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    y = np.asarray(y, dtype=int)
    scores = np.asarray(scores, dtype=float)
    fig, (roc_ax, cal_ax) = plt.subplots(1, 2, figsize=(9, 4), dpi=80)
    fpr, tpr, _ = roc_curve(y, scores)
    roc_ax.plot(fpr, tpr, color="tab:blue", label=f"AUROC {roc_auc_score(y, scores):.3f}")
    roc_ax.plot([0, 1], [0, 1], color="grey", linestyle=":")
    roc_ax.set(xlabel="false positive rate", ylabel="true positive rate", title=f"ROC: {title}")
    roc_ax.legend(loc="lower right")
    which = np.minimum((np.clip(scores, 0, 1) * ECE_BINS).astype(int), ECE_BINS - 1)
    counts = np.bincount(which, minlength=ECE_BINS)
    used = counts > 0
    mean_score = np.bincount(which, weights=scores, minlength=ECE_BINS)[used] / counts[used]
    rate = np.bincount(which, weights=y, minlength=ECE_BINS)[used] / counts[used]
    cal_ax.plot([0, 1], [0, 1], color="grey", linestyle=":")
    cal_ax.plot(mean_score, rate, marker="o", color="tab:orange",
                label=f"ECE {expected_calibration_error(y, scores):.3f}")
    cal_ax.set(xlabel="mean predicted probability", ylabel="observed positive rate", xlim=(0, 1), ylim=(0, 1),
               title="calibration")
    cal_ax.legend(loc="upper left")
    fig.tight_layout()
    buffer = io.BytesIO()
    fig.savefig(buffer, format="png")
    plt.close(fig)
    encoded = base64.b64encode(buffer.getvalue()).decode("ascii")
    return f"![ROC and calibration: {title}](data:image/png;base64,{encoded})"


def _round(value) -> float | None:
    if value is None:
        return None
    value = float(value)
    return None if np.isnan(value) else round(value, 4)
