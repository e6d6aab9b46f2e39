"""Validation and normalization of staged log records, in DuckDB SQL.

Every format ends up as a staged batch with one JSON document per record (the record
in canonical shape). One SQL statement then parses each document once, checks the
required fields, types and timestamp, and produces either a normalized `logs` row or
a rejection with a reason and the field it is about. Doing this in DuckDB keeps the
hot path vectorized: a day of a million records is validated in seconds.

The staged batch (a relation named by the caller) has the columns:
``line BIGINT, raw BLOB, doc VARCHAR, pre_error VARCHAR, pre_field VARCHAR, blank BOOLEAN``
where
``doc`` is the canonical JSON of a parsed record (NULL: parse ``raw`` itself, the case of
canonical JSON lines) and ``pre_error`` is a parser's reason for a broken record.
A PII fix-up relation ``fix(line, input, output, context, messages, raw, pii)`` is
joined in: where it has a row, its values replace the record's own.
"""

from __future__ import annotations

from flywheel.ingest.records import CANONICAL_FIELDS

# Text fields that are kept as strings; numbers given for them are turned into text.
TEXT_FIELDS = ("source", "model", "prompt_name", "prompt_version", "git_commit", "session_id", "user_id")
NUMBER_FIELDS = {
    "latency_ms": "DOUBLE",
    "prompt_tokens": "BIGINT",
    "completion_tokens": "BIGINT",
    "cost_usd": "DOUBLE",
}
REASONS = {
    "bad_encoding": "not valid UTF-8",
    "blank": "blank line",
    "invalid_json": "invalid JSON",
    "not_object": "not a JSON object",
    "missing": "missing required field",
    "wrong_type": "wrong type",
    "bad_ts": "unparseable timestamp",
    "empty_output": "empty output",
    "bad_value": "value out of range",
}

# Two statements per batch. The first finds the rejected records and why: one parse
# gives every field's JSON type (and whether the text is JSON at all), one more gives
# the values the checks need. The second parses only the accepted records' values.
_JSON_FIELDS = ("messages", "tags", "metadata")
_STRUCTURE = "{" + ",".join(
    f'"{name}":"{"JSON" if name in _JSON_FIELDS else "VARCHAR"}"' for name in CANONICAL_FIELDS
) + "}"
_TYPE_PATHS = "['$', " + ",".join(f"'$.\"{name}\"'" for name in CANONICAL_FIELDS) + "]"
_KNOWN_KEYS = "[" + ",".join(f"'{name}'" for name in CANONICAL_FIELDS) + "]"
_SCALAR_TYPES = "('VARCHAR', 'BIGINT', 'UBIGINT', 'DOUBLE')"


def _type(name: str) -> str:
    """SQL for the JSON type of a canonical field ('NULL' for null, NULL when absent)."""
    return f"t[{CANONICAL_FIELDS.index(name) + 2}]"


def _present(name: str) -> str:
    return f"coalesce({_type(name)}, 'NULL') <> 'NULL'"


def _number(name: str, sql_type: str) -> str:
    """SQL for a number, or a string holding one, cast to ``sql_type`` (NULL otherwise)."""
    return f"TRY_CAST(trim(v.{name}) AS {sql_type})"


def _json_of(name: str, kind: str) -> str:
    """SQL for a field's JSON value of the given kind ('ARRAY' or 'OBJECT'), also when it
    came as JSON text inside a string (CSV cells); NULL when it is neither."""
    value = f"v.{name}"
    text = f"({value} ->> '$')"
    return (
        f"CASE WHEN json_type({value}) = '{kind}' THEN {value} "
        f"WHEN json_type({value}) = 'VARCHAR' AND json_valid({text}) "
        f"AND json_type({text}) = '{kind}' THEN {text}::JSON END"
    )


def _tags() -> str:
    """SQL for tags as a list of strings: a JSON list, or a comma-separated string."""
    text = "(v.tags ->> '$')"
    return f"""TRY_CAST(CASE
            WHEN json_type(v.tags) = 'VARCHAR' AND NOT starts_with(ltrim({text}), '[')
            THEN to_json(list_filter(list_transform(string_split({text}, ','), x -> trim(x)), x -> x <> ''))
            ELSE {_json_of('tags', 'ARRAY')} END AS VARCHAR[])"""


def _timestamp() -> str:
    """SQL turning ISO-8601 text or epoch seconds (or ms, us, ns) into TIMESTAMPTZ."""
    epoch = "TRY_CAST(v.ts AS DOUBLE)"
    return f"""CASE
        WHEN {epoch} IS NOT NULL THEN CASE
            WHEN abs({epoch}) >= 1e17 THEN to_timestamp({epoch} / 1e9)
            WHEN abs({epoch}) >= 1e14 THEN to_timestamp({epoch} / 1e6)
            WHEN abs({epoch}) >= 1e11 THEN to_timestamp({epoch} / 1e3)
            ELSE to_timestamp({epoch}) END
        ELSE TRY_CAST(v.ts AS TIMESTAMPTZ)
    END"""


def _feedback() -> str:
    """SQL for feedback as -1, 0 or 1 (true: thumbs up, 1; false: down, -1); NULL otherwise."""
    value = "TRY_CAST(trim(v.feedback) AS DOUBLE)"
    return f"""CASE
            WHEN v.feedback = 'true' THEN 1 WHEN v.feedback = 'false' THEN -1
            WHEN {value} IN (-1, 0, 1) THEN CAST({value} AS TINYINT)
        END"""


def _checks() -> list[tuple[str, str, str]]:
    """Return (condition, reason, field) SQL triples in priority order: the first that
    holds is the reason a record is rejected."""
    checks = [
        ("text IS NULL", f"'{REASONS['bad_encoding']}'", "NULL"),
        ("pre_error IS NOT NULL", "pre_error", "pre_field"),
        ("t IS NULL", f"'{REASONS['invalid_json']}'", "NULL"),
        ("t[1] <> 'OBJECT'", f"'{REASONS['not_object']}'", "NULL"),
    ]

    def check(condition: str, reason: str, field: str) -> None:
        checks.append((condition, f"'{REASONS[reason]}'", f"'{field}'"))

    for name in ("log_id", "ts", "input", "output"):
        check(f"NOT {_present(name)}", "missing", name)
    check(f"{_type('log_id')} NOT IN ('VARCHAR', 'BIGINT', 'UBIGINT') OR trim(v.log_id) = ''",
          "wrong_type", "log_id")
    for name in ("input", "output", "context"):
        check(f"{_present(name)} AND {_type(name)} <> 'VARCHAR'", "wrong_type", name)
    for name in TEXT_FIELDS:
        check(f"{_present(name)} AND {_type(name)} NOT IN {_SCALAR_TYPES}", "wrong_type", name)
    for name, sql_type in NUMBER_FIELDS.items():
        check(f"{_present(name)} AND ({_type(name)} NOT IN {_SCALAR_TYPES} "
              f"OR {_number(name, sql_type)} IS NULL)", "wrong_type", name)
        check(f"{_number(name, sql_type)} < 0", "bad_value", name)
    check(f"{_present('feedback')} AND ({_type('feedback')} NOT IN ('BOOLEAN', {_SCALAR_TYPES[1:-1]}) "
          f"OR ({_feedback()}) IS NULL)", "bad_value", "feedback")
    check(f"{_present('tags')} AND ({_tags()}) IS NULL", "wrong_type", "tags")
    check(f"{_present('messages')} AND ({_json_of('messages', 'ARRAY')}) IS NULL", "wrong_type", "messages")
    check(f"{_present('metadata')} AND ({_json_of('metadata', 'OBJECT')}) IS NULL", "wrong_type", "metadata")
    check(f"{_type('ts')} NOT IN {_SCALAR_TYPES} OR ({_timestamp()}) IS NULL", "bad_ts", "ts")
    check("trim(coalesce(fix_output, v.output, '')) = ''", "empty_output", "output")
    return checks


def _decoded(batch: str, fix: str) -> str:
    return f"""decoded AS (
    SELECT b.line, b.pre_error, b.pre_field, b.raw,
           try(decode(coalesce(f.raw, b.raw))) AS text,
           coalesce(b.doc, try(decode(coalesce(f.raw, b.raw)))) AS j,
           f.input AS fix_input, f.output AS fix_output, f.context AS fix_context,
           f.messages AS fix_messages, f.pii AS fix_pii
    FROM {batch} AS b LEFT JOIN {fix} AS f USING (line)
    WHERE NOT b.blank
)"""


def rejected_sql(batch: str, fix: str) -> str:
    """Return a SELECT of the batch's rejected records: ``line, reason, field, raw_text``.

    ``batch`` has the columns ``line, raw, doc, pre_error, pre_field, blank`` (see the
    module docstring); rows flagged ``blank`` are no records and are skipped.
    """
    checks = _checks()
    reason = "CASE\n" + "\n".join(f"    WHEN {c} THEN {r}" for c, r, _ in checks) + "\nEND"
    field = "CASE\n" + "\n".join(f"    WHEN {c} THEN {f}" for c, _, f in checks) + "\nEND"
    return f"""
WITH {_decoded(batch, fix)},
typed AS (
    SELECT *, CASE WHEN pre_error IS NULL THEN try(json_type(j, {_TYPE_PATHS})) END AS t
    FROM decoded
),
fields AS (
    SELECT *, CASE WHEN t[1] = 'OBJECT' THEN from_json(j, '{_STRUCTURE}') END AS v
    FROM typed
),
judged AS (
    SELECT line, raw, text, {reason} AS reason, {field} AS field FROM fields
)
SELECT line, reason, field, coalesce(text, raw::VARCHAR) AS raw_text
FROM judged
WHERE reason IS NOT NULL
"""


def accepted_sql(batch: str, fix: str, rejected_lines: str) -> str:
    """Return a SELECT of the batch's accepted records as `logs` columns (``line``, then
    ``log_id`` ... ``pii``): every record whose line is not in ``rejected_lines``."""
    extra_keys = f"list_filter(json_keys(j), k -> NOT list_contains({_KNOWN_KEYS}, k))"
    extras = (
        "to_json(map_from_entries(list_transform(extra_keys, "
        "k -> struct_pack(k := k, v := json_extract(j, '/' || replace(replace(k, '~', '~0'), '/', '~1'))))))"
    )
    return f"""
WITH {_decoded(batch, fix)},
fields AS (
    SELECT *, from_json(j, '{_STRUCTURE}') AS v, {extra_keys} AS extra_keys
    FROM decoded ANTI JOIN {rejected_lines} AS rejected USING (line)
),
typed AS (
    SELECT *, {_json_of('metadata', 'OBJECT')} AS metadata_json FROM fields
)
SELECT
    line,
    trim(v.log_id) AS log_id,
    {_timestamp()} AS ts,
    coalesce(v.source, 'unknown') AS source,
    coalesce(fix_input, v.input) AS input,
    coalesce(fix_output, v.output) AS output,
    coalesce(fix_context, v.context) AS context,
    v.model, v.prompt_name, v.prompt_version,
    {_feedback()} AS feedback,
    coalesce(fix_messages::JSON, {_json_of('messages', 'ARRAY')}) AS messages,
    v.git_commit, v.session_id, v.user_id,
    {_number('latency_ms', 'DOUBLE')} AS latency_ms,
    {_number('prompt_tokens', 'BIGINT')} AS prompt_tokens,
    {_number('completion_tokens', 'BIGINT')} AS completion_tokens,
    {_number('cost_usd', 'DOUBLE')} AS cost_usd,
    {_tags()} AS tags,
    CASE WHEN len(extra_keys) = 0 THEN metadata_json
         ELSE json_merge_patch(coalesce(metadata_json, '{{}}'), {extras}) END AS metadata,
    fix_pii AS pii
FROM typed
"""
