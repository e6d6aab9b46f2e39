"""The shape every log parser hands to the loader.

A parser turns one file into :class:`RawRecord` items, one per log record it found,
in file order. A record is either parsed (``record`` is a dict in the canonical shape
of DESIGN.md, not yet validated) or broken (``error`` says why, e.g. invalid JSON).
Validation of required fields, types and timestamps happens once, in the loader, for
every format alike.
"""

from __future__ import annotations

from dataclasses import dataclass

# Canonical log fields (DESIGN.md). Anything else a format carries goes to `metadata`.
REQUIRED_FIELDS = ("log_id", "ts", "input", "output")
OPTIONAL_FIELDS = (
    "source",
    "context",
    "messages",
    "model",
    "prompt_name",
    "prompt_version",
    "git_commit",
    "session_id",
    "user_id",
    "latency_ms",
    "prompt_tokens",
    "completion_tokens",
    "cost_usd",
    "feedback",
    "tags",
    "metadata",
)
CANONICAL_FIELDS = REQUIRED_FIELDS + OPTIONAL_FIELDS

# The largest plausible value of each numeric field: generous, so that only impossible
# values (a unit error, NaN, infinity) are rejected, record by record. The `value_ranges`
# check of a stored day tests the same bounds.
MAX_VALUES = {
    "latency_ms": 3_600_000,  # one hour
    "prompt_tokens": 2_000_000,
    "completion_tokens": 2_000_000,
    "cost_usd": 1_000.0,  # per call; more is a unit error (micro-dollars, cents)
}


class UnreadableFile(Exception):
    """A whole file cannot be read (unknown format, truncated gzip, ...).

    The message names the file and the cause; the loader reports it and goes on with
    the other files of the day.
    """

    def __init__(self, path, reason: str):
        super().__init__(f"{path}: {reason}")
        self.path = str(path)
        self.reason = reason


@dataclass(frozen=True, slots=True)
class RawRecord:
    """One record read from a file.

    Attributes:
        line: 1-based line number in the (decompressed) file where the record starts;
            for single-document JSON files, the line where the enclosing object starts
            (or the record's index + 1 when that is not known).
        raw: the record's original text (a JSON line, or the JSON of the span, trace or
            row), kept for ``rejected_logs``.
        record: the record in canonical shape (keys from ``CANONICAL_FIELDS``; unknown
            fields inside ``record["metadata"]``), or None when broken.
        error: why the record is broken (None when parsed).
        field: the field the error is about, when there is one.
    """

    line: int
    raw: str
    record: dict | None = None
    error: str | None = None
    field: str | None = None
