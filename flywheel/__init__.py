"""flywheel: the domain of the LLM data flywheel (no orchestration code in here)."""

from flywheel.memory import reuse_freed_memory

__version__ = "0.1.0"

# before any worker thread starts: chunks of work reuse the memory the last one freed
reuse_freed_memory()
