"""flywheel: the domain of the LLM data flywheel (no orchestration code in here)."""

__version__ = "0.1.0"
