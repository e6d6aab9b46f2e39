"""The annotation queue: each night, the most useful items of the day for people to label.

:func:`build_queue` picks up to ``size`` (default :data:`DEFAULT_QUEUE_SIZE`) logs of one
day and replaces that day's rows of `annotation_queue`. It mixes four strategies, with
shares that can be set per call (default :data:`DEFAULT_SHARES`):

================  ==========================================================================
strategy          items
================  ==========================================================================
``worst_slice``   members (`slice_membership`) of the day's top :data:`WORST_SLICES_TOP`
                  `worst_slices`, drawn round-robin from the slices in rank order
``uncertain``     items whose current classifier score (`log_scores`, the champion model
                  when `models` names one; trusted scores only) is closest to 0.5, over
                  both tasks
``disagreement``  items where the classifier (score above / below 0.5) and an LLM judge
                  verdict (`judge_verdicts(log_id, criterion, verdict)`) disagree, the
                  widest gaps first; only verdicts of trusted judge prompt versions
                  (`judge_alignment.trusted`) count
``random``        a uniform sample of the day's eligible items, so that rates can be
                  estimated without the bias of the other strategies
================  ==========================================================================

Eligible items are the day's `logs` that are neither labelled (any row in `annotations`)
nor queued on another day (`annotation_queue`): an item is never queued twice, never
after it has been labelled. Re-running a day replaces that day's queue with the same
picks (deterministic for a seed; items keep their first ``queued_at``): items of the
day's own earlier queue stay eligible even when their labels have come back meanwhile,
so that a re-run after labelling still gives the same queue (and keeps the record of
why those items were labelled).

Shares: a strategy whose tables are missing or empty for the day (no `worst_slices`,
no `log_scores`, no `judge_verdicts`) is skipped, and its share goes to the other
strategies in proportion to their shares, so the random share never goes below its
setting. The random share is rounded up (``ceil(size * share)``); the rest is split among
the targeted strategies by largest remainder. The random sample is drawn first, from all
eligible items; the targeted strategies then pick in the order ``disagreement``,
``uncertain``, ``worst_slice``, each skipping items already picked. When a targeted
strategy has fewer candidates than its quota, the rest of its quota is filled with more
random items (``detail.top_up`` is true for them, so that estimators can leave them out).

Each row records why it was chosen: ``strategy``, a readable ``reason`` (the slice, the
score, the judge's verdict) and the same as JSON in ``detail``. ``priority`` is the
order to label in (1 first): the strategies take turns, so a queue labelled halfway
still has items of every strategy.

Randomness is a hash (MD5) of ``seed``, the day, and the log id: the same seed, day and
data give the same queue on every machine, and large days are sampled inside DuckDB.
"""

from __future__ import annotations

import datetime as dt
import json
import math
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

import duckdb
import pyarrow as pa

from flywheel import store
from flywheel.annotations.values import LABELS, ValueMapping
from flywheel.settings import Settings

STRATEGIES: tuple[str, ...] = ("worst_slice", "uncertain", "disagreement", "random")
"""The strategies of the queue, as written to ``annotation_queue.strategy``."""

DEFAULT_QUEUE_SIZE = 50
"""Items queued per day unless ``size`` says otherwise."""

DEFAULT_SHARES: dict[str, float] = {"worst_slice": 0.3, "uncertain": 0.3, "disagreement": 0.2, "random": 0.2}
"""The mix of strategies unless ``shares`` says otherwise (normalized to sum to 1)."""

WORST_SLICES_TOP = 5
"""How many of the day's worst slices (by rank) the ``worst_slice`` strategy draws from."""

PICK_ORDER: tuple[str, ...] = ("disagreement", "uncertain", "worst_slice")
"""The order in which the targeted strategies pick (after the random sample)."""

PRIORITY_ORDER: tuple[str, ...] = ("disagreement", "uncertain", "worst_slice", "random")
"""The order in which strategies take turns in ``priority``."""

JUDGE_VERDICT_WORDS: dict[str, dict[str, int]] = {
    "pass": {"hallucination": 0, "relevance": 1},
    "passed": {"hallucination": 0, "relevance": 1},
    "fail": {"hallucination": 1, "relevance": 0},
    "failed": {"hallucination": 1, "relevance": 0},
}
"""Judge verdicts that mean a value only together with the criterion. Other verdicts
(``yes``/``no``, ``1``/``0``, ``hallucinated``, ``relevant`` ...) map like annotation
values (:mod:`flywheel.annotations.values`, including the home's mapping file)."""


_QUEUE_SCHEMA = pa.schema([
    ("day", pa.date32()),
    ("log_id", pa.string()),
    ("strategy", pa.string()),
    ("reason", pa.string()),
    ("priority", pa.int32()),
    ("queued_at", pa.timestamp("us", tz="UTC")),
    ("detail", pa.string()),
    ("seed", pa.int64()),
])


class QueueError(ValueError):
    """Arguments of :func:`build_queue` that cannot be used (size, shares, day)."""


@dataclass
class QueueReport:
    """What one :func:`build_queue` did; the `annotation_queue` asset shows it as metadata.

    ``shares`` are the requested shares (normalized), ``effective_shares`` after skipped
    strategies were redistributed, ``quotas`` the items planned per strategy and
    ``counts`` the items queued per strategy (random top-ups included in ``random``,
    and counted again in ``top_ups``). ``skipped`` says why a strategy was skipped.
    """

    day: str
    size: int
    seed: int
    shares: dict[str, float] = field(default_factory=dict)
    effective_shares: dict[str, float] = field(default_factory=dict)
    quotas: dict[str, int] = field(default_factory=dict)
    counts: dict[str, int] = field(default_factory=dict)
    skipped: dict[str, str] = field(default_factory=dict)
    shortfall: dict[str, int] = field(default_factory=dict)
    top_ups: int = 0
    day_logs: int = 0
    labelled: int = 0
    queued_elsewhere: int = 0
    eligible: int = 0
    replaced: int = 0

    @property
    def queued(self) -> int:
        """Return the number of items queued for the day."""
        return sum(self.counts.values())

    def summary(self) -> dict[str, Any]:
        """Return the headline numbers as plain values (for asset metadata)."""
        return {
            "day": self.day, "size": self.size, "seed": self.seed, "queued": self.queued,
            "counts": dict(self.counts), "quotas": dict(self.quotas),
            "shares": {k: round(v, 4) for k, v in self.shares.items()},
            "effective_shares": {k: round(v, 4) for k, v in self.effective_shares.items()},
            "skipped": dict(self.skipped), "shortfall": dict(self.shortfall), "top_ups": self.top_ups,
            "day_logs": self.day_logs, "labelled": self.labelled,
            "queued_elsewhere": self.queued_elsewhere, "eligible": self.eligible,
            "replaced": self.replaced,
        }

    def markdown(self) -> str:
        """Return a markdown table of the strategies: share, quota, queued, note."""
        lines = [
            f"Queue of {self.day}: {self.queued} of {self.size} items from {self.eligible} eligible "
            f"({self.day_logs} logs, {self.labelled} already labelled, {self.queued_elsewhere} queued "
            "on other days).",
            "",
            "| strategy | share | effective share | quota | queued | note |",
            "|---|---:|---:|---:|---:|---|",
        ]
        for name in STRATEGIES:
            note = self.skipped.get(name, "")
            if self.shortfall.get(name):
                note = f"{self.shortfall[name]} short, filled with random items"
            if name == "random" and self.top_ups:
                note = f"{self.top_ups} top-ups included"
            lines.append(
                f"| {name} | {self.shares.get(name, 0.0):.2f} | {self.effective_shares.get(name, 0.0):.2f} "
                f"| {self.quotas.get(name, 0)} | {self.counts.get(name, 0)} | {note.replace('|', '/')} |"
            )
        return "\n".join(lines)


@dataclass
class _Pick:
    log_id: str
    strategy: str
    reason: str
    detail: dict[str, Any]
    group: Any = None  # candidates of one group take turns with other groups (worst slices)


# ---------------------------------------------------------------------------------------
# Shares and quotas (no database)
# ---------------------------------------------------------------------------------------


def normalize_shares(shares: Mapping[str, float] | None) -> dict[str, float]:
    """Return the shares of every strategy, summing to 1.

    ``None`` means :data:`DEFAULT_SHARES`. A mapping given replaces the defaults as a
    whole: strategies it leaves out get share 0. Raises :class:`QueueError` for unknown
    strategies, negative or non-numeric shares, and shares that sum to 0.
    """
    raw = dict(DEFAULT_SHARES if shares is None else shares)
    unknown = set(raw) - set(STRATEGIES)
    if unknown:
        raise QueueError(f"unknown strategies {sorted(unknown)}; known: {', '.join(STRATEGIES)}")
    values: dict[str, float] = {}
    for name in STRATEGIES:
        value = raw.get(name, 0.0)
        if isinstance(value, bool) or not isinstance(value, (int, float)) or math.isnan(value) or value < 0:
            raise QueueError(f"share of {name} must be a number >= 0, not {value!r}")
        values[name] = float(value)
    total = sum(values.values())
    if total <= 0:
        raise QueueError("the shares sum to 0: give at least one strategy a share")
    return {name: value / total for name, value in values.items()}


def allocate(
    size: int, shares: Mapping[str, float], available: Mapping[str, bool]
) -> tuple[dict[str, float], dict[str, int]]:
    """Return (effective shares, quotas) of ``size`` items among the available strategies.

    ``shares`` are normalized shares (:func:`normalize_shares`); ``available`` says which
    targeted strategies have candidates (random always has). Shares of unavailable
    strategies go to the others in proportion; when no strategy with a share is
    available, random takes everything. Random's quota is ``ceil(size * share)``, the
    rest is split by largest remainder (ties in :data:`STRATEGIES` order).
    """
    active = [s for s in STRATEGIES if shares.get(s, 0.0) > 0 and (s == "random" or available.get(s, False))]
    if not active:
        active = ["random"]
        effective = {s: (1.0 if s == "random" else 0.0) for s in STRATEGIES}
    else:
        total = sum(shares[s] for s in active)
        effective = {s: (shares[s] / total if s in active else 0.0) for s in STRATEGIES}
    quotas = {s: 0 for s in STRATEGIES}
    quotas["random"] = min(size, math.ceil(size * effective["random"] - 1e-9))
    rest = size - quotas["random"]
    targeted = [s for s in active if s != "random"]
    weight = sum(effective[s] for s in targeted)
    if targeted and rest > 0 and weight > 0:
        exact = {s: rest * effective[s] / weight for s in targeted}
        for s in targeted:
            quotas[s] = math.floor(exact[s] + 1e-9)
        left = rest - sum(quotas[s] for s in targeted)
        by_remainder = sorted(targeted, key=lambda s: (-(exact[s] - quotas[s]), STRATEGIES.index(s)))
        for s in by_remainder[:left]:
            quotas[s] += 1
    elif rest > 0:
        quotas["random"] = size
    return effective, quotas


# ---------------------------------------------------------------------------------------
# The queue of one day
# ---------------------------------------------------------------------------------------


def build_queue(
    con: duckdb.DuckDBPyConnection,
    settings: Settings,
    day: str,
    *,
    size: int | None = None,
    shares: Mapping[str, float] | None = None,
    seed: int = 0,
) -> QueueReport:
    """Pick the items of ``day`` (``YYYY-MM-DD``) to label and replace that day's queue.

    ``size`` defaults to :data:`DEFAULT_QUEUE_SIZE`, ``shares`` to :data:`DEFAULT_SHARES`
    (see :func:`normalize_shares`); ``seed`` makes the random draws reproducible. Returns
    a :class:`QueueReport`. Fewer than ``size`` items are queued only when the day has
    fewer eligible items.
    """
    day = queue_day(day)
    size = DEFAULT_QUEUE_SIZE if size is None else size
    if isinstance(size, bool) or not isinstance(size, int) or size < 0:
        raise QueueError(f"size must be an integer >= 0, not {size!r}")
    normalized = normalize_shares(shares)
    report = QueueReport(day=day, size=size, seed=int(seed), shares=normalized)
    key = f"{int(seed)}:{day}:"

    try:
        _eligible(con, day, key, report)
        candidates: dict[str, list[_Pick]] = {}
        available: dict[str, bool] = {}
        has_scores = _scores(con)
        for strategy in PICK_ORDER:
            if normalized[strategy] <= 0:
                available[strategy] = False
                continue
            limit = size * 2 + 1  # enough even when other strategies took some of them
            if strategy == "worst_slice":
                picks, why = _worst_slice(con, day, limit)
            elif strategy == "uncertain":
                picks, why = _uncertain(con, limit) if has_scores else ([], _no_scores(con))
            else:
                picks, why = _disagreement(con, settings, limit) if has_scores else ([], _no_scores(con))
            candidates[strategy] = picks
            available[strategy] = bool(picks)
            if not picks:
                report.skipped[strategy] = why
        report.effective_shares, report.quotas = allocate(size, normalized, available)
        picked = _pick(con, report, candidates)
    finally:
        for table in ("_queue_eligible", "_queue_scores"):
            con.execute(f"DROP TABLE IF EXISTS {table}")
    _store(con, day, int(seed), picked, report)
    return report


def queue_day(day: Any) -> str:
    """Return a day (``YYYY-MM-DD`` text or a date) as ``YYYY-MM-DD``; raise :class:`QueueError`."""
    if isinstance(day, dt.datetime):
        day = day.date()
    if isinstance(day, dt.date):
        return day.isoformat()
    try:
        return dt.date.fromisoformat(str(day)).isoformat()
    except ValueError:
        raise QueueError(f"day must be a date YYYY-MM-DD, not {day!r}") from None


def _eligible(con, day: str, key: str, report: QueueReport) -> None:
    """Create ``_queue_eligible(log_id, draw)``: the day's logs not labelled nor queued elsewhere."""
    con.execute(
        """
        CREATE OR REPLACE TEMP TABLE _queue_eligible AS
        WITH day_logs AS (SELECT DISTINCT log_id FROM logs WHERE day = $day),
        flagged AS (
            SELECT d.log_id,
                   EXISTS (SELECT 1 FROM annotations a WHERE a.log_id = d.log_id)
                   AND NOT EXISTS (SELECT 1 FROM annotation_queue q
                                   WHERE q.log_id = d.log_id AND q.day = $day) AS labelled,
                   EXISTS (SELECT 1 FROM annotation_queue q
                           WHERE q.log_id = d.log_id AND q.day <> $day) AS queued_elsewhere
            FROM day_logs d
        )
        SELECT log_id, labelled, queued_elsewhere, md5($key || log_id) AS draw FROM flagged
        """,
        {"day": day, "key": key},
    )
    report.day_logs, report.labelled, report.queued_elsewhere = con.execute(
        "SELECT count(*), count_if(labelled), count_if(queued_elsewhere AND NOT labelled) FROM _queue_eligible"
    ).fetchone()
    con.execute("DELETE FROM _queue_eligible WHERE labelled OR queued_elsewhere")
    report.eligible = con.execute("SELECT count(*) FROM _queue_eligible").fetchone()[0]


def _columns(con, table: str) -> set[str]:
    if not store.table_exists(con, table):
        return set()
    return {r[0] for r in con.execute(
        "SELECT column_name FROM information_schema.columns WHERE table_name = ?", [table]).fetchall()}


def current_scores_sql(con: duckdb.DuckDBPyConnection, ids: str) -> str | None:
    """Return a query of the current classifier scores of the logs in relation ``ids``.

    One row ``(log_id, task, model_version, score)`` per log and task of :data:`LABELS`:
    the champion model's score when `models` names a champion for the task, else the
    score of the greatest model_version. Scores flagged not trusted (``trusted`` false:
    the model fails the trust floor for the log's source) are left out; NULL counts as
    trusted. Returns None when there is no usable `log_scores` table. ``ids`` is a table
    or subquery with a ``log_id`` column.
    """
    columns = _columns(con, "log_scores")
    if not {"log_id", "task", "model_version", "score"} <= columns:
        return None
    trusted_filter = " AND coalesce(s.trusted, true)" if "trusted" in columns else ""
    champion_filter = ""
    if {"version", "task", "status"} <= _columns(con, "models"):
        champion_filter = """
            AND (NOT EXISTS (SELECT 1 FROM models m WHERE m.status = 'champion' AND m.task = s.task)
                 OR s.model_version IN (SELECT m.version FROM models m
                                        WHERE m.status = 'champion' AND m.task = s.task))"""
    tasks = ", ".join(f"'{t}'" for t in LABELS)
    return f"""
        SELECT s.log_id, s.task, s.model_version::VARCHAR AS model_version, s.score::DOUBLE AS score
        FROM log_scores s SEMI JOIN {ids} i ON i.log_id = s.log_id
        WHERE s.task IN ({tasks}) AND s.score IS NOT NULL AND NOT isnan(s.score::DOUBLE){trusted_filter}{champion_filter}
        QUALIFY row_number() OVER (PARTITION BY s.log_id, s.task
                                   ORDER BY s.model_version::VARCHAR DESC, s.score) = 1"""


def _scores(con) -> bool:
    """Create ``_queue_scores`` for the eligible items; return whether any exist."""
    sql = current_scores_sql(con, "_queue_eligible")
    if sql is None:
        return False
    con.execute(f"CREATE OR REPLACE TEMP TABLE _queue_scores AS {sql}")
    return con.execute("SELECT count(*) FROM _queue_scores").fetchone()[0] > 0


def _no_scores(con) -> str:
    if not store.table_exists(con, "log_scores"):
        return "no log_scores table (no classifier scores yet)"
    if not {"log_id", "task", "model_version", "score"} <= _columns(con, "log_scores"):
        return "log_scores lacks log_id, task, model_version or score"
    if "trusted" in _columns(con, "log_scores") and con.execute(
            "SELECT count(*) FROM log_scores s SEMI JOIN _queue_eligible e USING (log_id) "
            "WHERE s.trusted = false").fetchone()[0]:
        return ("the classifier scores of the day's eligible items are not trusted (below the trust floor: "
                "see `flywheel status`)")
    return "no classifier scores in log_scores for the day's eligible items"


def _worst_slice(con, day: str, limit: int) -> tuple[list[_Pick], str]:
    if not store.table_exists(con, "worst_slices") or not store.table_exists(con, "slice_membership"):
        return [], "no worst_slices / slice_membership tables"
    top = con.execute(
        "SELECT count(*) FROM worst_slices WHERE day = ?", [day]).fetchone()[0]
    if not top:
        return [], f"no worst slices for {day}"
    rows = con.execute(
        """
        WITH top AS (
            SELECT rank, slice_type, slice_value, label, failure_rate, lift, n_signal, failures
            FROM worst_slices WHERE day = $day
            ORDER BY rank, slice_type, slice_value LIMIT $top
        ), members AS (
            SELECT t.*, m.log_id, e.draw
            FROM top t
            JOIN (SELECT DISTINCT log_id, slice_type, slice_value FROM slice_membership WHERE day = $day) m
              ON m.slice_type = t.slice_type AND m.slice_value = t.slice_value
            JOIN _queue_eligible e ON e.log_id = m.log_id
        ), ranked AS (
            SELECT *, row_number() OVER (PARTITION BY rank, slice_type, slice_value ORDER BY draw, log_id) AS nth
            FROM members
        )
        SELECT log_id, rank, slice_type, slice_value, label, failure_rate, lift, n_signal, failures
        FROM ranked
        ORDER BY nth, rank, slice_type, slice_value
        LIMIT $limit * $top
        """,
        {"day": day, "top": WORST_SLICES_TOP, "limit": limit},
    ).fetchall()
    picks, seen = [], set()
    for log_id, rank, slice_type, slice_value, label, rate, lift, n_signal, failures in rows:
        if log_id in seen:
            continue
        seen.add(log_id)
        reason = f"worst slice #{rank}: {slice_type}={slice_value}"
        facts = []
        if rate is not None:
            facts.append(f"failure rate {rate:.0%}" + (f" of {n_signal}" if n_signal is not None else ""))
        if lift is not None and not math.isnan(lift):
            facts.append(f"lift {lift:.1f}x")
        if label:
            facts.append(f"signal {label}")
        if facts:
            reason += f" ({', '.join(facts)})"
        detail = {"rank": rank, "slice_type": slice_type, "slice_value": slice_value, "label": label,
                  "failure_rate": _num(rate), "lift": _num(lift), "n_signal": n_signal, "failures": failures}
        picks.append(_Pick(log_id, "worst_slice", reason, detail, group=(rank, slice_type, slice_value)))
    if not picks:
        return [], f"no unlabelled, unqueued items in the top {WORST_SLICES_TOP} worst slices of {day}"
    return picks, ""


def _uncertain(con, limit: int) -> tuple[list[_Pick], str]:
    rows = con.execute(
        """
        SELECT s.log_id, s.task, s.model_version, s.score, abs(s.score - 0.5) AS margin
        FROM _queue_scores s JOIN _queue_eligible e USING (log_id)
        QUALIFY row_number() OVER (PARTITION BY s.log_id ORDER BY abs(s.score - 0.5), s.task) = 1
        ORDER BY margin, e.draw, s.log_id
        LIMIT ?
        """,
        [limit],
    ).fetchall()
    picks = [
        _Pick(log_id, "uncertain", f"uncertain: {task} score {score:.3f} ({model_version})",
              {"task": task, "score": score, "model_version": model_version, "margin": margin})
        for log_id, task, model_version, score, margin in rows
    ]
    return picks, ("" if picks else "no classifier scores for the day's eligible items")


def _disagreement(con, settings: Settings, limit: int) -> tuple[list[_Pick], str]:
    if not {"log_id", "criterion", "verdict", "prompt_version"} <= _columns(con, "judge_verdicts"):
        if store.table_exists(con, "judge_verdicts"):
            return [], "judge_verdicts lacks log_id, criterion, verdict or prompt_version"
        return [], "no judge_verdicts table (no LLM judge verdicts yet)"
    if not store.table_exists(con, "judge_alignment"):
        return [], "no judge_alignment table (no judge is trusted yet)"
    # Only verdicts of judge prompt versions that agree with people (judge_alignment.trusted).
    con.execute(
        "CREATE OR REPLACE TEMP VIEW _queue_trusted_verdicts AS SELECT j.* FROM judge_verdicts j "
        "SEMI JOIN judge_alignment a ON a.criterion = j.criterion AND a.prompt_version = j.prompt_version "
        "AND a.trusted"
    )
    pairs = con.execute(
        """
        SELECT DISTINCT j.criterion::VARCHAR, j.verdict::VARCHAR
        FROM _queue_trusted_verdicts j SEMI JOIN _queue_eligible e ON e.log_id = j.log_id
        WHERE j.criterion IS NOT NULL AND j.verdict IS NOT NULL
        """
    ).fetchall()
    if not pairs:
        return [], "no judge_verdicts of trusted judges (judge_alignment.trusted) for the day's eligible items"
    mapping = ValueMapping.load(settings)
    meanings = []
    for criterion, verdict in pairs:
        label = mapping.label_for("canonical", criterion)
        if label is None:
            continue
        word = verdict.strip().casefold()
        value = JUDGE_VERDICT_WORDS.get(word, {}).get(label)
        if value is None:
            value = mapping.value_for("canonical", label, verdict)
        if value is not None:
            meanings.append((criterion, verdict, label, value))
    if not meanings:
        return [], "no judge verdict maps to hallucination/relevance 0/1"
    con.execute("CREATE OR REPLACE TEMP TABLE _queue_verdicts (criterion VARCHAR, verdict VARCHAR, "
                "label VARCHAR, value INTEGER)")
    con.executemany("INSERT INTO _queue_verdicts VALUES (?, ?, ?, ?)", meanings)
    try:
        rows = con.execute(
            """
            SELECT j.log_id, m.label, j.criterion::VARCHAR, j.verdict::VARCHAR, m.value,
                   s.score, s.model_version, abs(s.score - m.value) AS gap
            FROM _queue_trusted_verdicts j
            JOIN _queue_eligible e ON e.log_id = j.log_id
            JOIN _queue_verdicts m ON m.criterion = j.criterion::VARCHAR AND m.verdict = j.verdict::VARCHAR
            JOIN _queue_scores s ON s.log_id = j.log_id AND s.task = m.label
            WHERE (s.score > 0.5 AND m.value = 0) OR (s.score < 0.5 AND m.value = 1)
            QUALIFY row_number() OVER (PARTITION BY j.log_id
                                       ORDER BY abs(s.score - m.value) DESC, m.label, j.criterion::VARCHAR) = 1
            ORDER BY gap DESC, e.draw, j.log_id
            LIMIT ?
            """,
            [limit],
        ).fetchall()
    finally:
        con.execute("DROP TABLE IF EXISTS _queue_verdicts")
    picks = [
        _Pick(log_id, "disagreement",
              f"disagreement on {label}: classifier {score:.3f} ({model_version}) vs judge {criterion}={verdict!r}",
              {"task": label, "score": score, "model_version": model_version, "criterion": criterion,
               "verdict": verdict, "judge_value": value, "gap": gap})
        for log_id, label, criterion, verdict, value, score, model_version, gap in rows
    ]
    return picks, ("" if picks else "classifier and judges agree on every eligible item")


def _num(value: Any) -> float | None:
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return None
    return float(value)


def _pick(con, report: QueueReport, candidates: dict[str, list[_Pick]]) -> list[_Pick]:
    """Draw the random sample, then the targeted strategies, then random top-ups."""
    want_random = report.quotas.get("random", 0)
    total_quota = sum(report.quotas.values())
    pool = report.eligible
    reason = f"random: uniform sample of the {pool} unlabelled, unqueued logs of {report.day}"
    random_rows = con.execute(
        "SELECT log_id FROM _queue_eligible ORDER BY draw, log_id LIMIT ?", [total_quota]).fetchall()
    random_ids = [r[0] for r in random_rows]
    picked: list[_Pick] = [
        _Pick(log_id, "random", reason, {"pool": pool, "top_up": False}) for log_id in random_ids[:want_random]
    ]
    taken = {p.log_id for p in picked}
    for strategy in PICK_ORDER:
        quota = report.quotas.get(strategy, 0)
        got = 0
        for pick in _turns(candidates.get(strategy, []), taken):
            if got >= quota:
                break
            picked.append(pick)
            taken.add(pick.log_id)
            got += 1
        if got < quota:
            report.shortfall[strategy] = quota - got
    missing = sum(report.shortfall.values())
    if missing:
        short = ", ".join(sorted(report.shortfall))
        top_up_reason = f"random (top-up: fewer {short} candidates than the quota)"
        rest = [log_id for log_id in random_ids if log_id not in taken]
        if len(rest) < missing:  # the first draw was used up by targeted picks: draw on
            rest = [r[0] for r in con.execute(
                "SELECT log_id FROM _queue_eligible ORDER BY draw, log_id").fetchall() if r[0] not in taken]
        for log_id in rest[:missing]:
            picked.append(_Pick(log_id, "random", top_up_reason,
                                {"pool": pool, "top_up": True, "for": sorted(report.shortfall)}))
            taken.add(log_id)
            report.top_ups += 1
    report.counts = {s: sum(1 for p in picked if p.strategy == s) for s in STRATEGIES}
    return picked


def _turns(candidates: list[_Pick], taken: set[str]):
    """Yield the candidates not taken yet, groups (``_Pick.group``) taking turns.

    Each group keeps its own order; a group whose next items were taken by another
    strategy does not lose its turn (the worst slices get even shares of the picks).
    """
    groups: dict[Any, list[_Pick]] = {}
    for pick in candidates:
        groups.setdefault(pick.group, []).append(pick)
    queues = [iter(g) for g in groups.values()]
    seen: set[str] = set()
    while queues:
        alive = []
        for queue in queues:
            for pick in queue:
                if pick.log_id not in taken and pick.log_id not in seen:
                    seen.add(pick.log_id)
                    yield pick
                    alive.append(queue)
                    break
        queues = alive


def _prioritized(picked: list[_Pick]) -> list[_Pick]:
    """Return the picks with the strategies taking turns (each strategy in its own order)."""
    queues = {s: [p for p in picked if p.strategy == s] for s in PRIORITY_ORDER}
    ordered: list[_Pick] = []
    while any(queues.values()):
        for s in PRIORITY_ORDER:
            if queues[s]:
                ordered.append(queues[s].pop(0))
    return ordered


def _store(con, day: str, seed: int, picked: list[_Pick], report: QueueReport) -> None:
    """Replace the day's rows of `annotation_queue` with ``picked`` in one transaction."""
    now = dt.datetime.now(dt.timezone.utc)
    rows = [
        (day, p.log_id, p.strategy, p.reason, priority, json.dumps(p.detail, sort_keys=True, default=str), seed)
        for priority, p in enumerate(_prioritized(picked), start=1)
    ]
    con.execute("BEGIN TRANSACTION")
    try:
        previous = dict(con.execute(
            "SELECT log_id || chr(31) || strategy, min(queued_at) FROM annotation_queue WHERE day = ? GROUP BY 1",
            [day]).fetchall())
        report.replaced = con.execute("SELECT count(*) FROM annotation_queue WHERE day = ?", [day]).fetchone()[0]
        con.execute("DELETE FROM annotation_queue WHERE day = ?", [day])
        if rows:
            batch = pa.Table.from_pylist(
                [{"day": dt.date.fromisoformat(d), "log_id": log_id, "strategy": strategy, "reason": reason,
                  "priority": priority, "queued_at": previous.get(f"{log_id}\x1f{strategy}", now),
                  "detail": detail, "seed": s}
                 for d, log_id, strategy, reason, priority, detail, s in rows],
                schema=_QUEUE_SCHEMA,
            )
            con.register("_queue_batch", batch)
            try:
                con.execute(
                    "INSERT INTO annotation_queue (day, log_id, strategy, reason, priority, queued_at, detail, seed) "
                    "SELECT day, log_id, strategy, reason, priority, queued_at, detail::JSON, seed "
                    "FROM _queue_batch ORDER BY priority")
            finally:
                con.unregister("_queue_batch")
        con.execute("COMMIT")
    except BaseException:
        con.execute("ROLLBACK")
        raise
