"""Fast scoring: fitted classifier pipelines evaluated as matrices, sharing all token work.

A fitted pipeline of :func:`flywheel.classifiers.model.build_pipeline` is
``LogFeatures`` + a linear model (a ``LogisticRegression``, or a
``CalibratedClassifierCV`` of them with sigmoid calibrators). Its probability is a
function of a few linear decision values, so scoring never needs the feature matrix
itself. :class:`FastScorer` scores several such pipelines (one per task) in one pass over
a batch:

- work is done once per *distinct* value it depends on: the tokens of each text column,
  the output's style, the output's and the input's bags of words and the output's names
  once per distinct value of that column; grounding and novel words once per distinct
  (output, reference) pair; the results are gathered back to the rows (logs repeat
  questions, retrieved contexts and answers). All models with the same
  :meth:`LogFeatures.shared_key` share this work;
- the terms of every bag-of-terms block are looked up with one Polars hash join in the
  *union* of the models' vocabularies and counted (sort + run lengths) into one CSR
  matrix of term counts per block;
- per block, for all models at once: the sublinear tf of the counts times the
  coefficients of every linear model of every task, each scaled by its model's idf and
  stacked as columns, is one sparse x dense product; the squared tf times each model's
  squared idf (one column per model) gives the rows' l2 norms in a second one, so no
  tf-idf matrix is made per model; the dense block is one small matrix product; the
  sigmoid calibrators turn the decision values into the probability, averaged over the
  ensemble as scikit-learn does;
- where no text repeats (every row its own distinct value), the rows are used as they
  are instead of being gathered from the distinct values (no copy).

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

from flywheel.classifiers.features import (LogFeatures, TermTfidf, grounding_from_sides, grounding_output_side,
                                           grounding_reference_side, style_matrix, term_hashes, text_series,
                                           token_hashes)


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
            vectorizer.fallback)


@dataclass
class _Model:
    task: str
    parts: LinearParts
    idf: np.ndarray  # union column -> idf of this model (0: not in its vocabulary)
    weights: np.ndarray  # union column -> coefficients, one column per linear model
    dense_weights: np.ndarray  # dense feature -> coefficients (n_dense x k)


class _Group:
    """Models sharing one :meth:`LogFeatures.shared_key`: the union vocabulary of their
    term blocks and each model's weights over it."""

    def __init__(self, models: dict[str, LinearParts]):
        self.reference = next(iter(models.values())).features
        keys: list[tuple] = []
        vocab: dict[tuple, list[pl.DataFrame]] = {}
        self.example: dict[tuple, TermTfidf] = {}
        for parts in models.values():
            for v in parts.features.vectorizers_:
                key = _block_key(v)
                if key not in vocab:
                    keys.append(key)
                    vocab[key] = []
                    self.example[key] = v
                vocab[key].append(v.vocabulary_hashes().select("hash"))
        self.keys = keys
        self.union: dict[tuple, pl.DataFrame] = {}  # key -> (hash, ucol)
        offset = 0
        for key in keys:
            hashes = pl.concat(vocab[key]).unique("hash", maintain_order=True)
            self.union[key] = hashes.with_columns(
                (pl.int_range(pl.len(), dtype=pl.UInt32) + offset).alias("ucol"))
            offset += hashes.height
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
            hits = v.vocabulary_hashes().join(self.union[key], on="hash", how="inner")
            cols = hits.get_column("col").to_numpy().astype(np.int64)
            ucols = hits.get_column("ucol").to_numpy().astype(np.int64)
            idf[ucols] = v.idf_[cols]
            weights[ucols] = parts.coef[start + cols]
            start += len(v.vocabulary_)
        return _Model(task=task, parts=parts, idf=idf, weights=weights, dense_weights=parts.coef[start:])

    def counts(self, key: tuple, source: pl.DataFrame) -> sp.csr_matrix:
        """The counts of block ``key``'s terms in the rows of ``source`` (a frame as
        :meth:`LogFeatures._hash_lists` takes) over the union vocabulary, as a canonical
        CSR matrix (one entry per row and term, sorted)."""
        n, v = source.height, self.example[key]
        runs = (pl.DataFrame({"h": self.reference._hash_lists(v, source)})
                .select(term_hashes(pl.col("h"), v._ngram_range()).alias("hash"))
                .with_row_index("row").explode("hash")
                .join(self.union[key], on="hash", how="inner")
                # one key per (row, column); sorted, equal keys are runs: their lengths are the counts
                .select((pl.col("row").cast(pl.UInt64) * (1 << 32) + pl.col("ucol").cast(pl.UInt64))
                        .sort().rle().struct.unnest()))
        keys = runs.get_column("value").to_numpy()
        indptr = np.zeros(n + 1, dtype=np.int64)
        np.cumsum(np.bincount((keys >> np.uint64(32)).astype(np.int64), minlength=n), out=indptr[1:])
        matrix = sp.csr_matrix((runs.get_column("len").to_numpy().astype(np.float64),
                                (keys & np.uint64(0xFFFFFFFF)).astype(np.int32), indptr), shape=(n, self.width))
        matrix.has_canonical_format = True
        return matrix

    def score(self, frame: pl.DataFrame) -> dict[str, np.ndarray]:
        """Return task -> probabilities of the rows of ``frame``.

        Work that depends on one text column only (its tokens, the output's style, the
        bags of words of the output and the input, the output's names) is done once per
        distinct value of that column in the batch (logs repeat questions, contexts and
        answers) and gathered back to the rows; grounding and novel words once per distinct
        (output, reference) pair."""
        features = self.reference
        texts = {"out": text_series(frame, "output"), "inp": text_series(frame, "input")}
        if features.has_context:
            texts["ctx"] = text_series(frame, "context")
        distinct = {c: _distinct(values) for c, values in texts.items()}
        tokens = {c: pl.DataFrame({"v": u}).select(token_hashes(pl.col("v"))).to_series()
                  for c, (u, _) in distinct.items()}
        (outputs, out_rows), (inputs, inp_rows) = distinct["out"], distinct["inp"]
        # grounding and novel words depend on the output and the reference (the context, or
        # the input where it is blank): computed once per distinct pair
        first, pair_rows, ref_code = _pairs(features, distinct)
        texts = {c: _take(values, first) for c, values in texts.items()}
        pairs = pl.DataFrame({{"out": "output", "inp": "input", "ctx": "context"}[c]: v for c, v in texts.items()})
        prepared = features._prepare(pairs, tokens={c: _take(tokens[c], inv[first]) for c, (_, inv) in distinct.items()})
        style = _take(style_matrix(outputs), out_rows[first])
        if features.has_context and features.query_grounding:  # a second grounding block: not shared here
            dense = features._dense(prepared, style=style)
        else:  # each side of grounding once per distinct output / reference
            out_side = grounding_output_side(pl.DataFrame({"out": outputs, "out_t": tokens["out"]}))
            used, ref_of_pair = np.unique(ref_code[first], return_inverse=True)
            if features.has_context and used[-1] >= len(distinct["ctx"][0]):
                refs = pl.concat([distinct["ctx"][0], inputs])
                ref_tokens = pl.concat([tokens["ctx"], tokens["inp"]])
            elif features.has_context:  # every reference is a context
                refs, ref_tokens = distinct["ctx"][0], tokens["ctx"]
            else:
                refs, ref_tokens = inputs, tokens["inp"]
            ref_side = grounding_reference_side(pl.DataFrame({"ref": _take(refs, used),
                                                              "ref_t": _take(ref_tokens, used)}))
            dense = np.hstack([grounding_from_sides(_take(out_side, out_rows[first]),
                                                    _take(ref_side, ref_of_pair.ravel()),
                                                    prepared.get_column("present")), style])  # per pair
        sources = {"out": (pl.DataFrame({"out": outputs, "out_t": tokens["out"]}), out_rows),
                   "inp": (pl.DataFrame({"inp": inputs, "inp_t": tokens["inp"]}), inp_rows),
                   None: (prepared, pair_rows)}
        # per block: the matrix of sublinear tf of the distinct values; one sparse product
        # with every model's idf-scaled coefficients, one with the squared idfs (the norms)
        decisions = [(m.parts.features.scaler_.transform(dense) * m.parts.features.dense_weight
                      @ m.dense_weights)[pair_rows] + m.parts.intercept for m in self.models]
        for key in self.keys:
            source, rows = sources[_source(key)]
            counts = self.counts(key, source)
            if not counts.nnz:
                continue
            tf = _log_tf(counts.data)
            products = sp.csr_matrix((tf, counts.indices, counts.indptr), shape=counts.shape) @ self.scaled_weights
            counts.data = tf * tf
            norms = np.sqrt(counts @ self.squared_idf)
            del counts, tf
            norms[norms == 0] = 1.0
            for i, (decision, (start, stop)) in enumerate(zip(decisions, self.spans)):
                part = products[:, start:stop]
                part /= norms[:, i:i + 1]
                decision += part[rows]
            del products, norms
        out = {}
        for m, decision in zip(self.models, decisions):
            if m.parts.calibrators is None:
                out[m.task] = expit(decision[:, 0])
            else:
                out[m.task] = np.mean([c.predict(decision[:, i]) for i, c in enumerate(m.parts.calibrators)],
                                      axis=0)
        return out


def _source(key: tuple) -> str | None:
    """Which distinct values a block's terms depend on: ``out`` (the output), ``inp``
    (the input) or None (the row: novel words depend on output and reference)."""
    kind, name = key[0], key[1]
    if kind == "names":
        return "out"
    if kind == "words":
        return {"output": "out", "input": "inp"}[name]
    return None


def _pairs(features: LogFeatures, distinct: dict) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """The rows with distinct (output, reference) pairs (and inputs, when the features
    ground the output in the input as well), each row's index into them, and each row's
    reference as an index into the distinct contexts followed by the distinct inputs
    (into the distinct inputs without a context)."""
    out_rows, (inputs, inp_rows) = distinct["out"][1].astype(np.int64), distinct["inp"]
    inp_rows = inp_rows.astype(np.int64)
    if features.has_context:
        contexts, ctx_rows = distinct["ctx"]
        present = (contexts.str.strip_chars() != "").to_numpy()[ctx_rows]
        ref = np.where(present, ctx_rows.astype(np.int64), len(contexts) + inp_rows)
        key = out_rows * (len(contexts) + len(inputs)) + ref
        if features.query_grounding:
            key = key * len(inputs) + inp_rows
    else:
        ref = inp_rows
        key = out_rows * len(inputs) + inp_rows
    _, first, rows = np.unique(key, return_index=True, return_inverse=True)
    return first, rows.ravel(), ref


def _distinct(values: pl.Series) -> tuple[pl.Series, np.ndarray]:
    """The distinct values of a Series (first-seen order) and each row's index into them."""
    frame = pl.DataFrame({"v": values})
    distinct = frame.unique(maintain_order=True)
    if distinct.height == frame.height:  # nothing repeats: the values themselves
        return values.alias("v"), np.arange(frame.height, dtype=np.uint32)
    rows = (frame.join(distinct.with_row_index("i"), on="v", how="left", maintain_order="left")
            .get_column("i").to_numpy())
    return distinct.get_column("v"), rows


def _take(values, index: np.ndarray):
    """``values`` (a NumPy array, Polars Series or DataFrame) at ``index``: ``values``
    itself, not a copy, when ``index`` takes every value in order (no text repeats)."""
    if len(index) == len(values) and (not len(index) or (index[0] == 0 and np.array_equal(
            index, np.arange(len(index))))):
        return values
    if isinstance(values, pl.Series):
        return values.gather(index)
    return values[index]


def _log_tf(counts: np.ndarray) -> np.ndarray:
    """Sublinear term frequencies ``1 + ln(count)`` of positive integer counts."""
    if not len(counts):
        return counts.astype(np.float64)
    table = 1.0 + np.log(np.arange(1, int(counts.max()) + 1, dtype=np.float64))
    return table[counts.astype(np.int64) - 1]


class FastScorer:
    """Scores fitted pipelines (task -> pipeline) of the :func:`linear_parts` shape
    together: ``score(frame)`` returns task -> probability of the positive class, equal
    to each ``pipeline.predict_proba(frame)[:, 1]``. Pipelines of another shape are
    scored by their own ``predict_proba``."""

    def __init__(self, pipelines: dict[str, object]):
        self.other: dict[str, object] = {}
        grouped: dict[tuple, dict[str, LinearParts]] = {}
        for task, pipeline in pipelines.items():
            parts = linear_parts(pipeline)
            if parts is None:
                self.other[task] = pipeline
            else:
                grouped.setdefault(parts.features.shared_key(), {})[task] = parts
        self.groups = [_Group(models) for models in grouped.values()]

    def score(self, frame: pl.DataFrame) -> dict[str, np.ndarray]:
        """Return task -> probabilities (float64) of the rows of ``frame``."""
        out: dict[str, np.ndarray] = {}
        if not frame.height:
            return {task: np.zeros(0, dtype=np.float64)
                    for task in [*(m.task for g in self.groups for m in g.models), *self.other]}
        for group in self.groups:
            out.update(group.score(frame))
        for task, pipeline in self.other.items():
            out[task] = np.asarray(pipeline.predict_proba(frame)[:, 1], dtype=np.float64)
        return out
