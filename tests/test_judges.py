"""LLM judges against a real chat-completions server on 127.0.0.1 (tests/chat_server.py).

A small home: 70 logs of one day, 60 of them labelled by people (hallucination: the
answer quotes a price of 999; relevance: the answer is not about turtles). A judge that
applies the same rule agrees with people; a judge that answers at random does not; a
judge that answers in prose gives parse failures. Everything runs for real: ingestion,
annotation import, consensus, the openai client, DuckDB, Dagster.
"""

from __future__ import annotations

import hashlib
import json
import random
import shutil
from pathlib import Path

import dagster as dg
import pytest

from assets.judges import answers_parse, judge_alignment, judge_verdicts, judges_trusted
from assets.resources import FlywheelResource, LLMResource
from flywheel import store
from flywheel.annotations import build_consensus, import_inbox
from flywheel.annotations.queue import build_queue
from flywheel.ingest.loader import ingest_day
from flywheel.judges import align_judges, judge_items, load_criteria, parse_verdict, run_judges, trusted_criteria
from flywheel.llm import LLMClient
from flywheel.settings import Settings, load
from tests.chat_server import ChatServer
from tests.conftest import land

DAY = "2025-03-01"
N_LOGS, N_LABELLED = 70, 60
JUDGE_ENV = {"FLYWHEEL_JUDGE_HOLDOUT_SIZE": "40", "FLYWHEEL_JUDGE_FEW_SHOT": "4",
             "FLYWHEEL_JUDGE_MIN_ITEMS": "20", "FLYWHEEL_JUDGE_SAMPLE_SIZE": "10",
             "FLYWHEEL_LLM_MODEL": "judge-model", "FLYWHEEL_LLM_TIMEOUT": "5", "FLYWHEEL_LLM_MAX_RETRIES": "0"}


def hallucinated(i: int) -> bool:
    return i % 3 == 0 and relevant(i)  # an answer about turtles quotes no price


def relevant(i: int) -> bool:
    return i % 4 != 1


def log_record(i: int) -> dict:
    price = 999 if hallucinated(i) else 10 + i
    output = "I like turtles." if not relevant(i) else f"Plan {i} costs {price} dollars a month."
    return {"log_id": f"log-{i:03d}", "ts": f"{DAY}T{i // 60:02d}:{i % 60:02d}:00Z",
            "input": f"What does plan {i} cost?", "output": output,
            "context": f"Plan {i} costs {10 + i} dollars a month."}


@pytest.fixture(scope="module")
def template(tmp_path_factory) -> Path:
    home = tmp_path_factory.mktemp("judges") / "home"
    settings = load({"FLYWHEEL_HOME": str(home)})
    land(settings, DAY, "app.jsonl", "".join(json.dumps(log_record(i)) + "\n" for i in range(N_LOGS)))
    lines = ["log_id,annotator,label,value"]
    for i in range(N_LABELLED):
        lines.append(f"log-{i:03d},ann1,hallucination,{int(hallucinated(i))}")
        lines.append(f"log-{i:03d},ann1,relevance,{int(relevant(i))}")
    settings.annotations_inbox.mkdir(parents=True, exist_ok=True)
    (settings.annotations_inbox / "labels.csv").write_text("\n".join(lines) + "\n", encoding="utf-8")
    with store.connection(settings) as con:
        assert ingest_day(con, settings, DAY).total("accepted") == N_LOGS
        assert import_inbox(con, settings).total("accepted") == 2 * N_LABELLED
        build_consensus(con)
    return home


def make_home(template: Path, tmp_path: Path, name: str = "home") -> Path:
    home = tmp_path / name
    shutil.copytree(template, home)
    return home


def judge_settings(home: Path, server: ChatServer | None = None, **env: str) -> Settings:
    values = {"FLYWHEEL_HOME": str(home), **JUDGE_ENV, **env}
    if server is not None:
        values["OPENAI_BASE_URL"] = server.base_url
    return load(values)


def shown_item(request: dict) -> tuple[str, str]:
    """Return (criterion, the assistant answer) of the item a judge request asks about."""
    text = request["messages"][-1]["content"]
    answer = text.split("Assistant answer:\n<<<\n", 1)[1].split("\n>>>", 1)[0]
    criterion = text.rsplit("Criterion: ", 1)[1].split(".", 1)[0]
    return criterion, answer


def agreeing(request: dict) -> str:
    """A judge with the people's own rule."""
    criterion, answer = shown_item(request)
    verdict = "999" in answer if criterion in ("hallucination", "faithfulness") else "turtles" not in answer
    return json.dumps({"verdict": verdict, "reason": "applied the rule"})


def at_random(request: dict) -> str:
    """A judge that flips a coin (seeded by the request, so runs repeat)."""
    seed = hashlib.sha256(request["messages"][-1]["content"].encode()).hexdigest()
    return json.dumps({"verdict": random.Random(seed).random() < 0.5, "reason": "coin"})


def run_all(settings: Settings) -> None:
    with store.connection(settings) as con:
        client = LLMClient.from_settings(settings, con)
        run_judges(client, con, settings)
        align_judges(con, settings, model=client.model)


def alignment_rows(settings: Settings) -> dict[str, dict]:
    with store.connection(settings) as con:
        cursor = con.execute("SELECT * FROM judge_alignment")
        names = [d[0] for d in cursor.description]
        return {row[0]: dict(zip(names, row)) for row in cursor.fetchall()}


def truth(log_id: str, criterion: str) -> bool:
    i = int(log_id.split("-")[1])
    return hallucinated(i) if criterion == "hallucination" else relevant(i)


# ---------------------------------------------------------------------------------------


def test_parse_verdict_is_tolerant_but_never_guesses():
    assert parse_verdict('{"verdict": true, "reason": "made up a price"}') == (True, "made up a price", None)
    assert parse_verdict('```json\n{"verdict": false, "reason": "ok"}\n```') == (False, "ok", None)
    assert parse_verdict('Sure! Here it is: {"verdict": "yes", "reason": "r"} Hope it helps.')[0] is True
    assert parse_verdict('{"verdict": 0}') == (False, "", None)
    for bad, why in [("", "empty"), ("I think it is fine.", "no JSON object"),
                     ('{"reason": "no verdict"}', "no 'verdict'"), ('{"verdict": "maybe"}', "not true or false"),
                     ('{"verdict": tru', "no JSON object")]:
        verdict, reason, error = parse_verdict(bad)
        assert verdict is None and why in error, (bad, error)


def test_an_agreeing_judge_is_trusted_and_a_random_one_is_not(template, tmp_path, httpserver):
    mode = {"reply": agreeing}
    server = ChatServer(httpserver, lambda request: mode["reply"](request))
    good = judge_settings(make_home(template, tmp_path, "good"), server)
    run_all(good)
    requests = len(server.calls)
    # 40 held-out + 10 recent unlabelled logs, per criterion.
    assert requests == 2 * (40 + 10)
    first = server.calls[0]
    assert first["response_format"]["type"] == "json_schema" and first["model"] == "judge-model"
    assert len(first["messages"]) == 1 + 2 * 4 + 1  # instructions, 4 examples, the item

    rows = alignment_rows(good)
    assert set(rows) == {"hallucination", "relevance"}
    for criterion, row in rows.items():
        assert row["trusted"] is True and row["kappa"] == pytest.approx(1.0)
        assert row["tpr"] == 1.0 and row["tnr"] == 1.0 and row["parse_failures"] == 0
        assert row["n"] == 40 and row["n_pos"] + row["n_neg"] == 40 and min(row["n_pos"], row["n_neg"]) > 0
    with store.connection(good) as con:
        assert trusted_criteria(con) == ["hallucination", "relevance"]
        verdicts = con.execute("SELECT log_id, criterion, verdict, holdout FROM judge_verdicts").fetchall()
        prompts = con.execute("SELECT criterion, few_shot_ids FROM judge_prompts").fetchall()
        consensus = dict(((r[0], r[1]), r[2]) for r in con.execute("SELECT log_id, label, value FROM consensus").fetchall())
    # Verdicts have the polarity of the labels; the recent sample is the unlabelled logs.
    assert all(v == truth(log_id, c) for log_id, c, v, _ in verdicts)
    recent = {log_id for log_id, _, _, holdout in verdicts if not holdout}
    assert recent == {f"log-{i:03d}" for i in range(N_LABELLED, N_LOGS)}
    # Few-shot examples: balanced, from the consensus, never from the held-out set.
    for criterion, ids in prompts:
        held_out = {log_id for log_id, c, _, holdout in verdicts if holdout and c == criterion}
        assert len(held_out) == 40 and not set(ids) & held_out
        assert sorted(consensus[(i, criterion)] for i in ids) == [0, 0, 1, 1]

    mode["reply"] = at_random
    noisy = judge_settings(make_home(template, tmp_path, "noisy"), server)
    run_all(noisy)
    rows = alignment_rows(noisy)
    for criterion, row in rows.items():
        assert row["trusted"] is False and row["kappa"] < 0.4 and row["n"] == 40
    with store.connection(noisy) as con:
        assert trusted_criteria(con) == []


def test_a_rerun_asks_nothing_and_new_labels_make_a_new_prompt_version(template, tmp_path, httpserver):
    server = ChatServer(httpserver, agreeing)
    # A recent sample smaller than the 10 unlabelled logs: a re-run must not move on to others.
    settings = judge_settings(make_home(template, tmp_path), server, FLYWHEEL_JUDGE_SAMPLE_SIZE="5")
    run_all(settings)
    calls, before = len(server.calls), alignment_rows(settings)
    assert calls == 2 * (40 + 5)
    run_all(settings)
    assert len(server.calls) == calls, "a re-run must not ask the endpoint again"
    assert {c: r["prompt_version"] for c, r in alignment_rows(settings).items()} == {
        c: r["prompt_version"] for c, r in before.items()}

    # People change their mind about a few-shot example: the judge follows the new labels.
    with store.connection(settings) as con:
        ids = con.execute("SELECT few_shot_ids FROM judge_prompts WHERE criterion = 'hallucination'").fetchone()[0]
        example = ids[0]
        old = con.execute("SELECT value FROM consensus WHERE log_id = ? AND label = 'hallucination'",
                          [example]).fetchone()[0]
    flipped = "\n".join(f"{example},{who},hallucination,{1 - old}" for who in ("ann2", "ann3"))
    (settings.annotations_inbox / "more.csv").write_text("log_id,annotator,label,value\n" + flipped + "\n")
    with store.connection(settings) as con:
        import_inbox(con, settings)
        build_consensus(con)
    run_all(settings)
    after = alignment_rows(settings)
    assert after["hallucination"]["prompt_version"] != before["hallucination"]["prompt_version"]
    assert after["relevance"]["prompt_version"] == before["relevance"]["prompt_version"]
    with store.connection(settings) as con:
        messages = con.execute("SELECT messages FROM judge_prompts WHERE prompt_version = ?",
                               [after["hallucination"]["prompt_version"]]).fetchone()[0]
        new_ids = con.execute("SELECT few_shot_ids FROM judge_prompts WHERE prompt_version = ?",
                              [after["hallucination"]["prompt_version"]]).fetchone()[0]
        consensus = dict(con.execute("SELECT log_id, value FROM consensus WHERE label = 'hallucination'").fetchall())
    shown = [json.loads(m["content"])["verdict"] for m in json.loads(messages) if m["role"] == "assistant"]
    assert shown == [bool(consensus[i]) for i in new_ids]  # the examples say what people say now


def test_malformed_answers_are_parse_failures_not_verdicts(template, tmp_path, httpserver):
    def reply(request: dict) -> str:
        criterion, _ = shown_item(request)
        if criterion == "hallucination":
            return "Honestly, this looks mostly fine to me."
        return "```json\n" + agreeing(request) + "\n```"

    server = ChatServer(httpserver, reply)
    settings = judge_settings(make_home(template, tmp_path), server)
    run_all(settings)
    with store.connection(settings) as con:
        rows = con.execute("SELECT verdict, parse_error, status FROM judge_verdicts "
                           "WHERE criterion = 'hallucination'").fetchall()
        parsed = con.execute("SELECT count(*) FROM judge_verdicts WHERE criterion = 'relevance' "
                             "AND verdict IS NOT NULL AND parse_error IS NULL").fetchone()[0]
    assert len(rows) == 50 and all(v is None and "no JSON object" in e and s == "parse_error" for v, e, s in rows)
    assert parsed == 50
    rows = alignment_rows(settings)
    assert rows["hallucination"]["parse_failures"] == 40 and rows["hallucination"]["n"] == 0
    assert rows["hallucination"]["trusted"] is False and rows["hallucination"]["kappa"] is None
    assert rows["relevance"]["trusted"] is True
    calls = len(server.calls)
    run_all(settings)  # a parse failure is an answer: not asked again
    assert len(server.calls) == calls


def test_the_queue_uses_only_verdicts_of_trusted_judges(template, tmp_path, httpserver):
    mode = {"reply": agreeing}
    server = ChatServer(httpserver, lambda request: mode["reply"](request))
    picks = {}
    for name, reply in (("trusted", agreeing), ("untrusted", at_random)):
        mode["reply"] = reply
        settings = judge_settings(make_home(template, tmp_path, name), server)
        run_all(settings)
        with store.connection(settings) as con:
            # A classifier that says the opposite of the judge on every recent log.
            con.execute("CREATE TABLE IF NOT EXISTS log_scores (log_id VARCHAR, day DATE, task VARCHAR, "
                        "model_version VARCHAR, score DOUBLE, scored_at TIMESTAMPTZ)")
            con.execute("""INSERT INTO log_scores (log_id, day, task, model_version, score, scored_at)
                           SELECT log_id, DATE '2025-03-01', criterion, 'm1', CASE WHEN verdict THEN 0.05 ELSE 0.95 END, now()
                           FROM judge_verdicts WHERE NOT holdout""")
            report = build_queue(con, settings, DAY, size=10, shares={"disagreement": 0.5, "random": 0.5})
            picks[name] = report.counts.get("disagreement", 0)
            skipped = report.skipped
    assert picks["trusted"] == 5
    assert picks["untrusted"] == 0 and "trusted" in skipped["disagreement"]


def test_judge_items_uses_the_trusted_prompt_and_writes_no_verdicts(template, tmp_path, httpserver):
    server = ChatServer(httpserver, agreeing)
    settings = judge_settings(make_home(template, tmp_path), server)
    run_all(settings)
    items = [{"log_id": "new-1", "input": "What does plan 7 cost?", "output": "Plan 7 costs 999 dollars.",
              "context": "Plan 7 costs 17 dollars."},
             {"log_id": "new-2", "input": "What does plan 8 cost?", "output": "Plan 8 costs 18 dollars.",
              "context": None}]
    with store.connection(settings) as con:
        before = con.execute("SELECT count(*) FROM judge_verdicts").fetchone()[0]
        version = alignment_rows(settings)["hallucination"]["prompt_version"]
        verdicts = judge_items(LLMClient.from_settings(settings, con), con, settings,
                               criterion="hallucination", items=items)
        assert con.execute("SELECT count(*) FROM judge_verdicts").fetchone()[0] == before
    assert [v.verdict for v in verdicts] == [True, False]
    assert all(v.parse_error is None and v.prompt_version == version and v.reason for v in verdicts)
    with pytest.raises(KeyError, match="no judge criterion 'tone'"):
        judge_items(None, None, settings, criterion="tone", items=items)


def test_user_defined_criteria_from_toml_and_bad_files_reported(template, tmp_path, httpserver):
    settings = judge_settings(make_home(template, tmp_path), ChatServer(httpserver, agreeing))
    folder = settings.home / "judges"
    folder.mkdir()
    (folder / "mine.toml").write_text(
        '[judges.faithfulness]\nlabel = "hallucination"\n'
        'question = "Does the answer state a price the context does not give?"\n'
        'true_means = "a price in the answer is not in the context"\n'
        'false_means = "every price is in the context"\n\n'
        '[judges.tone]\nquestion = "Is the answer rude?"\nfalse_means = "it is polite"\n'
    )
    (folder / "broken.toml").write_text("[judges.x\nquestion = ")
    loaded = load_criteria(settings)
    assert set(loaded.criteria) == {"hallucination", "relevance", "faithfulness"}
    assert loaded.criteria["faithfulness"].label == "hallucination"
    assert any("judges/mine.toml" in p and "[judges.tone]" in p and "true_means" in p for p in loaded.problems)
    assert any("judges/broken.toml" in p and "cannot be read" in p for p in loaded.problems)
    run_all(settings)
    rows = alignment_rows(settings)
    assert rows["faithfulness"]["trusted"] is True and rows["faithfulness"]["n"] == 40


# --- Dagster ----------------------------------------------------------------------------


def test_without_an_endpoint_the_judge_assets_skip_and_the_run_succeeds(template, tmp_path, monkeypatch):
    home = make_home(template, tmp_path)
    monkeypatch.delenv("OPENAI_BASE_URL", raising=False)
    from assets.annotations import consensus

    instance = dg.DagsterInstance.ephemeral()
    result = dg.materialize(
        [consensus, judge_verdicts, judge_alignment, answers_parse, judges_trusted],
        resources={"flywheel": FlywheelResource(home=str(home)), "llm": LLMResource()},
        instance=instance,
    )
    assert result.success
    materialized = {e.asset_key.to_user_string() for e in result.get_asset_materialization_events()}
    assert materialized == {"consensus"}
    messages = [entry.user_message for entry in instance.all_logs(result.run_id)]
    skipped = [m for m in messages if "skipped" in m and "OPENAI_BASE_URL" in m]
    assert any(m.startswith("judge_verdicts skipped") for m in skipped)
    assert all(m.startswith(("judge_verdicts", "judge_alignment")) for m in skipped)
    with store.connection(load({"FLYWHEEL_HOME": str(home)})) as con:
        assert con.execute("SELECT count(*) FROM llm_calls").fetchone()[0] == 0


def test_the_judge_assets_materialize_with_an_endpoint(template, tmp_path, httpserver, monkeypatch):
    server = ChatServer(httpserver, agreeing)
    home = make_home(template, tmp_path)
    for key, value in JUDGE_ENV.items():
        monkeypatch.setenv(key, value)
    result = dg.materialize(
        [judge_verdicts, judge_alignment, answers_parse, judges_trusted],
        resources={"flywheel": FlywheelResource(home=str(home)), "llm": LLMResource(base_url=server.base_url)},
        instance=dg.DagsterInstance.ephemeral(),
    )
    assert result.success
    alignment = result.asset_materializations_for_node("judge_alignment")[0].metadata
    assert "| hallucination |" in alignment["alignment"].value and alignment["dagster/row_count"].value == 2
    assert alignment["trusted"].value == ["hallucination", "relevance"]
    verdicts = result.asset_materializations_for_node("judge_verdicts")[0].metadata
    assert verdicts["llm_paid"].value == 100 and verdicts["dagster/row_count"].value == 100
    checks = {c.check_name: c.passed for c in result.get_asset_check_evaluations()}
    assert checks == {"answers_parse": True, "judges_trusted": True}
