"""Slicing: source, keyword and topic slices, metrics, worst slices, drift, mined keywords."""

from __future__ import annotations

import datetime as dt
import json
from pathlib import Path

import numpy as np
import pytest

from flywheel import store
from flywheel.demo import PLANTED_SLICES, DemoSpec, generate
from flywheel.ingest.loader import ingest_day
from flywheel.settings import load
from flywheel.slicing import FailureSignal, drift, slice_day, stats, topics, worst_slices
from flywheel.slicing.config import DEFAULT_FILE, TopicConfig, load_config
from flywheel.slicing.rules import parse_rules
from tests.conftest import land, rows, shared_data

START = dt.date(2026, 3, 1)
DAY = "2026-11-20"


def demo_home(root: Path, days: int, seed: int, rows_per_day: int = 1500):
    """Generate and ingest a demo home; return (settings, list of days)."""
    settings = load({"FLYWHEEL_HOME": str(root)})
    summary = generate(settings.home, DemoSpec(days=days, rows_per_day=rows_per_day, seed=seed, start=START))
    day_keys = [d.day for d in summary.days]
    with store.connection(settings) as con:
        for day in day_keys:
            ingest_day(con, settings, day)
        con.execute("CREATE OR REPLACE TABLE demo_truth AS SELECT * FROM read_parquet(?)",
                    [str(settings.home / "demo" / "truth-*.parquet")])
    return settings, day_keys


HALLUCINATED = FailureSignal.from_table("demo_truth", "hallucinated", name="truth: hallucinated")


@pytest.fixture(scope="module")
def sliced_demo(tmp_path_factory):
    """Four demo days, each sliced with the generator's hallucination labels as the signal."""
    settings, days = demo_home(tmp_path_factory.mktemp("demo") / "home", days=4, seed=11)
    reports = []
    with store.connection(settings) as con:
        for day in days:
            reports.append(slice_day(con, settings, day, failure_signal=HALLUCINATED))
    return settings, days, reports


def planted_share(con, slice_type: str, slice_value: str) -> dict[str, float]:
    """Return, per planted slice name, the share of the slice's members in it."""
    members = con.execute(
        "SELECT count(*) FROM slice_membership WHERE slice_type = ? AND slice_value = ?",
        [slice_type, slice_value]).fetchone()[0]
    found = con.execute(
        """SELECT p, count(*) FROM (
               SELECT unnest(t.planted) AS p FROM slice_membership m JOIN demo_truth t USING (log_id)
               WHERE m.slice_type = ? AND m.slice_value = ?) GROUP BY p""",
        [slice_type, slice_value]).fetchall()
    return {p: n / members for p, n in found}


# ---------------------------------------------------------------------------------------
# The demo's planted slices
# ---------------------------------------------------------------------------------------


def test_planted_bad_slices_are_ranked_first(sliced_demo):
    settings, days, reports = sliced_demo
    # The slices planted with more hallucinations (the model slice has more off-topic answers).
    planted = {f"{dim}={value}" for dim, values in PLANTED_SLICES.items()
               for value, mult in values.items() if mult["hallucination"] > 1}
    assert planted == {"source=mobile", "prompt_version=v13", "topic=warranty", "keyword=refund"}
    with store.connection(settings) as con:
        result = worst_slices(con, days[-1], window_days=len(days), reports_dir=settings.reports_dir)
        top = result.rows[:5]
        hits = {}
        for r in top:
            shares = planted_share(con, r.slice_type, r.slice_value)
            best = max(shares, key=shares.get)
            # Each of the top slices is (mostly) one planted slice: the slice itself, or
            # e.g. a topic or keyword slice whose logs are the planted topic's.
            assert shares[best] >= 0.6, (r.name, shares)
            hits[r.name] = best
    assert set(hits.values()) == planted, hits
    names = [r.name for r in result.rows]
    assert {"source=mobile", "prompt_version=v13"} <= set(names[:5]), names
    assert "keyword=refund" in names, names
    # The slice with the same members as source=mobile is shown once, as an alias.
    mobile = next(r for r in result.rows if r.name == "source=mobile")
    assert mobile.aliases == ["prompt_name=mobile-assistant"]
    # Each row says which test it used, with p and BH q values.
    assert all(r.test.startswith(("two-proportion z-test", "Fisher exact")) for r in result.rows)
    assert all(r.q_value < 0.05 and r.p_value <= r.q_value for r in result.rows)
    assert all(r.failure_low < r.failure_rate < r.failure_high for r in result.rows)
    assert "| 1 |" in result.markdown and "Wilson" in result.markdown
    assert result.chart_path.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_slice_day_fills_every_table_and_reports(sliced_demo):
    settings, days, reports = sliced_demo
    report = reports[-1]
    day = days[-1]
    types = dict(rows(settings, "SELECT slice_type, count(DISTINCT slice_value) FROM slice_membership "
                                "WHERE day = ? GROUP BY 1", [day]))
    assert {"source", "model", "prompt_version", "prompt_name", "keyword", "topic"} <= set(types)
    assert types["source"] == 8 and types["topic"] >= 4
    # Every log has exactly one topic and one source.
    assert rows(settings, "SELECT count(*), count(DISTINCT log_id) FROM slice_membership "
                          "WHERE day = ? AND slice_type = 'topic'", [day]) == [(1500, 1500)]
    metric = rows(settings, """SELECT n, share, n_signal, failures, failure_rate, failure_low, failure_high,
                                      latency_p50, latency_p95, prompt_tokens, cost_usd, prev_n,
                                      prev_failure_rate, trailing7_failure_rate, n_feedback, negative_feedback_rate,
                                      negative_feedback_low
                               FROM slice_metrics WHERE day = ? AND slice_type = 'source' AND slice_value = 'web-chat'""",
                  [day])[0]
    n, share, n_signal, failures, rate, low, high, p50, p95, ptok, cost, prev_n, prev_rate, t7, nfb, nfr, nfl = metric
    assert n == n_signal and 0 < share < 1 and failures > 0
    assert low < rate < high and 0 < p50 <= p95 and ptok > 0 and cost > 0
    assert prev_n > 0 and prev_rate is not None and t7 is not None
    assert nfb > 0 and nfl <= nfr
    (total,) = rows(settings, "SELECT n FROM slice_metrics WHERE day = ? AND slice_type = 'all'", [day])[0]
    assert total == 1500
    # The report: markdown with the worst slices, topics with labels, the chart's path.
    assert report.markdown_path.exists() and report.chart_path.exists()
    assert "# Slices" in report.markdown and "**Topics**" in report.markdown
    assert report.topics and all(t["label"] for t in report.topics)
    assert report.metadata()["failure_signal"] == "truth: hallucinated"
    labels = dict(rows(settings, "SELECT topic_id, label FROM topics"))
    assert all(" / " in label for label in labels.values())


def test_drift_flags_a_slice_whose_rate_jumps(sliced_demo):
    settings, days, _ = sliced_demo
    # Same labels, except that on the last day half of the mobile logs fail.
    signal = FailureSignal.from_sql("truth with a mobile incident", f"""
        SELECT t.log_id, CASE WHEN t.day = '{days[-1]}' AND t.source = 'mobile' THEN hash(t.log_id) % 2 = 0
                              ELSE t.hallucinated END AS failed
        FROM demo_truth t""")
    with store.connection(settings) as con:
        for day in days[-2:]:
            report = slice_day(con, settings, day, failure_signal=signal, write_reports=False)
        flagged = {d.name: d for d in drift(con, days[-1])}
        assert "source=mobile" in flagged
        assert flagged["source=mobile"].rate > 0.4 > flagged["source=mobile"].prev_rate
        assert [d.name for d in report.drift] == list(flagged)
        assert rows(settings, "SELECT count(*) FROM slice_drift WHERE day = ?", [days[-1]])[0][0] == len(flagged)
        # Put the module's state back for other tests.
        for day in days[-2:]:
            slice_day(con, settings, day, failure_signal=HALLUCINATED, write_reports=False)


def test_rerunning_a_day_gives_the_same_tables(sliced_demo):
    settings, days, _ = sliced_demo
    day = days[1]
    queries = {
        "slice_membership": "SELECT log_id, slice_type, slice_value FROM slice_membership WHERE day = ? ORDER BY ALL",
        "slice_metrics": "SELECT * EXCLUDE (computed_at) FROM slice_metrics WHERE day = ? ORDER BY slice_type, slice_value",
        "worst_slices": "SELECT * FROM worst_slices WHERE day = ? ORDER BY rank",
        "slice_candidates": "SELECT * FROM slice_candidates WHERE day = ? ORDER BY field, term",
        "slice_drift": "SELECT * FROM slice_drift WHERE day = ? ORDER BY ALL",
    }
    before = {name: rows(settings, sql, [day]) for name, sql in queries.items()}
    versions = rows(settings, "SELECT version FROM topic_models ORDER BY 1")
    with store.connection(settings) as con:
        report = slice_day(con, settings, day, failure_signal=HALLUCINATED, write_reports=False)
    assert not report.topic_model_fitted
    after = {name: rows(settings, sql, [day]) for name, sql in queries.items()}
    for name in queries:
        assert after[name] == before[name], name
    assert rows(settings, "SELECT version FROM topic_models ORDER BY 1") == versions
    assert before["slice_membership"]


# ---------------------------------------------------------------------------------------
# Topics
# ---------------------------------------------------------------------------------------


def test_topic_ids_stay_stable_when_the_model_is_refitted(tmp_path):
    settings, days = demo_home(tmp_path / "home", days=2, seed=7)
    with store.connection(settings) as con:
        first = slice_day(con, settings, days[0], failure_signal=HALLUCINATED, write_reports=False)
        second = slice_day(con, settings, days[1], failure_signal=HALLUCINATED, refit_topics=True,
                           write_reports=False)
        assert first.topic_model_fitted and second.topic_model_fitted
        assert (first.topic_model, second.topic_model) == ("v0001", "v0002")
        old = topics.TopicModel.load(topics.models_root(settings) / "v0001")
        new = topics.current_model(settings)
        assert new.version == "v0002" and new.n_docs > old.n_docs  # refit on more history
        # Logs of the same kind (the same request text) on both nights get the same topic id.
        (same, total), = con.execute(
            """WITH topic AS (
                   SELECT l.day, l.input, m.slice_value AS topic
                   FROM slice_membership m JOIN logs l USING (log_id) WHERE m.slice_type = 'topic'
               ),
               night AS (SELECT day, input, mode(topic) AS topic FROM topic GROUP BY ALL)
               SELECT count_if(a.topic = b.topic), count(*)
               FROM night a JOIN night b USING (input)
               WHERE a.day = ?::DATE AND b.day = ?::DATE""", list(days)).fetchall()
        assert total > 150 and same / total >= 0.95, (same, total)
        # And every log of the second night: the old model and the refitted one agree.
        topics.assign_topics(con, days[1], old, "by_old")
        topics.assign_topics(con, days[1], new, "by_new")
        agree = con.execute("SELECT avg((o.topic = n.topic)::INT) FROM by_old o JOIN by_new n USING (log_id)").fetchone()[0]
        assert agree >= 0.95
        # The same scoring in Python and in DuckDB.
        sample = con.execute(
            f"SELECT l.input, t.topic FROM by_new t JOIN logs l USING (log_id) ORDER BY log_id LIMIT 200").fetchall()
        assert topics.assign_texts(new, [s for s, _ in sample]) == [t for _, t in sample]
    # Plain data on disk, no pickle.
    folder = topics.models_root(settings) / "v0002"
    assert sorted(p.name for p in folder.iterdir()) == ["arrays.npz", "model.json"]
    meta = json.loads((folder / "model.json").read_text())
    assert meta["matched_from"] and all(m is not None for m in meta["matched_from"])


def test_a_refit_with_more_topics_keeps_old_ids_and_never_reuses_one(tmp_path):
    settings, days = demo_home(tmp_path / "home", days=2, seed=3, rows_per_day=800)
    with store.connection(settings) as con:
        old = topics.fit_topic_model(con, settings, days[0], TopicConfig(n_topics=6))
        new = topics.fit_topic_model(con, settings, days[1], TopicConfig(n_topics=9), previous=old)
    assert old.topic_ids == list(range(6))
    kept = [m for m in new.matched_from if m is not None]
    assert len(kept) >= 5 and len(set(kept)) == len(kept)
    fresh = [t for t, m in zip(new.topic_ids, new.matched_from) if m is None]
    assert all(t >= 6 for t in fresh) and new.next_id == 6 + len(fresh)


# ---------------------------------------------------------------------------------------
# Rules, signal and statistics
# ---------------------------------------------------------------------------------------


def canonical(log_id: str, input_: str, output: str, **fields) -> str:
    record = {"log_id": log_id, "ts": f"{DAY}T10:00:00Z", "source": "support-bot", "input": input_,
              "output": output, **fields}
    return json.dumps(record)


def small_day(settings, n: int = 60):
    lines = []
    for i in range(n):
        if i % 3 == 0:
            lines.append(canonical(f"r{i}", "I want my REFUNDS now", "As an AI, I cannot help.", feedback=-1))
        elif i % 3 == 1:
            lines.append(canonical(f"r{i}", "Where is my parcel?", "It ships tomorrow.", feedback=1))
        else:
            lines.append(canonical(f"r{i}", "What is the price of Team?", "See https://acme.example/pricing"))
    land(settings, DAY, "logs.jsonl", "\n".join(lines) + "\n")
    with store.connection(settings) as con:
        ingest_day(con, settings, DAY)


def test_broken_rules_are_reported_by_name_and_the_others_apply(settings):
    small_day(settings)
    (settings.home / "slices.toml").write_text(r"""
[rules.refund]
keywords = ["refund"]

[rules.bad_regex]
regex = ['(unclosed']

[rules.lookbehind]
regex = ['(?<=my )refund']

[rules.bad_field]
keywords = ["parcel"]
field = "title"

[rules.typo]
keyword = ["parcel"]

[rules.empty]
description = "nothing to match"

[rules.ai_answer]
regex = ['\bas an ai\b']
field = "output"

[rules.anywhere]
keywords = ["https://acme"]
field = "both"
""", encoding="utf-8")
    with store.connection(settings) as con:
        report = slice_day(con, settings, DAY, write_reports=False)
    errors = {e.split("'")[1]: e for e in report.rule_errors}
    assert set(errors) == {"bad_regex", "lookbehind", "bad_field", "typo", "empty"}
    assert "invalid regex" in errors["bad_regex"] and "invalid regex" in errors["lookbehind"]
    assert "unknown field 'title'" in errors["bad_field"]
    assert "unknown key(s) keyword" in errors["typo"]
    assert "no keywords" in errors["empty"]
    assert "bad_regex" in report.markdown  # shown in the report too
    counts = dict(rows(settings, "SELECT slice_value, count(*) FROM slice_membership "
                                 "WHERE slice_type = 'keyword' GROUP BY 1"))
    # Case-insensitive, word-prefix keywords; output-only and both-field rules.
    assert counts == {"refund": 20, "ai_answer": 20, "anywhere": 20}


def test_default_rules_file_is_valid_and_keywords_match_as_documented(settings):
    with store.connection(settings) as con:
        config = load_config(settings, con)
    assert config.source == str(DEFAULT_FILE)
    assert config.rule_errors == [] and config.problems == []
    names = set(config.rules.names)
    assert {"refund", "cancellation", "password_login", "warranty", "pricing", "legal_advice",
            "medical_advice", "as_an_ai"} <= names
    rules = parse_rules({"r": {"keywords": ["refund", "money back"]}}).rules[0]
    import re
    for text, expected in [("Refunds?", True), ("refundable", True), ("MONEY   back", True),
                           ("nonrefund", False), ("money", False)]:
        assert bool(re.search(rules.pattern, text)) is expected, text


def test_default_signal_is_negative_feedback_or_classifier_scores(settings):
    small_day(settings)
    with store.connection(settings) as con:
        report = slice_day(con, settings, DAY, write_reports=False)
        # feedback: 20 logs -1, 20 logs +1, 20 without feedback (unknown).
        assert (report.n_signal, report.failures) == (40, 20)
        con.execute("""INSERT INTO log_scores (log_id, day, task, model_version, score, scored_at)
                       SELECT log_id, day, 'hallucination', 'm1', CASE WHEN input LIKE 'What%' THEN 0.9 ELSE 0.1 END, now()
                       FROM logs""")
        report = slice_day(con, settings, DAY, write_reports=False)
    assert report.has_scores and (report.n_signal, report.failures) == (60, 40)
    (mean,) = rows(settings, "SELECT mean_hallucination FROM slice_metrics WHERE slice_type = 'all'")[0]
    assert mean == pytest.approx((20 * 0.9 + 40 * 0.1) / 60)


def test_wilson_interval_and_test_choice():
    low, high = stats.wilson([0, 5, 50], [10, 10, 100])
    assert low[0] == 0 and 0 < high[0] < 0.35
    assert low[2] == pytest.approx(0.4038, abs=1e-3) and high[2] == pytest.approx(0.5962, abs=1e-3)
    statsmodels = pytest.importorskip("statsmodels.stats.proportion")
    ref = statsmodels.proportion_confint(5, 10, method="wilson")
    assert (low[1], high[1]) == pytest.approx(ref)
    _, p, tests = stats.greater_test([30, 3], [100, 10], [100, 10], [1000, 1000])
    assert tests == [stats.Z_TEST, stats.FISHER] and all(p < 0.05)
    q = stats.bh([0.01, 0.02, 0.5])
    assert np.allclose(q, [0.03, 0.03, 0.5])


# ---------------------------------------------------------------------------------------
# HaluEval with its labels as the failure signal
# ---------------------------------------------------------------------------------------


def test_halueval_topics_and_keywords_with_more_hallucinations(tmp_path):
    from benchmarks.slicing_halueval import run

    report, found = run(shared_data("halueval/general_data.json"), tmp_path / "home")
    assert report.rows == 4506 and report.failures == 815
    kinds = {f["kind"] for f in found}
    assert "topic slice" in kinds and any(k.startswith("mined") for k in kinds)
    for f in found:
        assert f["q"] < 0.05 and f["lift"] > 1 and f["ci"][0] < f["rate"] < f["ci"][1]
    # ChatGPT's "as an AI language model" answers are labelled hallucinated far more often.
    assert any(f["name"] == "keyword=as_an_ai" for f in found)


def test_a_slice_failing_on_every_record_with_dollars_in_its_name_slices_queues_and_reports(settings):
    """A slice whose every record fails (Wilson upper bound 0.9999999999999999 for n=41)
    and whose name holds `$` (matplotlib math text) must not break slicing, the queue or
    the report of the day (#13)."""
    from flywheel.annotations.queue import build_queue
    from flywheel.report import write_report

    day = "2026-11-20"
    broken = "costs $5 or $\\foo$"
    records = [
        {"log_id": f"ok-{i}", "ts": f"{day}T10:00:00Z", "input": f"question {i}", "output": "an answer",
         "source": "web", "feedback": -1 if i % 10 == 0 else 1}
        for i in range(600)
    ] + [
        {"log_id": f"bad-{i}", "ts": f"{day}T11:00:00Z", "input": f"refund {i}", "output": "no",
         "source": broken, "feedback": -1}
        for i in range(41)
    ]
    land(settings, day, "logs.jsonl", "\n".join(json.dumps(r) for r in records) + "\n")
    with store.connection(settings) as con:
        ingest_day(con, settings, day)
        report = slice_day(con, settings, day)
        high = con.execute("SELECT failure_high FROM slice_metrics WHERE slice_value = ?", [broken]).fetchone()[0]
        worst = con.execute("SELECT slice_value FROM worst_slices WHERE day = ?", [day]).fetchall()
        queue = build_queue(con, settings, day)
        page = write_report(con, settings, day)
    assert high == 1.0  # all 41 failed: the interval reaches 1 exactly
    assert (broken,) in worst
    assert report.chart_path is not None and report.chart_path.stat().st_size > 0
    assert queue.queued > 0
    html = page.path.read_text(encoding="utf-8")
    assert page.chart_status()["worst_slices"] == "chart"
    assert "costs $5 or $\\foo$" in html  # drawn as plain text, not math
