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

_STRUCTURE = "{" + ",".join(f'"{name}":"JSON"' for name in CANONICAL_FIELDS) + "}"
_KNOWN_KEYS = "[" + ",".join(f"'{name}'" for name in CANONICAL_FIELDS) + "]"


def _is_null(expr: str) -> str:
    return f"({expr} IS NULL OR json_type({expr}) = 'NULL')"


def _is_number(expr: str) -> str:
    return f"json_type({expr}) IN ('BIGINT', 'UBIGINT', 'DOUBLE')"


def _scalar_text(expr: str) -> str:
    """SQL for the text of a JSON scalar (string as is, numbers printed); NULL otherwise."""
    return (
        f"CASE WHEN json_type({expr}) IN ('VARCHAR', 'BIGINT', 'UBIGINT', 'DOUBLE') "
        f"THEN {expr} ->> '$' END"
    )


def _number(expr: str, sql_type: str) -> str:
    """SQL for a JSON number, or a string holding one, cast to ``sql_type``."""
    return (
        f"CASE WHEN {_is_number(expr)} OR json_type({expr}) = 'VARCHAR' "
        f"THEN TRY_CAST(trim({expr} ->> '$') AS {sql_type}) END"
    )


def _json_text_of(expr: str, kind: str) -> str:
    """SQL for a JSON value of the given kind ('ARRAY' or 'OBJECT'), also when it came as
    JSON text inside a string (CSV cells); NULL when it is neither."""
    return (
        f"CASE WHEN json_type({expr}) = '{kind}' THEN {expr} "
        f"WHEN json_type({expr}) = 'VARCHAR' AND json_valid({expr} ->> '$') "
        f"AND json_type(({expr} ->> '$')::JSON) = '{kind}' THEN ({expr} ->> '$')::JSON END"
    )


def _timestamp(expr: str) -> str:
    """SQL turning ISO-8601 text or epoch seconds (or ms, or ns) into TIMESTAMPTZ."""
    epoch = f"TRY_CAST({expr} ->> '$' AS DOUBLE)"
    return f"""CASE
        WHEN {epoch} IS NOT NULL THEN CASE
            WHEN abs({epoch}) >= 1e17 THEN to_timestamp({epoch} / 1e9)
            WHEN abs({epoch}) >= 1e14 THEN to_timestamp({epoch} / 1e6)
            WHEN abs({epoch}) >= 1e11 THEN to_timestamp({epoch} / 1e3)
            ELSE to_timestamp({epoch}) END
        WHEN json_type({expr}) = 'VARCHAR' THEN TRY_CAST({expr} ->> '$' AS TIMESTAMPTZ)
    END"""


def staged_sql(batch: str, fix: str) -> str:
    """Return the SELECT that validates ``batch`` and yields one row per record.

    Columns: ``line``, ``reject_reason``, ``reject_field``, ``raw_text`` and the `logs`
    columns (``log_id`` ... ``pii``). ``reject_reason`` is NULL for accepted records.
    Rows flagged ``blank`` (whitespace-only lines) are dropped: they are no records.
    """
    r = "r"
    # (condition, reason, field) in priority order; reason and field are SQL expressions.
    checks: list[tuple[str, str, str]] = [
        ("text IS NULL", f"'{REASONS['bad_encoding']}'", "NULL"),
        ("pre_error IS NOT NULL", "pre_error", "pre_field"),
        ("NOT is_json", f"'{REASONS['invalid_json']}'", "NULL"),
        (f"{r} IS NULL", f"'{REASONS['not_object']}'", "NULL"),
    ]

    def check(condition: str, reason: str, field: str) -> None:
        checks.append((condition, f"'{REASONS[reason]}'", f"'{field}'"))

    for name in ("log_id", "ts", "input", "output"):
        check(_is_null(f"{r}.{name}"), "missing", name)
    check(f"json_type({r}.log_id) NOT IN ('VARCHAR', 'BIGINT', 'UBIGINT') "
          f"OR trim({r}.log_id ->> '$') = ''", "wrong_type", "log_id")
    for name in ("input", "output", "context"):
        check(f"NOT {_is_null(f'{r}.{name}')} AND json_type({r}.{name}) <> 'VARCHAR'", "wrong_type", name)
    for name in TEXT_FIELDS:
        check(f"NOT {_is_null(f'{r}.{name}')} AND json_type({r}.{name}) "
              "NOT IN ('VARCHAR', 'BIGINT', 'UBIGINT', 'DOUBLE')", "wrong_type", name)
    for name, sql_type in NUMBER_FIELDS.items():
        value = _number(f"{r}.{name}", sql_type)
        check(f"NOT {_is_null(f'{r}.{name}')} AND ({value}) IS NULL", "wrong_type", name)
        check(f"({value}) < 0", "bad_value", name)
    check(f"NOT {_is_null(f'{r}.feedback')} AND ({_feedback(f'{r}.feedback')}) IS NULL", "bad_value", "feedback")
    check(f"NOT {_is_null(f'{r}.tags')} AND TRY_CAST(tags_json AS VARCHAR[]) IS NULL", "wrong_type", "tags")
    check(f"NOT {_is_null(f'{r}.messages')} AND ({_json_text_of(f'{r}.messages', 'ARRAY')}) IS NULL",
          "wrong_type", "messages")
    check(f"NOT {_is_null(f'{r}.metadata')} AND metadata_json IS NULL", "wrong_type", "metadata")
    check("ts_value IS NULL", "bad_ts", "ts")
    check("trim(coalesce(output_text, '')) = ''", "empty_output", "output")

    def case(pick: int) -> str:
        whens = "\n".join(f"            WHEN {c[0]} THEN {c[pick]}" for c in checks)
        return f"CASE\n{whens}\n        END"

    extra_keys = f"list_filter(json_keys(j), k -> NOT list_contains({_KNOWN_KEYS}, k))"
    extras = (
        "to_json(map_from_entries(list_transform(extra_keys, "
        "k -> struct_pack(k := k, v := json_extract(j, '/' || replace(replace(k, '~', '~0'), '/', '~1'))))))"
    )
    metadata = f"""CASE
            WHEN len(extra_keys) = 0 THEN metadata_json
            ELSE json_merge_patch(coalesce(metadata_json, '{{}}'), {extras})
        END"""

    return f"""
WITH decoded AS (
    SELECT b.line, b.blank, b.pre_error, b.pre_field,
           try(decode(coalesce(f.raw::BLOB, b.raw))) AS text,
           b.raw, b.doc, f.input AS fix_input, f.output AS fix_output,
           f.context AS fix_context, f.messages AS fix_messages, f.pii AS fix_pii
    FROM {batch} AS b LEFT JOIN {fix} AS f USING (line)
),
parsed AS (
    SELECT *, coalesce(doc, text) AS j, json_valid(coalesce(doc, text)) AS is_json
    FROM decoded
    WHERE NOT blank
),
fields AS (
    SELECT *,
        CASE WHEN pre_error IS NULL AND is_json THEN
            CASE WHEN json_type(j) = 'OBJECT' THEN from_json(j, '{_STRUCTURE}') END
        END AS {r}
    FROM parsed
),
typed AS (
    SELECT *,
        coalesce(fix_input, {_scalar_text(f'{r}.input')}) AS input_text,
        coalesce(fix_output, {_scalar_text(f'{r}.output')}) AS output_text,
        {_timestamp(f'{r}.ts')} AS ts_value,
        CASE WHEN json_type({r}.tags) = 'ARRAY' THEN {r}.tags
             WHEN json_type({r}.tags) = 'VARCHAR' THEN CASE
                 WHEN json_valid({r}.tags ->> '$') AND json_type(({r}.tags ->> '$')::JSON) = 'ARRAY'
                     THEN ({r}.tags ->> '$')::JSON
                 ELSE to_json(list_filter(list_transform(string_split({r}.tags ->> '$', ','), t -> trim(t)), t -> t <> ''))
             END
        END AS tags_json,
        {_json_text_of(f'{r}.metadata', 'OBJECT')} AS metadata_json,
        CASE WHEN {r} IS NOT NULL THEN {extra_keys} END AS extra_keys
    FROM fields
),
judged AS (
    SELECT *, {case(1)} AS reject_reason, {case(2)} AS reject_field
    FROM typed
)
SELECT
    line,
    reject_reason,
    reject_field,
    coalesce(text, raw::VARCHAR) AS raw_text,
    trim({r}.log_id ->> '$') AS log_id,
    ts_value AS ts,
    coalesce({_scalar_text(f'{r}.source')}, 'unknown') AS source,
    input_text AS input,
    output_text AS output,
    coalesce(fix_context, {_scalar_text(f'{r}.context')}) AS context,
    {_scalar_text(f'{r}.model')} AS model,
    {_scalar_text(f'{r}.prompt_name')} AS prompt_name,
    {_scalar_text(f'{r}.prompt_version')} AS prompt_version,
    {_feedback(f'{r}.feedback')} AS feedback,
    coalesce(fix_messages::JSON, {_json_text_of(f'{r}.messages', 'ARRAY')}) AS messages,
    {_scalar_text(f'{r}.git_commit')} AS git_commit,
    {_scalar_text(f'{r}.session_id')} AS session_id,
    {_scalar_text(f'{r}.user_id')} AS user_id,
    {_number(f'{r}.latency_ms', 'DOUBLE')} AS latency_ms,
    {_number(f'{r}.prompt_tokens', 'BIGINT')} AS prompt_tokens,
    {_number(f'{r}.completion_tokens', 'BIGINT')} AS completion_tokens,
    {_number(f'{r}.cost_usd', 'DOUBLE')} AS cost_usd,
    TRY_CAST(tags_json AS VARCHAR[]) AS tags,
    {metadata} AS metadata,
    fix_pii AS pii
FROM judged
"""


def _feedback(expr: str) -> str:
    """SQL for feedback as -1, 0 or 1 (booleans: thumbs up 1, down -1); NULL otherwise."""
    value = f"TRY_CAST(trim({expr} ->> '$') AS DOUBLE)"
    return f"""CASE
            WHEN json_type({expr}) = 'BOOLEAN' THEN CASE WHEN {expr} ->> '$' = 'true' THEN 1 ELSE -1 END
            WHEN {value} IN (-1, 0, 1) THEN CAST({value} AS TINYINT)
        END"""
