"""Mined keywords: terms and bigrams whose failure rate is significantly above the rest.

For each mined text field, DuckDB groups the day's logs with a known failure signal by
text (so repeated texts are tokenized once), tokenizes them (lower case, 2+ letters or
digits, as the topic model does), forms each text's distinct unigrams and bigrams, and
counts logs and failures per term. A term is a *candidate slice* when

* it occurs in at least ``min_support`` logs (and not in all of them),
* its failure rate is at least ``min_lift`` times the overall rate,
* the one-sided test of "rate in logs with the term > rate in logs without it" is
  significant after Benjamini-Hochberg correction over all terms tested (z-test, or
  Fisher's exact test for small counts: :func:`flywheel.slicing.stats.greater_test`).

Unigrams that are stop words or numbers, and bigrams of two stop words, are not tested.
A bigram that has about the same logs as one of its words (support within 10%) is
left out as redundant, and so is a word that has about the same logs as a kept bigram.
Each candidate carries its Wilson interval, the lift with its interval (the Wilson
bounds over the overall rate) and, in ``in_rule``, the keyword rule that already
matches it. Candidates go to ``slice_candidates`` for a person to adopt into the rules.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass

import duckdb
import pandas as pd

from flywheel.slicing import stats
from flywheel.slicing.config import MiningConfig
from flywheel.slicing.rules import RuleSet, matching_rule
from flywheel.slicing.signal import SIGNAL_TABLE
from flywheel.slicing.topics import STOP_WORDS, tokens_sql

REDUNDANT_SUPPORT = 0.10


@dataclass
class Candidate:
    """A mined keyword with its statistics."""

    field: str
    term: str
    ngram: int
    n: int
    failures: int
    rate: float
    rate_low: float
    rate_high: float
    overall_rate: float
    lift: float
    lift_low: float
    lift_high: float
    p_value: float
    q_value: float
    test: str
    in_rule: str | None

    def as_dict(self) -> dict:
        return asdict(self)


def term_counts(con: duckdb.DuckDBPyConnection, day: str, field: str) -> tuple[pd.DataFrame, int, int]:
    """Return (term, ngram, n, failures) of the day's field, and the totals (n, failures)."""
    totals = con.execute(
        f"SELECT count(*), coalesce(count_if(failed), 0) FROM {SIGNAL_TABLE} WHERE failed IS NOT NULL").fetchone()
    frame = con.execute(
        f"""WITH texts AS (
                SELECT l.{field} AS text, count(*) AS n, count_if(s.failed) AS f
                FROM logs l JOIN {SIGNAL_TABLE} s USING (log_id)
                WHERE l.day = ? AND s.failed IS NOT NULL
                GROUP BY 1
            ),
            tokens AS (
                SELECT n, f, {tokens_sql('text')} AS t FROM texts
            ),
            terms AS (
                SELECT n, f, unnest(list_distinct(list_concat(
                    list_transform(t, w -> {{'term': w, 'ngram': 1}}),
                    list_transform(range(1, len(t)), i -> {{'term': t[i] || ' ' || t[i + 1], 'ngram': 2}})
                ))) AS term
                FROM tokens
            )
            SELECT term.term AS term, term.ngram AS ngram, sum(n)::BIGINT AS n, sum(f)::BIGINT AS failures
            FROM terms GROUP BY ALL""",
        [day],
    ).df()
    return frame, int(totals[0]), int(totals[1])


def _testable(frame: pd.DataFrame) -> pd.Series:
    def ok(term: str, ngram: int) -> bool:
        if ngram == 1:
            return term not in STOP_WORDS and not term.isdigit()
        a, b = term.split(" ", 1)
        return not (a in STOP_WORDS and b in STOP_WORDS)
    return pd.Series([ok(t, g) for t, g in zip(frame.term, frame.ngram)], index=frame.index, dtype=bool)


def mine_field(con: duckdb.DuckDBPyConnection, day: str, field: str, config: MiningConfig,
               rules: RuleSet | None = None) -> list[Candidate]:
    """Return the candidate keywords of one text field, most lifted first."""
    frame, total_n, total_f = term_counts(con, day, field)
    if total_n == 0 or total_f == 0 or frame.empty:
        return []
    frame = frame[(frame.n >= config.min_support) & (frame.n < total_n)]
    frame = frame[_testable(frame)] if len(frame) else frame
    if frame.empty:
        return []
    overall = total_f / total_n
    k, n = frame.failures.to_numpy(float), frame.n.to_numpy(float)
    _, p, tests = stats.greater_test(k, n, total_f - k, total_n - n)
    q = stats.bh(p)
    low, high = stats.wilson(k, n)
    frame = frame.assign(rate=k / n, low=low, high=high, p=p, q=q, test=tests,
                         lift=(k / n) / overall, lift_low=low / overall, lift_high=high / overall)
    keep = frame[(frame.q < config.alpha) & (frame.lift >= config.min_lift)]
    keep = keep.sort_values(["lift_low", "q", "term"], ascending=[False, True, True])
    chosen: list[Candidate] = []
    support: dict[str, int] = {}
    for r in keep.itertuples():
        words = r.term.split(" ") if r.ngram == 2 else [r.term]
        if _redundant(r.term, int(r.n), words, support):
            continue
        support[r.term] = int(r.n)
        chosen.append(Candidate(
            field=field, term=r.term, ngram=int(r.ngram), n=int(r.n), failures=int(r.failures),
            rate=float(r.rate), rate_low=float(r.low), rate_high=float(r.high), overall_rate=overall,
            lift=float(r.lift), lift_low=float(r.lift_low), lift_high=float(r.lift_high),
            p_value=float(r.p), q_value=float(r.q), test=r.test,
            in_rule=matching_rule(rules, r.term) if rules else None,
        ))
        if len(chosen) >= config.max_candidates:
            break
    return chosen


def _redundant(term: str, n: int, words: list[str], support: dict[str, int]) -> bool:
    """Return whether a kept term that shares a word with this one covers about the same
    number of logs (e.g. "language model" after "ai language", "ai" after "an ai")."""
    mine = set(words)
    for kept, m in support.items():
        if abs(m - n) <= REDUNDANT_SUPPORT * max(m, n) and mine & set(kept.split(" ")):
            return True
    return False


def mine_keywords(con: duckdb.DuckDBPyConnection, day: str, config: MiningConfig,
                  rules: RuleSet | None = None) -> list[Candidate]:
    """Return the candidates of every configured field (needs the day's ``slice_signal``)."""
    out: list[Candidate] = []
    for field in config.fields:
        out.extend(mine_field(con, day, field, config, rules))
    return out


def store_candidates(con: duckdb.DuckDBPyConnection, day: str, candidates: list[Candidate], signal: str) -> None:
    """Replace the day's rows of ``slice_candidates``."""
    con.execute("DELETE FROM slice_candidates WHERE day = ?", [day])
    if candidates:
        con.executemany(
            "INSERT INTO slice_candidates VALUES (?::DATE, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
            [[day, c.field, c.term, c.ngram, c.n, c.failures, c.rate, c.rate_low, c.rate_high, c.overall_rate,
              c.lift, c.lift_low, c.lift_high, c.p_value, c.q_value, c.test, c.in_rule, signal] for c in candidates],
        )


def candidates_markdown(candidates: list[Candidate], top: int = 15) -> str:
    if not candidates:
        return "**Candidate keyword slices**: none significantly above the overall failure rate."
    lines = ["**Candidate keyword slices** (mined terms, failure rate significantly above the rest; "
             "adopt useful ones into slices.toml):", "",
             "| field | term | logs | failures | rate [95% Wilson CI] | lift [CI] | test | q | in rule |",
             "|---|---|---:|---:|---|---|---|---:|---|"]
    for c in sorted(candidates, key=lambda c: -c.lift_low)[:top]:
        lines.append(
            f"| {c.field} | {c.term} | {c.n:,} | {c.failures:,} | {100 * c.rate:.1f}% "
            f"[{100 * c.rate_low:.1f}%, {100 * c.rate_high:.1f}%] | {c.lift:.2f} [{c.lift_low:.2f}, "
            f"{c.lift_high:.2f}] | {c.test} | {c.q_value:.2g} | {c.in_rule or ''} |")
    return "\n".join(lines)
