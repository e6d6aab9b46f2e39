"""Calibration from out-of-fold scores: a sigmoid (Platt) fit on scores the models made on
rows they were not fitted on, attached to a fitted pipeline without refitting anything.

The served model keeps the shape :mod:`flywheel.classifiers.fast` scores as matrices when
the pipeline is ``features`` + ``LogisticRegression``: the logistic regression is wrapped
in a ``CalibratedClassifierCV`` holding one ``(estimator, sigmoid calibrator)`` pair, the
same objects scikit-learn fits itself, so the artifact needs no new trusted type. A
pipeline of another shape is wrapped whole (scored by its own ``predict_proba``).
"""

from __future__ import annotations

import numpy as np
from sklearn.calibration import CalibratedClassifierCV, _CalibratedClassifier, _SigmoidCalibration
from sklearn.linear_model import LogisticRegression
from sklearn.pipeline import Pipeline

CLASSES = np.array([0, 1])


def response(model, frame) -> np.ndarray:
    """Return the uncalibrated score of each row: the decision function when the model
    has one, else the probability of the positive class (what scikit-learn's calibrated
    classifier reads from its estimator)."""
    if hasattr(model, "decision_function"):
        return np.asarray(model.decision_function(frame), dtype=np.float64).reshape(-1)
    return np.asarray(model.predict_proba(frame)[:, 1], dtype=np.float64)


def fit_sigmoid(responses: np.ndarray, y: np.ndarray) -> _SigmoidCalibration:
    """Return a sigmoid calibrator fitted on (out-of-fold) ``responses`` and labels ``y``."""
    return _SigmoidCalibration().fit(np.asarray(responses, dtype=np.float64), np.asarray(y, dtype=int))


def calibrated(model, calibrator: _SigmoidCalibration):
    """Return ``model`` (fitted) whose ``predict_proba`` goes through ``calibrator``.

    ``features`` + ``LogisticRegression`` pipelines come back as a pipeline of the same
    features and a calibrated logistic regression (the shape the fast scorer reads);
    anything else is wrapped whole."""
    if isinstance(model, Pipeline) and len(model.steps) == 2:
        (first, features), (last, classifier) = model.steps
        if isinstance(classifier, LogisticRegression) and list(getattr(classifier, "classes_", [])) == [0, 1]:
            return Pipeline([(first, features), (last, _wrap(classifier, calibrator))])
    return _wrap(model, calibrator)


def _wrap(estimator, calibrator: _SigmoidCalibration) -> CalibratedClassifierCV:
    """A fitted ``CalibratedClassifierCV`` holding ``estimator`` and ``calibrator`` as its
    one member (nothing is refitted: the calibrator was fitted on out-of-fold scores)."""
    wrapper = CalibratedClassifierCV(estimator, method="sigmoid")
    wrapper.calibrated_classifiers_ = [_CalibratedClassifier(estimator, [calibrator], classes=CLASSES,
                                                             method="sigmoid")]
    wrapper.classes_ = CLASSES
    return wrapper
