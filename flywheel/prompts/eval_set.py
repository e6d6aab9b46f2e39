"""The fixed evaluation set of each prompt name.

The set is the ``settings.prompt_eval_size`` consensus-labelled logs of the prompt name
whose MD5 of ``log_id`` sorts first: a stable choice that does not depend on the order
rows arrived in. It is stored in ``prompt_eval_sets`` under an id (hash of its log ids)
and reused by every later evaluation, so champion and candidates of different nights
are compared on the same items. It is rebuilt only when it is smaller than the setting
asks and more labelled logs exist now, or when one of its logs is gone.

Logs of the evaluation set are never used as few-shot examples (a prompt must not carry
the answers it is evaluated on).
"""

from __future__ import annotations

import datetime as dt
import hashlib
from dataclasses import dataclass

import duckdb

from flywheel.settings import Settings

LABELS = ("hallucination", "relevance")


@dataclass(frozen=True)
class EvalSet:
    """One prompt name's evaluation set: its id, log ids (in order) and whether it is new."""

    eval_set_id: str
    prompt_name: str
    log_ids: tuple[str, ...]
    created: bool = False


def _labelled(con: duckdb.DuckDBPyConnection, prompt_name: str, limit: int) -> list[str]:
    rows = con.execute(
        """
        SELECT l.log_id FROM logs l
        WHERE l.prompt_name = ?
          AND EXISTS (SELECT 1 FROM consensus c WHERE c.log_id = l.log_id
                      AND c.label IN ('hallucination', 'relevance') AND c.value IS NOT NULL)
        ORDER BY md5(l.log_id), l.log_id
        LIMIT ?
        """,
        [prompt_name, limit],
    ).fetchall()
    return [r[0] for r in rows]


def _stored(con: duckdb.DuckDBPyConnection, prompt_name: str) -> tuple[str, list[str]] | None:
    row = con.execute(
        "SELECT eval_set_id FROM prompt_eval_sets WHERE prompt_name = ? ORDER BY created_at DESC LIMIT 1",
        [prompt_name],
    ).fetchone()
    if row is None:
        return None
    ids = con.execute(
        "SELECT log_id FROM prompt_eval_sets WHERE eval_set_id = ? AND prompt_name = ? ORDER BY position",
        [row[0], prompt_name],
    ).fetchall()
    return row[0], [r[0] for r in ids]


def evaluation_set(
    con: duckdb.DuckDBPyConnection, settings: Settings, prompt_name: str, *, grow: bool = True
) -> EvalSet:
    """Return the evaluation set of ``prompt_name``, creating (or, with ``grow``, growing)
    it when needed. The few-shot refresh grows it; the evaluation takes it as stored, so
    that a candidate's examples were chosen outside the very set it is evaluated on.

    Returns an empty set when the prompt name has no labelled logs yet.
    """
    size = settings.prompt_eval_size
    stored = _stored(con, prompt_name)
    if stored is not None and not grow:
        return EvalSet(stored[0], prompt_name, tuple(stored[1]))
    if stored is not None:
        set_id, ids = stored
        present = con.execute(
            "SELECT count(*) FROM logs WHERE log_id IN (SELECT unnest(?::VARCHAR[]))", [ids]
        ).fetchone()[0]
        full = len(ids) >= size
        can_grow = not full and len(_labelled(con, prompt_name, size)) > len(ids)
        if present == len(ids) and not can_grow and len(ids) <= size:
            return EvalSet(set_id, prompt_name, tuple(ids))
    ids = _labelled(con, prompt_name, size)
    if not ids:
        return EvalSet("", prompt_name, ())
    set_id = hashlib.sha256(("\n".join([prompt_name, *ids])).encode("utf-8")).hexdigest()[:16]
    if stored is not None and stored[0] == set_id:
        return EvalSet(set_id, prompt_name, tuple(ids))
    now = dt.datetime.now(dt.timezone.utc)
    con.execute("DELETE FROM prompt_eval_sets WHERE eval_set_id = ?", [set_id])
    con.executemany(
        "INSERT INTO prompt_eval_sets (eval_set_id, prompt_name, position, log_id, created_at) VALUES (?, ?, ?, ?, ?)",
        [(set_id, prompt_name, i, log_id, now) for i, log_id in enumerate(ids)],
    )
    return EvalSet(set_id, prompt_name, tuple(ids), created=True)
