"""Judge prompts: the messages sent for one item, their version, and parsing the answer.

A judge prompt is the criterion's instructions (system message) followed by its few-shot
examples as user/assistant turns (each a logged item and the verdict people gave it),
then the item to judge. Its **version** is the content hash of everything but the item:
model name, instructions and examples. New few-shot examples or a changed template make
a new version, which has to earn trust again on the held-out set.

The answer is asked for as structured output (``response_format`` with a JSON schema:
``{"verdict": boolean, "reason": string}``). :func:`parse_verdict` also reads answers
wrapped in code fences or surrounded by prose, and ``"yes"``/``"no"``/``1``/``0`` as
verdicts; anything else is a parse failure, never a guess.
"""

from __future__ import annotations

import hashlib
import json
import re
from dataclasses import dataclass

from flywheel.judges.criteria import Criterion

# Longer fields are cut (the cut is marked) so that one huge log cannot blow the budget.
MAX_FIELD_CHARS = 6000
MAX_REASON_CHARS = 500

RESPONSE_FORMAT = {
    "type": "json_schema",
    "json_schema": {
        "name": "judge_verdict",
        "strict": True,
        "schema": {
            "type": "object",
            "properties": {
                "verdict": {"type": "boolean"},
                "reason": {"type": "string"},
            },
            "required": ["verdict", "reason"],
            "additionalProperties": False,
        },
    },
}

_TRUE_WORDS = {"true", "yes", "y", "1", "pass", "present"}
_FALSE_WORDS = {"false", "no", "n", "0", "fail", "absent"}
_FENCE = re.compile(r"```(?:json|JSON)?\s*(.*?)```", re.DOTALL)


@dataclass(frozen=True)
class Example:
    """A few-shot example: a logged item and the human consensus verdict."""

    log_id: str
    input: str
    output: str
    context: str | None
    verdict: bool
    reason: str = "Judged by people."


@dataclass(frozen=True)
class JudgePrompt:
    """The fixed part of a judge's messages (instructions and few-shot turns), with its version.

    Make one with :meth:`build`; ``prefix`` is also what `judge_prompts.messages` stores,
    so that a stored version can be asked again exactly (:meth:`from_stored`).
    """

    criterion: Criterion
    model: str
    prefix: tuple[dict, ...]
    example_ids: tuple[str, ...] = ()

    @classmethod
    def build(cls, criterion: Criterion, model: str, examples: list[Example] | tuple[Example, ...] = ()) -> "JudgePrompt":
        """Return the prompt of ``criterion`` with these few-shot examples."""
        prefix = [{"role": "system", "content": criterion.template()}]
        for example in examples:
            prefix.append({"role": "user", "content": item_text(criterion, example.input, example.output, example.context)})
            prefix.append({
                "role": "assistant",
                "content": json.dumps({"verdict": example.verdict, "reason": example.reason}),
            })
        return cls(criterion, model, tuple(prefix), tuple(e.log_id for e in examples))

    @classmethod
    def from_stored(cls, criterion: Criterion, model: str, messages: list[dict], example_ids: list[str]) -> "JudgePrompt":
        """Return a prompt from its stored prefix messages (`judge_prompts`)."""
        return cls(criterion, model, tuple(messages), tuple(example_ids or ()))

    def messages(self, *, input: str, output: str, context: str | None) -> list[dict]:
        """Return the full messages that ask for a verdict on one item."""
        return [*self.prefix, {"role": "user", "content": item_text(self.criterion, input, output, context)}]

    @property
    def version(self) -> str:
        """Return the content hash (12 hex digits of SHA-256) of the model and the prefix."""
        payload = json.dumps({"model": self.model, "messages": list(self.prefix)}, sort_keys=True, ensure_ascii=False)
        return hashlib.sha256(payload.encode("utf-8")).hexdigest()[:12]


def _cut(text: str | None) -> str:
    text = "" if text is None else str(text)
    if len(text) > MAX_FIELD_CHARS:
        return text[:MAX_FIELD_CHARS] + f" [... {len(text) - MAX_FIELD_CHARS} characters cut]"
    return text


def item_text(criterion: Criterion, input: str, output: str, context: str | None) -> str:
    """Return the user message that shows one item to the judge."""
    parts = [f"User request:\n<<<\n{_cut(input)}\n>>>"]
    if criterion.uses_context:
        parts.append(f"Context:\n<<<\n{_cut(context) if context else '(none)'}\n>>>")
    parts.append(f"Assistant answer:\n<<<\n{_cut(output)}\n>>>")
    parts.append(f"Criterion: {criterion.name}. {criterion.question}")
    return "\n\n".join(parts)


def _as_bool(value: object) -> bool | None:
    if isinstance(value, bool):
        return value
    if isinstance(value, (int, float)) and value in (0, 1):
        return bool(value)
    if isinstance(value, str):
        word = value.strip().strip(".").casefold()
        if word in _TRUE_WORDS:
            return True
        if word in _FALSE_WORDS:
            return False
    return None


def parse_verdict(text: str) -> tuple[bool | None, str, str | None]:
    """Return ``(verdict, reason, parse_error)`` read from a judge's answer.

    On success ``parse_error`` is None; otherwise ``verdict`` is None and ``parse_error``
    says what was wrong (and shows the start of the answer).
    """
    snippet = (text or "").strip()
    if not snippet:
        return None, "", "empty answer"
    fenced = _FENCE.search(snippet)
    candidates = [fenced.group(1).strip()] if fenced else []
    candidates.append(snippet)
    decoder = json.JSONDecoder()
    obj = None
    for candidate in candidates:
        start = candidate.find("{")
        while start != -1 and obj is None:
            try:
                value, _ = decoder.raw_decode(candidate, start)
            except json.JSONDecodeError:
                start = candidate.find("{", start + 1)
                continue
            if isinstance(value, dict):
                obj = value
            else:
                start = candidate.find("{", start + 1)
        if obj is not None:
            break
    shown = snippet[:120].replace("\n", " ")
    if obj is None:
        return None, "", f"no JSON object in the answer: {shown!r}"
    if "verdict" not in obj:
        return None, "", f"the JSON object has no 'verdict': {shown!r}"
    verdict = _as_bool(obj["verdict"])
    if verdict is None:
        return None, "", f"'verdict' is {obj['verdict']!r}, not true or false"
    reason = obj.get("reason", "")
    reason = reason if isinstance(reason, str) else json.dumps(reason)
    return verdict, reason.strip()[:MAX_REASON_CHARS], None
