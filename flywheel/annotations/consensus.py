"""One label per log and label name from all annotators, and how much annotators agree.

:func:`build_consensus` rebuilds the `consensus` table from `annotations`:

- **Votes.** Each annotator has one vote per (log_id, label): their latest annotation
  (by ``created_at``, then import time, file and line), so a changed mind replaces the
  earlier label instead of outvoting it.
- **Majority.** ``value`` is the value of more than half of the votes. An even split is
  a *tie*: ``value`` NULL, ``status = 'tie'``; training uses only rows whose value is
  not NULL. ``status`` is ``single`` (one annotator), ``unanimous``, ``majority`` or
  ``tie``; ``agreement`` is the share of votes for the winning value (0.5 for a tie,
  1.0 for a single vote); ``n_positive`` the votes for 1.
- **Agreement.** Per label and annotator pair, Cohen's kappa over the items both
  labelled (:func:`sklearn.metrics.cohen_kappa_score`). Per label: Cohen's kappa when
  exactly two annotators labelled items together; with more, Fleiss' kappa
  (:func:`statsmodels.stats.inter_rater.fleiss_kappa`) over the items that have the
  most common number (>= 2) of votes, since Fleiss' kappa needs the same number of
  ratings per item. A kappa is None where it is undefined (no shared items, or every
  vote the same value). The results are also written to `annotation_agreement`.

A label whose kappa is below :data:`AGREEMENT_WARNING_THRESHOLD` gets a warning: its
labels are not yet a trustworthy definition of "good".
"""

from __future__ import annotations

import datetime as dt
import math
import warnings
from collections import Counter
from dataclasses import dataclass, field
from typing import Any

import duckdb
import numpy as np
from sklearn.metrics import cohen_kappa_score
from statsmodels.stats.inter_rater import fleiss_kappa as _statsmodels_fleiss

AGREEMENT_WARNING_THRESHOLD = 0.4
"""Kappa below which a label's agreement gets a warning (Landis & Koch: "fair" or worse)."""

MARKDOWN_PAIRS = 50  # annotator pairs shown in the markdown table (most shared items first)


@dataclass
class ConsensusReport:
    """What :func:`build_consensus` found; everything is plain values for asset metadata.

    ``labels``: per label, ``items``, ``positive``, ``negative``, ``ties``, ``single``,
    ``unanimous``, ``majority``, ``annotators``, ``votes``, ``kappa``, ``kappa_method``
    (``cohen``/``fleiss``/None), ``kappa_items`` and ``raters_per_item`` (Fleiss).
    ``pairs``: per label and annotator pair, ``label``, ``annotator_a``, ``annotator_b``,
    ``items`` (labelled by both), ``observed`` (share of equal votes) and ``kappa``.
    """

    labels: dict[str, dict[str, Any]] = field(default_factory=dict)
    pairs: list[dict[str, Any]] = field(default_factory=list)
    threshold: float = AGREEMENT_WARNING_THRESHOLD

    def label_kappas(self) -> dict[str, float | None]:
        """Return {label: kappa} (Cohen's or Fleiss', see ``labels[label]['kappa_method']``)."""
        return {label: info["kappa"] for label, info in self.labels.items()}

    def pair_kappas(self) -> dict[str, dict[str, float | None]]:
        """Return {label: {"annotator_a / annotator_b": Cohen's kappa}}."""
        out: dict[str, dict[str, float | None]] = {}
        for pair in self.pairs:
            out.setdefault(pair["label"], {})[f"{pair['annotator_a']} / {pair['annotator_b']}"] = pair["kappa"]
        return out

    @property
    def low_agreement(self) -> list[str]:
        """Return the labels whose kappa is below the threshold."""
        return [label for label, k in self.label_kappas().items() if k is not None and k < self.threshold]

    @property
    def low_agreement_pairs(self) -> list[dict[str, Any]]:
        """Return the annotator pairs whose kappa is below the threshold."""
        return [p for p in self.pairs if p["kappa"] is not None and p["kappa"] < self.threshold]

    @property
    def warnings(self) -> list[str]:
        """Return one message per label whose agreement is below the threshold."""
        out = []
        for label in self.low_agreement:
            info = self.labels[label]
            out.append(
                f"{label}: {info['kappa_method']} kappa {info['kappa']:.2f} < {self.threshold} over "
                f"{info['kappa_items']} items: the labels are not yet a trustworthy definition of 'good'"
            )
        return out

    def markdown(self) -> str:
        """Return markdown tables: per label counts and kappa, then per annotator pair."""
        lines = [
            "| label | items | 1 | 0 | ties | single | annotators | kappa | method | items in kappa |",
            "|---|---:|---:|---:|---:|---:|---:|---:|---|---:|",
        ]
        for label, i in sorted(self.labels.items()):
            lines.append(
                f"| {label} | {i['items']} | {i['positive']} | {i['negative']} | {i['ties']} | {i['single']} "
                f"| {i['annotators']} | {_fmt(i['kappa'])} | {i['kappa_method'] or '-'} | {i['kappa_items']} |"
            )
        if self.pairs:
            shown = sorted(self.pairs, key=lambda p: (-p["items"], p["label"], p["annotator_a"], p["annotator_b"]))
            lines += [
                "",
                "| label | annotator A | annotator B | shared items | observed agreement | Cohen's kappa |",
                "|---|---|---|---:|---:|---:|",
            ]
            for p in shown[:MARKDOWN_PAIRS]:
                lines.append(
                    f"| {p['label']} | {p['annotator_a']} | {p['annotator_b']} | {p['items']} "
                    f"| {_fmt(p['observed'])} | {_fmt(p['kappa'])} |"
                )
            if len(shown) > MARKDOWN_PAIRS:
                lines.append(f"\n({len(shown) - MARKDOWN_PAIRS} more pairs in the annotation_agreement table)")
        return "\n".join(lines)

    def summary(self) -> dict[str, Any]:
        """Return the headline numbers as plain values (for asset metadata)."""
        return {
            "labels": {label: dict(info) for label, info in self.labels.items()},
            "label_kappas": self.label_kappas(),
            "pair_kappas": self.pair_kappas(),
            "threshold": self.threshold,
            "low_agreement": self.low_agreement,
            "warnings": self.warnings,
        }


def _fmt(value: float | None) -> str:
    return "-" if value is None else f"{value:.3f}"


def build_consensus(con: duckdb.DuckDBPyConnection, *, threshold: float = AGREEMENT_WARNING_THRESHOLD) -> ConsensusReport:
    """Rebuild `consensus` and `annotation_agreement` from `annotations` (one transaction).

    Returns a :class:`ConsensusReport` with per-label counts and kappas and per
    annotator-pair kappas; the same inputs always give the same tables.
    """
    now = dt.datetime.now(dt.timezone.utc)
    report = ConsensusReport(threshold=threshold)
    con.execute("BEGIN TRANSACTION")
    try:
        con.execute(
            """
            CREATE OR REPLACE TEMP TABLE _votes AS
            SELECT log_id, label, annotator, value
            FROM (
                SELECT log_id, label, annotator, value, row_number() OVER (
                    PARTITION BY log_id, label, annotator
                    ORDER BY created_at DESC NULLS LAST, imported_at DESC, source_file DESC, line DESC
                ) AS nth
                FROM annotations
            )
            WHERE nth = 1
            """
        )
        con.execute("DELETE FROM consensus")
        con.execute(
            """
            INSERT INTO consensus (log_id, label, value, n_annotators, agreement, status, updated_at, n_positive)
            SELECT log_id, label,
                   CASE WHEN 2 * pos > n THEN 1 WHEN 2 * pos < n THEN 0 END,
                   n, greatest(pos, n - pos) / n,
                   CASE WHEN 2 * pos = n THEN 'tie' WHEN n = 1 THEN 'single'
                        WHEN pos = 0 OR pos = n THEN 'unanimous' ELSE 'majority' END,
                   $now, pos
            FROM (SELECT log_id, label, count(*) AS n, sum(value)::INTEGER AS pos FROM _votes GROUP BY log_id, label)
            ORDER BY label, log_id
            """,
            {"now": now},
        )
        _label_counts(con, report)
        _pair_kappas(con, report)
        _label_kappas(con, report)
        _store_agreement(con, report, now)
        con.execute("DROP TABLE _votes")
        con.execute("COMMIT")
    except BaseException:
        con.execute("ROLLBACK")
        raise
    return report


def _label_counts(con, report: ConsensusReport) -> None:
    rows = con.execute(
        """
        SELECT c.label, count(*), count(*) FILTER (value = 1), count(*) FILTER (value = 0),
               count(*) FILTER (status = 'tie'), count(*) FILTER (status = 'single'),
               count(*) FILTER (status = 'unanimous'), count(*) FILTER (status = 'majority'),
               sum(n_annotators), any_value(a.annotators)
        FROM consensus c
        JOIN (SELECT label, count(DISTINCT annotator) AS annotators FROM _votes GROUP BY label) a USING (label)
        GROUP BY c.label ORDER BY c.label
        """
    ).fetchall()
    for label, items, pos, neg, ties, single, unanimous, majority, votes, annotators in rows:
        report.labels[label] = {
            "items": items, "positive": pos, "negative": neg, "ties": ties, "single": single,
            "unanimous": unanimous, "majority": majority, "votes": int(votes), "annotators": annotators,
            "kappa": None, "kappa_method": None, "kappa_items": 0, "raters_per_item": None,
        }


def _pair_kappas(con, report: ConsensusReport) -> None:
    rows = con.execute(
        """
        SELECT a.label, a.annotator, b.annotator,
               list(a.value ORDER BY a.log_id), list(b.value ORDER BY a.log_id)
        FROM _votes a JOIN _votes b
          ON a.log_id = b.log_id AND a.label = b.label AND a.annotator < b.annotator
        GROUP BY a.label, a.annotator, b.annotator
        ORDER BY a.label, a.annotator, b.annotator
        """
    ).fetchall()
    for label, annotator_a, annotator_b, values_a, values_b in rows:
        report.pairs.append({
            "label": label, "annotator_a": annotator_a, "annotator_b": annotator_b,
            "items": len(values_a),
            "observed": sum(x == y for x, y in zip(values_a, values_b)) / len(values_a),
            "kappa": cohen_kappa(values_a, values_b),
        })


def _label_kappas(con, report: ConsensusReport) -> None:
    for label, info in report.labels.items():
        pairs = [p for p in report.pairs if p["label"] == label]
        raters = {p["annotator_a"] for p in pairs} | {p["annotator_b"] for p in pairs}
        if len(raters) < 2:
            continue
        if len(raters) == 2:
            info.update(kappa=pairs[0]["kappa"], kappa_method="cohen", kappa_items=pairs[0]["items"])
            continue
        tables = con.execute(
            "SELECT n_annotators, n_annotators - n_positive, n_positive FROM consensus "
            "WHERE label = ? AND n_annotators >= 2",
            [label],
        ).fetchall()
        per_count = Counter(n for n, _, _ in tables)
        k = max(per_count, key=lambda n: (per_count[n], n))
        table = [[neg, pos] for n, neg, pos in tables if n == k]
        info.update(kappa=fleiss_kappa(table), kappa_method="fleiss", kappa_items=len(table), raters_per_item=k)


def _store_agreement(con, report: ConsensusReport, now: dt.datetime) -> None:
    con.execute("DELETE FROM annotation_agreement")
    rows = [
        (label, None, None, info["kappa_method"], info["kappa"], info["kappa_items"], None, now)
        for label, info in report.labels.items()
    ] + [
        (p["label"], p["annotator_a"], p["annotator_b"], "cohen", p["kappa"], p["items"], p["observed"], now)
        for p in report.pairs
    ]
    if rows:
        con.executemany("INSERT INTO annotation_agreement VALUES (?, ?, ?, ?, ?, ?, ?, ?)", rows)


def cohen_kappa(values_a: list[int], values_b: list[int]) -> float | None:
    """Return Cohen's kappa of two annotators' 0/1 votes on the same items, or None if undefined."""
    if len(values_a) < 1:
        return None
    with warnings.catch_warnings(), np.errstate(all="ignore"):
        warnings.simplefilter("ignore")
        kappa = float(cohen_kappa_score(values_a, values_b, labels=[0, 1]))
    return None if math.isnan(kappa) or math.isinf(kappa) else kappa


def fleiss_kappa(table: list[list[int]]) -> float | None:
    """Return Fleiss' kappa of an items x (count of 0, count of 1) table, or None if undefined.

    Every row must have the same number of ratings (at least 2).
    """
    if not table:
        return None
    with warnings.catch_warnings(), np.errstate(all="ignore"):
        warnings.simplefilter("ignore")
        kappa = float(_statsmodels_fleiss(np.asarray(table, dtype=float), method="fleiss"))
    return None if math.isnan(kappa) or math.isinf(kappa) else kappa
