"""A real OpenAI-compatible chat-completions server for tests, on 127.0.0.1.

It runs on pytest-httpserver's ``httpserver`` fixture and answers
``POST /v1/chat/completions`` with a valid ``chat.completion`` body whose assistant
message is whatever ``reply(request_json)`` returns. Tests can make the next requests
fail with an HTTP status (``fail_next``) or answer late (``delay_next``), and read every
request body the server received (``calls``).

    def test_something(httpserver):
        server = ChatServer(httpserver, lambda request: '{"verdict": true, "reason": "ok"}')
        settings = load({"FLYWHEEL_HOME": ..., "OPENAI_BASE_URL": server.base_url})
"""

from __future__ import annotations

import itertools
import json
import threading
import time
from collections.abc import Callable

from werkzeug import Request, Response

PATH = "/v1/chat/completions"


def _tokens(text: str) -> int:
    """Return a rough token count of a text (about four characters a token)."""
    return max(1, len(text) // 4)


class ChatServer:
    """A chat-completions endpoint served by pytest-httpserver.

    ``reply(request_json) -> str`` gives the assistant message content of each answer.
    """

    def __init__(self, httpserver, reply: Callable[[dict], str]) -> None:
        self.httpserver = httpserver
        self.reply = reply
        self.calls: list[dict] = []
        self._lock = threading.Lock()
        self._failures: list[int] = []
        self._delays: list[float] = []
        self._ids = itertools.count(1)
        httpserver.expect_request(PATH, method="POST").respond_with_handler(self._handle)

    @property
    def base_url(self) -> str:
        """Return the base URL an OpenAI client takes: ``http://127.0.0.1:PORT/v1``."""
        return self.httpserver.url_for("/v1").rstrip("/")

    def fail_next(self, status: int, times: int = 1) -> None:
        """Answer the next ``times`` requests with HTTP ``status`` and an error body."""
        with self._lock:
            self._failures.extend([status] * times)

    def delay_next(self, seconds: float, times: int = 1) -> None:
        """Wait ``seconds`` before answering each of the next ``times`` requests."""
        with self._lock:
            self._delays.extend([seconds] * times)

    def _handle(self, request: Request) -> Response:
        try:
            body = json.loads(request.get_data(as_text=True) or "{}")
        except json.JSONDecodeError:
            body = {"_unparseable": request.get_data(as_text=True)}
        with self._lock:
            self.calls.append(body)
            status = self._failures.pop(0) if self._failures else None
            delay = self._delays.pop(0) if self._delays else 0.0
        if delay:
            time.sleep(delay)
        if status is not None:
            error = {"error": {"message": f"test server: status {status}", "type": "test_error", "code": status}}
            return Response(json.dumps(error), status=status, content_type="application/json")
        content = self.reply(body)
        prompt_text = "".join(str(m.get("content", "")) for m in body.get("messages", []))
        usage = {"prompt_tokens": _tokens(prompt_text), "completion_tokens": _tokens(content)}
        usage["total_tokens"] = usage["prompt_tokens"] + usage["completion_tokens"]
        completion = {
            "id": f"chatcmpl-test-{next(self._ids)}",
            "object": "chat.completion",
            "created": int(time.time()),
            "model": body.get("model", "test-model"),
            "choices": [
                {
                    "index": 0,
                    "message": {"role": "assistant", "content": content},
                    "finish_reason": "stop",
                    "logprobs": None,
                }
            ],
            "usage": usage,
        }
        return Response(json.dumps(completion), status=200, content_type="application/json")
