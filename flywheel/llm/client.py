"""A budgeted, cached, concurrent chat client over the ``openai`` package.

How a request goes:

1. Its **request hash** is the SHA-256 of the model name, the messages and the
   parameters that change the answer (temperature, max_tokens, response_format), as
   canonical JSON. The purpose is not part of it: two parts of flywheel asking the same
   thing share one answer.
2. **Cache**: a hash that has an ``ok`` row in `llm_calls` is answered from that row; no
   HTTP request is made. Errors are not cached: a failed request is tried again next run.
3. **Budget**: each run (one client) may make at most ``max_calls`` paid requests and
   spend ``max_tokens`` prompt + completion tokens. A request refused by the budget is
   not sent: :meth:`LLMClient.chat` raises :class:`BudgetExceeded`,
   :meth:`LLMClient.chat_many` returns it with status ``budget``. The token budget is
   checked before each request, so up to ``concurrency`` requests in flight may overshoot
   it by their own tokens.
4. **HTTP** runs in worker threads (at most ``concurrency`` at a time). Timeouts and
   retries are the ``openai`` client's own: each attempt may take ``timeout`` seconds;
   408, 409, 429, 5xx and timeouts are retried ``max_retries`` times with exponential
   backoff (0.5 s doubling up to 8 s, or the server's ``Retry-After``).
5. **Ledger**: every request (paid, cached, failed, or refused by the budget) becomes one
   row of `llm_calls`, written by the calling thread (DuckDB connections are not shared
   with the workers), with tokens, latency and a cost estimate from the per-1k-token
   prices. Cache hits cost nothing and record zero tokens, so ``sum(cost_usd)`` and the
   token sums are what was paid.
"""

from __future__ import annotations

import datetime as dt
import hashlib
import json
import threading
import time
from collections.abc import Sequence
from concurrent.futures import Future, ThreadPoolExecutor, as_completed
from dataclasses import dataclass, replace

import duckdb
import openai
import pyarrow as pa

from flywheel import pii
from flywheel.settings import Settings

NO_ENDPOINT_MESSAGE = (
    "no LLM endpoint configured: set OPENAI_BASE_URL to an OpenAI-compatible endpoint "
    "(e.g. https://api.openai.com/v1 or http://localhost:8000/v1 for vLLM) and "
    "OPENAI_API_KEY if it needs one"
)

# Rows of `llm_calls` written per insert while a batch is running.
FLUSH_EVERY = 50

_LEDGER_SCHEMA = pa.schema(
    [
        ("request_hash", pa.string()),
        ("model", pa.string()),
        ("purpose", pa.string()),
        ("status", pa.string()),
        ("cached", pa.bool_()),
        ("prompt_tokens", pa.int64()),
        ("completion_tokens", pa.int64()),
        ("latency_ms", pa.float64()),
        ("cost_usd", pa.float64()),
        ("called_at", pa.timestamp("us", tz="UTC")),
        ("response", pa.string()),
        ("error", pa.string()),
        ("base_url", pa.string()),
        ("run_id", pa.string()),
    ]
)


class LLMError(RuntimeError):
    """Something about the LLM endpoint stops flywheel from asking it."""


class NoEndpoint(LLMError):
    """No endpoint is configured (OPENAI_BASE_URL is unset)."""


class BudgetExceeded(LLMError):
    """The per-run budget of calls or tokens is spent."""


@dataclass(frozen=True)
class ChatResult:
    """The answer to one chat request.

    ``status`` is ``ok`` (``text`` is the assistant message), ``error`` (``error`` says
    why, ``text`` is empty) or ``budget`` (not sent: the run's budget is spent).
    ``cached`` is true when the answer came from `llm_calls` instead of the endpoint; the
    token counts are then those of the original, paid request.
    """

    text: str
    cached: bool
    status: str
    prompt_tokens: int | None
    completion_tokens: int | None
    request_hash: str
    error: str | None = None
    latency_ms: float | None = None
    cost_usd: float = 0.0

    @property
    def ok(self) -> bool:
        return self.status == "ok"


def request_hash(*, model: str, messages: Sequence[dict], params: dict) -> str:
    """Return the hex SHA-256 of a request: model, messages and answer-changing params."""
    canonical = json.dumps(
        {"model": model, "messages": list(messages), "params": params},
        sort_keys=True,
        separators=(",", ":"),
        ensure_ascii=False,
        default=str,
    )
    return hashlib.sha256(canonical.encode("utf-8")).hexdigest()


class _Budget:
    """Thread-safe counters of one run's paid calls and tokens."""

    def __init__(self, *, max_calls: int, max_tokens: int) -> None:
        self.max_calls = max_calls
        self.max_tokens = max_tokens
        self.calls = 0
        self.tokens = 0
        self._lock = threading.Lock()

    def reserve(self) -> str | None:
        """Take one call from the budget; return why not when it is spent, else None."""
        with self._lock:
            if self.calls >= self.max_calls:
                return f"budget spent: {self.calls} of {self.max_calls} calls this run (FLYWHEEL_LLM_MAX_CALLS)"
            if self.tokens >= self.max_tokens:
                return f"budget spent: {self.tokens} of {self.max_tokens} tokens this run (FLYWHEEL_LLM_MAX_TOKENS)"
            self.calls += 1
            return None

    def spend(self, tokens: int) -> None:
        with self._lock:
            self.tokens += tokens


class LLMClient:
    """Chat completions against one endpoint and model, with a budget, cache and ledger.

    ``con`` is the DuckDB connection of the calling thread; only that thread uses it.
    One client is one run: its budget counts from zero when it is made.
    """

    def __init__(
        self,
        con: duckdb.DuckDBPyConnection,
        *,
        base_url: str,
        model: str,
        api_key: str = "",
        timeout: float = 60.0,
        max_retries: int = 3,
        concurrency: int = 4,
        max_calls: int = 2000,
        max_tokens: int = 2_000_000,
        prompt_price_per_1k: float = 0.0,
        completion_price_per_1k: float = 0.0,
        run_id: str | None = None,
    ) -> None:
        if not base_url:
            raise NoEndpoint(NO_ENDPOINT_MESSAGE)
        self.con = con
        self.base_url = base_url
        self.model = model
        self.timeout = timeout
        self.max_retries = max_retries
        self.concurrency = max(1, concurrency)
        self.prompt_price_per_1k = prompt_price_per_1k
        self.completion_price_per_1k = completion_price_per_1k
        self.run_id = run_id
        self.budget = _Budget(max_calls=max_calls, max_tokens=max_tokens)
        # Local endpoints take no key, but the openai client insists on one.
        self._openai = openai.OpenAI(
            base_url=base_url, api_key=api_key or "no-key", timeout=timeout, max_retries=max_retries
        )
        # What the ledger may never hold: the key itself (whatever its format), and the
        # user:password of the base URL.
        self._api_key = api_key
        self._stored_base_url = pii.strip_url_credentials(base_url)
        self._stats = {"requests": 0, "paid": 0, "cached": 0, "errors": 0, "budget": 0}
        self._cost = 0.0

    @classmethod
    def from_settings(
        cls, settings: Settings, con: duckdb.DuckDBPyConnection, *, run_id: str | None = None
    ) -> "LLMClient":
        """Return a client configured by OPENAI_BASE_URL, OPENAI_API_KEY and FLYWHEEL_LLM_*.

        Raises :class:`NoEndpoint` when OPENAI_BASE_URL is not set.
        """
        return cls(
            con,
            base_url=settings.llm_base_url,
            api_key=settings.llm_api_key,
            model=settings.llm_model,
            timeout=settings.llm_timeout,
            max_retries=settings.llm_max_retries,
            concurrency=settings.llm_concurrency,
            max_calls=settings.llm_max_calls,
            max_tokens=settings.llm_max_tokens,
            prompt_price_per_1k=settings.llm_prompt_price_per_1k,
            completion_price_per_1k=settings.llm_completion_price_per_1k,
            run_id=run_id,
        )

    # -- public API ---------------------------------------------------------------

    def chat(
        self,
        messages: Sequence[dict],
        *,
        purpose: str,
        response_format: dict | None = None,
        temperature: float = 0.0,
        max_tokens: int | None = None,
    ) -> ChatResult:
        """Return the answer to one request (cached when asked before).

        Raises :class:`BudgetExceeded` when the run's budget is spent; HTTP errors and
        timeouts come back as a result with status ``error``.
        """
        [result] = self.chat_many(
            [messages], purpose=purpose, response_format=response_format,
            temperature=temperature, max_tokens=max_tokens,
        )
        if result.status == "budget":
            raise BudgetExceeded(result.error)
        return result

    def chat_many(
        self,
        batch: Sequence[Sequence[dict]],
        *,
        purpose: str,
        response_format: dict | None = None,
        temperature: float = 0.0,
        max_tokens: int | None = None,
    ) -> list[ChatResult]:
        """Return the answers to many requests, in input order.

        Cached requests are answered first; the rest run concurrently (at most
        ``concurrency`` at once). Identical requests in one batch are sent once.
        """
        params: dict = {"temperature": temperature}
        if max_tokens is not None:
            params["max_tokens"] = max_tokens
        if response_format is not None:
            params["response_format"] = response_format
        hashes = [request_hash(model=self.model, messages=m, params=params) for m in batch]
        results: list[ChatResult | None] = [None] * len(batch)
        rows: list[dict] = []

        known = self._lookup(set(hashes))
        todo: dict[str, list[int]] = {}
        for index, digest in enumerate(hashes):
            if digest in known:
                results[index] = known[digest]
                rows.append(self._row(known[digest], purpose, cached=True))
            else:
                todo.setdefault(digest, []).append(index)
        self._write(rows)
        rows = []

        if todo:
            pool = ThreadPoolExecutor(
                max_workers=min(self.concurrency, len(todo)), thread_name_prefix="flywheel-llm"
            )
            try:
                futures: dict[Future, str] = {
                    pool.submit(self._send, batch[indexes[0]], digest, params): digest
                    for digest, indexes in todo.items()
                }
                for future in as_completed(futures):
                    digest = futures[future]
                    result = future.result()
                    first, *same = todo[digest]
                    results[first] = result
                    rows.append(self._row(result, purpose, cached=False))
                    for index in same:
                        if result.ok:
                            results[index] = replace(result, cached=True, cost_usd=0.0, latency_ms=0.0)
                            rows.append(self._row(results[index], purpose, cached=True))
                        else:
                            results[index] = result
                    if len(rows) >= FLUSH_EVERY:
                        self._write(rows)
                        rows = []
            finally:
                pool.shutdown(wait=True, cancel_futures=True)
                self._write(rows)
        return [r for r in results if r is not None]

    def usage(self) -> dict:
        """Return this run's counts: requests, paid, cached, errors, budget, tokens, cost_usd."""
        return {**self._stats, "tokens": self.budget.tokens, "cost_usd": round(self._cost, 6)}

    # -- internals ----------------------------------------------------------------

    def _lookup(self, digests: set[str]) -> dict[str, ChatResult]:
        """Return the cached answers (status ok, from the paid row) of these hashes."""
        if not digests:
            return {}
        found = self.con.execute(
            """
            SELECT request_hash,
                   arg_min(response, called_at),
                   arg_min(prompt_tokens, called_at),
                   arg_min(completion_tokens, called_at)
            FROM llm_calls
            WHERE status = 'ok' AND NOT cached AND model = ?
              AND request_hash IN (SELECT unnest(?::VARCHAR[]))
            GROUP BY request_hash
            """,
            [self.model, sorted(digests)],
        ).fetchall()
        return {
            digest: ChatResult(
                text=text or "", cached=True, status="ok", prompt_tokens=prompt_tokens,
                completion_tokens=completion_tokens, request_hash=digest, latency_ms=0.0,
            )
            for digest, text, prompt_tokens, completion_tokens in found
        }

    def _send(self, messages: Sequence[dict], digest: str, params: dict) -> ChatResult:
        """Send one request (in a worker thread) and return its result; never raises."""
        refusal = self.budget.reserve()
        if refusal:
            return ChatResult("", False, "budget", 0, 0, digest, refusal)
        start = time.perf_counter()
        error = None
        try:
            response = self._openai.chat.completions.create(
                model=self.model, messages=list(messages), **params
            )
        except openai.APITimeoutError:
            error = f"timeout: no answer within {self.timeout} s ({self.max_retries} retries)"
        except openai.APIStatusError as exc:
            error = f"HTTP {exc.status_code}: {exc.message}"
        except openai.APIConnectionError as exc:
            error = f"connection error to {self._stored_base_url}: {exc}"
        except openai.OpenAIError as exc:
            error = f"{type(exc).__name__}: {exc}"
        latency_ms = (time.perf_counter() - start) * 1000.0
        if error is not None:
            return ChatResult("", False, "error", 0, 0, digest, self._masked(error), latency_ms)
        usage = getattr(response, "usage", None)
        prompt_tokens = getattr(usage, "prompt_tokens", None) or 0
        completion_tokens = getattr(usage, "completion_tokens", None) or 0
        self.budget.spend(prompt_tokens + completion_tokens)
        cost = (
            prompt_tokens * self.prompt_price_per_1k + completion_tokens * self.completion_price_per_1k
        ) / 1000.0
        choices = getattr(response, "choices", None) or []
        if not choices:
            return ChatResult(
                "", False, "error", prompt_tokens, completion_tokens, digest,
                "the answer has no choices", latency_ms, cost,
            )
        text = choices[0].message.content or ""
        return ChatResult(text, False, "ok", prompt_tokens, completion_tokens, digest, None, latency_ms, cost)

    def _masked(self, error: str) -> str:
        """Return an error text fit for the ledger: an endpoint may echo the request's
        Authorization header or URL back, so the key and any secret become [SECRET]."""
        if self._api_key and len(self._api_key) >= 4:
            error = error.replace(self._api_key, pii.PLACEHOLDERS["secret"])
        if self.base_url != self._stored_base_url:
            error = error.replace(self.base_url, self._stored_base_url)
        return pii.mask_secrets(error)

    def _row(self, result: ChatResult, purpose: str, *, cached: bool) -> dict:
        self._stats["requests"] += 1
        if cached:
            self._stats["cached"] += 1
        elif result.status == "budget":
            self._stats["budget"] += 1
        else:
            self._stats["paid"] += 1
            self._cost += result.cost_usd
            if result.status == "error":
                self._stats["errors"] += 1
        return {
            "request_hash": result.request_hash,
            "model": self.model,
            "purpose": purpose,
            "status": result.status,
            "cached": cached,
            "prompt_tokens": 0 if cached else result.prompt_tokens,
            "completion_tokens": 0 if cached else result.completion_tokens,
            "latency_ms": result.latency_ms,
            "cost_usd": 0.0 if cached else result.cost_usd,
            "called_at": dt.datetime.now(dt.UTC),
            "response": result.text if result.ok and not cached else None,
            "error": result.error,
            "base_url": self._stored_base_url,
            "run_id": self.run_id,
        }

    def _write(self, rows: list[dict]) -> None:
        """Append ledger rows to `llm_calls` (from the calling thread)."""
        if not rows:
            return
        table = pa.Table.from_pylist(rows, schema=_LEDGER_SCHEMA)
        self.con.register("_llm_calls_rows", table)
        try:
            self.con.execute("INSERT INTO llm_calls BY NAME SELECT * FROM _llm_calls_rows")
        finally:
            self.con.unregister("_llm_calls_rows")
