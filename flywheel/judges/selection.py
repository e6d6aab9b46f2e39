"""Which items a judge sees: the held-out set, the few-shot examples, the recent sample.

- **Held-out set** (per consensus label): the ``size`` consensus items (value 0 or 1, a
  log that exists) first in the order of MD5(label, log_id): the same items on every
  machine and every run while the consensus stays the same. Judges are aligned on it and
  never see it as an example.
- **Few-shot examples**: from the other consensus items, up to ``k // 2`` negatives and
  ``k - k // 2`` positives (balanced; a class with too few items is not filled up with
  the other), the clearest first (highest agreement, most annotators), then the most
  recently decided, then shortest. The reason shown is an annotator's comment when one
  agreed with the consensus and left one. Re-drawn every run from the current consensus.
- **Recent sample**: ``limit`` logs of the most recent day (a fixed pseudo-random draw,
  filled up from earlier days) that nobody labelled for the criterion's label, so that
  judge and classifier can be compared on new, unlabelled traffic; only those this judge
  version has not judged yet are asked.
"""

from __future__ import annotations

from dataclasses import dataclass

import duckdb

from flywheel.judges.prompt import Example

# Examples longer than this (input + output + context characters) come last.
SHORT_EXAMPLE_CHARS = 4000


@dataclass(frozen=True)
class Item:
    """A log to judge; ``value`` is the human consensus (None when unlabelled)."""

    log_id: str
    input: str
    output: str
    context: str | None
    value: int | None = None


def holdout_items(con: duckdb.DuckDBPyConnection, *, label: str, size: int) -> list[Item]:
    """Return the held-out consensus items of ``label`` with their human values."""
    rows = con.execute(
        """
        SELECT c.log_id, l.input, l.output, l.context, c.value
        FROM consensus c JOIN logs l USING (log_id)
        WHERE c.label = ? AND c.value IS NOT NULL
        QUALIFY row_number() OVER (PARTITION BY c.log_id ORDER BY l.ts) = 1
        ORDER BY md5(c.label || ':' || c.log_id), c.log_id
        LIMIT ?
        """,
        [label, size],
    ).fetchall()
    return [Item(*row) for row in rows]


def few_shot_examples(
    con: duckdb.DuckDBPyConnection, *, label: str, k: int, exclude: set[str]
) -> list[Example]:
    """Return up to ``k`` balanced few-shot examples of ``label``, none of ``exclude``."""
    if k <= 0:
        return []
    wanted = {1: k - k // 2, 0: k // 2}
    rows = con.execute(
        f"""
        WITH candidates AS (
            SELECT c.log_id, c.value, c.agreement, c.n_annotators, c.updated_at,
                   l.input, l.output, l.context,
                   length(l.input) + length(l.output) + coalesce(length(l.context), 0) AS chars
            FROM consensus c JOIN logs l USING (log_id)
            WHERE c.label = ? AND c.value IS NOT NULL
              AND c.log_id NOT IN (SELECT unnest(?::VARCHAR[]))
            QUALIFY row_number() OVER (PARTITION BY c.log_id ORDER BY l.ts) = 1
        ),
        ranked AS (
            SELECT *, row_number() OVER (
                PARTITION BY value
                ORDER BY chars > {SHORT_EXAMPLE_CHARS}, agreement DESC, n_annotators DESC,
                         updated_at DESC, chars, md5(log_id)
            ) AS pick
            FROM candidates
        )
        SELECT r.log_id, r.input, r.output, r.context, r.value,
               (SELECT a.comment FROM annotations a
                WHERE a.log_id = r.log_id AND a.label = ? AND a.value = r.value
                  AND a.comment IS NOT NULL AND trim(a.comment) <> ''
                ORDER BY a.created_at DESC NULLS LAST, a.annotator LIMIT 1) AS comment
        FROM ranked r
        WHERE (r.value = 1 AND r.pick <= ?) OR (r.value = 0 AND r.pick <= ?)
        ORDER BY md5(r.log_id || ':shot')
        """,
        [label, sorted(exclude), label, wanted[1], wanted[0]],
    ).fetchall()
    examples = []
    for log_id, input_, output, context, value, comment in rows:
        word = "yes" if value == 1 else "no"
        reason = comment.strip() if comment else f"People who reviewed this answer said {word}."
        examples.append(Example(log_id, input_, output, context, bool(value), reason[:500]))
    return examples


def recent_items(
    con: duckdb.DuckDBPyConnection, *, criterion: str, label: str, prompt_version: str, limit: int,
    exclude: set[str],
) -> list[Item]:
    """Return the recent sample's logs that this prompt version has not judged yet.

    The sample is ``limit`` unlabelled logs of the most recent day, drawn in MD5 order of
    the log id (a fixed pseudo-random draw over the whole day, not its last hours), filled
    up from the days before when the day has fewer. The same data give the same sample, so
    a re-run asks nothing new; a new day moves the sample to the new day.
    """
    if limit <= 0:
        return []
    rows = con.execute(
        """
        WITH sample AS (
            SELECT l.log_id, l.input, l.output, l.context
            FROM logs l
            WHERE NOT EXISTS (SELECT 1 FROM consensus c WHERE c.log_id = l.log_id AND c.label = ?)
              AND l.log_id NOT IN (SELECT unnest(?::VARCHAR[]))
            QUALIFY row_number() OVER (PARTITION BY l.log_id ORDER BY l.ts) = 1
            ORDER BY l.day DESC, md5(l.log_id), l.log_id
            LIMIT ?
        )
        SELECT s.* FROM sample s
        WHERE NOT EXISTS (SELECT 1 FROM judge_verdicts j
                          WHERE j.log_id = s.log_id AND j.criterion = ? AND j.prompt_version = ?
                            AND j.status IN ('ok', 'parse_error'))
        ORDER BY s.log_id
        """,
        [label, sorted(exclude), limit, criterion, prompt_version],
    ).fetchall()
    return [Item(*row) for row in rows]


def judged_ids(con: duckdb.DuckDBPyConnection, *, criterion: str, prompt_version: str, log_ids: list[str]) -> set[str]:
    """Return which of ``log_ids`` already have a verdict or parse failure of this version."""
    if not log_ids:
        return set()
    rows = con.execute(
        """
        SELECT DISTINCT log_id FROM judge_verdicts
        WHERE criterion = ? AND prompt_version = ? AND status IN ('ok', 'parse_error')
          AND log_id IN (SELECT unnest(?::VARCHAR[]))
        """,
        [criterion, prompt_version, log_ids],
    ).fetchall()
    return {r[0] for r in rows}
