"""Named points where a test can make the process die as ``kill -9`` would.

``FLYWHEEL_CRASH_AT=<name>`` makes :func:`crash_point` of that name end the process at
once with ``os._exit`` (no ``finally``, no rollback, no atexit): the tests kill a run at a
known point (e.g. inside the import's transaction) and check that running it again ends
with the same tables as a clean run. Unset (the default), it does nothing.
"""

from __future__ import annotations

import os

from flywheel.settings import Settings

POINTS = (
    "ingest:before_commit",   # a day's rows replaced and its duplicates moved, not committed
    "ingest:after_commit",    # a day committed, its checks not yet run
    "import:before_commit",   # a file's rows inserted, its transaction not committed
    "import:after_commit",    # a file committed, not yet moved to the archive
    "pending:before_commit",  # pending labels joined, not committed
)


def crash_point(settings: Settings, name: str) -> None:
    """End the process at once when ``FLYWHEEL_CRASH_AT`` names this point."""
    if settings.crash_at == name:
        os._exit(137)  # what a SIGKILL'd process reports: 128 + 9
