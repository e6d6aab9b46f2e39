"""OTel GenAI spans (OTLP/JSON lines) mapped to `logs` rows in one DuckDB statement.

A line of an OTLP/JSON file is one export request: several resources, scopes and spans.
:func:`otel_span_rows` reads every span of a line and decides the line only when it
decides each of its spans, in one of two ways:

- a span that is no LLM call (by the tests of
  :func:`flywheel.ingest.formats.otel._is_llm_span`) is counted as ignored;
- an LLM span in one of the three conventions the demo and the instrumentations write
  (``gen_ai.input.messages``/``gen_ai.output.messages`` of text parts, OpenLLMetry's
  ``gen_ai.prompt.N.*``/``gen_ai.completion.N.*``, OpenInference's
  ``llm.input_messages.N.message.*``/``llm.output_messages.N.message.*``, each of
  ``role``, ``content`` and ``finish_reason`` only), when the document
  :func:`flywheel.ingest.formats.otel._map_otel_span` builds for it is sure to be
  accepted (a hex span id, a start time within the day's window, a user message and a
  reply of text, token counts and latency in range), is mapped to the values of its
  `logs` row: the values the loader's fast statement
  (:func:`flywheel.ingest.normalize.fast_accepted_sql`) reads from that document (same
  fields, same values, metadata in the same order, the same JSON text). Where that
  statement's own test or its PII test would not let the span pass, the statement gives
  the document instead, for the loader's detailed checks.

Every other line (a span with events, tool calls, base64 ids, attribute values of other
kinds, a key written in a way the statement cannot check, a JSON ``null`` anywhere, a
span whose document would be rejected, ...) is left to the Python mapper, as are the
spans that have log records of their own (the companion ``otel_logs`` files).
"""

from __future__ import annotations

from flywheel.ingest.fast.openai_sql import _CONTEXT_CTES, _obj
from flywheel.ingest.formats.otel import _NON_LLM_OPERATIONS, _OTEL_CONTENT_KEYS, _OTEL_FIELDS
from flywheel.ingest.normalize import TsWindow, _fast_acceptance
from flywheel.ingest.records import MAX_VALUES

_VALUE_KEYS = ("stringValue", "intValue", "doubleValue", "boolValue", "arrayValue", "kvlistValue", "bytesValue")
# String values as text (a line with a stringValue that is not a JSON string is left to
# Python), the others as JSON.
_ATTRIBUTE = _obj({"key": '"VARCHAR"', "value": _obj({k: '"VARCHAR"' if k == "stringValue" else '"JSON"'
                                                     for k in _VALUE_KEYS})})
# Span attributes whose text is parsed, never written out.
_PARSED_ATTRIBUTES = ("gen_ai.input.messages", "gen_ai.output.messages")
_SPAN_KEYS = ("traceId", "spanId", "parentSpanId", "name", "kind", "startTimeUnixNano", "endTimeUnixNano",
              "status", "events")
_SPAN = _obj({**{k: '"JSON"' for k in _SPAN_KEYS}, "attributes": f"[{_ATTRIBUTE}]"})
_DOCUMENT = _obj({"resourceSpans": "[" + _obj({
    "resource": _obj({"attributes": f"[{_ATTRIBUTE}]"}),
    "scopeSpans": "[" + _obj({"scope": _obj({"name": '"JSON"'}), "instrumentationLibrary": '"JSON"',
                              "spans": f"[{_SPAN}]"}) + "]",
}) + "]"})
# A semantic-conventions message of text parts (gen_ai.input.messages / output.messages).
_SEMCONV = "[" + _obj({"role": '"JSON"', "finish_reason": '"JSON"',
                       "parts": "[" + _obj({"type": '"JSON"', "content": '"JSON"', "text": '"JSON"'}) + "]"}) + "]"
# Lines the statement leaves to Python at once (such words in a text may send a line
# there too): a JSON null (Python tells a null member from a missing one, a STRUCT does
# not), NaN or Infinity (Python reads them, a document cannot hold them), an attribute
# key or string value that is not a string, what DuckDB reads and Python does not (a
# comma before a closing bracket), numbers Python reads as infinite or DuckDB could
# read inexactly (an exponent of three digits, 17 digits or more). (Tested in Arrow,
# whose RE2 scan is about twice as fast as DuckDB's here: the caller's ``bent`` column.)
BENT_LINE = (r'[:,\[]\s*(?:null|-?NaN|-?Infinity)|"(key|stringValue)"\s*:\s*[^"\s]|,\s*[}\]]'
             r'|[:,\[]\s*-?[0-9.]+[eE][-+]?[0-9]{3}|[:,\[]\s*-?[0-9]{17}')
# Keys the metadata gets from the span itself: an attribute of that name would clash.
_SPAN_META = ("trace_id", "parent_span_id", "span_name", "span_kind", "scope_name", "status", "finish_reason",
              "tool_calls", "events", "metadata")
_HEX16 = '"[0-9a-fA-F]{16}"'
_HEX_ID = '"([0-9a-fA-F]{16}|[0-9a-fA-F]{32})"'
# Nanoseconds since the epoch from 2001-09-09 to 2096-10-02 (19 digits, below 4e18).
_NANOS = '"?([1-3][0-9]{18})"?'
# The `logs` columns of an accepted span (the values the loader inserts as they are).
ACCEPTED_COLUMNS = ("log_id", "ts", "source", "input", "output", "context", "model", "prompt_name", "prompt_version",
                    "feedback", "messages", "git_commit", "session_id", "user_id", "latency_ms", "prompt_tokens",
                    "completion_tokens", "cost_usd", "tags", "metadata", "pii")
# Indexed message attributes: (prefix of inputs, of outputs, the part between index and field).
_INDEXED = {
    "gen_ai": ("gen_ai.prompt.", "gen_ai.completion.", ""),
    "openinference": ("llm.input_messages.", "llm.output_messages.", "message."),
}


def _value(v: str) -> str:
    """SQL: the JSON text of the Python value of an OTLP AnyValue STRUCT ``v`` (as
    ``_otel_value`` gives it), NULL for a kind this statement does not convert."""
    number = "-?(0|[1-9][0-9]{0,15})(\\.[0-9]{1,17})?([eE][-+]?[0-9]{1,2})?"
    array = f"try(from_json({v}.arrayValue, '{{\"values\":[{{\"stringValue\":\"JSON\"}}]}}')).values"
    return f"""CASE
        WHEN {v}.stringValue IS NOT NULL THEN to_json({v}.stringValue)
        WHEN {v}.intValue IS NOT NULL THEN
            CASE WHEN regexp_full_match({v}.intValue, '"?(-?[1-9][0-9]{{0,17}}|0)"?') THEN trim({v}.intValue, '"') END
        WHEN {v}.doubleValue IS NOT NULL THEN
            CASE WHEN regexp_full_match({v}.doubleValue, '"?{number}"?')
                 THEN to_json(trim({v}.doubleValue, '"')::DOUBLE) END
        WHEN {v}.boolValue IS NOT NULL THEN {v}.boolValue
        WHEN {v}.arrayValue IS NOT NULL THEN
            CASE WHEN list_bool_and(list_transform({array}, lambda av: av.stringValue IS NOT NULL))
                 THEN '[' || array_to_string(list_transform({array}, lambda av: av.stringValue), ',') || ']'
                 WHEN len({array}) = 0 THEN '[]' END
    END"""


def _entries(attributes: str, *, unread: tuple[str, ...] = ()) -> str:
    """SQL: the attributes as a list of {k: key, v: JSON text of the value, s: text of
    a string value}; ``v`` is a placeholder (``""``) for the string values of the keys
    ``unread``, whose JSON text is never used (it would copy a long text for nothing)."""
    value = _value("a.value")
    if unread:
        value = f"CASE WHEN a.key IN {unread} AND a.value.stringValue IS NOT NULL THEN '\"\"' ELSE {value} END"
    return f"list_transform({attributes}, lambda a: struct_pack(k := a.key, v := ({value}), s := a.value.stringValue))"


def _attr(name: str, part: str = "v") -> str:
    """SQL: the JSON text of the span attribute ``name`` (NULL when absent); with
    ``part="s"``, the text of a string value."""
    return f"e[list_position(keys, '{name}')].{part}"


def _taken(keys: tuple[str, ...]) -> str:
    """SQL: the place of the first of ``keys`` present among the span's attributes.
    (Its value is the field's only where every attribute's value is read: the
    statement's test of a span.)"""
    return "coalesce(" + ", ".join(f"list_position(keys, '{k}')" for k in keys) + ")"


def _semconv(attribute: str) -> str:
    """SQL: the messages of a gen_ai.input/output.messages attribute: a list of
    {role, content, fr, ok} (JSON texts; ok: a shape this statement maps)."""
    parsed = f"CASE WHEN starts_with({attribute}, '[') THEN try(from_json({attribute}, '{_SEMCONV}')) END"
    # Text parts: the text of each (empty ones left out), joined by newlines.
    texts = "list_filter(list_transform(x.parts, lambda pt: pt.content ->> '$'), lambda t: t <> '')"
    content = (f"CASE WHEN len(x.parts) = 1 AND x.parts[1].content <> '\"\"' THEN x.parts[1].content "
               f"WHEN len({texts}) > 0 THEN to_json(array_to_string({texts}, chr(10))) END")
    part_ok = "pt IS NOT NULL AND pt.type = '\"text\"' AND pt.text IS NULL AND starts_with(pt.content, '\"')"
    ok = f"x IS NOT NULL AND x.parts IS NOT NULL AND coalesce(list_bool_and(list_transform(x.parts, lambda pt: {part_ok})), true)"
    return (f"list_transform({parsed}, lambda x: struct_pack(role := x.role, content := {content}, "
            f"fr := x.finish_reason, ok := {ok}))")


def _indexed(convention: str, is_input: bool) -> str:
    """SQL: the messages of an indexed convention in the order of their indexes: a list
    of {role, content, fr, ok, n} (``n``: how many of its attributes it has).

    The indexes are probed from 0 up to the number of the convention's attributes
    (``n_...``), and only the indexes with an attribute kept: the span is decided only
    when the attributes found are all of them (a caller's test), so every one is a
    ``role``, ``content`` or ``finish_reason`` with an index written plainly."""
    in_prefix, out_prefix, middle = _INDEXED[convention]
    prefix = in_prefix if is_input else out_prefix
    count = f"n_{convention}_{'in' if is_input else 'out'}"

    def field(name: str) -> str:
        return f"e[list_position(keys, '{prefix}' || i || '.{middle}{name}')].v"

    probed = (f"list_transform(range(0, {count}), lambda i: struct_pack(role := {field('role')}, "
              f"content := {field('content')}, fr := {field('finish_reason')}))")
    found = "(m.role IS NOT NULL)::INT + (m.content IS NOT NULL)::INT + (m.fr IS NOT NULL)::INT"
    ok = "(m.content IS NULL OR (starts_with(m.content, '\"') AND NOT starts_with(m.content, '\"[{')))"
    return (f"list_transform(list_filter({probed}, lambda m: {found} > 0), lambda m: struct_pack("
            f"role := m.role, content := m.content, fr := m.fr, ok := {ok}, n := {found}))")


def _count(prefix: str, *, but: tuple[str, ...] = ()) -> str:
    """SQL: how many attribute keys start with ``prefix`` (other than ``but``)."""
    test = f"starts_with(kk, '{prefix}')" + (f" AND kk NOT IN {but}" if but else "")
    return f"len(list_filter(keys, lambda kk: {test}))"


def _hex(json_id: str) -> str:
    """SQL: a span or trace id as lower-case hex, NULL when absent, '?' when it is not
    hex (Python decodes base64 ids: such a span cannot be matched with its log records here)."""
    return (f"CASE WHEN {json_id} IS NULL THEN NULL WHEN regexp_full_match({json_id}, '{_HEX_ID}') "
            f"THEN lower({json_id} ->> '$') ELSE '?' END")


def _not_structured(json_text: str) -> str:
    """SQL: a JSON value that is no object or array (a canonical text field)."""
    return f"({json_text} IS NULL OR NOT (starts_with({json_text}, '[') OR starts_with({json_text}, '{{')))"


def otel_span_rows(lines: str, *, window: TsWindow, ids: bool = True, hold_back: str | None = None,
                   documents: bool = False, checked: bool = True) -> str:
    """Return a SELECT of one row per span of the lines of the relation ``lines`` (the
    loader's batch columns, and ``bent``: whether the line matches :data:`BENT_LINE`,
    which sends it to Python): ``rid, k, ok, llm, trace_id, span_id, accepted, held, doc``
    and the `logs` values of an accepted or held span (:data:`ACCEPTED_COLUMNS`, NULL
    otherwise).

    ``k`` is the span's place in the line, ``ok`` whether the statement decides it, ``llm``
    whether it is an LLM call, ``trace_id`` and ``span_id`` its ids as lower-case hex (to
    find its log records). A line is decided when every one of its spans is; a line
    without a row is not. A decided LLM span is ``accepted`` (its `logs` values are
    given, the values the loader's fast statement would store from its document: that
    statement's own test passes on them, see
    :func:`flywheel.ingest.normalize.fast_accepted_sql`), or, with the PII guardrail
    (``hold_back``), ``held`` instead (the same values, for the loader to test for PII and
    scrub, see :func:`flywheel.ingest.loader._scrubbed_candidates`), or has its canonical
    document in ``doc`` (for the loader to judge, as any other record).

    ``window``: the plausible timestamps of the day (:func:`flywheel.ingest.normalize.ts_window`).
    ``ids=False``: ``trace_id`` and ``span_id`` are NULL (no log records to find).
    ``hold_back``: the PII prefilter (RE2; None: no PII guardrail).
    ``documents``: give the document of an accepted or held span too (to check its values).
    ``checked=False``: a line that is not JSON makes the statement raise (DuckDB's
    ``InvalidInputException``) instead of being left out (for lines that are all JSON, it
    saves a parse of each).
    """
    # Where each field's attribute is (`found`); its value and key are columns of `fielded`.
    field_at = {name: _taken(keys) for name, keys in _OTEL_FIELDS.items() if name != "tags"}
    fields = {name: (f"f_{name}", None) for name in field_at}

    def llm_only(sql: str) -> str:
        return f"CASE WHEN span_ok AND llm THEN {sql} END"

    content_keys = (*_OTEL_CONTENT_KEYS, "gen_ai.input.messages", "gen_ai.output.messages")
    taken_keys = "taken"
    # (Fewer than 2**21 of each, for the span's place `k`.)
    line_ok = """d IS NOT NULL AND len(d.resourceSpans) BETWEEN 1 AND 2097151 AND list_bool_and(list_transform(d.resourceSpans,
        lambda r: r IS NOT NULL AND r.resource.attributes IS NOT NULL AND len(r.scopeSpans) BETWEEN 1 AND 2097151
             AND list_bool_and(list_transform(r.scopeSpans,
                 lambda s: s IS NOT NULL AND s.spans IS NOT NULL AND s.instrumentationLibrary IS NULL AND len(s.spans) < 2097152
                      AND coalesce(list_bool_and(list_transform(s.spans, lambda sp: sp IS NOT NULL)), true)))))"""
    deciding = ("openinference.span.kind", "gen_ai.operation.name", "llm.request.type")
    kind, op, request_type = (_attr(name) for name in deciding)
    # The attributes that tell an LLM call from another span hold values this statement reads.
    deciding_ok = " AND ".join(f"(NOT list_contains(keys, '{name}') OR {_attr(name)} IS NOT NULL)" for name in deciding)
    is_llm = f"""CASE
        WHEN starts_with({kind}, '"') THEN upper({kind} ->> '$') = 'LLM'
        WHEN {op} IN {tuple(f'"{o}"' for o in sorted(_NON_LLM_OPERATIONS))} THEN false
        WHEN starts_with({request_type}, '"') AND lower({request_type} ->> '$') IN ('embedding', 'rerank') THEN false
        ELSE list_bool_or(list_transform(keys, lambda kk: starts_with(kk, 'gen_ai.') OR starts_with(kk, 'llm.')))
    END"""
    # gen_ai.prompt.name and .version are fields, not indexed messages.
    counts = {
        "n_gen_ai_in": _count("gen_ai.prompt.", but=("gen_ai.prompt.name", "gen_ai.prompt.version")),
        "n_gen_ai_out": _count("gen_ai.completion."),
        "n_openinference_in": _count("llm.input_messages."),
        "n_openinference_out": _count("llm.output_messages."),
    }
    inputs = (f"CASE WHEN NOT (span_ok AND llm) THEN NULL WHEN is_cur THEN {_semconv(_attr('gen_ai.input.messages', 's'))} "
              f"WHEN is_gen_ai THEN {_indexed('gen_ai', True)} ELSE {_indexed('openinference', True)} END")
    outputs = (f"CASE WHEN NOT (span_ok AND llm) THEN NULL WHEN is_cur THEN {_semconv(_attr('gen_ai.output.messages', 's'))} "
               f"WHEN is_gen_ai THEN {_indexed('gen_ai', False)} ELSE {_indexed('openinference', False)} END")
    # Every attribute of the indexed convention is one of its messages' fields.
    all_found = ("CASE WHEN is_gen_ai THEN list_sum(list_transform(msgs, lambda x: x.n)) = n_gen_ai_in "
                 "AND list_sum(list_transform(outs, lambda x: x.n)) = n_gen_ai_out "
                 "WHEN is_openinference THEN list_sum(list_transform(msgs, lambda x: x.n)) = n_openinference_in "
                 "AND list_sum(list_transform(outs, lambda x: x.n)) = n_openinference_out ELSE true END")
    # The attributes that stay in metadata, in their order: each attribute as its metadata
    # entry, NULL where it is not one (array_to_string leaves NULLs out, as a filter
    # would, without copying the attributes kept into a list of their own; the CASE
    # looks at the list of keys taken only for attributes that pass the cheap tests).
    unused = (f"array_to_string(list_transform(e, lambda x: CASE WHEN x.k NOT IN {content_keys} "
              f"AND NOT (CASE WHEN is_gen_ai THEN starts_with(x.k, 'gen_ai.prompt.') "
              f"OR starts_with(x.k, 'gen_ai.completion.') WHEN is_openinference THEN "
              f"starts_with(x.k, 'llm.input_messages.') OR starts_with(x.k, 'llm.output_messages.') ELSE false END) "
              f"AND NOT list_contains({taken_keys}, x.k) THEN to_json(x.k) || ':' || x.v END), ',')")
    in_window = "true" if window is None else f"start_ns // 1000 BETWEEN epoch_us({window[0]}) AND epoch_us({window[1]})"
    max_tokens = MAX_VALUES["prompt_tokens"]
    assert MAX_VALUES["completion_tokens"] == max_tokens
    # (The cast only of digits: a string such as "abc" would make it raise.)
    tokens_ok = " AND ".join(
        f"({fields[name][0]} IS NULL OR CASE WHEN regexp_full_match({fields[name][0]}, '[0-9]{{1,7}}') "
        f"THEN {fields[name][0]}::BIGINT <= {max_tokens} ELSE false END)"
        for name in ("prompt_tokens", "completion_tokens"))
    text_fields_ok = " AND ".join(_not_structured(fields[name][0])
                                  for name in ("model", "session_id", "user_id", "prompt_name", "prompt_version"))

    def message_json(x: str) -> str:
        return f"'{{\"role\":' || coalesce({x}.role, 'null') || ',\"content\":' || coalesce({x}.content, 'null') || '}}'"

    metadata = f"""'{{' || concat_ws(',',
            CASE WHEN p.traceId IS NOT NULL THEN '"trace_id":' || lower(p.traceId) END,
            CASE WHEN p.parentSpanId IS NOT NULL AND p.parentSpanId <> '""' THEN '"parent_span_id":' || lower(p.parentSpanId) END,
            '"span_name":' || p.name, '"span_kind":' || p.kind, '"scope_name":' || scope,
            CASE WHEN p.status <> '{{}}' THEN '"status":' || p.status END,
            res_meta, nullif({unused}, ''),
            '"finish_reason":' || reply.fr) || '}}'"""
    doc_fields = {
        "log_id": "lower(p.spanId)",
        "ts": "to_json(strftime(make_timestamp(start_ns // 1000), '%Y-%m-%dT%H:%M:%S.%fZ'))",
        "latency_ms": "to_json(latency)",
        "source": "service_name",
        **{name: value for name, (value, _) in fields.items()},
        "input": "user_message.content",
        "output": "reply.content",
        "context": "to_json(context)",
        "messages": "messages_text",
        "metadata": "metadata_text",
    }
    doc = "'{' || concat_ws(',', " + ", ".join(
        f"'\"{name}\":' || ({value})" for name, value in doc_fields.items()) + ") || '}'"
    # The values the loader's fast statement reads from the document (`v`, each field as
    # the VARCHAR that statement's parse gives, and the typed columns it derives), so that
    # its own acceptance test and PII test (normalize) run on them unchanged.
    as_text = {name: f"from_json({value}, '\"VARCHAR\"')" for name, value in doc_fields.items()
               if name not in ("ts", "latency_ms", "context", "messages", "metadata")}
    values = {
        **as_text,
        "ts": doc_fields["ts"] + " ->> '$'",  # the document's text (not the session's time zone's)
        "latency_ms": "latency::VARCHAR",
        "context": "context",
        "messages": "messages_text",
        "metadata": "metadata_text",
        **{name: "NULL::VARCHAR" for name in ("git_commit", "cost_usd", "feedback", "tags")},
    }
    # Each value computed once, as a column (a STRUCT of expressions would be taken apart
    # by DuckDB, which then computes an expression wherever a test names its field).
    value_columns = ", ".join(f"CASE WHEN good THEN {value} END AS value_{name}" for name, value in values.items()
                              if not value.startswith("NULL::"))
    v = "struct_pack(" + ", ".join(f"{name} := {value if value.startswith('NULL::') else 'value_' + name}"
                                   for name, value in values.items()) + ")"
    # With the PII guardrail, a span the fast statement would take is held for the loader
    # to test and scrub (its prefilters run in Arrow, about twice as fast as DuckDB's).
    taken_as = "1" if hold_back is None else "2"
    accepted_values = {
        "log_id": "trim(v.log_id)", "ts": "ts", "source": "coalesce(v.source, 'unknown')",
        **{name: f"v.{name}" for name in ("input", "output", "context", "model", "prompt_name", "prompt_version")},
        "feedback": "NULL::TINYINT", "messages": "messages", "git_commit": "NULL::VARCHAR",
        "session_id": "v.session_id", "user_id": "v.user_id", "latency_ms": "n_latency_ms",
        "prompt_tokens": "n_prompt_tokens", "completion_tokens": "n_completion_tokens",
        "cost_usd": "NULL::DOUBLE", "tags": "NULL::VARCHAR[]", "metadata": "metadata_text", "pii": "NULL::VARCHAR[]",
    }
    assert tuple(accepted_values) == ACCEPTED_COLUMNS
    # try() on the key list only (it copies what it returns; the document is large): a
    # line parses for both or neither.
    parse = (f"CASE WHEN try(json_keys(text)) IS NOT NULL THEN from_json(text, '{_DOCUMENT}') END" if checked
             else f"from_json(text, '{_DOCUMENT}')")
    return f"""
WITH parsed AS (
    SELECT rid, {parse} AS d FROM {lines} WHERE NOT blank AND NOT bent AND starts_with(text, '{{')
),
resources AS (
    SELECT rid, unnest(d.resourceSpans) AS r, generate_subscripts(d.resourceSpans, 1) AS ri FROM parsed WHERE {line_ok}
),
resourced AS (
    -- The resource's attributes, read once for all its spans.
    SELECT *, {_entries('r.resource.attributes')} AS res_e FROM resources
),
resource_meta AS (
    -- Its attributes as they go into each span's metadata (but the service name, the source).
    SELECT *, nullif(array_to_string(list_transform(list_filter(res_e, lambda x: x.k <> 'service.name'),
                                                    lambda x: to_json('resource.' || x.k) || ':' || x.v), ','), '') AS res_meta
    FROM resourced
),
resource_keyed AS (
    SELECT *, list_transform(res_e, lambda x: x.k) AS res_keys FROM resource_meta
),
scopes AS (
    -- res_ok: the resource's attributes are all read, each key once (a test of each span, made once).
    SELECT rid, ri, res_e, res_meta, res_keys,
        coalesce(list_bool_and(list_transform(res_e, lambda x: x.k IS NOT NULL AND x.v IS NOT NULL)) IS NOT false
                 AND list_unique(res_keys) = len(res_keys), false) AS res_ok,
        unnest(r.scopeSpans) AS s, generate_subscripts(r.scopeSpans, 1) AS si
    FROM resource_keyed
),
spans AS (
    SELECT rid, ri, si, res_e, res_meta, res_keys, res_ok, s.scope.name AS scope, unnest(s.spans) AS p,
        generate_subscripts(s.spans, 1) AS pi
    FROM scopes
),
attributed AS (
    -- k: the span's place in the line (one level after another, not a count: the order is what counts).
    SELECT rid, (ri::BIGINT << 42) + (si::BIGINT << 21) + pi AS k, p, scope,
        {_entries('p.attributes', unread=(*_PARSED_ATTRIBUTES, *_OTEL_CONTENT_KEYS))} AS e,
        res_e, res_meta, res_keys, res_ok
    FROM spans
),
keyed AS (
    SELECT *, list_transform(e, lambda x: x.k) AS keys FROM attributed
),
classified AS (
    -- (A condition of CASE WHEN stops at its first test that fails, cheap ones first;
    -- in a projection DuckDB would evaluate every test for every span.)
    SELECT *, coalesce({is_llm}, false) AS llm,
        CASE WHEN (p.events IS NULL OR p.events = '[]') AND list_aggregate(keys, 'count') = len(keys)
                  AND {deciding_ok} AND list_unique(keys) = len(keys) THEN true ELSE false END AS span_ok
    FROM keyed
),
found AS (
    -- Where each field's attribute is (looked up once for its value and its key).
    SELECT *, {", ".join(f"{llm_only(place)} AS at_{name}" for name, place in field_at.items())} FROM classified
),
fielded AS (
    -- Only an LLM span the statement may decide needs its fields (the others are skipped).
    SELECT *, {", ".join(f"{llm_only(sql)} AS {name}" for name, sql in counts.items())},
        {llm_only("res_e[list_position(res_keys, 'service.name')].v")} AS service_name,
        {", ".join(f"e[at_{name}].v AS f_{name}" for name in field_at)},
        {llm_only("[" + ", ".join(f"keys[at_{name}]" for name in field_at) + "]")} AS taken,
        {llm_only(f"TRY_CAST(regexp_extract(p.startTimeUnixNano, '^{_NANOS}$', 1) AS BIGINT)")} AS start_ns,
        CASE WHEN NOT (span_ok AND llm) THEN NULL WHEN p.endTimeUnixNano IS NULL THEN 0
             ELSE TRY_CAST(regexp_extract(p.endTimeUnixNano, '^"?(0|[1-9][0-9]{{0,18}})"?$', 1) AS BIGINT) END AS end_ns
    FROM found
),
conventions AS (
    SELECT *, list_contains(keys, 'gen_ai.input.messages') OR list_contains(keys, 'gen_ai.output.messages') AS is_cur,
        n_gen_ai_in + n_gen_ai_out > 0 AS is_gen_ai, n_openinference_in + n_openinference_out > 0 AS is_openinference
    FROM fielded
),
messaged AS (
    SELECT *, {inputs} AS msgs, {outputs} AS outs FROM conventions
),
named AS (
    SELECT *, outs[1] AS reply, list_filter(msgs, lambda x: x.role = '"user"')[-1] AS user_message FROM messaged
),{_CONTEXT_CTES}
judged AS (
    -- (NULL and false alike: not good.)
    SELECT *, CASE WHEN span_ok AND llm AND res_ok
        AND context_ok
        AND (is_cur::INT + is_gen_ai::INT + is_openinference::INT) = 1 AND {all_found}
        AND regexp_full_match(p.spanId, '{_HEX16}')
        AND (p.traceId IS NULL OR regexp_full_match(p.traceId, '{_HEX_ID}'))
        AND (p.parentSpanId IS NULL OR p.parentSpanId = '""' OR regexp_full_match(p.parentSpanId, '{_HEX_ID}'))
        AND (p.status IS NULL OR starts_with(p.status, '{{'))
        AND start_ns IS NOT NULL AND end_ns IS NOT NULL
        AND {in_window}
        AND (end_ns < start_ns OR (end_ns - start_ns) <= {MAX_VALUES['latency_ms'] * 1_000_000})
        AND {_not_structured('service_name')} AND {text_fields_ok} AND {tokens_ok}
        AND len(msgs) > 0 AND list_bool_and(list_transform(msgs, lambda x: x.ok))
        AND NOT list_bool_or(list_transform(msgs, lambda x: x.role IN ('"tool"', '"function"')))
        AND reply IS NOT NULL AND reply.ok AND starts_with(reply.content, '"')
        AND NOT regexp_full_match(reply.content ->> '$', '\\s*')
        AND user_message IS NOT NULL AND starts_with(user_message.content, '"')
        AND NOT list_has_any(keys, ['gen_ai.system_instructions', 'metadata', 'tag.tags'])
        AND NOT list_bool_or(list_transform(keys, lambda x: x IN {_SPAN_META} OR starts_with(x, 'resource.')))
        AND list_bool_and(list_transform(e, lambda x: x.v IS NOT NULL)) IS NOT false
        THEN true ELSE false END AS good
    FROM contexted
),
built AS (
    -- The document's parts that are JSON text (built once: the document and the values share them).
    -- Built for every span (used only where good): a CASE around these list lambdas made
    -- them some five times slower.
    SELECT *,
        -- (The reply after the messages: list_append would copy them.)
        '[' || array_to_string(list_transform(msgs, lambda x: {message_json('x')}), ',') || ','
            || {message_json('reply')} || ']' AS messages_text,
        {metadata} AS metadata_text,
        CASE WHEN good THEN timezone('UTC', make_timestamp(start_ns // 1000)) END AS ts,
        CASE WHEN good AND end_ns > 0 AND end_ns >= start_ns THEN (end_ns - start_ns)::DOUBLE / 1e6 END AS latency
    FROM judged
),
typed AS (
    SELECT *, {value_columns} FROM built
),
valued AS (
    SELECT *, {v} AS v, messages_text AS messages, 'ARRAY' AS t_messages,
        'OBJECT' AS t_metadata, metadata_text AS metadata_json, NULL::VARCHAR AS t_tags, NULL::VARCHAR[] AS tags,
        NULL::TINYINT AS feedback, []::VARCHAR[] AS extra_keys, NULL::VARCHAR AS j,
        latency AS n_latency_ms, CASE WHEN good THEN f_prompt_tokens::BIGINT END AS n_prompt_tokens,
        CASE WHEN good THEN f_completion_tokens::BIGINT END AS n_completion_tokens, NULL::DOUBLE AS n_cost_usd
    FROM typed
),
decided AS (
    -- What the fast statement would take from the document (its test, on JSON text this
    -- statement wrote itself): 1, taken as it is (no PII guardrail), or 2, held for the
    -- caller's PII test; 0: neither.
    SELECT *, CASE WHEN NOT good THEN 0
                   WHEN json_valid(messages_text) AND json_valid(metadata_text) AND {_fast_acceptance(window)}
                   THEN {taken_as}
                   ELSE 0 END AS verdict
    FROM valued
)
SELECT rid, k, CASE WHEN NOT span_ok THEN false WHEN NOT llm THEN true ELSE coalesce(good, false) END AS ok, llm,
    {_hex('p.traceId') if ids else 'NULL::VARCHAR'} AS trace_id, {_hex('p.spanId') if ids else 'NULL::VARCHAR'} AS span_id,
    verdict = 1 AS accepted, verdict = 2 AS held,
    -- (Built only where it is given: it copies every text of the span.)
    CASE WHEN good AND {'true' if documents else 'verdict = 0'} THEN {doc} END AS doc,
    {", ".join(f"CASE WHEN verdict > 0 THEN {value} END AS {name}" for name, value in accepted_values.items())}
FROM decided
"""
