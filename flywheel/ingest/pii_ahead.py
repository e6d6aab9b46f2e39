"""PII fix-ups of canonical JSON lines, worked out while the file is read.

In redact mode the fast statement holds back every record whose fields the PII
prefilter matches, and the loader scrubs those afterwards, one detailed statement and
one Python pass at a time (see :func:`flywheel.ingest.loader._second_look`). Here the
reading thread scrubs them first, from its own parse of the line: the statement then
takes such a record with the scrubbed texts when its own parse gives the very texts
scrubbed (``was_*``), and nothing else in the record can hold PII (the prefilter does
not match the scrubbed record). Any other record is held back as before: the fix-ups
only spare work, they never decide what is stored.

Only the five text fields are scrubbed here (input, output, context, session and user
id); a record with messages is left to the detailed checks.
"""

from __future__ import annotations

import json

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from flywheel import pii
from flywheel.ingest.normalize import SCRUBBED_FIELDS as TEXT_FIELDS

# The columns a batch of lines gets: the texts as this reader parsed them, the scrubbed
# ones (NULL where the field holds nothing to scrub) and the PII types found (NULL: no
# fix-up for the record).
FIELDS = (
    [pa.field(f"was_{name}", pa.string()) for name in TEXT_FIELDS]
    + [pa.field(f"fix_{name}", pa.string()) for name in TEXT_FIELDS]
    + [pa.field("fix_pii", pa.list_(pa.string()))]
)


class FixUps:
    """The fix-ups of one file's blocks, given up when they do not pay.

    Each flagged line costs a JSON parse in Python, worth it where the detectors then
    find something (the record skips the detailed checks). A file whose flagged lines
    mostly hold nothing to scrub in their text fields (the prefilter matched elsewhere:
    the statement's own test takes those) gets NULL columns from the first
    :data:`TRIAL_LINES` flagged lines on, when fewer than :data:`WORTH` of them had
    fix-ups.
    """

    TRIAL_LINES = 2_000
    WORTH = 0.25

    def __init__(self):
        self.flagged = self.fixed = 0
        self.given_up = False

    def __call__(self, text: pa.Array, flagged: np.ndarray) -> list[pa.Array]:
        """Return the fix-up columns of a block (:func:`fix_ups`, or NULL columns)."""
        if self.given_up:
            return [pa.nulls(len(text), field.type) for field in FIELDS]
        columns = fix_ups(text, flagged)
        self.flagged += int(flagged.sum())
        self.fixed += len(columns[-1]) - columns[-1].null_count
        if self.flagged >= self.TRIAL_LINES and self.fixed < self.WORTH * self.flagged:
            self.given_up = True
        return columns


def fix_ups(text: pa.Array, flagged: np.ndarray) -> list[pa.Array]:
    """Return the fix-up columns (:data:`FIELDS`, in order) of a block of lines:
    values only on the ``flagged`` lines (those the whole-line prefilter matched) that
    parse as an object without messages, whose text fields are strings (or absent or
    null), and in which the detectors find something.
    """
    n = len(text)
    rows, values = [], []
    flagged_rows = np.flatnonzero(flagged)
    for i, line in zip(flagged_rows.tolist(), pc.take(text, pa.array(flagged_rows)).to_pylist()):
        fields = _text_fields(line)
        if fields is not None:
            rows.append(i)
            values.append(fields)
    columns: list[list] = [[] for _ in FIELDS]
    found_rows = []
    if values:
        # Only the fields the prefilter matches can hold what the detectors find (one
        # RE2 pass over the block's candidate fields: compiling the pattern costs more
        # than matching a few hundred texts).
        width = len(TEXT_FIELDS)
        maybe = pc.match_substring_regex(pa.array([value for fields in values for value in fields], pa.string()),
                                         pii.PREFILTER_PATTERN).to_pylist()
        for j, (row, fields) in enumerate(zip(rows, values)):
            scrubbed, found = [None] * width, set()
            for k, value in enumerate(fields):
                if maybe[j * width + k]:
                    redacted, kinds = pii.scan(value)
                    if kinds:
                        scrubbed[k] = redacted
                        found |= kinds
            if not found:
                continue
            found_rows.append(row)
            for k in range(width):
                columns[k].append(fields[k])
                columns[width + k].append(scrubbed[k])
            columns[-1].append(sorted(found))
    # Each column: its values on the rows that have fix-ups, NULL elsewhere.
    where = np.full(n, len(found_rows), dtype=np.int64)
    where[found_rows] = np.arange(len(found_rows))
    indices = pa.array(where)
    return [pc.take(pa.array(column + [None], field.type), indices) for column, field in zip(columns, FIELDS)]


def _text_fields(line: str | None) -> list[str | None] | None:
    """Return the text fields of a line that is a JSON object without messages (None for
    an absent or null field); None when the line is not such an object, or a field is
    not a string (or is one Arrow cannot hold)."""
    if line is None:
        return None
    try:
        record = json.loads(line)
    except (ValueError, RecursionError):
        return None
    if not isinstance(record, dict) or record.get("messages") is not None:
        return None
    fields = [record.get(name) for name in TEXT_FIELDS]
    for value in fields:
        if value is None:
            continue
        if not isinstance(value, str):
            return None
        try:
            value.encode("utf-8")
        except UnicodeEncodeError:  # a lone surrogate, escaped in the line
            return None
    return fields
