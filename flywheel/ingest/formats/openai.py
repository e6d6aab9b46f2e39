"""OpenAI request/response logs and Batch API files.

Mapping:

- openai_chat: log_id = top-level ``log_id``/``id``, else ``response.id``, else one
  derived from the record's content (NVIDIA data-flywheel datasets, see :mod:`.nvidia`); ts =
  ``timestamp``, else ``response.created``; source = ``workload_id``, else ``client_id``;
  user_id = ``request.user``; top-level canonical keys win over derived values. The
  request's ``metadata`` (stored-completions metadata, a dict of strings) fills the
  canonical fields its keys name (``prompt_version``, ``session_id``, ``source``, ...)
  where the record has no value; its other keys go to the record's metadata.
- openai_batch_output: log_id = ``response.body.id``, else the line's ``id``; messages
  from the input line with the same ``custom_id``; user_id = the input body's ``user``;
  the input body's ``metadata`` is used as for openai_chat (so source = its
  ``metadata.source``); failed requests and unknown custom_ids are error records.
- Responses API (``/v1/responses``), in batch files or as ``{request, response}`` logs:
  input = the request's ``input`` (a string, or the last user message of a message
  list); the request's ``instructions`` are the system message (so a ``Context:`` line
  in them gives the context); output = the ``output_text`` parts of the ``message``
  items of ``response.output``; tokens = ``usage.input_tokens``/``output_tokens``;
  ts = ``created_at``; log_id = the response ``id`` (``resp_...``).
"""

from __future__ import annotations

import itertools
from collections.abc import Mapping
from typing import Any, Iterator

from flywheel.ingest.records import RawRecord
from flywheel.ingest.formats import batch_input
from flywheel.ingest.formats.batch_input import BatchRequests, day_batch_requests
from flywheel.ingest.formats.jsonio import _iter_json_items
from flywheel.ingest.formats.common import _CANONICAL, _RecordError, _add, _as_dict, _first, _map_items, _own_metadata, _put, _seconds_to_ms
from flywheel.ingest.formats.nvidia import content_log_id
from flywheel.ingest.formats.messages import _canonical_messages, _context_from, _last_user_text, _openai_message, _parse_arguments, _render_call, _text


# --------------------------------------------------------------------------- OpenAI


def load_batch_requests(path) -> BatchRequests:
    """Return the requests of a Batch API input file by ``custom_id`` (each ``{"body": ...}``).

    Lines that are broken or have no ``custom_id`` are skipped here: the output lines
    that refer to them become error records in :func:`iter_records`. Held in Arrow
    (see :mod:`.batch_input`), not as one dict per request.
    """
    return BatchRequests.read(path)


def _is_responses(request: dict, response: dict) -> bool:
    """Return whether a request/response pair is of the Responses API (not chat completions)."""
    if response.get("object") == "response":
        return True
    return "choices" not in response and "messages" not in request and (
        isinstance(response.get("output"), list) or "input" in request
    )


def _responses_fields(request: dict, response: dict, record: dict, meta: dict) -> None:
    """Fill model, input, output, messages, context and tokens from a Responses API pair.

    Request parameters and response details other than those read go into ``meta``.
    """
    messages: list[dict] = []
    instructions = _text(request.get("instructions"))
    if instructions:
        messages.append({"role": "system", "content": instructions})
    given = request.get("input")
    if isinstance(given, str):
        messages.append({"role": "user", "content": given})
    elif isinstance(given, list):
        messages.extend(_openai_message({"role": "user", **m}) for m in given
                        if isinstance(m, dict) and m.get("type", "message") == "message")
    texts, calls = [], []
    for item in response.get("output") or ():
        if not isinstance(item, dict):
            continue
        if item.get("type") == "message":
            for part in item.get("content") or ():
                if isinstance(part, dict) and part.get("type") in ("output_text", "refusal"):
                    texts.append(part.get("text") if part.get("type") == "output_text" else part.get("refusal"))
        elif item.get("type") == "function_call":
            calls.append({"id": item.get("call_id"), "name": item.get("name"),
                          "arguments": _parse_arguments(item.get("arguments"))})
    output = "\n".join(t for t in texts if isinstance(t, str)) or None
    if output is None and calls:
        output = "\n".join(map(_render_call, calls))
    _put(record, "model", _first(response, "model") or request.get("model"))
    _put(record, "input", _last_user_text(messages))
    _put(record, "output", output)
    _put(record, "context", _context_from(messages))
    conversation = messages + ([{"role": "assistant", "content": output}] if output is not None else [])
    if conversation:
        record["messages"] = _canonical_messages(conversation)
    usage = _as_dict(response.get("usage"))
    _put(record, "prompt_tokens", _first(usage, "input_tokens", "prompt_tokens"))
    _put(record, "completion_tokens", _first(usage, "output_tokens", "completion_tokens"))
    _put(record, "user_id", request.get("user") or response.get("user"))
    for key, value in request.items():
        if key not in ("input", "instructions", "model", "metadata", "user"):
            _add(meta, key, value)
    _add(meta, "response_id", response.get("id"))
    for key, value in response.items():
        # the request's echo (instructions, metadata, tools, ...) is not kept twice
        if key not in ("id", "model", "output", "usage", "created_at", "instructions", "metadata", "user") \
                and request.get(key) != value:
            _add(meta, key, value)
    for key, value in usage.items():
        if key not in ("input_tokens", "output_tokens"):
            _add(meta, key, value)
    if calls:
        meta["tool_calls"] = calls


def _chat_fields(request: dict, response: dict, record: dict, meta: dict) -> None:
    """Fill model, input, output, messages, context and tokens from a chat request/response.

    Request parameters (temperature, tools, ...) and response details (id, finish
    reason, extra usage counters) go into ``meta``. Responses API pairs are read by
    :func:`_responses_fields`.
    """
    if _is_responses(request, response):
        _responses_fields(request, response, record, meta)
        return
    messages = [_openai_message(m) for m in request.get("messages") or () if isinstance(m, dict)]
    choices = response.get("choices") or []
    choice = choices[0] if choices and isinstance(choices[0], dict) else {}
    reply = _openai_message(choice["message"]) if isinstance(choice.get("message"), dict) else None

    output = reply["content"] if reply else None
    if output is None and isinstance(choice.get("text"), str):  # legacy completions
        output = choice["text"]
    refusal = (choice.get("message") or {}).get("refusal") if reply else None
    if output is None and isinstance(refusal, str):
        output = refusal  # what the user was shown
    user_input = _last_user_text(messages)
    if user_input is None and "messages" not in request:
        prompt = request.get("prompt")
        user_input = prompt if isinstance(prompt, str) else _text(prompt)

    _put(record, "model", _first(response, "model") or request.get("model"))
    _put(record, "input", user_input)
    _put(record, "output", output)
    _put(record, "context", _context_from(messages))
    conversation = messages + ([{"role": reply["role"] or "assistant", "content": output}] if reply else [])
    if conversation:
        record["messages"] = _canonical_messages(conversation)
    usage = _as_dict(response.get("usage"))
    _put(record, "prompt_tokens", _first(usage, "prompt_tokens", "input_tokens"))
    _put(record, "completion_tokens", _first(usage, "completion_tokens", "output_tokens"))
    _put(record, "user_id", request.get("user"))

    for key, value in request.items():
        if key not in ("messages", "model", "metadata", "user", "prompt"):
            _add(meta, key, value)
    if response.get("model") and request.get("model") and response["model"] != request["model"]:
        _add(meta, "request_model", request["model"])
    _add(meta, "response_id", response.get("id"))
    for key, value in response.items():
        if key not in ("id", "model", "choices", "usage"):
            _add(meta, key, value)
    for key, value in usage.items():
        if key not in ("prompt_tokens", "completion_tokens", "input_tokens", "output_tokens"):
            _add(meta, key, value)
    _add(meta, "finish_reason", choice.get("finish_reason"))
    if isinstance(refusal, str):
        _add(meta, "refusal", refusal)
    if reply and reply.get("tool_calls"):
        meta["tool_calls"] = reply["tool_calls"]
    if len(choices) > 1:  # n > 1: the first choice is the record, keep the others' texts
        meta["other_choices"] = [_choice_text(c) for c in choices[1:]]


def _fill_from_request_metadata(record: dict, meta: dict, request: dict) -> None:
    """Use a request's ``metadata`` object (OpenAI's stored-completions metadata).

    Its keys that are canonical fields (``source``, ``prompt_version``, ``session_id``,
    ``feedback``, ...) fill those fields when the record has no value for them yet;
    values as found (strings, as the API requires; the loader validates them). Every
    other key, and a canonical key whose field already has another value, goes to
    ``meta``. Called last, so a record's own and derived values win.
    """
    for key, value in _as_dict(request.get("metadata")).items():
        if key in _CANONICAL and key != "metadata" and value is not None:
            if record.get(key) is None:
                record[key] = value
                continue
            if record[key] == value:
                continue  # nothing to keep: the field holds it already
        _add(meta, key, value)


def _choice_text(choice: Any) -> Any:
    """Return the text of a chat choice (its message content), else the choice as found."""
    if isinstance(choice, dict) and isinstance(choice.get("message"), dict):
        return _openai_message(choice["message"])["content"]
    return choice


# Top-level keys of a request/response log entry that the mapping consumes.
_OPENAI_CHAT_CONSUMED = frozenset(
    {"request", "response", "timestamp", "latency", "metadata", "log_id", "id"}
)


def _read_openai_chat(path, batch_requests, stats) -> Iterator[RawRecord]:
    """Yield the records of an OpenAI request/response log."""
    return _map_items(_iter_json_items(path), _map_openai_chat)


def _map_openai_chat(obj: dict) -> dict:
    """Return the canonical record of one ``{request, response, ...}`` log entry.

    Top-level canonical keys (log_id, ts, source, session_id, feedback, ...) win over
    what is derived from the request and response.
    """
    request, response = _as_dict(obj.get("request")), _as_dict(obj.get("response"))
    record: dict = {}
    meta = _own_metadata(obj.get("metadata"))
    _chat_fields(request, response, record, meta)
    _put(record, "log_id", _first(obj, "log_id", "id") or response.get("id"))
    if obj.get("log_id") is not None:
        _add(meta, "id", obj.get("id"))
    if "log_id" not in record:  # NVIDIA data-flywheel datasets carry no id at all
        record["log_id"] = content_log_id(obj)
        meta["log_id_from"] = "content"
    _put(record, "ts", _first(obj, "timestamp", "created_at") or _epoch(_first(response, "created", "created_at")))
    _put(record, "source", _first(obj, "workload_id", "client_id"))
    latency = _seconds_to_ms(obj.get("latency"))
    _put(record, "latency_ms", latency)
    if latency is None:
        _add(meta, "latency", obj.get("latency"))
    for key, value in obj.items():
        if key in _CANONICAL:
            if key != "metadata" and value is not None:  # a null does not erase a derived value
                record[key] = value
        elif key not in _OPENAI_CHAT_CONSUMED:
            _add(meta, key, value)  # workload_id, client_id and anything unknown
    _fill_from_request_metadata(record, meta, request)
    record["metadata"] = meta
    return record


def _read_batch_output(path, batch_requests, stats) -> Iterator[RawRecord]:
    """Yield the records of an OpenAI Batch API output file (``batch_requests``: the
    day's companion records, see :func:`.batch_input.day_batch_requests`)."""
    requests = day_batch_requests(batch_requests)
    items = _iter_json_items(path)
    while chunk := list(itertools.islice(items, batch_input.CHUNK_ROWS)):
        # The requests of a chunk of output lines, asked for at once (see BatchRequests.subset).
        named = requests.subset([str(i.value.get("custom_id")) for i in chunk if isinstance(i.value, dict)])
        yield from _map_items(chunk, lambda obj: _map_batch_output(obj, named))


def _map_batch_output(obj: dict, requests: Mapping[str, dict]) -> dict:
    """Return the canonical record of one Batch API output line.

    Raises:
        _RecordError: the request failed, or its input line is unknown.
    """
    custom_id = obj.get("custom_id")
    response = _as_dict(obj.get("response"))
    body = _as_dict(response.get("body"))
    status = response.get("status_code")
    if obj.get("error") or not response or (status is not None and str(status) != "200"):
        raise _RecordError(_batch_failure(obj.get("error"), status, body))
    request_line = requests.get(str(custom_id))
    if not isinstance(request_line, dict):
        raise _RecordError(f"no batch input line for custom_id {custom_id}", field="input")
    request = _as_dict(request_line.get("body"))

    record: dict = {}
    meta: dict = {}
    _add(meta, "custom_id", custom_id)
    _add(meta, "batch_request_id", obj.get("id"))
    _add(meta, "request_id", response.get("request_id"))
    _chat_fields(request, body, record, meta)
    _put(record, "log_id", body.get("id") or obj.get("id"))
    _put(record, "ts", _epoch(_first(body, "created", "created_at")))
    for key, value in obj.items():
        if key not in ("id", "custom_id", "response", "error"):
            _add(meta, key, value)
    _fill_from_request_metadata(record, meta, request)  # source, prompt_version, ...
    record["metadata"] = meta
    return record


def _epoch(value: Any) -> Any:
    """Return epoch seconds as an int when whole (the openai types write ``created_at`` as a float)."""
    if isinstance(value, float) and value.is_integer():
        return int(value)
    return value


def _batch_failure(error: Any, status: Any, body: dict) -> str:
    """Return the reason a batch request failed, from its error and status."""
    parts = []
    if status is not None:
        parts.append(f"status {status}")
    error = error or body.get("error")
    if isinstance(error, dict):
        parts.extend(str(error[k]) for k in ("code", "message") if error.get(k))
    elif error:
        parts.append(str(error))
    return "batch request failed: " + (": ".join(parts) if parts else "no response")
