"""Langfuse trace exports.

Shapes read (all detected as ``langfuse``):

- traces of the public API / SDK ``fetch_traces`` (``{"data": [...]}``, an array or JSON
  lines), with ``observations`` and ``scores`` objects;
- the UI batch export of traces (Export button, JSON or JSON lines): one row per trace
  whose ``input``/``output``/``metadata`` are JSON *text* (parsed here), token counts in
  ``usage.promptTokens``/``completionTokens``, costs as decimal strings, and one column
  per score name holding the list of that score's values (``"user-feedback": [1]``);
- the single-trace download of the trace view, ``{"trace": {...}, "observations": [...]}``,
  and the older ``{"observations": [...], "scores": [...]}`` with no trace object (the
  trace id then comes from the observations' ``traceId``, the time from their earliest
  ``startTime``).

Mapping: one record per trace; log_id = trace ``id``; source = ``name``, else
``environment``; input/output/model/tokens from the trace, else its first GENERATION
observation; chat-message inputs give the last user message as input and the context
of the conversation (tool results, or a ``Context:`` line in the system prompt); dict
inputs give the context under ``context``/``documents``; latency = ``latency``
seconds, else the generation's; feedback rule: see ``_langfuse_feedback`` (score
objects) and ``_column_feedback`` (UI export score columns).
"""

from __future__ import annotations

from typing import Any, Iterator

from flywheel.ingest.records import RawRecord
from flywheel.ingest.formats.jsonio import _LineFinder, _iter_json_items
from flywheel.ingest.formats.common import _add, _as_dict, _dumps, _first, _map_value, _own_metadata, _parse_json_text, _put, _seconds_to_ms
from flywheel.ingest.formats.messages import _canonical_messages, _context_from, _last_user_text, _openai_message, _text


# --------------------------------------------------------------------------- Langfuse

_LANGFUSE_QUESTION_KEYS = ("question", "query", "input", "message", "prompt")
_LANGFUSE_CONTEXT_KEYS = ("context", "documents", "contexts", "passages")
_LANGFUSE_ANSWER_KEYS = ("content", "answer", "output", "text", "completion")
_LANGFUSE_CONSUMED = frozenset(
    {"id", "timestamp", "name", "input", "output", "sessionId", "userId", "tags",
     "metadata", "latency", "totalCost", "observations", "scores"}
)
# Score names (lower case, "_" and " " read as "-") that are end-user feedback.
_FEEDBACK_SCORE_NAMES = frozenset(
    {"user-feedback", "feedback", "thumbs", "thumbs-up", "thumbs-up-down", "user-thumbs"}
)
_FEEDBACK_SCORE_SOURCES = frozenset({"API", "EVAL"})
_FEEDBACK_CATEGORIES = {
    "up": 1, "thumbs-up": 1, "positive": 1, "good": 1, "yes": 1, "true": 1, "helpful": 1,
    "down": -1, "thumbs-down": -1, "negative": -1, "bad": -1, "no": -1, "false": -1,
    "unhelpful": -1, "neutral": 0,
}


def _read_langfuse(path, batch_requests, stats) -> Iterator[RawRecord]:
    """Yield one record per trace of a Langfuse export (array, JSON lines or {"data": [...]})."""
    for item in _iter_json_items(path):
        value = item.value
        is_wrapper = isinstance(value, dict) and isinstance(value.get("data"), list) and "id" not in value
        if item.error is None and is_wrapper:
            finder = _LineFinder(item.raw, item.line)
            for trace in value["data"]:
                line = finder.line_of("id", trace.get("id") if isinstance(trace, dict) else None)
                yield _map_value(line, _dumps(trace), trace, _map_langfuse)
            continue
        if item.error is None and isinstance(value, dict):
            value = _trace_of_download(value)
        yield _map_value(item.line, item.raw, value, _map_langfuse, item.error)


def _trace_of_download(value: dict) -> dict:
    """Return the trace of a single-trace download, or ``value`` when it is a trace already.

    ``{"trace": {...}, "observations": [...]}`` gives the trace with its observations;
    ``{"observations": [...], "scores": [...]}`` (no trace object) a trace built from
    the observations' ``traceId`` and earliest ``startTime``.
    """
    observations = value.get("observations")
    if isinstance(value.get("trace"), dict):
        trace = dict(value["trace"])
        if isinstance(observations, list):
            trace["observations"] = observations
        if "scores" in value and not trace.get("scores"):
            trace["scores"] = value["scores"]
        return trace
    if "id" in value or not isinstance(observations, list):
        return value
    listed = [o for o in observations if isinstance(o, dict)]
    trace_id = next((o["traceId"] for o in listed if o.get("traceId")), None)
    starts = sorted(o["startTime"] for o in listed if isinstance(o.get("startTime"), str))
    trace = {"id": trace_id, "timestamp": starts[0] if starts else None}
    return trace | {k: v for k, v in value.items() if k not in trace}


def _map_langfuse(trace: dict) -> dict:
    """Return the canonical record of one Langfuse trace with its observations and scores."""
    record: dict = {}
    meta = _own_metadata(trace.get("metadata"))
    observations = trace.get("observations") or []
    generation = next(
        (o for o in observations if isinstance(o, dict) and str(o.get("type", "")).upper() == "GENERATION"),
        None,
    ) or {}

    _put(record, "log_id", trace.get("id"))
    _put(record, "ts", trace.get("timestamp"))
    _put(record, "source", trace.get("name") or trace.get("environment"))
    # The UI export (ClickHouse) gives input/output as JSON text: parse it.
    trace_input = _parse_json_text(trace.get("input") if trace.get("input") is not None else generation.get("input"))
    conversation = _langfuse_input(trace_input, record, meta)
    trace_output = _parse_json_text(trace.get("output") if trace.get("output") is not None else generation.get("output"))
    _put(record, "output", _langfuse_output(trace_output))
    if conversation:
        reply = [{"role": "assistant", "content": record.get("output")}] if "output" in record else []
        record["messages"] = _canonical_messages(conversation) + reply
    _put(record, "session_id", trace.get("sessionId"))
    _put(record, "user_id", trace.get("userId"))
    _put(record, "tags", trace.get("tags"))
    _put(record, "model", generation.get("model"))
    _put(record, "prompt_name", generation.get("promptName"))
    _put(record, "prompt_version", generation.get("promptVersion"))
    usage = (_as_dict(generation.get("usageDetails")) or _as_dict(generation.get("usage"))
             or _as_dict(trace.get("usage")))  # UI export: the trace's summed usage
    # usageDetails/usage {input, output} (v3), usage {promptTokens, ...} (v2 SDKs), or
    # promptTokens/completionTokens on the observation itself (public API v2).
    prompt_tokens = _first(usage, "input", "promptTokens", "prompt_tokens", "inputTokens")
    completion_tokens = _first(usage, "output", "completionTokens", "completion_tokens", "outputTokens")
    _put(record, "prompt_tokens", prompt_tokens if prompt_tokens is not None else generation.get("promptTokens"))
    _put(
        record, "completion_tokens",
        completion_tokens if completion_tokens is not None else generation.get("completionTokens"),
    )
    latency = _seconds_to_ms(trace.get("latency"))
    if latency is None and trace.get("latency") is None:
        latency = _seconds_to_ms(generation.get("latency"))
    _put(record, "latency_ms", latency)
    if latency is None:
        _add(meta, "latency", trace.get("latency"))
    _put(record, "cost_usd", trace.get("totalCost"))  # a decimal string in the UI export: the loader casts

    scores = trace.get("scores") or []
    if scores:
        meta["langfuse_scores"] = scores
    feedback = _langfuse_feedback(scores) if isinstance(scores, list) else None
    _put(record, "feedback", feedback if feedback is not None else _column_feedback(trace))
    if observations:
        # Their input/output is the trace's text again; everything else is kept.
        meta["langfuse_observations"] = [
            {k: v for k, v in o.items() if k not in ("input", "output")} if isinstance(o, dict) else o
            for o in observations
        ]
    for key, value in trace.items():
        if key not in _LANGFUSE_CONSUMED:
            _add(meta, key, value)  # release, version, environment, htmlPath, ...
    record["metadata"] = meta
    return record


def _langfuse_input(value: Any, record: dict, meta: dict) -> list[dict]:
    """Set input (and context) from a trace's input; return its messages when it has some.

    A string is the input; a dict gives its question-like key as input and its
    context-like key as context, its other keys go to metadata as ``input.<key>``;
    a message list gives the last user message (and the context of the conversation).
    """
    if isinstance(value, dict) and isinstance(value.get("messages"), list):
        for key, extra in value.items():
            if key != "messages":
                _add(meta, f"input.{key}", extra)
        value = value["messages"]
    if isinstance(value, list) and any(isinstance(m, dict) and "role" in m for m in value):
        messages = [_openai_message(m) for m in value if isinstance(m, dict)]
        _put(record, "input", _last_user_text(messages))
        _put(record, "context", _context_from(messages))
        return messages
    if isinstance(value, dict):
        question_key = next((k for k in _LANGFUSE_QUESTION_KEYS if k in value), None)
        if question_key is None:
            record["input"] = _dumps(value)
            return []
        context_key = next((k for k in _LANGFUSE_CONTEXT_KEYS if k in value), None)
        _put(record, "input", _text_or_json(value[question_key]))
        if context_key is not None:
            _put(record, "context", _join_context(value[context_key]))
        for key, extra in value.items():
            if key not in (question_key, context_key):
                _add(meta, f"input.{key}", extra)
        return []
    if value is not None:
        record["input"] = value if isinstance(value, str) else _dumps(value)
    return []


def _text_or_json(value: Any) -> str | None:
    """Return text for a value: a string, a message's content, text parts, else its JSON."""
    if value is None or isinstance(value, str):
        return value
    if isinstance(value, dict) and "content" in value:
        return _text(value["content"])
    text = _text(value) if isinstance(value, list) else None
    return text if text is not None else _dumps(value)


def _join_context(value: Any) -> str | None:
    """Return retrieved documents as one text (list items joined by blank lines)."""
    if value is None or isinstance(value, str):
        return value
    if isinstance(value, list):
        texts = []
        for doc in value:
            if isinstance(doc, dict):
                text = _first(doc, "content", "text", "page_content")
                texts.append(text if isinstance(text, str) else _dumps(doc))
            elif doc is not None:
                texts.append(doc if isinstance(doc, str) else _dumps(doc))
        return "\n\n".join(texts)
    if isinstance(value, dict):
        text = _first(value, "content", "text", "page_content")
        return text if isinstance(text, str) else _dumps(value)
    return str(value)


def _langfuse_output(value: Any) -> str | None:
    """Return a trace's output as text: a string, an answer-like key, a message, else JSON."""
    if value is None or isinstance(value, str):
        return value
    if isinstance(value, dict):
        for key in _LANGFUSE_ANSWER_KEYS:
            text = _text(value.get(key))
            if text is not None:
                return text
        if value.get("tool_calls"):
            return _openai_message(value)["content"]
    if isinstance(value, list):
        replies = [_openai_message(m) for m in value if isinstance(m, dict) and m.get("role") == "assistant"]
        if replies and replies[-1]["content"] is not None:
            return replies[-1]["content"]
    return _dumps(value)


def _column_feedback(trace: dict) -> int | None:
    """Return end-user feedback (-1, 0, 1) from a UI export's score columns, else None.

    The export has one column per score name holding the list of its values (numbers
    for NUMERIC scores, ``stringValue`` texts otherwise); a column named like user
    feedback (:data:`_FEEDBACK_SCORE_NAMES`) gives its last value, read by the rule of
    :func:`_langfuse_feedback` (``"True"``/``"False"`` as thumbs up/down).
    """
    for key, values in trace.items():
        name = str(key).lower().replace("_", "-").replace(" ", "-")
        if name not in _FEEDBACK_SCORE_NAMES or values is None:
            continue
        listed = [v for v in (values if isinstance(values, list) else [values]) if v is not None]
        if not listed:
            continue
        value = listed[-1]
        if isinstance(value, str) and value.strip().lower() in ("true", "false"):
            return 1 if value.strip().lower() == "true" else -1
        try:
            number = float(value)
        except (TypeError, ValueError):
            return _FEEDBACK_CATEGORIES.get(str(value).strip().lower().replace(" ", "-"))
        if "thumb" in name:
            return 1 if number > 0 else -1
        return (number > 0) - (number < 0)
    return None


def _langfuse_feedback(scores: list) -> int | None:
    """Return end-user feedback (-1, 0, 1) from a trace's scores, else None.

    Only scores named like user feedback (:data:`_FEEDBACK_SCORE_NAMES`) from source
    API or EVAL count (ANNOTATION scores are labels, not feedback); the latest one
    (by timestamp, else the last listed) wins. Rule: BOOLEAN scores and ``thumbs``
    names are 0/1 thumbs (1 -> 1, 0 -> -1); NUMERIC scores map by sign (>0 -> 1,
    <0 -> -1, 0 -> 0); CATEGORICAL ones by label (up/positive/good/yes -> 1,
    down/negative/bad/no -> -1, neutral -> 0).
    """
    candidates = []
    for index, score in enumerate(scores):
        if not isinstance(score, dict):
            continue
        name = str(score.get("name", "")).lower().replace("_", "-").replace(" ", "-")
        source = str(score.get("source", "")).upper()
        if name not in _FEEDBACK_SCORE_NAMES or source not in _FEEDBACK_SCORE_SOURCES:
            continue
        value = _feedback_value(score, name)
        if value is not None:
            ts = score.get("timestamp")
            candidates.append((ts if isinstance(ts, str) else "", index, value))
    return max(candidates)[2] if candidates else None


def _feedback_value(score: dict, name: str) -> int | None:
    """Return -1/0/1 for one feedback score by the rule of :func:`_langfuse_feedback`."""
    data_type = str(score.get("dataType", "")).upper()
    value = score.get("value")
    label = score.get("stringValue")
    if data_type == "CATEGORICAL" or (value is None and isinstance(label, str)):
        return _FEEDBACK_CATEGORIES.get(str(label).strip().lower().replace(" ", "-"))
    try:
        number = float(value)
    except (TypeError, ValueError):
        return None
    if data_type == "BOOLEAN" or "thumb" in name:
        return 1 if number > 0 else -1
    return (number > 0) - (number < 0)
