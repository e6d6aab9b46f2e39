"""How far a judge prompt version agrees with people, and whether it is trusted.

For one criterion and prompt version, over the criterion's held-out consensus items:
Cohen's kappa between the judge's verdicts and the human values
(:func:`sklearn.metrics.cohen_kappa_score`), the true-positive rate (verdict true among
items people marked 1) and true-negative rate, with the confusion counts. Parse
failures and failed requests are counted but are not pairs.

A version is **trusted** when all hold: kappa is defined and at least
``FLYWHEEL_JUDGE_MIN_KAPPA``; at least ``FLYWHEEL_JUDGE_MIN_ITEMS`` items have a
verdict; and at most :data:`MAX_PARSE_FAILURE_SHARE` of the judged held-out items were
parse failures. Only verdicts of trusted versions are used downstream (the annotation
queue's judge/classifier disagreements, the prompt evaluation).
"""

from __future__ import annotations

import datetime as dt
import hashlib
import math
import warnings
from dataclasses import asdict, dataclass, field

import duckdb
from sklearn.metrics import cohen_kappa_score

from flywheel.judges.selection import Item
from flywheel.settings import Settings

MAX_PARSE_FAILURE_SHARE = 0.2


@dataclass
class Alignment:
    """One row of `judge_alignment` (plus why it is or is not trusted)."""

    criterion: str
    prompt_version: str
    kappa: float | None
    tpr: float | None
    tnr: float | None
    n: int
    n_pos: int
    n_neg: int
    parse_failures: int
    trusted: bool
    evaluated_at: dt.datetime
    tp: int = 0
    tn: int = 0
    fp: int = 0
    fn: int = 0
    errors: int = 0
    accuracy: float | None = None
    min_kappa: float = 0.0
    label_hash: str = ""
    few_shot_ids: list[str] = field(default_factory=list)
    why: str = ""

    def row(self) -> dict:
        values = asdict(self)
        values.pop("why")
        return values


def _rate(hits: int, total: int) -> float | None:
    return hits / total if total else None


def label_hash(items: list[Item]) -> str:
    """Return a hash (12 hex digits) of the held-out items and their human values."""
    text = "\n".join(f"{i.log_id}\t{i.value}" for i in sorted(items, key=lambda i: i.log_id))
    return hashlib.sha256(text.encode("utf-8")).hexdigest()[:12]


def measure(
    con: duckdb.DuckDBPyConnection,
    settings: Settings,
    *,
    criterion: str,
    prompt_version: str,
    holdout: list[Item],
    few_shot_ids: list[str] | tuple[str, ...] = (),
) -> Alignment:
    """Return the alignment of one prompt version on ``holdout`` (verdicts read from `judge_verdicts`)."""
    human = {i.log_id: int(i.value) for i in holdout if i.value is not None}
    rows = con.execute(
        """
        SELECT log_id, verdict, status FROM judge_verdicts
        WHERE criterion = ? AND prompt_version = ? AND log_id IN (SELECT unnest(?::VARCHAR[]))
        """,
        [criterion, prompt_version, sorted(human)],
    ).fetchall()
    pairs, parse_failures, errors = [], 0, 0
    for log_id, verdict, status in rows:
        if status == "parse_error":
            parse_failures += 1
        elif verdict is None:
            errors += 1
        else:
            pairs.append((human[log_id], int(verdict)))
    y_true = [h for h, _ in pairs]
    y_judge = [j for _, j in pairs]
    tp = sum(1 for h, j in pairs if h == 1 and j == 1)
    tn = sum(1 for h, j in pairs if h == 0 and j == 0)
    fp = sum(1 for h, j in pairs if h == 0 and j == 1)
    fn = sum(1 for h, j in pairs if h == 1 and j == 0)
    kappa = None
    if pairs:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", RuntimeWarning)
            value = float(cohen_kappa_score(y_true, y_judge, labels=[0, 1]))
        kappa = None if math.isnan(value) else value
    judged = len(pairs) + parse_failures
    why = []
    if kappa is None:
        why.append("kappa undefined" if pairs else "no verdicts on held-out items")
    elif kappa < settings.judge_min_kappa:
        why.append(f"kappa {kappa:.3f} < {settings.judge_min_kappa}")
    if len(pairs) < settings.judge_min_items:
        why.append(f"{len(pairs)} items < {settings.judge_min_items}")
    if judged and parse_failures / judged > MAX_PARSE_FAILURE_SHARE:
        why.append(f"parse failures {parse_failures}/{judged} > {MAX_PARSE_FAILURE_SHARE:.0%}")
    return Alignment(
        criterion=criterion, prompt_version=prompt_version, kappa=kappa,
        tpr=_rate(tp, tp + fn), tnr=_rate(tn, tn + fp), n=len(pairs),
        n_pos=sum(y_true), n_neg=len(y_true) - sum(y_true), parse_failures=parse_failures,
        trusted=not why, evaluated_at=dt.datetime.now(dt.UTC), tp=tp, tn=tn, fp=fp, fn=fn,
        errors=errors + (len(human) - len(rows)), accuracy=_rate(tp + tn, len(pairs)),
        min_kappa=settings.judge_min_kappa, label_hash=label_hash(holdout),
        few_shot_ids=list(few_shot_ids), why="; ".join(why) or "trusted",
    )


def write_alignment(con: duckdb.DuckDBPyConnection, alignment: Alignment) -> None:
    """Replace the `judge_alignment` row of this criterion and prompt version."""
    row = alignment.row()
    columns = list(row)
    con.execute("BEGIN TRANSACTION")
    try:
        con.execute(
            "DELETE FROM judge_alignment WHERE criterion = ? AND prompt_version = ?",
            [alignment.criterion, alignment.prompt_version],
        )
        con.execute(
            f"INSERT INTO judge_alignment ({', '.join(columns)}) VALUES ({', '.join('?' for _ in columns)})",
            [row[c] for c in columns],
        )
        con.execute("COMMIT")
    except Exception:
        con.execute("ROLLBACK")
        raise


def trusted_criteria(con: duckdb.DuckDBPyConnection) -> list[str]:
    """Return the criteria whose most recently evaluated prompt version is trusted, sorted."""
    rows = con.execute(
        """
        SELECT criterion FROM (
            SELECT criterion, trusted FROM judge_alignment
            QUALIFY row_number() OVER (PARTITION BY criterion ORDER BY evaluated_at DESC, prompt_version) = 1
        ) WHERE trusted ORDER BY criterion
        """
    ).fetchall()
    return [r[0] for r in rows]
