"""Daily metrics per slice, the worst slices, and day-over-day drift.

``slice_metrics`` has one row per day and slice (plus ``slice_type = 'all'`` for the
whole day): volume and share of traffic; the failure signal (``n_signal`` logs with a
known signal, ``failures``, rate and 95% Wilson interval); negative feedback over the
logs that carry feedback, with its Wilson interval; mean hallucination and relevance
scores (when ``log_scores`` exist); latency p50/p95, tokens, cost; and the change of
the failure rate against the previous day and the pooled trailing 7 days. A
``fingerprint`` (XOR of the members' log-id hashes) lets slices with identical members
be shown once.

:func:`worst_slices` tests every slice against the rest of the traffic (one-sided
two-proportion z-test, or Fisher's exact test when a cell is small; see
:mod:`flywheel.slicing.stats`), corrects the p-values with Benjamini-Hochberg, and ranks
the significant slices by how much worse they are at least: the lower end of the Wilson
interval of their failure rate divided by the rest's rate. :func:`drift` tests each
slice's rate today against the previous day the same way.
"""

from __future__ import annotations

import datetime as dt
import math
from dataclasses import asdict, dataclass, field
from pathlib import Path

import duckdb
import numpy as np
import pandas as pd

from flywheel import pii
from flywheel.slicing import stats
from flywheel.slicing.signal import SCORES_TABLE, SIGNAL_TABLE

ALL = "all"
TYPE_ORDER = {"source": 0, "model": 1, "prompt_version": 2, "prompt_name": 3, "keyword": 4, "topic": 5}
ROWS_TABLE = "slice_day_rows"


# ---------------------------------------------------------------------------------------
# slice_metrics
# ---------------------------------------------------------------------------------------


def compute_slice_metrics(con: duckdb.DuckDBPyConnection, day: str, signal_name: str,
                          labels: dict[tuple[str, str], str] | None = None) -> pd.DataFrame:
    """Replace the day's rows of ``slice_metrics`` (needs the temp tables of
    :func:`flywheel.slicing.signal.prepare` and the day's ``slice_membership``)."""
    con.execute(
        f"""CREATE OR REPLACE TEMP TABLE {ROWS_TABLE} AS
            SELECT l.log_id, l.feedback, l.latency_ms, l.prompt_tokens, l.completion_tokens, l.cost_usd,
                   s.failed, sc.hallucination, sc.relevance, hash(l.log_id) AS h
            FROM logs l
            LEFT JOIN {SIGNAL_TABLE} s USING (log_id)
            LEFT JOIN {SCORES_TABLE} sc USING (log_id)
            WHERE l.day = ?""",
        [day],
    )
    frame = con.execute(
        f"""WITH members AS (
                SELECT slice_type, slice_value, log_id FROM slice_membership WHERE day = ?
                UNION ALL
                SELECT '{ALL}', '{ALL}', log_id FROM {ROWS_TABLE}
            )
            SELECT slice_type, slice_value,
                   count(*) AS n,
                   count(r.failed) AS n_signal,
                   coalesce(count_if(r.failed), 0) AS failures,
                   count(r.feedback) AS n_feedback,
                   coalesce(count_if(r.feedback = -1), 0) AS negative_feedback,
                   round(avg(r.hallucination), 12) AS mean_hallucination,
                   round(avg(r.relevance), 12) AS mean_relevance,
                   quantile_cont(r.latency_ms, 0.5) AS latency_p50,
                   quantile_cont(r.latency_ms, 0.95) AS latency_p95,
                   sum(r.prompt_tokens)::BIGINT AS prompt_tokens,
                   sum(r.completion_tokens)::BIGINT AS completion_tokens,
                   round(sum(r.cost_usd), 9) AS cost_usd,  -- parallel sums differ in the last bits
                   bit_xor(r.h) AS fingerprint
            FROM members m JOIN {ROWS_TABLE} r USING (log_id)
            GROUP BY ALL""",
        [day],
    ).df()
    con.execute(f"DROP TABLE IF EXISTS {ROWS_TABLE}")
    total = frame.loc[frame.slice_type == ALL, "n"]
    total_n = float(total.iloc[0]) if len(total) else 0.0
    frame["share"] = frame["n"] / total_n if total_n else np.nan
    with np.errstate(divide="ignore", invalid="ignore"):
        frame["failure_rate"] = np.where(frame.n_signal > 0, frame.failures / frame.n_signal, np.nan)
        frame["negative_feedback_rate"] = np.where(
            frame.n_feedback > 0, frame.negative_feedback / frame.n_feedback, np.nan)
    frame["failure_low"], frame["failure_high"] = stats.wilson(frame.failures, frame.n_signal)
    frame["negative_feedback_low"], frame["negative_feedback_high"] = stats.wilson(
        frame.negative_feedback, frame.n_feedback)
    labels = labels or {}
    frame["label"] = [labels.get((t, v), "all logs" if t == ALL else None)
                      for t, v in zip(frame.slice_type, frame.slice_value)]
    _changes(con, day, frame, signal_name)
    frame["day"] = pd.Timestamp(day).date()
    frame["signal"] = signal_name
    frame["computed_at"] = pd.Timestamp.now(tz="UTC")
    columns = [r[0] for r in con.execute(
        "SELECT column_name FROM information_schema.columns WHERE table_name = 'slice_metrics' "
        "ORDER BY ordinal_position").fetchall()]
    out = frame[columns]
    con.execute("DELETE FROM slice_metrics WHERE day = ?", [day])
    con.register("slice_metrics_frame", out)
    try:
        con.execute(f"INSERT INTO slice_metrics ({', '.join(columns)}) SELECT {', '.join(columns)} FROM slice_metrics_frame")
    finally:
        con.unregister("slice_metrics_frame")
    return out


def _changes(con: duckdb.DuckDBPyConnection, day: str, frame: pd.DataFrame, signal_name: str) -> None:
    """Add the previous-day and trailing-7-day columns (same failure signal only)."""
    current = dt.date.fromisoformat(day)
    previous = con.execute(
        """SELECT slice_type, slice_value, n AS prev_n, failure_rate AS prev_failure_rate
           FROM slice_metrics WHERE day = ?::DATE AND signal = ?""",
        [(current - dt.timedelta(days=1)).isoformat(), signal_name],
    ).df()
    trailing = con.execute(
        """SELECT slice_type, slice_value, sum(n) / 7.0 AS trailing7_n,
                  sum(failures) / nullif(sum(n_signal), 0) AS trailing7_failure_rate
           FROM slice_metrics
           WHERE day BETWEEN ?::DATE AND ?::DATE AND signal = ?
           GROUP BY ALL""",
        [(current - dt.timedelta(days=7)).isoformat(), (current - dt.timedelta(days=1)).isoformat(), signal_name],
    ).df()
    merged = frame.merge(previous, how="left", on=["slice_type", "slice_value"]).merge(
        trailing, how="left", on=["slice_type", "slice_value"])
    for name in ("prev_n", "prev_failure_rate", "trailing7_n", "trailing7_failure_rate"):
        frame[name] = merged[name].to_numpy()
    frame["prev_n"] = frame["prev_n"].astype("Int64")
    frame["failure_rate_change_prev"] = frame.failure_rate - frame.prev_failure_rate.astype(float)
    frame["failure_rate_change_7d"] = frame.failure_rate - frame.trailing7_failure_rate.astype(float)


# ---------------------------------------------------------------------------------------
# Worst slices
# ---------------------------------------------------------------------------------------


@dataclass
class SliceRank:
    """One significantly worse slice."""

    rank: int
    slice_type: str
    slice_value: str
    label: str | None
    n_signal: int
    failures: int
    failure_rate: float
    failure_low: float
    failure_high: float
    rest_rate: float
    lift: float
    lift_low: float
    test: str
    p_value: float
    q_value: float
    aliases: list[str] = field(default_factory=list)

    @property
    def name(self) -> str:
        return f"{self.slice_type}={self.slice_value}"

    def as_dict(self) -> dict:
        return asdict(self)


@dataclass
class WorstSlices:
    """The ranking of one day (or window), with its markdown table and chart."""

    day: str
    window_days: int
    signal: str
    overall_rate: float
    n_signal: int
    tested: int
    rows: list[SliceRank]
    alpha: float = 0.05
    markdown: str = ""
    chart_path: Path | None = None


def _window(con: duckdb.DuckDBPyConnection, day: str, window_days: int) -> pd.DataFrame:
    first = (dt.date.fromisoformat(day) - dt.timedelta(days=window_days - 1)).isoformat()
    return con.execute(
        """SELECT slice_type, slice_value,
                  arg_max(label, day) AS label,
                  sum(n) AS n, coalesce(sum(n_signal), 0) AS n_signal, coalesce(sum(failures), 0) AS failures,
                  bit_xor(fingerprint) AS fingerprint,
                  arg_max(signal, day) AS signal
           FROM slice_metrics WHERE day BETWEEN ?::DATE AND ?::DATE
           GROUP BY ALL""",
        [first, day],
    ).df()


def worst_slices(con: duckdb.DuckDBPyConnection, day: str, *, window_days: int = 1, min_n: int = 30,
                 alpha: float = 0.05, top: int = 15, reports_dir: Path | None = None) -> WorstSlices:
    """Return the slices whose failure rate is significantly above the rest's, best first.

    Reads ``slice_metrics`` of the ``window_days`` days up to ``day`` (pooled). Slices
    with fewer than ``min_n`` logs with a signal are not tested. Slices with the same
    members (same size and fingerprint) are shown once, with the others as aliases.
    With ``reports_dir``, writes the markdown table and a PNG chart there.
    """
    frame = _window(con, day, window_days)
    everything = frame[frame.slice_type == ALL]
    signal = str(everything.signal.iloc[0]) if len(everything) else ""
    total_n = int(everything.n_signal.iloc[0]) if len(everything) else 0
    total_f = int(everything.failures.iloc[0]) if len(everything) else 0
    overall = total_f / total_n if total_n else float("nan")
    frame = frame[(frame.slice_type != ALL) & (frame.n_signal >= min_n) & (total_n - frame.n_signal >= min_n)]
    result = WorstSlices(day=day, window_days=window_days, signal=signal, overall_rate=overall,
                         n_signal=total_n, tested=len(frame), rows=[], alpha=alpha)
    if len(frame):
        k, n = frame.failures.to_numpy(float), frame.n_signal.to_numpy(float)
        rest_k, rest_n = total_f - k, total_n - n
        _, p, tests = stats.greater_test(k, n, rest_k, rest_n)
        q = stats.bh(p)
        low, high = stats.wilson(k, n)
        with np.errstate(divide="ignore", invalid="ignore"):
            rest_rate = rest_k / rest_n
            rate = k / n
            lift = np.where(rest_rate > 0, rate / rest_rate, np.inf)
            lift_low = np.where(rest_rate > 0, low / rest_rate, np.inf)
        frame = frame.assign(p=p, q=q, test=tests, low=low, high=high, rest_rate=rest_rate, rate=rate,
                             lift=lift, lift_low=lift_low,
                             order=[TYPE_ORDER.get(t, 9) for t in frame.slice_type])
        significant = frame[(frame.q < alpha) & (frame.rate > frame.rest_rate)]
        significant = significant.sort_values(["lift_low", "q", "order", "slice_value"],
                                              ascending=[False, True, True, True])
        seen: dict[tuple, SliceRank] = {}
        for r in significant.itertuples():
            key = (int(r.n), int(r.n_signal), int(r.failures), int(r.fingerprint))
            if key in seen:
                seen[key].aliases.append(f"{r.slice_type}={r.slice_value}")
                continue
            row = SliceRank(
                rank=len(seen) + 1, slice_type=r.slice_type, slice_value=r.slice_value,
                label=None if r.label is None or (isinstance(r.label, float) and math.isnan(r.label)) else r.label,
                n_signal=int(r.n_signal), failures=int(r.failures), failure_rate=float(r.rate),
                failure_low=float(r.low), failure_high=float(r.high), rest_rate=float(r.rest_rate),
                lift=float(r.lift), lift_low=float(r.lift_low), test=r.test,
                p_value=float(r.p), q_value=float(r.q),
            )
            seen[key] = row
            result.rows.append(row)
    result.markdown = worst_markdown(result, top)
    if reports_dir is not None:
        reports_dir.mkdir(parents=True, exist_ok=True)
        suffix = "" if window_days == 1 else f"-{window_days}d"
        result.chart_path = worst_chart(result, reports_dir / f"worst-slices-{day}{suffix}.png", top)
        (reports_dir / f"worst-slices-{day}{suffix}.md").write_text(pii.scan(result.markdown)[0] + "\n",
                                                                     encoding="utf-8")
    return result


def store_worst(con: duckdb.DuckDBPyConnection, result: WorstSlices) -> None:
    """Replace the day's rows of ``worst_slices`` with a one-day ranking."""
    con.execute("DELETE FROM worst_slices WHERE day = ?", [result.day])
    if result.rows:
        con.executemany(
            "INSERT INTO worst_slices VALUES (?::DATE, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
            [[result.day, r.rank, r.slice_type, r.slice_value, r.label, r.n_signal, r.failures, r.failure_rate,
              r.failure_low, r.failure_high, r.rest_rate, r.lift, r.test, r.p_value, r.q_value, r.aliases,
              result.signal] for r in result.rows],
        )


def _display(slice_type: str, value: str, label: str | None) -> str:
    name = f"{slice_type}={value}"
    if label and slice_type == "topic":
        name += f" ({label})"
    return name


def _pct(x: float) -> str:
    return "n/a" if x is None or (isinstance(x, float) and math.isnan(x)) else f"{100 * x:.1f}%"


def _p(x: float) -> str:
    return f"{x:.2g}" if x >= 1e-4 else f"{x:.1e}"


def worst_markdown(result: WorstSlices, top: int = 15) -> str:
    """Return the ranking as a markdown table (the asset's metadata)."""
    window = "" if result.window_days == 1 else f" (last {result.window_days} days)"
    head = (f"**Worst slices {result.day}{window}** — failure signal: {result.signal}; overall rate "
            f"{_pct(result.overall_rate)} of {result.n_signal:,} logs; {result.tested} slices tested, "
            f"{len(result.rows)} significantly worse (Benjamini-Hochberg q < {result.alpha:g}).")
    if not result.rows:
        return head
    lines = [head, "",
             "| # | slice | logs | failures | rate [95% Wilson CI] | rest | lift | test | p | q | same members |",
             "|---:|---|---:|---:|---|---:|---:|---|---:|---:|---|"]
    for r in result.rows[:top]:
        name = _display(r.slice_type, r.slice_value, r.label).replace("|", "\\|")
        lines.append(
            f"| {r.rank} | {name} | {r.n_signal:,} | {r.failures:,} | {_pct(r.failure_rate)} "
            f"[{_pct(r.failure_low)}, {_pct(r.failure_high)}] | {_pct(r.rest_rate)} | {r.lift:.2f} "
            f"| {r.test} | {_p(r.p_value)} | {_p(r.q_value)} | {', '.join(r.aliases)} |"
        )
    return "\n".join(lines)


def worst_chart(result: WorstSlices, path: Path, top: int = 15) -> Path:
    """Write a horizontal bar chart of the worst slices' failure rates with their
    intervals and the overall rate; return its path."""
    import matplotlib

    # Slice names are plain text: a `$` in a keyword is not the start of math text.
    with matplotlib.rc_context({"text.parse_math": False}):
        return _draw_worst_chart(result, path, top)


def _draw_worst_chart(result: WorstSlices, path: Path, top: int) -> Path:
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure
    from matplotlib.ticker import PercentFormatter

    rows = result.rows[:top]
    fig = Figure(figsize=(9, 1.2 + 0.42 * max(len(rows), 1)), dpi=110)
    FigureCanvasAgg(fig)
    ax = fig.add_subplot(1, 1, 1)
    if rows:
        names = [_display(r.slice_type, r.slice_value, r.label) for r in rows][::-1]
        names = [n if len(n) <= 60 else n[:57] + "..." for n in names]
        rates = np.array([r.failure_rate for r in rows][::-1])
        low = np.array([r.failure_low for r in rows][::-1])
        high = np.array([r.failure_high for r in rows][::-1])
        y = np.arange(len(rows))
        ax.barh(y, rates, color="#d9534f", alpha=0.8)
        below, above = np.maximum(rates - low, 0.0), np.maximum(high - rates, 0.0)
        ax.errorbar(rates, y, xerr=[below, above], fmt="none", ecolor="black", capsize=3, lw=1)
        ax.set_yticks(y)
        ax.set_yticklabels(names, fontsize=8)
    else:
        ax.text(0.5, 0.5, "no slice is significantly worse", ha="center", va="center", transform=ax.transAxes)
        ax.set_yticks([])
    if not math.isnan(result.overall_rate):
        ax.axvline(result.overall_rate, color="#333333", ls="--", lw=1, label=f"overall {_pct(result.overall_rate)}")
        ax.legend(loc="lower right", fontsize=8)
    ax.xaxis.set_major_formatter(PercentFormatter(1.0))
    ax.set_xlabel("failure rate (95% Wilson interval)")
    window = "" if result.window_days == 1 else f", last {result.window_days} days"
    ax.set_title(f"Worst slices {result.day}{window} — {result.signal}", fontsize=10)
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path)
    return path


# ---------------------------------------------------------------------------------------
# Drift
# ---------------------------------------------------------------------------------------


@dataclass
class DriftRow:
    """A slice whose failure rate rose significantly since the previous day."""

    slice_type: str
    slice_value: str
    label: str | None
    prev_day: str
    prev_n_signal: int
    prev_failures: int
    prev_rate: float
    n_signal: int
    failures: int
    rate: float
    test: str
    p_value: float
    q_value: float

    @property
    def name(self) -> str:
        return f"{self.slice_type}={self.slice_value}"


def drift(con: duckdb.DuckDBPyConnection, day: str, *, min_n: int = 30, alpha: float = 0.05) -> list[DriftRow]:
    """Return the slices (and ``all``) whose failure rate on ``day`` is significantly
    higher than on the previous day (same signal; BH-corrected one-sided tests)."""
    prev_day = (dt.date.fromisoformat(day) - dt.timedelta(days=1)).isoformat()
    frame = con.execute(
        """SELECT t.slice_type, t.slice_value, t.label,
                  p.n_signal AS prev_n, p.failures AS prev_f, t.n_signal AS n, t.failures AS f
           FROM slice_metrics t JOIN slice_metrics p USING (slice_type, slice_value, signal)
           WHERE t.day = ?::DATE AND p.day = ?::DATE AND t.n_signal >= ? AND p.n_signal >= ?""",
        [day, prev_day, min_n, min_n],
    ).df()
    if frame.empty:
        return []
    _, p, tests = stats.greater_test(frame.f, frame.n, frame.prev_f, frame.prev_n)
    q = stats.bh(p)
    rows = []
    for r, pv, qv, test in zip(frame.itertuples(), p, q, tests):
        if qv < alpha and r.f / r.n > r.prev_f / r.prev_n:
            rows.append(DriftRow(
                slice_type=r.slice_type, slice_value=r.slice_value,
                label=r.label if isinstance(r.label, str) else None, prev_day=prev_day,
                prev_n_signal=int(r.prev_n), prev_failures=int(r.prev_f), prev_rate=r.prev_f / r.prev_n,
                n_signal=int(r.n), failures=int(r.f), rate=r.f / r.n, test=test,
                p_value=float(pv), q_value=float(qv),
            ))
    rows.sort(key=lambda d: (d.q_value, -(d.rate - d.prev_rate)))
    return rows


def store_drift(con: duckdb.DuckDBPyConnection, day: str, rows: list[DriftRow], signal: str) -> None:
    """Replace the day's rows of ``slice_drift``."""
    con.execute("DELETE FROM slice_drift WHERE day = ?", [day])
    if rows:
        con.executemany(
            "INSERT INTO slice_drift VALUES (?::DATE, ?, ?, ?, ?::DATE, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
            [[day, r.slice_type, r.slice_value, r.label, r.prev_day, r.prev_n_signal, r.prev_failures,
              r.prev_rate, r.n_signal, r.failures, r.rate, r.test, r.p_value, r.q_value, signal] for r in rows],
        )


def drift_markdown(rows: list[DriftRow], day: str, alpha: float = 0.05) -> str:
    if not rows:
        return f"**Drift {day}**: no slice's failure rate rose significantly since the previous day."
    lines = [f"**Drift {day}**: failure rate significantly higher than the previous day (BH q < {alpha:g}).", "",
             "| slice | previous | today | test | p | q |", "|---|---|---|---|---:|---:|"]
    for r in rows:
        lines.append(
            f"| {_display(r.slice_type, r.slice_value, r.label)} | {_pct(r.prev_rate)} of {r.prev_n_signal:,} "
            f"| {_pct(r.rate)} of {r.n_signal:,} | {r.test} | {_p(r.p_value)} | {_p(r.q_value)} |")
    return "\n".join(lines)
