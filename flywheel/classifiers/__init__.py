"""Hallucination and relevance classifiers: features and calibrated linear pipelines."""

from flywheel.classifiers.model import TASKS, build_features, build_pipeline

__all__ = ["TASKS", "build_features", "build_pipeline"]
