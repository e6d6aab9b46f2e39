"""The classifier pipelines: features of :mod:`flywheel.classifiers.features` + a calibrated
linear model.

``build_pipeline(task, has_context=...)`` returns an unfitted scikit-learn ``Pipeline`` whose
``predict_proba(frame)[:, 1]`` is the calibrated probability of the positive class
(``hallucination``: the output is hallucinated; ``relevance``: the output is relevant to the
input). The input is a DataFrame with the columns ``input``, ``output`` and, optionally,
``context``.
"""

from __future__ import annotations

from sklearn.calibration import CalibratedClassifierCV
from sklearn.linear_model import LogisticRegression
from sklearn.pipeline import FeatureUnion, Pipeline
from sklearn.preprocessing import StandardScaler

from flywheel.classifiers.features import GroundingFeatures, StyleFeatures, text_tfidf

TASKS = ("hallucination", "relevance")


def build_features(*, has_context: bool, char_ngrams: bool = True, max_features: int = 200_000) -> FeatureUnion:
    """The feature union: TF-IDF of output and input, grounding and style features.

    With ``has_context`` the output is grounded in the context (falling back to the input
    for rows without one) and, as a second block, in the input; without, in the input.
    """
    blocks = [
        ("output_words", text_tfidf(name="output", analyzer="word", ngram_range=(1, 2), max_features=max_features)),
        ("input_words", text_tfidf(name="input", analyzer="word", ngram_range=(1, 2), max_features=max_features)),
    ]
    if char_ngrams:
        blocks.append(("output_chars", text_tfidf(name="output", analyzer="char_wb", ngram_range=(2, 5),
                                                  max_features=max_features)))
    blocks.append(("grounding", Pipeline([
        ("features", GroundingFeatures(reference="context" if has_context else "input", fallback="input")),
        ("scale", StandardScaler()),
    ])))
    if has_context:
        blocks.append(("query_grounding", Pipeline([
            ("features", GroundingFeatures(reference="input", fallback=None)),
            ("scale", StandardScaler()),
        ])))
    blocks.append(("style", Pipeline([("features", StyleFeatures(name="output")), ("scale", StandardScaler())])))
    return FeatureUnion(blocks)


def build_pipeline(task: str, *, has_context: bool, C: float = 2.0, calibrate: bool = True,
                   char_ngrams: bool = True, max_features: int = 200_000, random_state: int = 0) -> Pipeline:
    """An unfitted pipeline for ``task`` (``hallucination`` or ``relevance``).

    The classifier is an L2 logistic regression; with ``calibrate`` (default) it is wrapped
    in a 3-fold sigmoid ``CalibratedClassifierCV`` so that its probabilities are calibrated
    out of sample (the features are fitted once, on all training rows).
    """
    if task not in TASKS:
        raise ValueError(f"unknown task {task!r}: expected one of {', '.join(TASKS)}")
    linear = LogisticRegression(C=C, max_iter=3000, solver="liblinear", random_state=random_state)
    classifier = CalibratedClassifierCV(linear, method="sigmoid", cv=3) if calibrate else linear
    return Pipeline([
        ("features", build_features(has_context=has_context, char_ngrams=char_ngrams, max_features=max_features)),
        ("classifier", classifier),
    ])
