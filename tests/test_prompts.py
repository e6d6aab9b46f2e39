"""Prompts: registry versions and lineage, few-shot choice from approved logs (MMR, worst
slices), evaluation against a real chat-completions server on 127.0.0.1, promotion or
not, the no-endpoint path, and a full run on the demo data."""

from __future__ import annotations

import datetime as dt
import hashlib
import json
import re

import dagster as dg
import pytest

from flywheel import store
from flywheel.annotations import build_consensus, import_inbox
from flywheel.ingest.loader import ingest_day
from flywheel.llm import LLMClient
from flywheel.prompts import (
    evaluate_candidates,
    evaluation_set,
    load_assertions,
    mmr_select,
    refresh_few_shot,
    render_candidates,
    written_out_losers,
)
from flywheel.prompts import registry
from tests.chat_server import ChatServer
from tests.conftest import land, rows

DAY = "2026-03-02"
GOOD_MARK = "According to the help center:"
BAD_ANSWER = "Everything is free this week and our office in Paris will call you back."

TOPICS = {
    "refund": ("How do I get a refund for order {n}?",
               "Refunds for order {n} go back to the original card within 7 days.",
               "[kb/refunds] Refunds are issued within 7 days to the original payment method."),
    "ship": ("When will my parcel {n} arrive at the depot?",
             "Parcel {n} leaves the warehouse in 2 business days and arrives within 5.",
             "[kb/shipping] Standard parcels leave in 2 business days and arrive within 5 days."),
    "bill": ("Why was I charged twice on invoice {n}?",
             "Invoice {n} shows a pre-authorization hold that is released within 3 days.",
             "[kb/billing] Card pre-authorization holds are released within 3 days."),
}


def rec(log_id, topic, n, *, prompt="helpdesk", feedback=None, input=None, output=None):
    q, a, c = TOPICS[topic]
    r = {"log_id": log_id, "ts": f"{DAY}T10:00:00Z", "source": "web-chat", "prompt_name": prompt,
         "input": input or q.format(n=n), "output": output or a.format(n=n), "context": c}
    if feedback is not None:
        r["feedback"] = feedback
    return r


def build(settings, records, labels):
    """Ingest ``records`` and import ``labels`` [(log_id, annotator, label, value)] for real."""
    land(settings, DAY, "app.jsonl", "".join(json.dumps(r) + "\n" for r in records))
    settings.annotations_inbox.mkdir(parents=True, exist_ok=True)
    lines = ["log_id,annotator,label,value"] + [f"{a},{b},{c},{d}" for a, b, c, d in labels]
    (settings.annotations_inbox / "labels.csv").write_text("\n".join(lines) + "\n", encoding="utf-8")
    with store.connection(settings) as con:
        ingest_day(con, settings, DAY)
        import_inbox(con, settings)
        build_consensus(con)


def approve(log_id, annotator="ann"):
    return [(log_id, annotator, "hallucination", 0), (log_id, annotator, "relevance", 1)]


TEMPLATE = "You are the helpdesk assistant. Answer from the context only.\n\n{few_shot}\n"


@pytest.fixture
def mixed(settings):
    """Approved logs of three topics, and logs that must never be examples."""
    records, labels = [], []
    for topic, count in (("refund", 4), ("ship", 3), ("bill", 3)):
        for i in range(count):
            records.append(rec(f"{topic}-{i}", topic, 100 + i))
            labels += approve(f"{topic}-{i}")
    # Never examples, though each looks like typical refund traffic:
    records += [rec("bad-hallucinated", "refund", 7), rec("bad-irrelevant", "refund", 8),
                rec("bad-feedback", "refund", 9, feedback=-1), rec("bad-tie", "refund", 10),
                rec("bad-unlabelled", "refund", 11), rec("bad-other-prompt", "refund", 12, prompt="other"),
                rec("bad-pii", "refund", 13, input="Refund order 13 please, write to jane.doe@example.com")]
    labels += [("bad-hallucinated", "ann", "hallucination", 1), ("bad-hallucinated", "ann", "relevance", 1),
               ("bad-irrelevant", "ann", "hallucination", 0), ("bad-irrelevant", "ann", "relevance", 0),
               ("bad-tie", "ann", "hallucination", 0), ("bad-tie", "bob", "hallucination", 1),
               ("bad-tie", "ann", "relevance", 1), ("bad-tie", "bob", "relevance", 1)]
    labels += approve("bad-feedback") + approve("bad-other-prompt") + approve("bad-pii")
    # An unusual approved log, for the worst-slice test.
    records.append(rec("warranty-0", "refund", 0, input="Is my blender still under warranty after 18 months?",
                       output="Blenders carry a 24 month warranty from the purchase date."))
    labels += approve("warranty-0")
    settings = settings.replace(prompt_eval_size=2, few_shot_lambda=0.5)
    build(settings, records, labels)
    registry.write_template(settings, "helpdesk", TEMPLATE)
    return settings


def chosen(settings, name="helpdesk"):
    return [r[0] for r in rows(settings, "SELECT log_id FROM few_shot_examples WHERE prompt_name = ? ORDER BY rank", [name])]


def test_only_approved_logs_outside_the_evaluation_set_are_examples(mixed):
    settings = mixed.replace(few_shot_k=50)
    with store.connection(settings) as con:
        report = refresh_few_shot(con, settings)
        eval_ids = set(evaluation_set(con, settings, "helpdesk").log_ids)
    approved = {f"{t}-{i}" for t, c in (("refund", 4), ("ship", 3), ("bill", 3)) for i in range(c)} | {"warranty-0"}
    assert len(eval_ids) == 2
    assert set(chosen(settings)) == approved - eval_ids
    assert report.selections["helpdesk"].n_approved == len(approved - eval_ids)


def test_mmr_picks_one_example_per_topic_where_relevance_alone_picks_near_duplicates(mixed):
    with store.connection(mixed) as con:
        refresh_few_shot(con, mixed.replace(few_shot_k=3))
        eval_ids = set(evaluation_set(con, mixed, "helpdesk").log_ids)
    picked = chosen(mixed)
    assert len(picked) == 3 and not set(picked) & eval_ids
    assert sorted(p.split("-")[0] for p in picked) == ["bill", "refund", "ship"]
    # The same texts by relevance alone (lambda = 1): the refund near-duplicates win.
    texts = [TOPICS[t][0].format(n=100 + i) + "\n" + TOPICS[t][1].format(n=100 + i)
             for t, c in (("refund", 4), ("ship", 3), ("bill", 3)) for i in range(c)]
    topic = ["refund"] * 4 + ["ship"] * 3 + ["bill"] * 3
    by_relevance = [topic[p.index] for p in mmr_select(texts, k=3, lam=1.0)]
    assert by_relevance.count("refund") >= 2
    diverse = [topic[p.index] for p in mmr_select(texts, k=3, lam=0.5)]
    assert sorted(diverse) == ["bill", "refund", "ship"]


def test_worst_slices_get_examples_first(mixed):
    with store.connection(mixed) as con:
        assert "warranty-0" not in evaluation_set(con, mixed, "helpdesk").log_ids
        refresh_few_shot(con, mixed.replace(few_shot_k=2))
        assert "warranty-0" not in chosen(mixed)  # atypical: MMR alone does not pick it
        con.execute("INSERT INTO slice_membership VALUES (?, 'warranty-0', 'keyword', 'warranty')", [DAY])
        con.execute("""INSERT INTO worst_slices (day, rank, slice_type, slice_value, n_signal, failures,
                       failure_rate, test, p_value, q_value, signal)
                       VALUES (?, 1, 'keyword', 'warranty', 40, 12, 0.3, 'fisher', 0.001, 0.01, 'feedback')""", [DAY])
        report = refresh_few_shot(con, mixed.replace(few_shot_k=2))
    assert chosen(mixed)[0] == "warranty-0"
    assert report.selections["helpdesk"].covered_slices == ["keyword=warranty"]
    assert rows(mixed, "SELECT reason, worst_slices FROM few_shot_examples WHERE rank = 1") == [
        ("worst slice keyword=warranty", ["keyword=warranty"])]


def test_registry_versions_by_content_hash_and_records_example_ids(mixed):
    settings = mixed.replace(few_shot_k=3)
    with store.connection(settings) as con:
        refresh_few_shot(con, settings)
        report = render_candidates(con, settings)
        again = render_candidates(con, settings)
        champ = registry.champion(con, "helpdesk")
    # The first champion is the template without examples, published for the application.
    assert champ.text == TEMPLATE.replace("{few_shot}", "") and champ.few_shot_ids == []
    text_path, meta_path = registry.champion_paths(settings, "helpdesk")
    assert text_path.read_text(encoding="utf-8") == champ.text
    assert json.loads(meta_path.read_text())["version"] == champ.version
    cand = report.candidates["helpdesk"]
    assert cand.version == hashlib.sha256(cand.text.encode()).hexdigest()[:16]
    assert cand.text_hash == hashlib.sha256(cand.text.encode()).hexdigest()
    assert cand.few_shot_ids == chosen(settings) and len(cand.few_shot_ids) == 3
    for log_id in cand.few_shot_ids:  # the examples are in the text, in rank order
        assert rows(settings, "SELECT input FROM logs WHERE log_id = ?", [log_id])[0][0] in cand.text
    assert (settings.home / cand.path).read_text(encoding="utf-8") == cand.text
    assert cand.label_hash and cand.status == "candidate"
    # Same examples, same text: the same version, not a new row.
    assert again.new == [] and again.candidates["helpdesk"].version == cand.version
    assert rows(settings, "SELECT status, count(*) FROM prompts GROUP BY 1 ORDER BY 1") == [
        ("candidate", 1), ("champion", 1)]
    # A label change changes the lineage hash.
    before = cand.label_hash
    settings.annotations_inbox.mkdir(parents=True, exist_ok=True)
    (settings.annotations_inbox / "more.csv").write_text(
        "log_id,annotator,label,value\nbad-unlabelled,ann,hallucination,1\n", encoding="utf-8")
    with store.connection(settings) as con:
        import_inbox(con, settings)
        build_consensus(con)
        refresh_few_shot(con, settings)
        assert rows(settings, "SELECT DISTINCT label_hash FROM few_shot_examples") != [(before,)]


def test_a_template_without_its_place_is_reported_and_skipped(settings):
    folder = registry.templates_dir(settings)
    folder.mkdir(parents=True)
    (folder / "broken.txt").write_text("No place for examples here.\n", encoding="utf-8")
    (folder / "good.txt").write_text("Hi.\n{few_shot}\n", encoding="utf-8")
    templates, problems = registry.load_templates(settings)
    assert list(templates) == ["good"]
    assert len(problems) == 1 and "broken.txt" in problems[0] and "{few_shot}" in problems[0]


def test_assertions_file_checks_and_reports_bad_entries(settings):
    settings.prompts_dir.mkdir(parents=True)
    (settings.prompts_dir / "assertions.toml").write_text(
        '[defaults]\nmax_chars = 40\nmust_not_contain = ["free"]\nregex_must_match = ["\\\\d"]\nbogus = 1\n'
        '[prompt.helpdesk]\nregex_must_not_match = ["(unclosed"]\nmust_contain = ["days"]\n', encoding="utf-8")
    loaded = load_assertions(settings)
    assert any("bogus" in p for p in loaded.problems) and any("(unclosed" in p for p in loaded.problems)
    checks = loaded.checks("helpdesk")
    assert checks.failures("Refunds take 7 days.") == []
    assert checks.failures("Everything is free, no delay at all, enjoy it today!") == [
        "max_chars 40", "must_contain 'days'", "must_not_contain 'free'", "regex_must_match '\\\\d'"]
    assert loaded.checks("other").failures("free") == ["must_not_contain 'free'", "regex_must_match '\\\\d'"]


# ---------------------------------------------------------------------------------------
# Evaluation against a real chat-completions server
# ---------------------------------------------------------------------------------------


def judged_answer(body) -> tuple[str, str] | None:
    """Return (criterion, answer) when the request is a judge's, else None."""
    system = body["messages"][0]["content"]
    if not system.startswith("You are a careful evaluator"):
        return None
    criterion = re.search(r"Criterion: (\w+)\.", system).group(1)
    answer = re.search(r"Assistant answer:\n<<<\n(.*?)\n>>>", body["messages"][-1]["content"], re.S).group(1)
    return criterion, answer


def judge_reply(criterion: str, good: bool) -> str:
    verdict = (not good) if criterion == "hallucination" else good
    return json.dumps({"verdict": verdict, "reason": "test judge"})


def grounded(body) -> str:
    context = body["messages"][-1]["content"].split("Context:\n", 1)[-1].split("\n\nQuestion:", 1)[0]
    return f"{GOOD_MARK} {context.strip()}"


def example_aware(body) -> str:
    """Answers well only with few-shot examples in the system prompt; judges by the mark."""
    judged = judged_answer(body)
    if judged:
        return judge_reply(judged[0], judged[1].startswith(GOOD_MARK))
    return grounded(body) if "### Example 1" in body["messages"][0]["content"] else BAD_ANSWER


def indifferent(body) -> str:
    """Answers the same whatever the prompt: a candidate cannot be better."""
    judged = judged_answer(body)
    if judged:
        return judge_reply(judged[0], judged[1].startswith(GOOD_MARK))
    return grounded(body)


@pytest.fixture
def evaluable(settings):
    """30 approved logs of one prompt, a template, candidates rendered, a trusted judge."""
    records, labels = [], []
    for k in range(30):
        topic = ("refund", "ship", "bill")[k % 3]
        records.append(rec(f"h-{k:02d}", topic, 200 + k))
        labels += approve(f"h-{k:02d}")
    settings = settings.replace(prompt_eval_size=12, few_shot_k=3)
    build(settings, records, labels)
    registry.write_template(settings, "helpdesk", TEMPLATE)
    with store.connection(settings) as con:
        refresh_few_shot(con, settings)
        render_candidates(con, settings)
        # The relevance judge has passed its alignment (as flywheel.judges records it).
        con.execute("""INSERT INTO judge_alignment (criterion, prompt_version, kappa, tpr, tnr, n, n_pos, n_neg,
                       parse_failures, trusted, evaluated_at) VALUES ('relevance', 'j1', 0.9, 0.95, 0.95, 40, 20, 20,
                       0, true, now())""")
    return settings


def run_evaluation(settings, server):
    settings = settings.replace(llm_base_url=server.base_url)
    with store.connection(settings) as con:
        client = LLMClient.from_settings(settings, con)
        report = evaluate_candidates(con, settings, client)
        return report, written_out_losers(con, settings)


def test_a_clearly_better_candidate_is_promoted_with_lineage(evaluable, httpserver):
    server = ChatServer(httpserver, example_aware)
    with store.connection(evaluable) as con:
        cand = registry.latest_candidate(con, "helpdesk")
        old = registry.champion(con, "helpdesk")
    report, losers = run_evaluation(evaluable, server)
    ev = report.evaluations["helpdesk"]
    assert ev.promoted, ev.decision
    assert ev.metric("judge:relevance").candidate_score == 1.0 and ev.metric("judge:relevance").champion_score == 0.0
    assert ev.metric("quality").p_value < 0.05 and ev.metric("quality").n == 12
    assert losers == []
    statuses = dict(rows(evaluable, "SELECT version, status FROM prompts WHERE name = 'helpdesk'"))
    assert statuses == {old.version: "retired", cand.version: "champion"}
    text_path, meta_path = registry.champion_paths(evaluable, "helpdesk")
    assert text_path.read_text(encoding="utf-8") == cand.text
    meta = json.loads(meta_path.read_text())
    assert meta["version"] == cand.version and meta["eval_id"] == ev.eval_id
    assert meta["few_shot_ids"] == cand.few_shot_ids and meta["label_hash"] == cand.label_hash
    stored = rows(evaluable, "SELECT metric, promoted, n FROM prompt_evals WHERE eval_id = ? ORDER BY metric", [ev.eval_id])
    assert {m for m, _, _ in stored} >= {"quality", "judge:relevance", "assertions"}
    assert all(p for _, p, _ in stored)
    # Replays of the evaluation set never carry their own log as an example.
    eval_inputs = [r[0] for r in rows(evaluable, """SELECT l.input FROM prompt_eval_sets s JOIN logs l USING (log_id)
                                                    WHERE s.eval_set_id = ?""", [ev.eval_set_id])]
    assert not any(i in cand.text for i in eval_inputs)


def test_a_candidate_that_is_not_better_is_not_written_out(evaluable, httpserver):
    server = ChatServer(httpserver, indifferent)
    with store.connection(evaluable) as con:
        cand = registry.latest_candidate(con, "helpdesk")
        old = registry.champion(con, "helpdesk")
    report, losers = run_evaluation(evaluable, server)
    ev = report.evaluations["helpdesk"]
    assert not ev.promoted and "not significantly better" in ev.decision
    assert ev.metric("quality").p_value == 1.0
    assert losers == []
    statuses = dict(rows(evaluable, "SELECT version, status FROM prompts WHERE name = 'helpdesk'"))
    assert statuses == {old.version: "champion", cand.version: "candidate"}
    assert json.loads(registry.champion_paths(evaluable, "helpdesk")[1].read_text())["version"] == old.version
    assert rows(evaluable, "SELECT eval_id FROM prompts WHERE version = ?", [cand.version]) == [(ev.eval_id,)]
    # The same evaluation is not run again: no new requests, the stored result is reused.
    calls = len(server.calls)
    again, _ = run_evaluation(evaluable, server)
    assert again.evaluations["helpdesk"].reused and len(server.calls) == calls
    assert rows(evaluable, "SELECT count(DISTINCT eval_id) FROM prompt_evals") == [(1,)]


def test_a_candidate_failing_more_assertions_is_not_promoted(evaluable, httpserver):
    (evaluable.prompts_dir / "assertions.toml").write_text(
        f'[prompt.helpdesk]\nmust_not_contain = ["{GOOD_MARK}"]\n', encoding="utf-8")
    server = ChatServer(httpserver, example_aware)
    report, _ = run_evaluation(evaluable, server)
    ev = report.evaluations["helpdesk"]
    assert not ev.promoted
    assert ev.metric("assertions").candidate_score == 0.0 and ev.metric("assertions").champion_score == 1.0


def test_written_out_losers_notices_a_published_loser(evaluable, httpserver):
    server = ChatServer(httpserver, indifferent)
    run_evaluation(evaluable, server)
    with store.connection(evaluable) as con:
        cand = registry.latest_candidate(con, "helpdesk")
        registry.publish(evaluable, cand)  # someone writes the losing candidate out by hand
        problems = written_out_losers(con, evaluable)
    assert len(problems) == 1 and "lost its evaluation" in problems[0]


# ---------------------------------------------------------------------------------------
# Dagster: the no-endpoint path and the full run on the demo data
# ---------------------------------------------------------------------------------------


def prompt_assets():
    from assets import prompts

    return [prompts.few_shot_examples, prompts.prompt_candidates, prompts.prompt_evals]


def resources(settings):
    from assets.resources import FlywheelResource, LLMResource

    return {"flywheel": FlywheelResource(home=str(settings.home)), "llm": LLMResource()}


def test_without_an_endpoint_prompt_evals_is_skipped_and_the_run_succeeds(evaluable, monkeypatch):
    monkeypatch.delenv("OPENAI_BASE_URL", raising=False)
    instance = dg.DagsterInstance.ephemeral()
    result = dg.materialize(prompt_assets(), instance=instance, resources=resources(evaluable))
    assert result.success
    assert result.asset_materializations_for_node("few_shot_examples")
    assert result.asset_materializations_for_node("prompt_candidates")
    assert not result.asset_materializations_for_node("prompt_evals")
    warnings = [e.user_message for e in instance.all_logs(result.run_id) if "prompt_evals skipped" in e.user_message]
    assert len(warnings) == 1 and "OPENAI_BASE_URL" in warnings[0]
    assert rows(evaluable, "SELECT count(*) FROM prompt_evals") == [(0,)]


def test_a_full_run_on_the_demo_data_promotes_prompts_of_approved_examples(tmp_path, httpserver, monkeypatch):
    """The issue's end-to-end criterion: nightly runs, annotations, then the learning
    assets (judges, prompts) with the test server as the endpoint."""
    import pyarrow.parquet as pq

    from flywheel.demo import DemoSpec, generate
    from flywheel.prompts.few_shot import label_hash
    from flywheel.settings import load
    from jobs.definitions import defs

    home = tmp_path / "home"
    spec = DemoSpec(days=2, rows_per_day=300, annotation_rate=0.4, start=dt.date(2026, 3, 1))
    generate(home, spec)
    for name, value in {"FLYWHEEL_HOME": str(home), "FLYWHEEL_PROMPT_EVAL_SIZE": "12",
                        "FLYWHEEL_JUDGE_HOLDOUT_SIZE": "60", "FLYWHEEL_JUDGE_SAMPLE_SIZE": "20",
                        "FLYWHEEL_MIN_LABELS_PER_CLASS": "10"}.items():
        monkeypatch.setenv(name, value)
    monkeypatch.delenv("OPENAI_BASE_URL", raising=False)
    settings = load()
    instance = dg.DagsterInstance.ephemeral()
    days = [(spec.start + dt.timedelta(days=k)).isoformat() for k in range(spec.days)]
    for day in days:
        result = defs.resolve_job_def("nightly").execute_in_process(partition_key=day, instance=instance,
                                                                raise_on_error=False)
        assert result.success, f"nightly run of {day} failed"
    assert defs.resolve_job_def("import_annotations").execute_in_process(instance=instance).success

    # The endpoint: judges answer as the planted truth says (and by the mark for replayed
    # answers); the application answers well only with few-shot examples in its prompt.
    truth = {r["log_id"]: r for day in days for r in pq.read_table(home / "demo" / f"truth-{day}.parquet").to_pylist()}
    outputs = {out: truth[log_id] for log_id, out in rows(settings, "SELECT log_id, output FROM logs") if log_id in truth}

    def reply(body):
        judged = judged_answer(body)
        if judged is None:
            return grounded(body) if "### Example 1" in body["messages"][0]["content"] else BAD_ANSWER
        criterion, answer = judged
        known = outputs.get(answer)
        if known is None:
            return judge_reply(criterion, answer.startswith(GOOD_MARK))
        good = not known["hallucinated"] if criterion == "hallucination" else not known["off_topic"]
        return judge_reply(criterion, good)

    server = ChatServer(httpserver, reply)
    monkeypatch.setenv("OPENAI_BASE_URL", server.base_url)
    learn = defs.resolve_job_def("learn").execute_in_process(instance=instance, raise_on_error=False)
    assert learn.success
    assert learn.asset_materializations_for_node("prompt_evals")

    with store.connection(settings) as con:
        trusted = rows(settings, "SELECT criterion FROM judge_alignment WHERE trusted ORDER BY 1")
        assert trusted, "no judge became trusted: nothing to measure prompts with"
        classifiers = [t for (t,) in rows(settings, "SELECT task FROM models WHERE status = 'champion' ORDER BY 1")]
        assert classifiers == ["hallucination", "relevance"]
        promoted = rows(settings, """SELECT DISTINCT p.name, p.version, p.eval_id, p.label_hash, p.few_shot_ids
                                     FROM prompts p JOIN prompt_evals e ON e.eval_id = p.eval_id AND e.promoted
                                     WHERE p.status = 'champion' ORDER BY 1""")
        assert promoted, rows(settings, "SELECT prompt_name, decision FROM prompt_evals")
        for name, version, eval_id, lineage_hash, ids in promoted:
            text_path, meta_path = registry.champion_paths(settings, name)
            meta = json.loads(meta_path.read_text())
            text = text_path.read_text(encoding="utf-8")
            # The file holds the promoted version, with its lineage.
            assert registry.version_of(text) == version == meta["version"]
            assert meta["eval_id"] == eval_id and meta["few_shot_ids"] == list(ids) and ids
            assert meta["label_hash"] == lineage_hash == label_hash(con, name)
            # Every example is a human-approved log of this prompt, and is in the text.
            for log_id in ids:
                (approved,) = con.execute(
                    """SELECT l.prompt_name = ? AND coalesce(l.feedback, 0) <> -1
                              AND (SELECT value FROM consensus WHERE log_id = l.log_id AND label = 'hallucination') = 0
                              AND (SELECT value FROM consensus WHERE log_id = l.log_id AND label = 'relevance') = 1
                       FROM logs l WHERE l.log_id = ?""", [name, log_id]).fetchone()
                assert approved, f"{log_id} in {name} is not a human-approved log"
                assert con.execute("SELECT input FROM logs WHERE log_id = ?", [log_id]).fetchone()[0] in text
            # The evaluation that promoted it is recorded metric by metric.
            metrics = dict(con.execute("SELECT metric, p_value FROM prompt_evals WHERE eval_id = ?", [eval_id]).fetchall())
            assert metrics["quality"] < settings.prompt_eval_alpha and "assertions" in metrics
            # ... scored by the trusted judges and the classifier champions above the trust floor
            # (an untrusted champion is left out)
            from flywheel.classifiers.registry import champion_trust

            verdicts = {task: trust.task.trusted for task, _, trust in champion_trust(con, settings)}
            used = {t for t in classifiers if verdicts[t]}
            assert {f"classifier:{t}" for t in used} | {f"judge:{c}" for (c,) in trusted} <= set(metrics)
            assert not {f"classifier:{t}" for t in set(classifiers) - used} & set(metrics)
        # Names never evaluated (too few labels) keep their first champion, published too.
        for (name,) in rows(settings, "SELECT DISTINCT name FROM prompts"):
            assert registry.published(settings, name)["version"] == registry.champion(con, name).version


def test_a_spent_budget_leaves_items_out_and_promotes_nothing(evaluable, httpserver):
    server = ChatServer(httpserver, example_aware)
    report, losers = run_evaluation(evaluable.replace(llm_max_calls=10), server)
    ev = report.evaluations["helpdesk"]
    assert len(server.calls) == 10
    assert not ev.promoted and ev.n_replayed < 2 and "over the budget" in ev.decision
    assert any("replays failed" in p and "budget" in p for p in report.problems)
    assert losers == [] and rows(evaluable, "SELECT count(*) FROM prompts WHERE status = 'champion' AND few_shot_ids = []") == [(1,)]
    # With budget again, the same evaluation runs in full (not reused), paying only for the rest.
    again, _ = run_evaluation(evaluable, server)
    assert not again.evaluations["helpdesk"].reused and again.evaluations["helpdesk"].promoted
    assert len(server.calls) == 10 + (24 - 10) + 24  # the rest of the replays, then the judge
    assert rows(evaluable, "SELECT count(DISTINCT eval_id), bool_and(promoted) FROM prompt_evals") == [(1, True)]


def test_eager_automation_refreshes_the_prompts_after_new_labels_and_the_latest_slices():
    from jobs.definitions import defs

    instance = dg.DagsterInstance.ephemeral()
    last_day = defs.resolve_asset_graph().get(dg.AssetKey("slice_metrics")).partitions_def.get_last_partition_key()
    selection = dg.AssetSelection.assets("few_shot_examples", "prompt_candidates")

    def requested(cursor=None):
        result = dg.evaluate_automation_conditions(defs=defs, instance=instance, asset_selection=selection, cursor=cursor)
        return result.cursor, sorted(r.key.to_user_string() for r in result.results if r.true_subset.size)

    cursor, wanted = requested()
    assert wanted == []
    instance.report_runless_asset_event(dg.AssetMaterialization("consensus"))
    cursor, wanted = requested(cursor)
    assert wanted == []  # the latest day's slices are not there yet
    instance.report_runless_asset_event(dg.AssetMaterialization("slice_metrics", partition=last_day))
    cursor, wanted = requested(cursor)
    assert wanted == ["few_shot_examples", "prompt_candidates"]
