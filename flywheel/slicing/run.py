"""One night of slicing: :func:`slice_day` does all of it for one day and returns a
:class:`SliceReport` (the `slices` and `slice_metrics` assets show it as metadata).

Steps: read the slicing file (rules with errors reported by name, topics and ranking
settings); make sure a topic model exists (fit on the first night, refit when it is
older than ``refit_every_days``, ids mapped onto the previous model); then, in one
transaction that replaces the day's rows of every slicing table: the failure signal,
``slice_membership``, ``slice_metrics``, mined ``slice_candidates``, ``worst_slices``
and ``slice_drift``. The markdown report and the chart are written to
``$FLYWHEEL_HOME/reports/`` (``slices-DAY.md``, ``worst-slices-DAY.png``).

Running a day twice gives the same tables: the topic model fitted on the first run is
reused (it is not older than the day), and every table's day is replaced as a whole.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from datetime import date
from pathlib import Path

import duckdb

from flywheel import pii
from flywheel.settings import Settings
from flywheel.slicing import metrics, mining, topics
from flywheel.slicing.config import SlicingConfig, load_config
from flywheel.slicing.membership import build_membership
from flywheel.slicing.signal import SCORES_TABLE, SIGNAL_TABLE, FailureSignal, prepare


@dataclass
class SliceReport:
    """What one day's slicing found."""

    day: str
    signal: str
    rows: int = 0
    n_signal: int = 0
    failures: int = 0
    membership_rows: dict[str, int] = field(default_factory=dict)
    slice_counts: dict[str, int] = field(default_factory=dict)
    rule_errors: list[str] = field(default_factory=list)
    config_problems: list[str] = field(default_factory=list)
    config_source: str = ""
    topic_model: str | None = None
    topic_model_fitted: bool = False
    topics: list[dict] = field(default_factory=list)
    worst: metrics.WorstSlices | None = None
    drift: list[metrics.DriftRow] = field(default_factory=list)
    candidates: list[mining.Candidate] = field(default_factory=list)
    has_scores: bool = False
    markdown: str = ""
    markdown_path: Path | None = None
    chart_path: Path | None = None
    seconds: dict[str, float] = field(default_factory=dict)

    @property
    def overall_rate(self) -> float | None:
        return self.failures / self.n_signal if self.n_signal else None

    def metadata(self) -> dict[str, object]:
        """Return the headline numbers as plain values (for asset metadata)."""
        return {
            "day": self.day,
            "rows": self.rows,
            "failure_signal": self.signal,
            "logs_with_signal": self.n_signal,
            "failures": self.failures,
            "membership_rows": dict(self.membership_rows),
            "slices": dict(self.slice_counts),
            "rule_errors": list(self.rule_errors),
            "config_problems": list(self.config_problems),
            "slicing_file": self.config_source,
            "topic_model": self.topic_model,
            "topic_model_fitted": self.topic_model_fitted,
            "worst_slices": [r.name for r in (self.worst.rows if self.worst else [])][:10],
            "drift": [d.name for d in self.drift],
            "candidates": [f"{c.field}:{c.term}" for c in self.candidates][:20],
            "chart": str(self.chart_path) if self.chart_path else None,
            "seconds": {k: round(v, 3) for k, v in self.seconds.items()},
        }


def slice_day(
    con: duckdb.DuckDBPyConnection,
    settings: Settings,
    day: str,
    *,
    failure_signal: FailureSignal | None = None,
    config: SlicingConfig | None = None,
    refit_topics: bool | None = None,
    write_reports: bool = True,
) -> SliceReport:
    """Slice the partition ``day`` (``YYYY-MM-DD``) and replace its rows in every slicing table.

    ``failure_signal``: default negative feedback or classifier scores
    (:meth:`FailureSignal.default`); pass e.g. :meth:`FailureSignal.from_table` for labels.
    ``refit_topics``: True forces a topic refit, False never refits an existing model,
    None refits when the model is older than the slicing file's ``refit_every_days``.
    """
    date.fromisoformat(day)
    signal = failure_signal or FailureSignal.default()
    clock = _Clock()
    config = config or load_config(settings, con)
    report = SliceReport(day=day, signal=signal.name, config_source=config.source,
                         rule_errors=[str(e) for e in config.rule_errors],
                         config_problems=list(config.problems))
    model, fitted = topics.ensure_model(con, settings, day, config.topics, refit=refit_topics)
    clock.lap("topic_fit")
    report.topic_model, report.topic_model_fitted = (model.version if model else None), fitted

    con.execute("BEGIN TRANSACTION")
    try:
        report.has_scores = prepare(con, day, signal)
        report.rows, report.n_signal, report.failures = con.execute(
            f"SELECT count(*), count(failed), coalesce(count_if(failed), 0) FROM {SIGNAL_TABLE}").fetchone()
        clock.lap("signal")
        report.membership_rows = build_membership(con, day, config.rules, model)
        clock.lap("membership")
        labels: dict[tuple[str, str], str] = {
            ("keyword", r.name): r.description or r.name for r in config.rules.rules}
        if model is not None:
            topics.record_model(con, model, settings)
            labels.update({("topic", str(t)): model.label_of(t) for t in model.topic_ids})
            labels[("topic", str(topics.NO_TOPIC))] = topics.NO_TOPIC_LABEL
            report.topics = [{"id": t, "label": lab, "share": round(s, 4), "kept_id_of": m}
                             for t, lab, s, m in zip(model.topic_ids, model.labels, model.shares,
                                                     model.matched_from or [None] * model.n_topics)]
        frame = metrics.compute_slice_metrics(con, day, signal.name, labels)
        report.slice_counts = frame[frame.slice_type != metrics.ALL].groupby("slice_type").size().to_dict()
        clock.lap("metrics")
        report.candidates = mining.mine_keywords(con, day, config.mining, config.rules)
        mining.store_candidates(con, day, report.candidates, signal.name)
        clock.lap("mining")
        ranking = config.ranking
        report.worst = metrics.worst_slices(
            con, day, min_n=ranking.min_n, alpha=ranking.alpha, top=ranking.top,
            reports_dir=settings.reports_dir if write_reports else None)
        metrics.store_worst(con, report.worst)
        report.drift = metrics.drift(con, day, min_n=ranking.min_n, alpha=ranking.alpha)
        metrics.store_drift(con, day, report.drift, signal.name)
        clock.lap("ranking")
        for table in (SIGNAL_TABLE, SCORES_TABLE):
            con.execute(f"DROP TABLE IF EXISTS {table}")
        con.execute("COMMIT")
    except BaseException:
        con.execute("ROLLBACK")
        raise
    report.chart_path = report.worst.chart_path
    report.markdown = report_markdown(report, config)
    if write_reports:
        path = settings.reports_dir / f"slices-{day}.md"
        path.parent.mkdir(parents=True, exist_ok=True)
        # (mined terms and topic labels come from the texts: in flag mode they keep PII)
        path.write_text(pii.scan(report.markdown)[0] + "\n", encoding="utf-8")
        report.markdown_path = path
    clock.lap("report")
    report.seconds = clock.laps
    return report


def report_markdown(report: SliceReport, config: SlicingConfig) -> str:
    """Return the day's slicing report: worst slices, drift, candidates, topics, problems."""
    rate = f"{100 * report.overall_rate:.1f}%" if report.overall_rate is not None else "n/a"
    parts = [
        f"# Slices {report.day}",
        "",
        f"{report.rows:,} logs; failure signal: {report.signal} — known for {report.n_signal:,} logs, "
        f"{report.failures:,} failures ({rate}). Slices: "
        + ", ".join(f"{k} {v}" for k, v in sorted(report.slice_counts.items())) + ".",
        "",
        report.worst.markdown if report.worst else "",
        "",
        metrics.drift_markdown(report.drift, report.day, config.ranking.alpha),
        "",
        mining.candidates_markdown(report.candidates, config.ranking.top),
    ]
    if report.topics:
        fitted = " (fitted tonight)" if report.topic_model_fitted else ""
        parts += ["", f"**Topics** (model {report.topic_model}{fitted}):", "",
                  "| id | label | share of fit sample |", "|---:|---|---:|"]
        parts += [f"| {t['id']} | {t['label']} | {100 * t['share']:.1f}% |" for t in report.topics]
    elif report.topic_model is None:
        parts += ["", "**Topics**: no topic model yet (too little varied text to fit one)."]
    problems = report.rule_errors + report.config_problems
    if problems:
        parts += ["", f"**Problems in the slicing file** ({report.config_source}):", ""]
        parts += [f"- {p}" for p in problems]
    return "\n".join(parts)


class _Clock:
    def __init__(self):
        self.start = self.last = time.perf_counter()
        self.laps: dict[str, float] = {}

    def lap(self, name: str) -> None:
        now = time.perf_counter()
        self.laps[name] = now - self.last
        self.last = now
