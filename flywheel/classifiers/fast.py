"""Fast scoring: fitted classifier pipelines evaluated as matrices, sharing all text work.

A fitted pipeline of :func:`flywheel.classifiers.model.build_pipeline` is
``LogFeatures`` + a linear model (a ``LogisticRegression``, or a
``CalibratedClassifierCV`` of them with sigmoid calibrators). Its probability is a
function of a few linear decision values, so scoring never needs the feature matrix
itself. :class:`FastScorer` scores several such pipelines (one per task) in one pass over
a batch:

- the batch's text columns are tokenized once (:class:`~flywheel.classifiers.features.Batch`),
  and each block of dense features (grounding in the context, in the question; style)
  computed once for all the models that use it;
- the terms of every bag-of-terms block are looked up in the *union* of the models'
  vocabularies and counted into one CSR matrix per block (compiled kernels);
- per block, for all models at once: the sublinear tf of the counts times the
  coefficients of every linear model of every task, each scaled by its model's idf and
  stacked as columns, is one sparse x dense product; the squared tf times each model's
  squared idf (one column per model) gives the rows' l2 norms in a second one, so no
  tf-idf matrix is made per model; the dense block is one small matrix product (with
  regimes, its shared and per-regime coefficients in one product, each row taking its
  regime's part: the repeated block is never made); the
  sigmoid calibrators turn the decision values into the probability, averaged over the
  ensemble as scikit-learn does.

The result equals ``pipeline.predict_proba(frame)[:, 1]`` up to float rounding
(tests/test_scoring.py checks it); pipelines of another shape are scored by their own
``predict_proba`` (:func:`linear_parts` returns None for them).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import polars as pl
import scipy.sparse as sp
from scipy.special import expit
from sklearn.calibration import CalibratedClassifierCV, _SigmoidCalibration
from sklearn.linear_model import LogisticRegression

from flywheel.classifiers import kernels
from flywheel.classifiers.features import Batch, LogFeatures, TermTfidf, groundings


@dataclass
class LinearParts:
    """A fitted pipeline as matrices: ``features``, the coefficients of its ``k`` linear
    models as columns (``coef``: n_features x k), their ``intercept`` (k,) and the sigmoid
    calibrators (``None``: the plain logistic link; else one per model, probabilities averaged)."""

    features: LogFeatures
    coef: np.ndarray
    intercept: np.ndarray
    calibrators: list | None


def linear_parts(pipeline) -> LinearParts | None:
    """Return the :class:`LinearParts` of a fitted ``LogFeatures`` + linear pipeline, or
    None when the pipeline has another shape."""
    steps = getattr(pipeline, "named_steps", None)
    if not steps or len(steps) != 2:
        return None
    features, classifier = steps.get("features"), steps.get("classifier")
    if not isinstance(features, LogFeatures) or not hasattr(features, "scaler_"):
        return None
    if isinstance(classifier, LogisticRegression):
        models, calibrators = [classifier], None
    elif isinstance(classifier, CalibratedClassifierCV) and hasattr(classifier, "calibrated_classifiers_"):
        models, calibrators = [], []
        for member in classifier.calibrated_classifiers_:
            if (not isinstance(member.estimator, LogisticRegression) or len(member.calibrators) != 1
                    or not isinstance(member.calibrators[0], _SigmoidCalibration)):
                return None
            models.append(member.estimator)
            calibrators.append(member.calibrators[0])
    else:
        return None
    for model in models:
        if len(model.classes_) != 2 or model.coef_.shape[0] != 1:
            return None
    coef = np.stack([m.coef_[0] for m in models], axis=1).astype(np.float64)
    intercept = np.asarray([m.intercept_[0] for m in models], dtype=np.float64)
    return LinearParts(features=features, coef=coef, intercept=intercept, calibrators=calibrators)


def _block_key(vectorizer: TermTfidf) -> tuple:
    """Vectorizers with the same key see the same terms of a row (vocabularies may differ)."""
    return (vectorizer.kind, vectorizer.name, tuple(vectorizer._ngram_range()), vectorizer.reference,
            vectorizer.fallback, getattr(vectorizer, "regimes", None), tuple(getattr(vectorizer, "regime_values", ())))


@dataclass
class _Model:
    task: str
    parts: LinearParts
    idf: np.ndarray  # union column -> idf of this model (0: not in its vocabulary)
    weights: np.ndarray  # union column -> coefficients, one column per linear model
    dense_weights: np.ndarray  # dense feature -> coefficients (n_dense x k)


class _Group:
    """Linear models scored together: the union vocabulary of their term blocks and each
    model's weights over it."""

    def __init__(self, models: dict[str, LinearParts]):
        keys: list[tuple] = []
        vocab: dict[tuple, list[np.ndarray]] = {}
        self.example: dict[tuple, TermTfidf] = {}
        for parts in models.values():
            for v in parts.features.vectorizers_:
                key = _block_key(v)
                if key not in vocab:
                    keys.append(key)
                    vocab[key] = []
                    self.example[key] = v
                vocab[key].append(v.vocabulary_hashes_)
        self.keys = keys
        self.union: dict[tuple, np.ndarray] = {}  # key -> the block's distinct term hashes
        self.offsets: dict[tuple, int] = {}  # key -> the block's first column
        self.tables: dict[tuple, tuple] = {}  # key -> kernels.lookup_table of the block's hashes
        offset = 0
        for key in keys:
            hashes = np.unique(np.concatenate(vocab[key]))
            self.union[key], self.offsets[key] = hashes, offset
            self.tables[key] = kernels.lookup_table(hashes, np.arange(len(hashes), dtype=np.int64))
            offset += len(hashes)
        self.width = offset
        self.models = [self._model(task, parts) for task, parts in models.items()]
        # every model's coefficients times its idf, stacked as columns (model i: the columns
        # spans[i]), and each model's squared idf as one column
        self.scaled_weights = np.hstack([m.idf[:, None] * m.weights for m in self.models])
        self.squared_idf = np.stack([m.idf * m.idf for m in self.models], axis=1)
        stops = np.cumsum([m.weights.shape[1] for m in self.models])
        self.spans = list(zip(stops - [m.weights.shape[1] for m in self.models], stops))

    def _model(self, task: str, parts: LinearParts) -> _Model:
        idf = np.zeros(self.width, dtype=np.float64)
        weights = np.zeros((self.width, parts.coef.shape[1]), dtype=np.float64)
        start = 0
        for v in parts.features.vectorizers_:
            key = _block_key(v)
            ucols = self.offsets[key] + np.searchsorted(self.union[key], v.vocabulary_hashes_)
            idf[ucols] = v.idf_
            weights[ucols] = parts.coef[start:start + len(v.vocabulary_hashes_)]
            start += len(v.vocabulary_hashes_)
        return _Model(task=task, parts=parts, idf=idf, weights=weights, dense_weights=parts.coef[start:])

    def frequencies(self, key: tuple, batch: Batch) -> sp.csr_matrix:
        """The sublinear term frequencies of block ``key`` in the rows of ``batch`` over the
        block's columns of the union vocabulary (CSR, no duplicates, indices not sorted)."""
        return self.example[key].frequencies(batch, self.tables[key], len(self.union[key]))

    def score(self, batch: Batch) -> dict[str, np.ndarray]:
        """Return task -> probabilities of the rows of ``batch``."""
        # dense features: every grounding block in one pass, each block once for all models
        groundings(batch, [ref for m in self.models for ref in m.parts.features.references()])
        decisions = [_dense_decision(m, batch) for m in self.models]
        # per block: the matrix of sublinear tf; one sparse product with every model's
        # idf-scaled coefficients, one with the squared idfs (the norms)
        for key in self.keys:
            tf = self.frequencies(key, batch)
            if not tf.nnz:
                continue
            block = slice(self.offsets[key], self.offsets[key] + tf.shape[1])
            products = tf @ self.scaled_weights[block]
            tf.data *= tf.data
            norms = np.sqrt(tf @ self.squared_idf[block])
            del tf
            norms[norms == 0] = 1.0
            for i, (decision, (start, stop)) in enumerate(zip(decisions, self.spans)):
                decision += products[:, start:stop] / norms[:, i:i + 1]
            del products, norms
        out = {}
        for m, decision in zip(self.models, decisions):
            if m.parts.calibrators is None:
                out[m.task] = expit(decision[:, 0])
            else:
                out[m.task] = np.mean([c.predict(decision[:, i]) for i, c in enumerate(m.parts.calibrators)],
                                      axis=0)
        return out


def _dense_decision(model: _Model, batch: Batch) -> np.ndarray:
    """The intercepts plus the dense features' part of the decision values of ``model``'s
    linear models (n x k). With regimes, the dense block of :meth:`LogFeatures.transform`
    is the features once shared and once per regime (zero outside it); rather than making
    it, each row in a regime adds its features times its regime's coefficients
    (:func:`kernels.add_regime_decision`: one pass over the rows, not one small BLAS
    product per regime, whose thread wake-ups cost more than they compute)."""
    dense, ids = model.parts.features.dense_parts(batch)
    d = dense.shape[1]
    k = model.dense_weights.shape[1]
    decision = dense @ model.dense_weights[:d] + model.parts.intercept
    blocks = model.dense_weights.shape[0] // d  # 1 + regimes
    if blocks > 1:
        per_regime = np.ascontiguousarray(model.dense_weights[d:].reshape(blocks - 1, d, k), dtype=np.float64)
        decision = np.ascontiguousarray(decision, dtype=np.float64)
        kernels.add_regime_decision(decision, np.ascontiguousarray(dense, dtype=np.float64), per_regime,
                                    np.asarray(ids, dtype=np.int64))
    return decision


class FastScorer:
    """Scores fitted pipelines (task -> pipeline) of the :func:`linear_parts` shape
    together: ``score(frame)`` returns task -> probability of the positive class, equal
    to each ``pipeline.predict_proba(frame)[:, 1]``. Pipelines of another shape are
    scored by their own ``predict_proba``."""

    def __init__(self, pipelines: dict[str, object]):
        self.other: dict[str, object] = {}
        linear: dict[str, LinearParts] = {}
        for task, pipeline in pipelines.items():
            parts = linear_parts(pipeline)
            if parts is None:
                self.other[task] = pipeline
            else:
                linear[task] = parts
        self.groups = [_Group(linear)] if linear else []

    def score(self, frame: pl.DataFrame) -> dict[str, np.ndarray]:
        """Return task -> probabilities (float64) of the rows of ``frame``."""
        out: dict[str, np.ndarray] = {}
        if not frame.height:
            return {task: np.zeros(0, dtype=np.float64)
                    for task in [*(m.task for g in self.groups for m in g.models), *self.other]}
        batch = Batch(frame)
        for group in self.groups:
            out.update(group.score(batch))
        for task, pipeline in self.other.items():
            out[task] = np.asarray(pipeline.predict_proba(frame)[:, 1], dtype=np.float64)
        return out
