"""The LLM client of flywheel: any OpenAI-compatible chat-completions endpoint.

:class:`LLMClient` adds what a nightly batch needs around the ``openai`` package: a
per-run budget, a concurrency limit, a ledger of every call in `llm_calls`, and a cache
by request hash so that the same request is never paid for twice.
"""

from flywheel.llm.client import (
    BudgetExceeded,
    ChatResult,
    LLMClient,
    LLMError,
    NoEndpoint,
    request_hash,
)

__all__ = ["BudgetExceeded", "ChatResult", "LLMClient", "LLMError", "NoEndpoint", "request_hash"]
