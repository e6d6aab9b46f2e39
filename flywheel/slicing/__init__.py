"""Slices of the logs where the application fails: by source, keyword and topic.

:func:`slice_day` runs everything for one day; the modules hold the parts:
:mod:`~flywheel.slicing.rules` (keyword rules), :mod:`~flywheel.slicing.config` (the
``slices.toml`` file), :mod:`~flywheel.slicing.signal` (what counts as a failure),
:mod:`~flywheel.slicing.membership` (``slice_membership``), :mod:`~flywheel.slicing.topics`
(the topic model), :mod:`~flywheel.slicing.mining` (candidate keywords),
:mod:`~flywheel.slicing.metrics` (``slice_metrics``, worst slices, drift) and
:mod:`~flywheel.slicing.stats` (intervals and tests).
"""

from flywheel.slicing.metrics import DriftRow, SliceRank, WorstSlices, drift, worst_slices
from flywheel.slicing.run import SliceReport, slice_day
from flywheel.slicing.signal import FailureSignal

__all__ = [
    "DriftRow", "FailureSignal", "SliceRank", "SliceReport", "WorstSlices", "drift", "slice_day",
    "worst_slices",
]
