"""Langfuse traces mapped to canonical documents in one DuckDB statement.

:func:`langfuse_docs` decides only traces of the plain shape the public API and the SDKs
export: top-level keys among :data:`_TOP_KEYS`; an ``input`` that is a string or an
object of ``question`` (a string) and ``context`` (a string); a string ``output``; a
numeric ``latency`` with at most three decimals; observations that are objects, the
first a ``GENERATION`` (without ``usageDetails`` or token counts of its own); no score,
or one BOOLEAN ``user-feedback`` score from the API or an evaluation; an object (or no)
``metadata`` that shares no key with what the mapping adds. For those it builds the
document :func:`flywheel.ingest.formats.langfuse._map_langfuse` builds (same fields,
same values, metadata in the same order); every other trace is left to that mapper.
"""

from __future__ import annotations

import json
from collections import Counter
from collections.abc import Iterable

from flywheel.ingest.fast.openai_sql import (_PLAIN_KEY, _distinct, _entries, _is_string, _list, _obj,
                                             _parsed_with_keys)

_TOP_KEYS = ("id", "timestamp", "name", "input", "output", "sessionId", "userId", "release", "version",
             "tags", "metadata", "environment", "public", "latency", "totalCost", "observations", "scores")
# Top-level keys the mapping does not consume: they go to metadata, in the trace's order.
_OTHER_KEYS = ("release", "version", "environment", "public")
# Keys of a generation that change what the mapping reads (token counts, usage, latency).
_GENERATION_OVERRIDES = ("usageDetails", "promptTokens", "completionTokens")
_USAGE_KEYS = ("input", "output", "total", "unit", "inputCost", "outputCost", "totalCost")
_NUMBER = "-?(0|[1-9][0-9]*)(\\.[0-9]+)?([eE][-+]?[0-9]+)?"
# A latency in seconds whose value in ms Python's round(x * 1000, 3) and DuckDB's
# round(x * 1000) agree on: at most three decimals, not huge.
_LATENCY = "(0|[1-9][0-9]{0,8})(\\.[0-9]{1,3})?"
_FEEDBACK_SOURCES = ('"API"', '"EVAL"')


def _plain_text(json_text: str) -> str:
    """SQL: the JSON value is a string that ``_parse_json_text`` leaves as it is."""
    return f"({_is_string(json_text)} AND NOT regexp_matches({json_text}, '^\"[{{\\[\"]'))"


def sample_key_lists(texts: Iterable[str | None]) -> dict[str, Counter]:
    """Return, for the top level (``top``), the first observation (``gen``) and its
    usage (``usage``), the key lists of the given trace lines, counted: the keys of the
    STRUCT to parse into, and the common lists that take the cheap test (one list
    comparison)."""
    seen: dict[str, Counter] = {"top": Counter(), "gen": Counter(), "usage": Counter()}
    for text in texts:
        try:
            trace = json.loads(text.rstrip().removesuffix(",")) if text and text.startswith("{") else None
        except (ValueError, RecursionError):  # the Python mapper judges the line
            continue
        if not isinstance(trace, dict):
            continue
        seen["top"][tuple(trace)] += 1
        observations = trace.get("observations")
        if isinstance(observations, list) and observations and isinstance(observations[0], dict):
            seen["gen"][tuple(observations[0])] += 1
            if isinstance(observations[0].get("usage"), dict):
                seen["usage"][tuple(observations[0]["usage"])] += 1
    return seen


def _common(counts: Counter, allowed: tuple[str, ...], *, forbidden: tuple[str, ...] = ()) -> tuple[str, ...] | None:
    """Return the most common key list when it passes the set test itself, else None."""
    for keys, _ in counts.most_common(1):
        if set(keys) <= set(allowed) and len(set(keys)) == len(keys) and not set(keys) & set(forbidden):
            return keys
    return None


def _keys_ok(keys: str, allowed: tuple[str, ...], common: tuple[str, ...] | None,
             forbidden: tuple[str, ...] = ()) -> str:
    """SQL: the key list ``keys`` holds only ``allowed`` keys, each once, none of
    ``forbidden``; a list equal to ``common`` is settled by one comparison."""
    test = f"list_has_all({_list(allowed)}, {keys}) AND {_distinct(keys)}"
    if forbidden:
        test += f" AND NOT list_has_any({keys}, {_list(forbidden)})"
    return f"(CASE WHEN {keys} = {_list(common)} THEN true ELSE {test} END)" if common else f"({test})"


def langfuse_docs(lines: str, batch) -> str:
    """Return a SELECT of ``rid, doc`` for the trace lines of the relation ``lines`` (the
    loader's batch columns, ``text`` one trace object; ``batch`` its Arrow table) that it
    decides.

    Each line is parsed once into a STRUCT (the observation's ``input`` and ``output``,
    the bulk of a trace, are not kept) and once for the key lists of its objects.
    """
    sampled = sample_key_lists(batch.column("text").slice(0, 200).to_pylist())
    observation_keys = tuple(dict.fromkeys((
        *(k for keys in sampled["gen"] for k in keys if _PLAIN_KEY.fullmatch(k) and k not in ("input", "output")),
        "type", "model", "promptName", "promptVersion", "usage")))
    gen_allowed = (*observation_keys, "input", "output")
    common_top = _common(sampled["top"], _TOP_KEYS)
    common_gen = _common(sampled["gen"], gen_allowed, forbidden=_GENERATION_OVERRIDES)
    common_usage = _common(sampled["usage"], _USAGE_KEYS)
    observation = _obj({k: '"JSON"' for k in observation_keys})
    top = _obj({**{k: '"JSON"' for k in _TOP_KEYS}, "observations": f"[{observation}]"})
    usage = _obj({"input": '"JSON"', "output": '"JSON"'})
    score = _obj({k: '"JSON"' for k in ("name", "source", "dataType", "value")})
    question = _obj({"question": '"JSON"', "context": '"JSON"'})
    paths = "['$', '$.input', '$.metadata', '$.observations[0]', '$.observations[0].usage', '$.scores[0]']"
    other = _entries("k_top", "m", _OTHER_KEYS, "{k} IN " + str(_OTHER_KEYS))
    others = f"nullif(array_to_string(list_transform({other}, e -> (to_json(e.key) || ':' || e.value)), ','), '')"
    if common_top:  # the usual key order: the entries spelled out, no lambda
        fixed = ", ".join(f"'\"{k}\":' || m.\"{k}\"" for k in common_top if k in _OTHER_KEYS)
        others = f"CASE WHEN k_top = {_list(common_top)} THEN nullif(concat_ws(',', {fixed or 'NULL'}), '') ELSE {others} END"
    # The observation as Python keeps it: every key but input and output, nulls too.
    value = "CASE k " + " ".join(f"WHEN '{key}' THEN g.\"{key}\"" for key in observation_keys) + " END"
    observation = (f"array_to_string(list_transform(list_filter(k_gen, k -> k NOT IN ('input', 'output')), "
                   f"k -> (to_json(k) || ':' || coalesce({value}, 'null'))), ',')")
    if common_gen:
        fixed = " || ',' || ".join(f"'\"{k}\":' || coalesce(g.\"{k}\", 'null')"
                                   for k in common_gen if k not in ("input", "output"))
        observation = f"CASE WHEN k_gen = {_list(common_gen)} THEN {fixed or chr(39) * 2} ELSE {observation} END"
    observations = f"'\"langfuse_observations\":[{{' || {observation} || '}}]'"
    metadata = ("'{' || concat_ws(',', "
                "nullif(substr(m.metadata, 2, length(m.metadata) - 2), ''), "
                "CASE WHEN len(scores) > 0 THEN '\"langfuse_scores\":' || m.scores END, "
                f"CASE WHEN g IS NOT NULL THEN {observations} END, "
                f"{others}) || '}}'")
    fields = {
        "log_id": "m.id",
        "ts": "m.timestamp",
        "source": "CASE WHEN m.name IS NOT NULL AND m.name <> '\"\"' THEN m.name ELSE m.environment END",
        "input": "coalesce(q.question, m.input)",
        "context": "q.context",
        "output": "m.output",
        "session_id": 'm."sessionId"',
        "user_id": 'm."userId"',
        "tags": "m.tags",
        "model": "g.model",
        "prompt_name": 'g."promptName"',
        "prompt_version": 'g."promptVersion"',
        "prompt_tokens": "u.input",
        "completion_tokens": "u.output",
        "latency_ms": "to_json(round(m.latency::DOUBLE * 1000))",
        "cost_usd": 'm."totalCost"',
        "feedback": "CASE WHEN s IS NOT NULL THEN CASE WHEN s.value::DOUBLE > 0 THEN '1' ELSE '-1' END END",
        "metadata": metadata,
    }
    doc = "'{' || concat_ws(',', " + ", ".join(
        f"'\"{name}\":' || ({value})" for name, value in fields.items()
    ) + ") || '}'"
    return f"""
WITH parsed AS (
    {_parsed_with_keys(lines, "NOT blank AND starts_with(text, '{')", top, paths)}
),
named AS (
    SELECT rid, m, k[1] AS k_top, k[2] AS k_input, k[3] AS k_meta, k[4] AS k_gen, k[5] AS k_usage, k[6] AS k_score,
        coalesce(m.observations, []) AS obs, m.observations[1] AS g,
        CASE WHEN m.scores IS NULL OR m.scores = '[]' THEN [] ELSE try(from_json(m.scores, '["JSON"]')) END AS scores,
        CASE WHEN starts_with(m.input, '{{') THEN try(from_json(m.input, '{question}')) END AS q
    FROM parsed
    WHERE m IS NOT NULL AND k IS NOT NULL
),
used AS (
    SELECT *, CASE WHEN g.usage IS NOT NULL THEN try(from_json(g.usage, '{usage}')) END AS u,
        CASE WHEN len(scores) = 1 THEN try(from_json(scores[1], '{score}')) END AS s
    FROM named
    WHERE scores IS NOT NULL AND len(obs) <= 1
)
SELECT rid, {doc} AS doc
FROM used
WHERE {_keys_ok('k_top', _TOP_KEYS, common_top)}
    AND m.id IS NOT NULL
    AND (m.name IS NULL OR {_is_string('m.name')})
    AND (CASE WHEN starts_with(m.input, '{{') THEN
             q IS NOT NULL AND list_has_all(['question', 'context'], k_input) AND {_distinct('k_input')}
             AND {_is_string('q.question')} AND (q.context IS NULL OR {_is_string('q.context')})
         ELSE m.input IS NOT NULL AND {_plain_text('m.input')} END)
    AND m.output IS NOT NULL AND {_plain_text('m.output')}
    AND m.latency IS NOT NULL AND regexp_full_match(m.latency, '{_LATENCY}')
    AND (m.metadata IS NULL OR (starts_with(m.metadata, '{{') AND {_distinct('k_meta')}
         AND NOT list_has_any(k_meta, {_list((*_OTHER_KEYS, 'langfuse_scores', 'langfuse_observations'))})))
    AND (g IS NULL OR (g.type = '"GENERATION"' AND {_keys_ok('k_gen', gen_allowed, common_gen, _GENERATION_OVERRIDES)}
         AND (g.usage IS NULL OR (starts_with(g.usage, '{{') AND u IS NOT NULL
              AND {_keys_ok('k_usage', _USAGE_KEYS, common_usage)}))))
    AND (len(scores) = 0 OR (s IS NOT NULL AND len(scores) = 1 AND {_distinct('k_score')}
         AND s.name = '"user-feedback"' AND s.source IN {_FEEDBACK_SOURCES} AND s."dataType" = '"BOOLEAN"'
         AND regexp_full_match(s.value, '{_NUMBER}')))
"""
