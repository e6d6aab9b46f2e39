"""The LLM client against a real chat-completions server on 127.0.0.1 (tests/chat_server.py).

Caching by request hash, the per-run budget, retries on 429 and 5xx, timeouts, the
ledger in `llm_calls`, and the no-endpoint error. The openai client is never mocked.
"""

from __future__ import annotations

import time

import pytest

from flywheel import store
from flywheel.llm import BudgetExceeded, LLMClient, NoEndpoint, request_hash
from flywheel.settings import Settings, load
from tests.chat_server import ChatServer


def echo(request: dict) -> str:
    return "echo: " + request["messages"][-1]["content"]


def ask(text: str) -> list[dict]:
    return [{"role": "system", "content": "Be brief."}, {"role": "user", "content": text}]


def llm_settings(settings: Settings, server: ChatServer, **env: str) -> Settings:
    values = {"FLYWHEEL_HOME": str(settings.home), "OPENAI_BASE_URL": server.base_url,
              "OPENAI_API_KEY": "sk-test-key", "FLYWHEEL_LLM_MODEL": "test-model",
              "FLYWHEEL_LLM_TIMEOUT": "5", "FLYWHEEL_LLM_MAX_RETRIES": "1"}
    values.update(env)
    return load(values)


def ledger(settings: Settings) -> list[tuple]:
    with store.connection(settings) as con:
        return con.execute(
            "SELECT status, cached, prompt_tokens, completion_tokens, cost_usd, purpose, error, response "
            "FROM llm_calls ORDER BY called_at"
        ).fetchall()


def test_second_run_makes_zero_calls_and_the_ledger_adds_up(settings, httpserver):
    server = ChatServer(httpserver, echo)
    s = llm_settings(settings, server, FLYWHEEL_LLM_PROMPT_PRICE_PER_1K="1.0",
                     FLYWHEEL_LLM_COMPLETION_PRICE_PER_1K="2.0")
    batch = [ask("one"), ask("two"), ask("three"), ask("two")]
    with store.connection(s) as con:
        client = LLMClient.from_settings(s, con)
        first = client.chat_many(batch, purpose="test")
    # In input order; the duplicate is sent once and answered from the first.
    assert [r.text for r in first] == ["echo: one", "echo: two", "echo: three", "echo: two"]
    assert [r.cached for r in first] == [False, False, False, True]
    assert len(server.calls) == 3
    # The request carried the pinned model, the parameters and the key from the environment.
    assert {c["model"] for c in server.calls} == {"test-model"}
    assert all(c["temperature"] == 0.0 for c in server.calls)
    request, _ = httpserver.log[0]
    assert request.headers["Authorization"] == "Bearer sk-test-key"

    with store.connection(s) as con:
        again = LLMClient.from_settings(s, con).chat_many(batch, purpose="test")
    assert len(server.calls) == 3, "a second run must not make any HTTP call"
    assert [r.text for r in again] == [r.text for r in first]
    assert all(r.cached and r.status == "ok" for r in again)
    assert [r.request_hash for r in again] == [r.request_hash for r in first]

    rows = ledger(s)
    assert len(rows) == 8  # 3 paid + 1 duplicate + 4 cached
    paid = [r for r in rows if not r[1]]
    assert len(paid) == 3 and all(r[0] == "ok" and r[2] > 0 and r[3] > 0 for r in paid)
    # cost = tokens / 1000 * price, and cache hits cost nothing.
    for status, cached, prompt_tokens, completion_tokens, cost, *_ in rows:
        expected = 0.0 if cached else prompt_tokens / 1000 * 1.0 + completion_tokens / 1000 * 2.0
        assert cost == pytest.approx(expected)
    assert {r[7] for r in paid} == {"echo: one", "echo: two", "echo: three"}


def test_the_hash_covers_model_messages_and_parameters(settings, httpserver):
    server = ChatServer(httpserver, echo)
    s = llm_settings(settings, server)
    with store.connection(s) as con:
        client = LLMClient.from_settings(s, con)
        a = client.chat(ask("same"), purpose="a")
        b = client.chat(ask("same"), purpose="b")  # another purpose: the same request
        c = client.chat(ask("same"), purpose="a", temperature=0.7)
        d = client.chat(ask("same"), purpose="a", max_tokens=5)
    assert b.cached and b.request_hash == a.request_hash
    assert len({a.request_hash, c.request_hash, d.request_hash}) == 3
    assert len(server.calls) == 3
    assert a.request_hash == request_hash(model="test-model", messages=ask("same"), params={"temperature": 0.0})
    assert request_hash(model="other", messages=ask("same"), params={"temperature": 0.0}) != a.request_hash


def test_budget_of_calls_stops_the_run(settings, httpserver):
    server = ChatServer(httpserver, echo)
    s = llm_settings(settings, server, FLYWHEEL_LLM_MAX_CALLS="2", FLYWHEEL_LLM_CONCURRENCY="1")
    with store.connection(s) as con:
        client = LLMClient.from_settings(s, con)
        results = client.chat_many([ask(str(i)) for i in range(5)], purpose="test")
        assert [r.status for r in results].count("ok") == 2
        assert [r.status for r in results].count("budget") == 3
        assert all("FLYWHEEL_LLM_MAX_CALLS" in r.error for r in results if r.status == "budget")
        with pytest.raises(BudgetExceeded, match="FLYWHEEL_LLM_MAX_CALLS"):
            client.chat(ask("more"), purpose="test")
        # What was answered stays answerable from the cache: no budget needed.
        answered = next(r for r in results if r.ok)
        assert client.chat(ask(answered.text.removeprefix("echo: ")), purpose="test").cached
        assert client.usage()["paid"] == 2 and client.usage()["budget"] == 4
    assert len(server.calls) == 2
    statuses = [r[0] for r in ledger(s)]
    assert statuses.count("budget") == 4 and statuses.count("ok") == 3

    # The next run has a fresh budget and pays only for what is new.
    with store.connection(s) as con:
        results = LLMClient.from_settings(s, con).chat_many([ask(str(i)) for i in range(4)], purpose="test")
    assert all(r.ok for r in results) and len(server.calls) == 4


def test_budget_of_tokens_stops_the_run(settings, httpserver):
    server = ChatServer(httpserver, lambda request: "x" * 400)  # about 100 completion tokens
    s = llm_settings(settings, server, FLYWHEEL_LLM_MAX_TOKENS="150", FLYWHEEL_LLM_CONCURRENCY="1")
    with store.connection(s) as con:
        client = LLMClient.from_settings(s, con)
        assert client.chat(ask("a"), purpose="test").ok
        assert client.chat(ask("b"), purpose="test").ok  # 100+ tokens spent < 150: allowed
        with pytest.raises(BudgetExceeded, match="FLYWHEEL_LLM_MAX_TOKENS"):
            client.chat(ask("c"), purpose="test")
    assert len(server.calls) == 2


def test_retry_on_429_then_success(settings, httpserver):
    server = ChatServer(httpserver, echo)
    s = llm_settings(settings, server)
    server.fail_next(429, times=1)
    with store.connection(s) as con:
        result = LLMClient.from_settings(s, con).chat(ask("hello"), purpose="test")
    assert result.ok and result.text == "echo: hello"
    assert len(server.calls) == 2  # the 429, then the retry
    assert [r[0] for r in ledger(s)] == ["ok"]


def test_5xx_beyond_the_retries_is_an_error_and_is_not_cached(settings, httpserver):
    server = ChatServer(httpserver, echo)
    s = llm_settings(settings, server)  # one retry
    server.fail_next(503, times=2)
    with store.connection(s) as con:
        failed = LLMClient.from_settings(s, con).chat(ask("hello"), purpose="test")
    assert failed.status == "error" and "503" in failed.error and failed.text == ""
    assert len(server.calls) == 2
    row = ledger(s)[0]
    assert row[0] == "error" and "503" in row[6] and row[7] is None
    with store.connection(s) as con:
        retried = LLMClient.from_settings(s, con).chat(ask("hello"), purpose="test")
    assert retried.ok and not retried.cached and len(server.calls) == 3


def test_timeout_is_an_error_without_hanging(settings, httpserver):
    server = ChatServer(httpserver, echo)
    s = llm_settings(settings, server, FLYWHEEL_LLM_TIMEOUT="0.3", FLYWHEEL_LLM_MAX_RETRIES="0")
    server.delay_next(1.0, times=1)
    start = time.perf_counter()
    with store.connection(s) as con:
        result = LLMClient.from_settings(s, con).chat(ask("slow"), purpose="test")
    elapsed = time.perf_counter() - start
    assert result.status == "error" and "timeout" in result.error
    assert elapsed < 0.9, f"the client waited {elapsed:.2f} s for a 0.3 s timeout"
    status, cached, *_, error, response = ledger(s)[0]
    assert status == "error" and not cached and "timeout" in error and response is None


def test_no_endpoint_names_the_variable(settings):
    assert settings.llm_base_url == ""
    with store.connection(settings) as con, pytest.raises(NoEndpoint, match="OPENAI_BASE_URL"):
        LLMClient.from_settings(settings, con)


def test_the_key_comes_from_the_environment_and_is_never_printed(tmp_path):
    s = load({"FLYWHEEL_HOME": str(tmp_path), "OPENAI_API_KEY": "sk-secret-123", "OPENAI_BASE_URL": "http://h/v1"})
    assert s.llm_api_key == "sk-secret-123" and s.llm_base_url == "http://h/v1"
    assert "sk-secret-123" not in repr(s)
