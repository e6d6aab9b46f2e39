"""OpenAI request/response logs mapped to canonical documents in one DuckDB statement.

:func:`openai_chat_docs` decides only lines of the plain chat-completions shape
(top-level keys among ``timestamp``, ``workload_id``, ``client_id``, ``request``,
``response``; text messages without tool calls; one choice; no refusal; request
metadata holding only canonical fields the mapping leaves empty, or unknown keys), and
whose objects hold only keys seen in the first records of the batch. For those it builds
the very document :func:`flywheel.ingest.formats.openai._map_openai_chat` builds (same
fields, same values, metadata keys in the same order); every other line is left to that
mapper.

Each line is parsed twice: once into a STRUCT of the keys the batch's records have
(values as JSON text, minified the way the loader's own parse of the document will
minify them), once for the key lists of its objects (their order is the metadata's).
"""

from __future__ import annotations

import json
import re
from collections import Counter
from collections.abc import Callable, Iterable, Iterator, Mapping

from flywheel.ingest.records import CANONICAL_FIELDS

# What Python's str.strip() / lstrip() remove (str.isspace), but the newline.
_SPACE_CODES = (9, 11, 12, 13, 28, 29, 30, 31, 32, 133, 160, 5760, *range(8192, 8203), 8232, 8233, 8239,
                8287, 12288)
_SPACE_CLASS = "[" + "".join(f"\\x{{{c:x}}}" for c in _SPACE_CODES) + "]"
# What Python's str.strip() takes off both ends (regular expressions, far cheaper in
# DuckDB than trim() with a set of characters; one for each end, each anchored, costs
# half of one alternation of both with the 'g' flag).
_SPACE_OR_NEWLINE = _SPACE_CLASS[:-1] + "\\n]"
_LEADING, _TRAILING = f"^{_SPACE_OR_NEWLINE}+", f"{_SPACE_OR_NEWLINE}+$"


def _stripped(text: str) -> str:
    """SQL: ``text`` as Python's ``text.strip()`` leaves it."""
    return f"regexp_replace(regexp_replace({text}, '{_LEADING}', ''), '{_TRAILING}', '')"
_TOP_KEYS = ("timestamp", "workload_id", "client_id", "request", "response")
# Canonical fields a request's metadata may fill (the mapping sets none of them itself).
_METADATA_FILLS = ("prompt_name", "prompt_version", "git_commit", "session_id", "feedback", "tags",
                   "cost_usd", "latency_ms")
_TOKEN_KEYS = ("prompt_tokens", "completion_tokens", "input_tokens", "output_tokens")
_PLAIN_KEY = re.compile(r"[A-Za-z_][A-Za-z0-9_]{0,63}")
_MESSAGE = '{"role":"JSON","content":"JSON","tool_calls":"JSON","function_call":"JSON","refusal":"JSON"}'


def sample_keys(texts: Iterable[str | None]) -> dict[str, tuple[str, ...]]:
    """Return the keys (plain names only) of the request, response, usage and request
    metadata objects of the given lines, in first-seen order: the STRUCT to parse into."""
    return _keys_of(_chat_objects(texts))


def _keys_of(objects: Iterable[tuple[str, object]]) -> dict[str, tuple[str, ...]]:
    """:func:`sample_keys` of the named objects :func:`_chat_objects` yields."""
    seen: dict[str, dict[str, None]] = {name: {} for name in ("request", "response", "usage", "rqmeta")}
    for name, found in objects:
        if name in seen and isinstance(found, dict):
            seen[name].update((key, None) for key in found if _PLAIN_KEY.fullmatch(key))
    return {name: tuple(keys) for name, keys in seen.items()}


def _list(values) -> str:
    return "[" + ", ".join(f"'{v}'" for v in values) + "]::VARCHAR[]"


def _distinct(keys: str) -> str:
    """SQL: the list ``keys`` holds no value twice (and no null). ``list_unique`` counts
    what ``list_distinct`` would keep without building that list."""
    return f"list_unique({keys}) = len({keys})"


def common_key_list(counts: Counter, allowed: Iterable[str], *,
                    forbidden: Iterable[str] = ()) -> tuple[str, ...] | None:
    """Return the most common of the counted key lists when it passes the set test of
    :func:`keys_ok` itself, else None."""
    for keys, _ in counts.most_common(1):
        if set(keys) <= set(allowed) and len(set(keys)) == len(keys) and not set(keys) & set(forbidden):
            return keys
    return None


def keys_ok(keys: str, allowed: Iterable[str], common: tuple[str, ...] | None,
            forbidden: Iterable[str] = ()) -> str:
    """SQL: the key list ``keys`` holds only ``allowed`` keys, each once, none of
    ``forbidden``. A list equal to ``common`` (the batch's usual one, which passes) is
    settled by one comparison, much cheaper than the set test."""
    test = f"list_has_all({_list(allowed)}, {keys}) AND {_distinct(keys)}"
    forbidden = tuple(forbidden)
    if forbidden:
        test += f" AND NOT list_has_any({keys}, {_list(forbidden)})"
    return f"(CASE WHEN {keys} = {_list(common)} THEN true ELSE {test} END)" if common else f"({test})"


def _key_lists(objects: Iterable[tuple[str, object]]) -> dict[str, Counter]:
    """Return the counted key lists of the named objects (name, value) that are dicts."""
    counts: dict[str, Counter] = {}
    for name, value in objects:
        if isinstance(value, dict):
            counts.setdefault(name, Counter())[tuple(value)] += 1
    return counts


def _dict(value) -> dict:
    return value if isinstance(value, dict) else {}


def _entries(keys: str, struct: str, known: tuple[str, ...], condition: str, *,
             usual: tuple[str, ...] | None = None, keep: Callable[[str], bool] | None = None) -> str:
    """SQL: the (key, value) entries of an object, in its key order, with a non-null
    value and a key for which ``condition`` (over ``k``) holds.

    ``usual``: the batch's usual key list of the object, and ``keep`` the Python form of
    ``condition``: an object with exactly those keys gets its entries from a list written
    out here (about a third of the cost of going through its keys one by one)."""
    if not known:
        return "[]"
    value = "CASE k " + " ".join(f"WHEN '{key}' THEN {struct}.\"{key}\"" for key in known) + " END"
    each = (f"list_filter(list_transform(coalesce({keys}, []), k -> struct_pack(key := k, value := ({value}))), "
            f"e -> (e.value IS NOT NULL AND ({condition.replace('{k}', 'e.key')})))")
    if usual is None or keep is None:
        return each
    fixed = [key for key in usual if key in known and keep(key)]
    written = ("list_filter([" + ", ".join(f"struct_pack(key := '{key}', value := {struct}.\"{key}\")" for key in fixed)
               + "], e -> e.value IS NOT NULL)") if fixed else "[]"
    return f"(CASE WHEN {keys} = {_list(usual)} THEN {written} ELSE {each} END)"


def _one(key: str, value: str, condition: str = "true") -> str:
    return (f"CASE WHEN {value} IS NOT NULL AND {condition} "
            f"THEN [struct_pack(key := '{key}', value := {value})] ELSE [] END")


def _is_string(json_text: str) -> str:
    return f"starts_with({json_text}, '\"')"


def _truthy_string(json_value: str) -> str:
    return f"({json_value} IS NOT NULL AND {json_value} <> '\"\"')"


_CONTEXT_WORD = "[cC][oO][nN][tT][eE][xX][tT]:"
_QUALIFYING_LINE = "(?:^|\\n)" + _SPACE_CLASS + "*" + _CONTEXT_WORD
# The CTEs from `named` to `contexted`: ``context``, what follows the first line of the
# system (or developer) prompt starting with "Context:" (in any case, after blanks),
# stripped, as Python's _context_from finds it. Only prompts holding "context:" at all
# count. The usual layout, a line that is "Context:" itself with no line like it before,
# is cut where that line starts; a record with any other (two such prompts, "CONTEXT:",
# blanks before it) is left to Python (``context_ok``).
_CONTEXT_CTES = f"""
prompted AS (
    SELECT *, list_filter(list_transform(list_filter(msgs, x -> (x.role IN ('"system"', '"developer"'))),
                                         x -> (x.content ->> '$')),
                          c -> regexp_matches(c, '{_CONTEXT_WORD}')) AS prompts
    FROM named
),
placed AS (
    SELECT *, CASE WHEN len(prompts) = 1 THEN strpos(prompts[1], chr(10) || 'Context:') END AS context_at
    FROM prompted
),
contexted AS (
    SELECT *,
        CASE WHEN len(prompts) = 0 THEN true
             WHEN len(prompts) > 1 OR context_at = 0 THEN false
             ELSE NOT regexp_matches(substr(prompts[1], 1, context_at), '{_QUALIFYING_LINE}') END AS context_ok,
        CASE WHEN context_at > 0 THEN
            nullif({_stripped('substr(prompts[1], context_at + 9)')}, '') END AS context
    FROM placed
),"""


def _parsed_with_keys(lines: str, where: str, structure: str, paths: str) -> str:
    """SQL: a SELECT of ``rid``, ``m`` (the line parsed by ``structure``) and ``k`` (its key
    lists at ``paths``) of the lines of the relation ``lines`` where ``where`` holds; both
    NULL for a line that is not JSON. (try() on the key lists only: it copies what it
    returns, and the parsed line is the larger; a line parses for both or neither.)"""
    return (f"SELECT rid, CASE WHEN k IS NOT NULL THEN from_json(text, '{structure}') END AS m, k "
            f"FROM (SELECT rid, text, try(json_keys(text, {paths})) AS k FROM {lines} WHERE {where})")


def _obj(fields: dict[str, str]) -> str:
    return "{" + ",".join(f'"{k}":{v}' for k, v in fields.items()) + "}"


def _request_struct(keys: dict[str, tuple[str, ...]], fills: tuple[str, ...]) -> str:
    request = {k: '"JSON"' for k in (*keys["request"], "model", "user")}
    request.update(messages=f"[{_MESSAGE}]", metadata=_obj({k: '"JSON"' for k in (*keys["rqmeta"], *fills)}))
    return _obj(request)


def _response_struct(keys: dict[str, tuple[str, ...]]) -> str:
    response = {k: '"JSON"' for k in (*keys["response"], "id", "model", "object", "created")}
    response.update(choices=_obj({"message": _MESSAGE, "finish_reason": '"JSON"'}).join("[]"),
                    usage=_obj({k: '"JSON"' for k in (*keys["usage"], *_TOKEN_KEYS)}))
    return _obj(response)


def openai_chat_docs(lines: str, batch) -> str:
    """Return a SELECT of ``rid, doc`` for the lines of the relation ``lines`` (the
    loader's batch columns; ``batch`` its Arrow table) that it decides: ``doc`` the
    canonical JSON document."""
    texts = batch.column("text").slice(0, 200).to_pylist()
    objects = list(_chat_objects(texts))  # each sampled line parsed once, for both uses
    keys = _keys_of(objects)
    lists = _key_lists(objects)
    top = _obj({"timestamp": '"JSON"', "workload_id": '"JSON"', "client_id": '"JSON"',
                "request": _request_struct(keys, _METADATA_FILLS), "response": _response_struct(keys)})
    paths = "['$', '$.request', '$.response', '$.response.usage', '$.request.metadata']"
    parsed = f"""
parsed AS (
    -- The line as it is: the parser takes its line end for trailing blanks (no copy).
    {_parsed_with_keys(lines, _LOOKS_LIKE_OBJECT, top, paths)}
),
named AS (
    SELECT rid, m, m.request AS rq, m.response AS rs, m.request.messages AS msgs, m.response.choices AS choices,
        m.response.choices[1] AS choice, m.response.choices[1].message AS reply,
        m.response.usage AS usage, m.request.metadata AS rqmeta,
        k[1] AS k_top, k[2] AS k_rq, k[3] AS k_rs,
        CASE WHEN m.response.usage IS NOT NULL THEN k[4] END AS k_usage,
        CASE WHEN m.request.metadata IS NOT NULL THEN k[5] END AS k_rqmeta
    FROM parsed
    WHERE m IS NOT NULL AND k IS NOT NULL
),"""
    checks = f"""{keys_ok('k_top', _TOP_KEYS, common_key_list(lists.get('top', Counter()), _TOP_KEYS))}
        AND rs."id" IS NOT NULL
        AND (regexp_full_match(m.timestamp, '[1-9][0-9]*') OR ({_is_string('m.timestamp')} AND m.timestamp <> '""'))"""
    return _chat_docs(
        keys, lists, parsed=parsed, checks=checks, fills=_METADATA_FILLS,
        record={"log_id": 'rs."id"', "ts": "m.timestamp", "source": "coalesce(m.workload_id, m.client_id)"},
        head_meta=[], tail_meta=[_entries("k_top", "m", ("workload_id", "client_id"),
                                          "{k} IN ('workload_id', 'client_id')")],
    )


def sample_batch_keys(texts: Iterable[str | None], requests: Mapping) -> dict[str, tuple[str, ...]]:
    """:func:`sample_keys` for Batch API output lines and their input lines (by custom_id)."""
    pairs = []
    for text in texts:
        try:
            obj = json.loads(text) if text else None
        except (ValueError, RecursionError):  # the Python mapper judges the line
            continue
        if not isinstance(obj, dict) or not isinstance(obj.get("response"), dict):
            continue
        line = requests.get(str(obj.get("custom_id")))
        request = line.get("body") if isinstance(line, dict) else None
        pairs.append(json.dumps({"request": request, "response": obj["response"].get("body")}))
    return sample_keys(pairs)


# Canonical fields a batch request's metadata may fill: the batch mapping sets no source.
_BATCH_FILLS = (*_METADATA_FILLS, "source")


def openai_batch_docs(lines: str, batch, requests_relation: str, requests: Mapping) -> str:
    """Return a SELECT of ``rid, doc`` for the Batch API output lines of ``lines`` it
    decides (see :func:`openai_chat_docs`); ``requests_relation`` has ``custom_id, line``
    (a JSON object holding the input line's body under ``"body"``, see
    :mod:`flywheel.ingest.formats.batch_input`) for the batch's custom ids, ``requests``
    the input lines by custom_id (to sample their keys)."""
    texts = batch.column("text").slice(0, 200).to_pylist()
    keys = sample_batch_keys(texts, requests)
    lists = _key_lists(_batch_objects(texts, requests))
    outer = _obj({"id": '"JSON"', "custom_id": '"JSON"', "error": '"JSON"',
                  "response": _obj({"status_code": '"JSON"', "request_id": '"JSON"', "body": _response_struct(keys)})})
    paths = "['$', '$.response', '$.response.body', '$.response.body.usage']"
    parsed = f"""
outer_parsed AS (
    {_parsed_with_keys(lines, _LOOKS_LIKE_OBJECT, outer, paths)}
),
parsed AS (
    SELECT o.*, try(from_json(r.line, '{_obj({"body": _request_struct(keys, _BATCH_FILLS)})}')).body AS request,
        try(json_keys(r.line, ['$.body', '$.body.metadata'])) AS kr
    FROM outer_parsed AS o JOIN {requests_relation} AS r ON r.custom_id = (o.m.custom_id ->> '$')
    WHERE o.m IS NOT NULL AND o.k IS NOT NULL AND starts_with(o.m.custom_id, '"')
),
named AS (
    SELECT rid, m, request AS rq, m.response.body AS rs, request.messages AS msgs,
        m.response.body.choices AS choices, m.response.body.choices[1] AS choice,
        m.response.body.choices[1].message AS reply, m.response.body.usage AS usage, request.metadata AS rqmeta,
        k[1] AS k_top, k[2] AS k_response, kr[1] AS k_rq, k[3] AS k_rs,
        CASE WHEN m.response.body.usage IS NOT NULL THEN k[4] END AS k_usage,
        CASE WHEN request.metadata IS NOT NULL THEN kr[2] END AS k_rqmeta
    FROM parsed
    WHERE request IS NOT NULL AND kr IS NOT NULL
),"""
    outer_keys, response_keys = ("id", "custom_id", "response", "error"), ("status_code", "request_id", "body")
    checks = f"""{keys_ok('k_top', outer_keys, common_key_list(lists.get('top', Counter()), outer_keys))}
        AND {keys_ok('k_response', response_keys, common_key_list(lists.get('response', Counter()), response_keys))}
        AND m.error IS NULL AND (m.response.status_code IS NULL OR m.response.status_code IN ('200', '"200"'))
        AND {_truthy_string('rs."id"')} AND {_is_string('rs."id"')}
        AND regexp_full_match(rs.created, '[1-9][0-9]*')"""
    return _chat_docs(
        keys, lists, parsed=parsed, checks=checks, fills=_BATCH_FILLS,
        record={"log_id": 'rs."id"', "ts": "rs.created"},
        head_meta=[_one("custom_id", "m.custom_id"), _one("batch_request_id", "m.id"),
                   _one("request_id", "m.response.request_id")],
        tail_meta=[],
    )


_LOOKS_LIKE_OBJECT = ("NOT blank AND starts_with(text, '{') AND (ends_with(text, '}' || chr(10)) "
                      "OR ends_with(text, '}' || chr(13) || chr(10)) OR ends_with(text, '}'))")


def _chat_objects(texts: Iterable[str | None]) -> Iterator[tuple[str, object]]:
    """Yield the named objects of the given request/response lines, for their key lists."""
    for text in texts:
        try:
            obj = json.loads(text) if text else None
        except (ValueError, RecursionError):  # the Python mapper judges the line
            continue
        if not isinstance(obj, dict):
            continue
        request, response = _dict(obj.get("request")), _dict(obj.get("response"))
        yield from (("top", obj), ("request", obj.get("request")), ("response", obj.get("response")),
                    ("usage", response.get("usage")), ("rqmeta", request.get("metadata")))


def _batch_objects(texts: Iterable[str | None], requests: Mapping) -> Iterator[tuple[str, object]]:
    """Yield the named objects of the given Batch API output lines and their input lines."""
    for text in texts:
        try:
            obj = json.loads(text) if text else None
        except (ValueError, RecursionError):  # the Python mapper judges the line
            continue
        if not isinstance(obj, dict):
            continue
        response = _dict(obj.get("response"))
        body = _dict(response.get("body"))
        line = requests.get(str(obj.get("custom_id")))
        request = _dict(line.get("body") if isinstance(line, dict) else None)
        yield from (("top", obj), ("response", obj.get("response")), ("response_body", response.get("body")),
                    ("request", request or None), ("usage", body.get("usage")), ("rqmeta", request.get("metadata")))


def _chat_docs(keys: dict[str, tuple[str, ...]], lists: dict[str, Counter], *, parsed: str, checks: str,
               fills: tuple[str, ...],
               record: dict[str, str], head_meta: list[str], tail_meta: list[str]) -> str:
    """Return the statement shared by both OpenAI shapes: ``parsed`` gives the CTEs up
    to ``named`` (columns m, rq, rs, msgs, choices, choice, reply, usage, rqmeta and the
    key lists k_*), ``checks`` the shape's own tests, ``record`` its own fields,
    ``head_meta``/``tail_meta`` the metadata entries before and after the chat fields'."""
    # The response object is the line's (chat) or the output line's body (batch).
    response_name = "response_body" if "response_body" in lists else "response"

    def common(name: str, allowed: tuple[str, ...]) -> tuple[str, ...] | None:
        return common_key_list(lists.get(name, Counter()), allowed)

    canonical = _list(CANONICAL_FIELDS)
    other_canonical = _list(f for f in CANONICAL_FIELDS if f not in fills)
    rq_keys = tuple(dict.fromkeys((*keys["request"], "model", "user", "messages", "metadata")))
    rs_keys = tuple(dict.fromkeys((*keys["response"], "id", "model", "object", "choices", "usage")))
    usage_keys = tuple(dict.fromkeys((*keys["usage"], *_TOKEN_KEYS)))
    rqmeta_keys = tuple(dict.fromkeys((*keys["rqmeta"], *fills)))
    rq_model, rs_model = 'rq."model"', 'rs."model"'
    meta_entries = "list_concat(" + ", ".join([
        *head_meta,
        _entries("k_rq", "rq", tuple(k for k in rq_keys if k not in ("messages", "metadata")),
                 "{k} NOT IN ('messages', 'model', 'metadata', 'user', 'prompt')", usual=common("request", rq_keys),
                 keep=lambda k: k not in ("messages", "model", "metadata", "user", "prompt")),
        _one("request_model", rq_model,
             f"{_truthy_string(rs_model)} AND {_truthy_string(rq_model)} AND {rs_model} <> {rq_model}"),
        _one("response_id", 'rs."id"'),
        _entries("k_rs", "rs", tuple(k for k in rs_keys if k not in ("choices", "usage")),
                 "{k} NOT IN ('id', 'model', 'choices', 'usage')", usual=common(response_name, rs_keys),
                 keep=lambda k: k not in ("id", "model", "choices", "usage")),
        _entries("k_usage", "usage", usage_keys, "{k} NOT IN " + str(_TOKEN_KEYS), usual=common("usage", usage_keys),
                 keep=lambda k: k not in _TOKEN_KEYS),
        _one("finish_reason", "choice.finish_reason"),
        *tail_meta,
        _entries("k_rqmeta", "rqmeta", rqmeta_keys, f"NOT list_contains({canonical}, {{k}})",
                 usual=common("rqmeta", rqmeta_keys), keep=lambda k: k not in CANONICAL_FIELDS),
    ]) + ")"
    role = "reply.role"
    reply_role = f"CASE WHEN {_truthy_string(role)} THEN {role} ELSE '\"assistant\"' END"
    message_json = "'{\"role\":' || x.role || ',\"content\":' || x.content || '}'"
    messages = (f"'[' || array_to_string(list_append(list_transform(msgs, x -> ({message_json})), "
                f"'{{\"role\":' || {reply_role} || ',\"content\":' || reply.content || '}}'), ',') || ']'")
    fields = {
        **record,
        "model": f"CASE WHEN {_truthy_string(rs_model)} THEN {rs_model} ELSE {rq_model} END",
        "input": "list_filter(msgs, x -> (x.role = '\"user\"'))[-1].content",
        "output": "reply.content",
        "context": "to_json(context)",
        "messages": messages,
        "prompt_tokens": "coalesce(usage.prompt_tokens, usage.input_tokens)",
        "completion_tokens": "coalesce(usage.completion_tokens, usage.output_tokens)",
        "user_id": 'rq."user"',
        **{name: f'rqmeta."{name}"' for name in fills},
        "metadata": "'{' || array_to_string(list_transform(meta, e -> (to_json(e.key) || ':' || e.value)), ',') || '}'",
    }
    doc = "'{' || concat_ws(',', " + ", ".join(
        f"'\"{name}\":' || ({value})" for name, value in fields.items()
    ) + ") || '}'"
    message_ok = (f"{_is_string('x.role')} AND {_is_string('x.content')} AND x.role NOT IN ('\"tool\"', '\"function\"') "
                  "AND coalesce(x.tool_calls, '[]') = '[]' AND x.function_call IS NULL")
    return f"""
WITH {parsed}{_CONTEXT_CTES}
decided AS (
    SELECT *, {meta_entries} AS meta
    FROM contexted
    WHERE context_ok AND {checks}
        AND rq IS NOT NULL AND rs IS NOT NULL
        AND {keys_ok('k_rq', rq_keys, common('request', rq_keys))}
        AND {keys_ok('k_rs', rs_keys, common(response_name, rs_keys))}
        AND (usage IS NULL OR {keys_ok('k_usage', usage_keys, common('usage', usage_keys))})
        AND (rqmeta IS NULL OR ({keys_ok('k_rqmeta', rqmeta_keys, common('rqmeta', rqmeta_keys))}
             AND NOT list_has_any({other_canonical}, k_rqmeta)))
        AND ({rq_model} IS NULL OR {_is_string(rq_model)}) AND ({rs_model} IS NULL OR {_is_string(rs_model)})
        AND rs."object" IS DISTINCT FROM '"response"'
        AND msgs IS NOT NULL AND list_bool_and(list_transform(msgs, x -> ({message_ok}))) IS NOT false
        AND len(choices) = 1 AND reply IS NOT NULL AND {_is_string('reply.content')}
        AND (reply.role IS NULL OR {_is_string('reply.role')})
        AND coalesce(reply.tool_calls, '[]') = '[]' AND reply.function_call IS NULL AND reply.refusal IS NULL
)
SELECT rid, {doc} AS doc
FROM decided
WHERE {_distinct('list_transform(meta, e -> e.key)')}
"""
