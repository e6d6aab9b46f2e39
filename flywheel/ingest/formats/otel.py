"""OpenTelemetry OTLP/JSON spans of LLM calls, joined with their GenAI log records.

Mapping (otel): one record per LLM span (others are counted in
``stats["ignored_spans"]``); log_id = ``spanId``; ts = start time as ISO-8601 UTC;
latency = end - start; source = resource ``service.name``; attribute names accepted per
field: see ``_OTEL_FIELDS``. Span and trace ids are normalized to lower-case hex:
OTLP/JSON (the collector's and the SDK's JSON file exporters) writes hex, protobuf's
``MessageToJson`` of the same span writes base64; both give the same log_id.

Message content is read, newest convention first, from ``gen_ai.input.messages`` /
``gen_ai.output.messages`` (latest conventions, content on the span), indexed
attributes (OpenLLMetry ``gen_ai.prompt.N.*``, OpenInference ``llm.input_messages.N.*``),
span events, and **log records** (otel_logs): the default mode of the official
instrumentations (``opentelemetry-instrumentation-openai-v2`` and its siblings on the
v1.30 conventions with content capture) sends ``gen_ai.system.message``,
``gen_ai.user.message``, ``gen_ai.choice``, ... as OTLP log records (``resourceLogs``,
event name in ``eventName`` or the ``event.name`` attribute, content in the body) that
carry the trace and span id of their span; on the latest conventions in ``event_only``
mode one ``gen_ai.client.inference.operation.details`` record carries the
``gen_ai.input.messages``/``gen_ai.output.messages`` attributes instead. A day's logs files are read first
(:func:`load_otel_logs`) and their records join the span with the same ids; a file in
which a collector wrote both signals is read as spans, its log records joined the same way.
"""

from __future__ import annotations

import base64
import binascii
import re
from datetime import datetime, timezone
from typing import Any, Iterable, Iterator

from flywheel.ingest.records import RawRecord
from flywheel.ingest.formats.jsonio import _LineFinder, _iter_json_items, _unreadable_on_decode_errors, open_text
from flywheel.ingest.formats.common import _add, _dumps, _first, _map_value, _own_metadata, _parse_json_text, _put
from flywheel.ingest.formats.messages import _canonical_messages, _context_from, _last_user_text, _openai_message, _parse_arguments, _render_call, _text


# --------------------------------------------------------------------------- OpenTelemetry

# gen_ai operations that are not a text generation a person asked for.
_NON_LLM_OPERATIONS = frozenset({"embeddings", "execute_tool", "create_agent"})
_EVENT_ROLES = {
    "gen_ai.system.message": "system",
    "gen_ai.user.message": "user",
    "gen_ai.assistant.message": "assistant",
    "gen_ai.tool.message": "tool",
}
_INDEXED_GEN_AI = re.compile(r"gen_ai\.(prompt|completion)\.(\d+)\.(.+)")
_INDEXED_OPENINFERENCE = re.compile(r"llm\.(input|output)_messages\.(\d+)\.message\.(.+)")
_TOOL_CALL_FIELD = re.compile(r"tool_calls\.(\d+)\.(?:tool_call\.)?(?:function\.)?(name|arguments|id)")
_CONTENTS_FIELD = re.compile(r"contents\.(\d+)\.message_content\.text")

# Attribute names accepted per canonical field, first present wins. Values of the
# names not used stay in metadata.
_OTEL_FIELDS = {
    "model": ("gen_ai.response.model", "gen_ai.request.model", "llm.model_name",
              "llm.response.model", "llm.request.model"),
    "prompt_tokens": ("gen_ai.usage.input_tokens", "gen_ai.usage.prompt_tokens",
                      "llm.token_count.prompt", "llm.usage.prompt_tokens"),
    "completion_tokens": ("gen_ai.usage.output_tokens", "gen_ai.usage.completion_tokens",
                          "llm.token_count.completion", "llm.usage.completion_tokens"),
    "session_id": ("session.id", "gen_ai.conversation.id", "langfuse.session.id"),
    "user_id": ("user.id", "enduser.id", "langfuse.user.id", "gen_ai.user"),  # gen_ai.user: traceloop
    "prompt_name": ("gen_ai.prompt.name", "prompt.name", "llm.prompt_template.name",
                    "langfuse.prompt.name"),
    "prompt_version": ("gen_ai.prompt.version", "prompt.version", "prompt_version",
                       "llm.prompt_template.version", "langfuse.prompt.version"),
    "tags": ("tag.tags",),
}
# Attributes that are the request/response text itself (kept as input/output/messages).
_OTEL_CONTENT_KEYS = ("input.value", "output.value", "input.mime_type", "output.mime_type")


def load_otel_logs(path) -> dict[tuple, list[dict]]:
    """Return the GenAI log records of an OTLP/JSON logs file, by the span they belong to.

    Keys are ``("otel_log", trace id, span id)`` (ids as lower-case hex); values are
    the span-event-like dicts ``{name, attributes, body}`` of the span's log records in
    file order. Records without a span id, and broken lines, are skipped: they belong
    to no log record.
    """
    found: dict[tuple, list[dict]] = {}
    with _unreadable_on_decode_errors(path):
        for item in _iter_json_items(path):
            doc = item.value
            if item.error is not None or not isinstance(doc, dict):
                continue
            for resource_logs in doc.get("resourceLogs") or ():
                if not isinstance(resource_logs, dict):
                    continue
                for scope_logs in resource_logs.get("scopeLogs") or ():
                    for log in (scope_logs.get("logRecords") if isinstance(scope_logs, dict) else None) or ():
                        if not isinstance(log, dict):
                            continue
                        span_id, trace_id = normalize_id(log.get("spanId")), normalize_id(log.get("traceId"))
                        if not span_id:
                            continue
                        attrs = _otel_attrs(log.get("attributes"))
                        name = log.get("eventName") or attrs.get("event.name")
                        body = _otel_value(log.get("body"))
                        found.setdefault(("otel_log", trace_id, span_id), []).append(
                            {"name": name, "attributes": attrs, "body": body}
                        )
    return found


# The latest conventions' event_only mode: one log record per call whose attributes are
# the content attributes the span would carry in span_only mode.
_DETAILS_EVENT = "gen_ai.client.inference.operation.details"
_CONTENT_ATTRIBUTES = ("gen_ai.system_instructions", "gen_ai.input.messages", "gen_ai.output.messages")


def _content_from_details(log_events: list[dict], attrs: dict) -> list[dict]:
    """Move the content of ``gen_ai.client.inference.operation.details`` log records into
    the span's attributes (where it is absent); return the other log records as events."""
    events = []
    for event in log_events:
        if event.get("name") != _DETAILS_EVENT:
            events.append(event)
            continue
        for key in _CONTENT_ATTRIBUTES:
            if key in event["attributes"] and key not in attrs:
                attrs[key] = event["attributes"][key]
    return events


def _mentions(path, needle: str) -> bool:
    """Return whether the text of ``path`` contains ``needle`` (read in blocks, not parsed)."""
    overlap = len(needle) - 1
    tail = ""
    with open_text(path) as f:
        while block := f.read(1 << 20):
            if needle in tail + block:
                return True
            tail = block[-overlap:]
    return False


def normalize_id(value: Any) -> Any:
    """Return an OTLP trace/span id as lower-case hex; base64 ids (protobuf JSON) decoded.

    Values that are neither (empty, other lengths) are returned as found.
    """
    if not isinstance(value, str) or not value:
        return value
    if _HEX_ID.fullmatch(value):
        return value.lower()
    try:
        raw = base64.b64decode(value, validate=True)
    except (binascii.Error, ValueError):
        return value
    return raw.hex() if len(raw) in (8, 16) else value


_HEX_ID = re.compile(r"[0-9a-fA-F]{16}|[0-9a-fA-F]{32}")


def _read_otel(path, batch_requests, stats) -> Iterator[RawRecord]:
    """Yield one record per LLM span of an OTLP/JSON file (one document, or one per line).

    ``batch_requests`` may hold the day's log records by span (:func:`load_otel_logs`);
    a span's log records are read as its events.
    """
    companions = batch_requests or {}
    if _mentions(path, '"resourceLogs"'):  # log records in the spans file itself (a collector)
        companions = {**companions, **load_otel_logs(path)}
    for item in _iter_json_items(path):
        if item.error is not None:
            yield RawRecord(item.line, item.raw, error=item.error)
            continue
        yield from otel_document_records(item.line, item.raw, item.value, companions, stats)


def otel_document_records(line: int, raw: str, doc: Any, companions: dict, stats: dict | None) -> Iterator[RawRecord]:
    """Yield the records of one parsed OTLP/JSON document (a line of a JSON-lines file,
    or a whole file) that starts on ``line`` and whose text is ``raw``: one per LLM
    span, an error record for a document or span of the wrong shape; non-LLM spans are
    counted in ``stats["ignored_spans"]``. ``companions``: the day's log records by span
    (:func:`load_otel_logs`)."""
    if isinstance(doc, dict) and "resourceLogs" in doc and "resourceSpans" not in doc:
        return  # log records: read as companions, joined with their spans
    if not isinstance(doc, dict) or not isinstance(doc.get("resourceSpans"), list):
        yield RawRecord(line, raw, error="not an OTLP/JSON document (no resourceSpans)")
        return
    finder = _LineFinder(raw, line)
    for resource, scope, span in _otel_spans(doc):
        if not isinstance(span, dict):
            yield RawRecord(line, _dumps(span), error="span is not a JSON object")
            continue
        attrs = _otel_attrs(span.get("attributes"))
        events = [e for e in span.get("events") or () if isinstance(e, dict)]
        key = ("otel_log", normalize_id(span.get("traceId")), normalize_id(span.get("spanId")))
        events += _content_from_details(companions.get(key, []), attrs)
        if not _is_llm_span(attrs, events):
            if stats is not None:
                stats["ignored_spans"] = stats.get("ignored_spans", 0) + 1
            continue
        span_line = finder.line_of("spanId", span.get("spanId"))
        yield _map_value(
            span_line, _dumps(span), span,
            lambda s: _map_otel_span(s, attrs, events, resource, scope),  # noqa: B023 (called at once)
        )


def _otel_spans(doc: dict) -> Iterator[tuple[dict, dict, Any]]:
    """Yield (resource attributes, scope, span) for every span of an OTLP/JSON document."""
    for resource_spans in doc.get("resourceSpans") or ():
        if not isinstance(resource_spans, dict):
            continue
        resource = _otel_attrs((resource_spans.get("resource") or {}).get("attributes"))
        # instrumentationLibrarySpans: the name before OTLP 0.15, still in old files.
        scope_list = resource_spans.get("scopeSpans") or resource_spans.get("instrumentationLibrarySpans")
        for scope_spans in scope_list or ():
            if not isinstance(scope_spans, dict):
                continue
            scope = scope_spans.get("scope") or scope_spans.get("instrumentationLibrary") or {}
            for span in scope_spans.get("spans") or ():
                yield resource, scope, span


def _otel_attrs(attributes: Any) -> dict:
    """Return OTLP attributes (a list of {key, value}) as a plain dict of decoded values."""
    if isinstance(attributes, dict):  # some exporters write a plain map already
        return attributes
    out = {}
    for attribute in attributes or ():
        if isinstance(attribute, dict) and "key" in attribute:
            out[attribute["key"]] = _otel_value(attribute.get("value"))
    return out


def _otel_value(value: Any) -> Any:
    """Return the Python value of an OTLP AnyValue (``intValue`` strings become ints)."""
    if not isinstance(value, dict):
        return value
    if "stringValue" in value:
        return value["stringValue"]
    if "intValue" in value:
        try:
            return int(value["intValue"])
        except (TypeError, ValueError):
            return value["intValue"]
    if "doubleValue" in value:
        try:
            return float(value["doubleValue"])
        except (TypeError, ValueError):
            return value["doubleValue"]
    if "boolValue" in value:
        return value["boolValue"]
    if "arrayValue" in value:
        return [_otel_value(v) for v in (value["arrayValue"] or {}).get("values") or ()]
    if "kvlistValue" in value:
        return _otel_attrs((value["kvlistValue"] or {}).get("values"))
    if "bytesValue" in value:
        return value["bytesValue"]
    return None


def _is_llm_span(attrs: dict, events: list[dict]) -> bool:
    """Return whether a span is an LLM call (a log record) rather than HTTP, retrieval, ...

    OpenInference says so with ``openinference.span.kind`` (only ``LLM`` is); gen_ai
    operations that generate no text (embeddings, tools) are not; otherwise any
    ``gen_ai.*``/``llm.*`` attribute or ``gen_ai.*`` event makes it one.
    """
    kind = attrs.get("openinference.span.kind")
    if isinstance(kind, str):
        return kind.upper() == "LLM"
    if attrs.get("gen_ai.operation.name") in _NON_LLM_OPERATIONS:
        return False
    if str(attrs.get("llm.request.type", "")).lower() in ("embedding", "rerank"):
        return False
    if any(key.startswith(("gen_ai.", "llm.")) for key in attrs):
        return True
    return any(str(e.get("name", "")).startswith("gen_ai.") for e in events)


def _nanos(value: Any) -> int | None:
    """Return a nanosecond timestamp (int or digit string) as an int, else None."""
    try:
        return int(value)
    except (TypeError, ValueError):
        return None


def _iso_from_nanos(nanos: int) -> str | None:
    """Return epoch nanoseconds as an ISO-8601 UTC string with microseconds, else None."""
    seconds, rest = divmod(nanos, 1_000_000_000)
    try:
        moment = datetime.fromtimestamp(seconds, timezone.utc).replace(microsecond=rest // 1000)
    except (OverflowError, OSError, ValueError):
        return None
    return moment.strftime("%Y-%m-%dT%H:%M:%S.%fZ")


def _map_otel_span(span: dict, attrs: dict, events: list[dict], resource: dict, scope: dict) -> dict:
    """Return the canonical record of one LLM span."""
    used: set[str] = set(_OTEL_CONTENT_KEYS)
    record: dict = {}
    _put(record, "log_id", normalize_id(span.get("spanId")))
    start, end = _nanos(span.get("startTimeUnixNano")), _nanos(span.get("endTimeUnixNano"))
    if start:  # 0 means "unknown" in OTLP
        _put(record, "ts", _iso_from_nanos(start) or span.get("startTimeUnixNano"))
    elif start is None:
        _put(record, "ts", span.get("startTimeUnixNano"))
    if start and end and end >= start:
        record["latency_ms"] = (end - start) / 1e6
    _put(record, "source", resource.get("service.name"))
    for field, keys in _OTEL_FIELDS.items():
        _put(record, field, _take(attrs, keys, used))

    inputs, outputs, other_events = _otel_messages(attrs, events, used)
    _put(record, "input", _otel_input(inputs, attrs))
    reply = outputs[0] if outputs else None
    output = reply.get("content") if reply else None
    _put(record, "output", output if output is not None else attrs.get("output.value"))
    _put(record, "context", _context_from(inputs))
    if inputs or reply:
        record["messages"] = _canonical_messages(inputs + ([reply] if reply else []))

    meta = _own_metadata(attrs.get("metadata"))  # OpenInference keeps a JSON object here
    used.add("metadata")
    _add(meta, "trace_id", normalize_id(span.get("traceId")))
    _add(meta, "parent_span_id", normalize_id(span.get("parentSpanId")) or None)
    _add(meta, "span_name", span.get("name"))
    _add(meta, "span_kind", span.get("kind"))
    _add(meta, "scope_name", scope.get("name") if isinstance(scope, dict) else None)
    _add(meta, "status", span.get("status") or None)
    for key, value in resource.items():
        if key != "service.name":
            _add(meta, f"resource.{key}", value)
    for key, value in attrs.items():
        if key not in used:
            _add(meta, key, value)
    if reply and reply.get("tool_calls"):
        meta["tool_calls"] = reply["tool_calls"]
    if reply and reply.get("finish_reason") is not None:
        _add(meta, "finish_reason", reply["finish_reason"])
    if other_events:
        meta["events"] = other_events
    record["metadata"] = meta
    return record


def _take(attrs: dict, keys: Iterable[str], used: set[str]) -> Any:
    """Return the value of the first of ``keys`` present in ``attrs``, marking it used."""
    for key in keys:
        value = attrs.get(key)
        if value is not None:
            used.add(key)
            return value
    return None


def _otel_input(inputs: list[dict], attrs: dict) -> str | None:
    """Return a span's user input: the last user message, else ``input.value``."""
    text = _last_user_text(inputs)
    if text is None:
        others = [m.get("content") for m in inputs if m.get("role") != "system" and m.get("content")]
        text = others[-1] if others else None
    if text is None:
        value = attrs.get("input.value")
        parsed = _parse_json_text(value)
        if isinstance(parsed, dict) and isinstance(parsed.get("messages"), list):
            text = _last_user_text([_openai_message(m) for m in parsed["messages"] if isinstance(m, dict)])
        text = text if text is not None else value
    return text


def _otel_messages(attrs: dict, events: list[dict], used: set[str]) -> tuple[list, list, list]:
    """Return (input messages, output messages, unconsumed events) of an LLM span.

    Conventions are tried newest first; inputs and outputs each come from the first
    convention that has them (an instrumentation may mix attributes and events).
    """
    found = [
        _messages_current(attrs, used),
        _messages_indexed(attrs, used, _INDEXED_GEN_AI, "gen_ai.prompt.", "gen_ai.completion."),
        _messages_indexed(attrs, used, _INDEXED_OPENINFERENCE, "llm.input_messages.", "llm.output_messages."),
    ]
    event_inputs, event_outputs, other_events = _messages_from_events(events)
    found.append((event_inputs, event_outputs))
    inputs = next((i for i, _ in found if i), [])
    outputs = next((o for _, o in found if o), [])
    return inputs, outputs, other_events


def _messages_current(attrs: dict, used: set[str]) -> tuple[list, list]:
    """Return messages from gen_ai.system_instructions / gen_ai.input.messages / gen_ai.output.messages."""
    inputs: list[dict] = []
    outputs: list[dict] = []
    if "gen_ai.system_instructions" in attrs:
        used.add("gen_ai.system_instructions")
        text = _text(_parse_json_text(attrs["gen_ai.system_instructions"]))
        if text:
            inputs.append({"role": "system", "content": text})
    for key, target in (("gen_ai.input.messages", inputs), ("gen_ai.output.messages", outputs)):
        if key in attrs:
            used.add(key)
            messages = _parse_json_text(attrs[key])
            if isinstance(messages, list):
                target.extend(_semconv_message(m) for m in messages if isinstance(m, dict))
    return inputs, outputs


def _semconv_message(message: dict) -> dict:
    """Return a GenAI semconv message ({role, parts:[...]}) as an internal message."""
    parts = message.get("parts")
    if parts is None:  # some emitters use OpenAI's shape inside the attribute
        return _openai_message(message) | _finish(message)
    calls = [
        {"id": p.get("id"), "name": p.get("name"), "arguments": _parse_arguments(p.get("arguments"))}
        for p in parts if isinstance(p, dict) and p.get("type") == "tool_call"
    ]
    out = {"role": message.get("role"), "content": _text(parts)}
    if calls:
        out["tool_calls"] = calls
    return out | _finish(message)


def _finish(message: dict) -> dict:
    """Return ``{"finish_reason": ...}`` when a message has one, else {}."""
    reason = message.get("finish_reason")
    return {} if reason is None else {"finish_reason": reason}


def _messages_indexed(
    attrs: dict, used: set[str], pattern: re.Pattern, in_prefix: str, out_prefix: str
) -> tuple[list, list]:
    """Return messages flattened into indexed attributes.

    OpenLLMetry: ``gen_ai.prompt.N.role/content``, ``gen_ai.completion.N.content``;
    OpenInference: ``llm.input_messages.N.message.role/content`` and
    ``llm.output_messages.N.message.content`` (plus ``contents.K`` text parts and
    ``tool_calls.K`` in both).
    """
    groups: dict[bool, dict[int, dict]] = {True: {}, False: {}}
    for key, value in attrs.items():
        if not key.startswith((in_prefix, out_prefix)):
            continue
        match = pattern.fullmatch(key)
        if match is None:
            continue
        used.add(key)
        is_input = match.group(1) in ("prompt", "input")
        groups[is_input].setdefault(int(match.group(2)), {})[match.group(3)] = value
    return (
        [_indexed_message(groups[True][i]) for i in sorted(groups[True])],
        [_indexed_message(groups[False][i]) for i in sorted(groups[False])],
    )


def _indexed_message(fields: dict) -> dict:
    """Return an internal message from the sub-fields of one indexed message."""
    content = fields.get("content")
    if isinstance(content, str) and content.startswith("[{"):
        parts = _parse_json_text(content)  # multimodal content serialized as parts
        if isinstance(parts, list) and all(isinstance(p, dict) and "type" in p for p in parts):
            content = parts
    texts: dict[int, str] = {}
    calls: dict[int, dict] = {}
    for name, value in fields.items():
        if match := _CONTENTS_FIELD.fullmatch(name):
            texts[int(match.group(1))] = value
        elif match := _TOOL_CALL_FIELD.fullmatch(name):
            calls.setdefault(int(match.group(1)), {})[match.group(2)] = value
    text = _text(content)
    if text is None and texts:
        text = "\n".join(str(texts[i]) for i in sorted(texts))
    tool_calls = [
        {"id": c.get("id"), "name": c.get("name"), "arguments": _parse_arguments(c.get("arguments"))}
        for _, c in sorted(calls.items())
    ]
    if not text and tool_calls:
        text = "\n".join(map(_render_call, tool_calls))
    out = {"role": fields.get("role"), "content": text}
    if tool_calls:
        out["tool_calls"] = tool_calls
    return out | _finish(fields)


def _messages_from_events(events: list[dict]) -> tuple[list, list, list]:
    """Return (input messages, output messages, other events) from span events.

    Reads ``gen_ai.{system,user,assistant,tool}.message`` and ``gen_ai.choice`` events
    (content in a ``content`` attribute, a ``message`` attribute or a ``body``) and
    the older ``gen_ai.content.prompt``/``gen_ai.content.completion`` events (JSON
    message lists in ``gen_ai.prompt``/``gen_ai.completion``). Other events (e.g.
    exceptions) are returned as {name, attributes} for the metadata.
    """
    inputs: list[dict] = []
    outputs: list[dict] = []
    others: list[dict] = []
    for event in events:
        name = event.get("name")
        attrs = _otel_attrs(event.get("attributes"))
        if name in _EVENT_ROLES:
            inputs.append(_event_message(event, attrs, _EVENT_ROLES[name]))
        elif name == "gen_ai.choice":
            outputs.append(_event_message(event, attrs, "assistant"))
        elif name in ("gen_ai.content.prompt", "gen_ai.content.completion"):
            is_prompt = name == "gen_ai.content.prompt"
            target = inputs if is_prompt else outputs
            messages = _parse_json_text(attrs.get("gen_ai.prompt" if is_prompt else "gen_ai.completion"))
            if isinstance(messages, list):
                target.extend(_openai_message(m) for m in messages if isinstance(m, dict))
            elif isinstance(messages, str):
                target.append({"role": "user" if is_prompt else "assistant", "content": messages})
        else:
            others.append({"name": name, "attributes": attrs})
    return inputs, outputs, others


def _event_message(event: dict, attrs: dict, role: str) -> dict:
    """Return the message a gen_ai message/choice event carries."""
    body = _parse_json_text(_first(attrs, "message", "body") or event.get("body"))
    message = body
    if isinstance(body, dict) and isinstance(body.get("message"), dict):
        message = body["message"]  # gen_ai.choice: {index, finish_reason, message}
    if isinstance(message, dict):
        out = _openai_message({"role": message.get("role") or role, **message})
    else:
        out = {"role": role, "content": _text(message)}
    if "content" in attrs:
        out["content"] = _text(_parse_json_text(attrs["content"]))
    out["role"] = attrs.get("role") or out.get("role") or role
    reason = _first(attrs, "finish_reason") or (body.get("finish_reason") if isinstance(body, dict) else None)
    return out | ({"finish_reason": reason} if reason is not None else {})
