"""Helpers shared by the benchmarks: peak memory, a cache folder for generated inputs."""

from __future__ import annotations

import resource
import sys
from pathlib import Path

CACHE = Path(__file__).resolve().parent / ".cache"


def peak_rss_mb() -> float:
    """Return this process's peak resident memory so far, in MB."""
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return round(peak / (1024 * 1024) if sys.platform == "darwin" else peak / 1024, 1)


def say(message: str) -> None:
    """Progress goes to stderr, so the last line of stdout stays the JSON result."""
    print(message, file=sys.stderr, flush=True)
