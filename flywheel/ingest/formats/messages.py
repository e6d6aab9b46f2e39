"""Chat messages in their several shapes, reduced to one internal shape, and the context.

Internally a message is {"role", "content", "tool_calls"?}: content is plain text
(parts joined, tool calls rendered), tool_calls are {"id", "name", "arguments"} with
arguments parsed from JSON text when possible.

Context, for chat-shaped inputs: tool/function result messages if any, else what
follows a ``Context:`` line in the system prompt.
"""

from __future__ import annotations

import json
from typing import Any

from flywheel.ingest.formats.common import _dumps, _first


# --------------------------------------------------------------------------- messages
#
# Internally a message is {"role", "content", "tool_calls"?}: content is plain text
# (parts joined, tool calls rendered), tool_calls are {"id", "name", "arguments"} with
# arguments parsed from JSON text when possible.


def _parse_arguments(arguments: Any) -> Any:
    """Return tool-call arguments as an object when they are JSON text, else as given."""
    if isinstance(arguments, str):
        try:
            return json.loads(arguments)
        except (ValueError, RecursionError):
            return arguments
    return arguments


def _render_call(call: dict) -> str:
    """Return a readable one-line rendering of a tool call: ``name({"arg": 1})``."""
    args = call.get("arguments")
    text = "" if args is None else args if isinstance(args, str) else _dumps(args)
    return f"{call.get('name') or '?'}({text})"


def _part_text(part: Any) -> str | None:
    """Return the text of one content part (OpenAI or OTel GenAI shape), else None."""
    if isinstance(part, str):
        return part
    if not isinstance(part, dict):
        return None
    kind = part.get("type")
    if kind in (None, "text", "input_text", "output_text"):
        text = _first(part, "text", "content")
        return text if isinstance(text, str) else None
    if kind == "tool_call":
        return _render_call(
            {"name": part.get("name"), "arguments": _parse_arguments(part.get("arguments"))}
        )
    if kind == "tool_call_response":
        response = part.get("response", part.get("result"))
        return response if isinstance(response, str) or response is None else _dumps(response)
    return None  # images, audio, files: no text to keep (the raw record still has them)


def _text(content: Any) -> str | None:
    """Return message content flattened to text: a string, or its text parts joined."""
    if content is None or isinstance(content, str):
        return content
    if isinstance(content, list):
        texts = [t for t in map(_part_text, content) if t]
        return "\n".join(texts) if texts else None
    if isinstance(content, dict):
        return _part_text(content)
    return str(content)


def _openai_tool_calls(message: dict) -> list[dict]:
    """Return the tool calls of an OpenAI-style message as {id, name, arguments}."""
    calls = []
    for call in message.get("tool_calls") or ():
        if isinstance(call, dict):
            function = call.get("function") if isinstance(call.get("function"), dict) else call
            calls.append(
                {
                    "id": call.get("id"),
                    "name": function.get("name"),
                    "arguments": _parse_arguments(function.get("arguments")),
                }
            )
    legacy = message.get("function_call")  # pre-tools function calling
    if isinstance(legacy, dict):
        calls.append(
            {"id": None, "name": legacy.get("name"), "arguments": _parse_arguments(legacy.get("arguments"))}
        )
    return calls


def _openai_message(message: dict) -> dict:
    """Return an OpenAI-style chat message as an internal message."""
    content = _text(message.get("content"))
    calls = _openai_tool_calls(message)
    if not content and calls:
        content = "\n".join(map(_render_call, calls))
    out = {"role": message.get("role"), "content": content}
    if calls:
        out["tool_calls"] = calls
    return out


def _last_user_text(messages: list[dict]) -> str | None:
    """Return the content of the last user message, else None."""
    for message in reversed(messages):
        if message.get("role") == "user":
            return message.get("content")
    return None


def _context_line_tail(text: str) -> str | None:
    """Return what follows a line starting with ``Context:`` in a prompt, else None."""
    lines = text.split("\n")
    for i, line in enumerate(lines):
        stripped = line.lstrip()
        if stripped[:8].lower() == "context:":
            tail = "\n".join([stripped[8:], *lines[i + 1 :]]).strip()
            return tail or None
    return None


def _context_from(messages: list[dict]) -> str | None:
    """Return the retrieved context of a conversation, else None.

    Tool/function results are the context when there are any (agents retrieve by tool
    calls); otherwise the part of a system message after a ``Context:`` line (the usual
    RAG prompt layout).
    """
    tool_texts = [
        m["content"] for m in messages if m.get("role") in ("tool", "function") and m.get("content")
    ]
    if tool_texts:
        return "\n\n".join(tool_texts)
    for message in messages:
        # "developer" is the system role of OpenAI's reasoning models.
        if message.get("role") in ("system", "developer") and isinstance(message.get("content"), str):
            tail = _context_line_tail(message["content"])
            if tail:
                return tail
    return None


def _canonical_messages(messages: list[dict]) -> list[dict]:
    """Return internal messages as canonical ``{role, content}`` dicts."""
    return [{"role": m.get("role"), "content": m.get("content")} for m in messages]
