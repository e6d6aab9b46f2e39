"""Validation and normalization of staged log records, in DuckDB SQL.

Every format ends up as a staged batch with one JSON document per record (the record
in canonical shape). One SQL statement parses each document, checks the required
fields, types and timestamp, and writes the accepted records as normalized `logs` rows;
the same checks, run again on only the records it left out, give each rejection its
reason and the field it is about. Doing this in DuckDB keeps the
hot path vectorized: a day of a million records is validated in seconds.

For the bulk of the records, :func:`fast_accepted_sql` is leaner still: one parse
per record and one conjunction of cheap tests that holds only where every detailed
check passes; the detailed statements (:func:`judged_sql`, :func:`accepted_sql`,
:func:`judged_rejected`) then look at what it left out.

The staged batch (a relation named by the caller) has the columns:
``rid BIGINT`` (the row's number in the batch), ``line BIGINT, text VARCHAR, raw BLOB, doc VARCHAR, pre_error VARCHAR, pre_field VARCHAR,
blank BOOLEAN, maybe_pii BOOLEAN`` where ``text`` is the record's original text (NULL when it is not valid
UTF-8; ``raw`` then holds the bytes) and
``doc`` is the canonical JSON of a parsed record (NULL: parse ``text`` itself, the case
of canonical JSON lines) and ``pre_error`` is a parser's reason for a broken record;
``maybe_pii`` False says the record's text cannot hold PII (NULL: not known).
A PII fix-up relation ``fix(rid, input, output, context, messages, text, pii, session_id,
user_id, tags, metadata)`` is
joined in: where it has a row, its values replace the record's own.
"""

from __future__ import annotations

from datetime import date, datetime, time, timedelta, timezone

from flywheel.ingest.records import CANONICAL_FIELDS, MAX_VALUES, REQUIRED_FIELDS as REQUIRED

# Text fields that are kept as strings; numbers given for them are turned into text.
TEXT_FIELDS = ("source", "model", "prompt_name", "prompt_version", "git_commit", "session_id", "user_id")
# The text fields the PII detectors scrub (in this order; messages, tags and metadata
# are JSON, scanned string by string).
SCRUBBED_FIELDS = ("input", "output", "context", "session_id", "user_id")
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
    "far_ts": "timestamp too far from the day",
}

# The earliest and latest plausible timestamp of a day's records, as SQL literals
# (TIMESTAMPTZ): see :func:`ts_window`. None: any timestamp DuckDB can hold.
TsWindow = tuple[str, str] | None


def ts_window(day: str, skew_days: int) -> tuple[str, str]:
    """Return the timestamps a record of partition ``day`` may carry: from ``skew_days``
    before the day starts to ``skew_days`` after it ends (UTC), as SQL literals."""
    start = datetime.combine(date.fromisoformat(day), time(), tzinfo=timezone.utc)
    low, high = start - timedelta(days=skew_days), start + timedelta(days=1 + skew_days)
    return tuple(f"TIMESTAMPTZ '{moment.isoformat()}'" for moment in (low, high))

# Accepted rows are written in the same statement that validates them; only the few rows
# it leaves out are judged again to say why (see the loader). A second parse lists each
# record's keys to find unknown fields for `metadata`.
# One parse per record: scalars come out as text (JSON strings unescaped, numbers and
# booleans printed, objects and arrays as their JSON text), nested fields as JSON.
_NESTED = ("messages", "tags", "metadata")
_STRUCTURE = "{" + ",".join(
    f'"{name}":"{"JSON" if name in _NESTED else "VARCHAR"}"' for name in CANONICAL_FIELDS
) + "}"
_KNOWN_KEYS = "[" + ",".join(f"'{name}'" for name in CANONICAL_FIELDS) + "]"
# Fields whose value must be text (or a number, printed): an object or array is wrong.
_STRING_FIELDS = ("log_id", "input", "output", "context", *TEXT_FIELDS)


def _present(name: str) -> str:
    if name in _NESTED:
        return f"coalesce(t_{name}, 'NULL') <> 'NULL'"
    return f"v.{name} IS NOT NULL"


def _not_text(name: str) -> str:
    """SQL: the field held an object or array. Only values that look like one (their
    text starts with a brace or bracket) pay for a second look at the record."""
    # A CASE, not AND: DuckDB computes both sides of an AND for every row of a projection,
    # and the second one parses the record again.
    return (
        f"CASE WHEN starts_with(v.{name}, '{{') OR starts_with(v.{name}, '[') "
        f"THEN json_type(j, '$.\"{name}\"') IN ('OBJECT', 'ARRAY') ELSE false END"
    )


def _json_type(name: str) -> str:
    """SQL: ``json_type`` of the JSON field ``v.name``, mostly told by its first character.

    The parse gives a JSON field as minified JSON text (no leading space), so its first
    character names an array, object or string; only the rest (numbers, booleans) pay
    for ``json_type``'s parse of the value (three small parses per record otherwise)."""
    value = f"v.{name}"
    # unicode(): the code point of the first character, without looking at the rest
    return (f"CASE unicode({value}) WHEN 91 THEN 'ARRAY' WHEN 123 THEN 'OBJECT' WHEN 34 THEN 'VARCHAR' "
            f"ELSE json_type({value}) END")


def _json_of(name: str, kind: str) -> str:
    """SQL for a field's JSON value of the given kind ('ARRAY' or 'OBJECT'), also when it
    came as JSON text inside a string (CSV cells); NULL when it is neither."""
    text = f"(v.{name} ->> '$')"
    return (
        f"CASE WHEN t_{name} = '{kind}' THEN v.{name} "
        f"WHEN t_{name} = 'VARCHAR' AND json_valid({text}) "
        f"AND json_type({text}) = '{kind}' THEN {text}::JSON END"
    )


def _tags() -> str:
    """SQL for tags as a list of strings: a JSON list, or a comma-separated string."""
    text = "(v.tags ->> '$')"
    return f"""TRY_CAST(CASE
            WHEN t_tags = 'VARCHAR' AND NOT starts_with(ltrim({text}), '[')
            THEN to_json(list_filter(list_transform(string_split({text}, ','), x -> trim(x)), x -> x <> ''))
            ELSE {_json_of('tags', 'ARRAY')} END AS VARCHAR[])"""


def _timestamp() -> str:
    """SQL turning ISO-8601 text or epoch seconds (or ms, us, ns) into TIMESTAMPTZ."""
    epoch = "ts_epoch"
    # try(): a number beyond what a timestamp holds is no timestamp (not an error that
    # would stop the whole statement).
    return f"""CASE
        WHEN {epoch} IS NOT NULL THEN CASE
            WHEN abs({epoch}) >= 1e17 THEN try(to_timestamp({epoch} / 1e9))
            WHEN abs({epoch}) >= 1e14 THEN try(to_timestamp({epoch} / 1e6))
            WHEN abs({epoch}) >= 1e11 THEN try(to_timestamp({epoch} / 1e3))
            ELSE try(to_timestamp({epoch})) END
        ELSE TRY_CAST(v.ts AS TIMESTAMPTZ)
    END"""


def _feedback() -> str:
    """SQL for feedback as -1, 0 or 1 (true: thumbs up, 1; false: down, -1); NULL otherwise."""
    value = "feedback_number"
    return f"""CASE
            WHEN v.feedback = 'true' THEN 1 WHEN v.feedback = 'false' THEN -1
            WHEN {value} IN (-1, 0, 1) THEN CAST({value} AS TINYINT)
        END"""


def _in_range(name: str) -> str:
    """SQL: the typed number field lies within its bounds (false for NaN and infinity,
    which DuckDB orders above every number; NULL when absent)."""
    return f"n_{name} BETWEEN 0 AND {MAX_VALUES[name]}"


def _checks(window: TsWindow = None) -> list[tuple[str, str, str]]:
    """Return (condition, reason, field) SQL triples in priority order: the first that
    holds is the reason a record is rejected. ``window``: see :func:`ts_window`."""
    checks = [
        ("j IS NULL", f"'{REASONS['bad_encoding']}'", "NULL"),
        ("pre_error IS NOT NULL", "pre_error", "pre_field"),
        ("CASE WHEN v IS NULL THEN NOT json_valid(j) ELSE false END", f"'{REASONS['invalid_json']}'", "NULL"),
        # Only records already missing their log_id pay for this second look.
        (f"CASE WHEN v IS NULL OR NOT {_present('log_id')} THEN json_type(j) <> 'OBJECT' ELSE false END",
         f"'{REASONS['not_object']}'", "NULL"),
    ]

    def check(condition: str, reason: str, field: str) -> None:
        checks.append((condition, f"'{REASONS[reason]}'", f"'{field}'"))

    for name in ("log_id", "ts", "input", "output"):
        check(f"NOT {_present(name)}", "missing", name)
    check("trim(v.log_id) = ''", "missing", "log_id")
    for name in _STRING_FIELDS:
        check(_not_text(name), "wrong_type", name)
    for name in NUMBER_FIELDS:
        check(f"{_present(name)} AND n_{name} IS NULL", "wrong_type", name)
        check(f"NOT ({_in_range(name)})", "bad_value", name)
    check(f"{_present('feedback')} AND feedback IS NULL", "bad_value", "feedback")
    check(f"{_present('tags')} AND tags IS NULL", "wrong_type", "tags")
    check(f"{_present('messages')} AND messages IS NULL", "wrong_type", "messages")
    check(f"{_present('metadata')} AND metadata_json IS NULL", "wrong_type", "metadata")
    check("ts IS NULL", "bad_ts", "ts")
    if window is not None:
        check(f"ts NOT BETWEEN {window[0]} AND {window[1]}", "far_ts", "ts")
    # A full match of blanks fails at the first other character: no copy of long outputs.
    check(r"regexp_full_match(coalesce(fix_output, v.output, ''), '\s*')", "empty_output", "output")
    return checks


def _judged(batch: str, fix: str, *, with_values: bool, window: TsWindow = None) -> str:
    """The CTEs shared by both statements: parse each record once, type each field once
    (one projection per step, so nothing is computed twice), then judge it."""
    checks = _checks(window)
    # The conditions are tested once: the first that holds gives the check's number,
    # which then picks the reason and the field.
    failed = "CASE\n" + "\n".join(f"    WHEN {c} THEN {i}" for i, (c, _, _) in enumerate(checks)) + "\nEND"
    reason = "CASE reject_check " + " ".join(f"WHEN {i} THEN {r}" for i, (_, r, _) in enumerate(checks)) + " END"
    field = "CASE reject_check " + " ".join(f"WHEN {i} THEN {f}" for i, (_, _, f) in enumerate(checks)) + " END"
    staged = f"""
    SELECT b.rid, b.line, b.pre_error, b.pre_field, b.raw,
           coalesce(f.text, b.text) AS text, coalesce(b.doc, b.text) AS j,
           pre_error IS NULL AND json_valid(coalesce(b.doc, b.text)) AS parses,
           f.input AS fix_input, f.output AS fix_output, f.context AS fix_context,
           f.messages AS fix_messages, f.pii AS fix_pii,
           f.session_id AS fix_session_id, f.user_id AS fix_user_id, f.tags AS fix_tags,
           f.metadata AS fix_metadata
    FROM {batch} AS b LEFT JOIN {fix} AS f USING (rid)
    WHERE NOT b.blank"""
    return f"""{_valued(staged, with_values=with_values)},
checked AS (
    SELECT *, {failed} AS reject_check FROM valued
),
judged AS (
    SELECT * EXCLUDE (reject_check), {reason} AS reject_reason, {field} AS reject_field FROM checked
)"""


def _number(text: str, sql_type: str) -> str:
    """SQL: the text as a number of the type (NULL where it is none), spaces around it
    (Unicode ones too) ignored. The cast alone takes ASCII spaces; trim() makes a new
    string of every value, so it runs only where the cast alone gives nothing."""
    return f"coalesce(TRY_CAST({text} AS {sql_type}), TRY_CAST(trim({text}) AS {sql_type}))"


def _valued(staged: str, *, with_values: bool, key_lists: tuple[tuple[str, ...], ...] = (),
            parse: str = "CASE WHEN parses THEN from_json(j, '{structure}') END", keys_first: bool = False) -> str:
    """Return the CTEs ``staged`` (the given SELECT: ``j`` the record's JSON, ``parses``
    whether to parse it), ``parsed``, ``typed`` and ``valued`` (every field typed).
    ``parse`` is the SQL giving the parsed record ``v`` (NULL: not parsed). With
    ``keys_first`` (and ``with_values``), ``record_keys`` comes first, NULL for a
    document that is no JSON, and ``parse`` may use it.

    ``key_lists`` are lists of known keys, in order, that many records have: a record
    with exactly one of them has no unknown field (comparing lists is much cheaper than
    a set test).
    """
    keys = (
        ", CASE WHEN v IS NOT NULL THEN json_keys(j) END AS record_keys"
        if with_values and not keys_first else ""
    )
    first = ", try(json_keys(j)) AS record_keys" if with_values and keys_first else ""
    types = ", ".join(f"{_json_type(name)} AS t_{name}" for name in _NESTED)
    # Most records have only known keys: a set test settles them without a lambda per key.
    common = "".join(
        f"WHEN record_keys = {_sql_list(keys)} THEN []::VARCHAR[] "
        for keys in key_lists if set(keys) <= set(CANONICAL_FIELDS)
    )
    extras = (
        f"CASE {common}WHEN list_has_all({_KNOWN_KEYS}, record_keys) THEN []::VARCHAR[] "
        f"ELSE list_filter(record_keys, k -> NOT list_contains({_KNOWN_KEYS}, k)) END AS extra_keys,"
        if with_values else ""
    )
    numbers = ", ".join(f"{_number('v.' + name, sql_type)} AS n_{name}" for name, sql_type in NUMBER_FIELDS.items())
    return f"""
WITH staged AS ({staged}
),
parsed AS (
    SELECT *, {parse.format(structure=_STRUCTURE)} AS v
    FROM (SELECT * {first} FROM staged)
),
keyed AS (
    SELECT * {keys} FROM parsed
),
typed AS (
    SELECT *, {types}, {extras} TRY_CAST(v.ts AS DOUBLE) AS ts_epoch,
           {_number('v.feedback', 'DOUBLE')} AS feedback_number
    FROM keyed
),
valued AS (
    SELECT *, {numbers},
        {_timestamp()} AS ts, {_feedback()} AS feedback, {_tags()} AS tags,
        {_json_of('messages', 'ARRAY')} AS messages, {_json_of('metadata', 'OBJECT')} AS metadata_json
    FROM typed
)"""


def judged_sql(batch: str, fix: str, *, window: TsWindow = None) -> str:
    """Return a SELECT of every record of the batch judged in detail: the columns of
    the checks' CTEs, among them ``reject_reason`` and ``reject_field`` (NULL when
    accepted). Select from it with :func:`judged_rejected` and :func:`judged_accepted`.
    ``window``: the plausible timestamps (:func:`ts_window`)."""
    return f"""{_judged(batch, fix, with_values=True, window=window)}
SELECT * FROM judged"""


def judged_rejected(judged: str) -> str:
    """Return a SELECT of the rejected rows of a :func:`judged_sql` relation:
    ``rid, line, reason, field, raw_text, raw`` (the line's text, newline removed; the
    bytes of a line that is not UTF-8)."""
    return f"""SELECT rid, line, reject_reason AS reason, reject_field AS field,
       rtrim(coalesce(text, raw::VARCHAR), chr(10) || chr(13)) AS raw_text, raw
FROM {judged} WHERE reject_reason IS NOT NULL"""


def judged_accepted(judged: str, *, hold_back: str | None = None, held: bool = False,
                    fix: str | None = None) -> str:
    """Return a SELECT of the accepted rows of a :func:`judged_sql` relation, like
    :func:`accepted_sql`'s (the same ``hold_back`` and ``held``). With ``fix`` (PII
    fix-ups, module docstring), only the rows it has, with its values put in."""
    condition = ""
    if hold_back is not None:
        condition = f"AND {'' if held else 'NOT '}{_holds_back(hold_back)}"
    if fix is not None:
        judged = f"""(SELECT d.* REPLACE (f.input AS fix_input, f.output AS fix_output,
                    f.context AS fix_context, f.messages AS fix_messages, f.pii AS fix_pii,
                    f.session_id AS fix_session_id, f.user_id AS fix_user_id, f.tags AS fix_tags,
                    f.metadata AS fix_metadata)
             FROM {judged} AS d JOIN {fix} AS f USING (rid))"""
    return f"SELECT {_ACCEPTED_COLUMNS}, j FROM {judged} WHERE reject_reason IS NULL {condition}"


def accepted_sql(batch: str, fix: str, *, hold_back: str | None = None, held: bool = False,
                 window: TsWindow = None) -> str:
    """Return a SELECT of the batch's accepted records as `logs` columns: ``rid``, ``line``,
    then ``log_id`` ... ``pii``. The same checks as :func:`judged_sql` decide.

    ``hold_back`` is a regular expression (RE2): records whose input, output, context or
    messages match it are left out too, for the caller to scrub first (PII); with
    ``held``, only those are returned.
    """
    condition = ""
    if hold_back is not None:
        condition = f"AND {'' if held else 'NOT '}{_holds_back(hold_back)}"
    return f"""{_judged(batch, fix, with_values=True, window=window)}
SELECT {_ACCEPTED_COLUMNS}
FROM judged
WHERE reject_reason IS NULL {condition}
"""


# A JSON string (kept, as group 1), or a number outside strings (removed).
_JSON_NUMBERS = """'("(?:[^"\\\\]|\\\\.)*")|-?[0-9][0-9.eE+-]*'"""


def _holds_back(pattern: str, *, fix_ups: bool = False) -> str:
    """SQL: the record's text fields (input, output, context, messages, session and user
    id) match the pattern (RE2), or its tags, metadata or unknown fields (JSON text) match
    the PII prefilter for JSON (:data:`flywheel.pii.JSON_PREFILTER_PATTERN`)."""
    from flywheel import pii

    literal = "'" + pattern.replace("'", "''") + "'"
    json_literal = "'" + pii.JSON_PREFILTER_PATTERN.replace("'", "''") + "'"
    # One scan over the text fields joined is three times cheaper than one per field.
    # With ``fix_ups``, a text field's PII fix-up (where the record has one) stands for
    # its value: see flywheel.ingest.pii_ahead.
    fields = [f"coalesce(fix_{name}, v.{name})" if fix_ups else f"v.{name}" for name in SCRUBBED_FIELDS]
    text = " || chr(10) || ".join(
        f"coalesce({column}, '')" for column in (*fields[:3], "messages::VARCHAR", *fields[3:])
    )
    # Unknown fields end up in `metadata`: the whole record is looked at when it has some.
    # Only its strings are scanned for PII, and the numbers between them are taken out
    # first: a timestamp such as "created": 1767243711 looks like a phone number to the
    # prefilter, and held every record of a format that has one. (One pass, left to
    # right: a string is matched whole, digits in it with it, and kept.)
    json_text = ("regexp_replace(coalesce(v.tags::VARCHAR, '') || coalesce(v.metadata::VARCHAR, '') || "
                 "CASE WHEN len(extra_keys) > 0 THEN j ELSE '' END, "
                 f"{_JSON_NUMBERS}, '\\1', 'g')")
    return (f"(regexp_matches({text}, {literal}) OR "
            f"CASE WHEN v.tags IS NULL AND v.metadata IS NULL AND len(extra_keys) = 0 THEN false "
            f"ELSE regexp_matches({json_text}, {json_literal}) END)")


def _fixed(name: str) -> str:
    """SQL: a text field's PII fix-up where the record has one, else its value. (Not
    coalesce(): that copies the values it takes from its later arguments.)"""
    return f"CASE WHEN fix_{name} IS NULL THEN v.{name} ELSE fix_{name} END"


# The `logs` columns of an accepted record (after ``rid, line``), the same for the
# detailed and the fast statement, so that both give a record the same row.
_EXTRAS = (
    "to_json(map_from_entries(list_transform(extra_keys, "
    "k -> struct_pack(k := k, v := json_extract(j, '/' || replace(replace(k, '~', '~0'), '/', '~1'))))))"
)


_ACCEPTED_COLUMNS = f"""
    rid,
    line,
    trim(v.log_id) AS log_id,
    ts,
    coalesce(v.source, 'unknown') AS source,
    {_fixed('input')} AS input,
    {_fixed('output')} AS output,
    {_fixed('context')} AS context,
    v.model, v.prompt_name, v.prompt_version,
    feedback,
    coalesce(fix_messages::JSON, messages) AS messages,
    v.git_commit, {_fixed('session_id')} AS session_id,
    {_fixed('user_id')} AS user_id,
    n_latency_ms AS latency_ms, n_prompt_tokens AS prompt_tokens,
    n_completion_tokens AS completion_tokens, n_cost_usd AS cost_usd,
    coalesce(fix_tags, tags) AS tags,
    coalesce(fix_metadata::JSON, CASE WHEN len(extra_keys) = 0 THEN metadata_json
         ELSE json_merge_patch(coalesce(metadata_json, '{{}}'), {_EXTRAS}) END) AS metadata,
    fix_pii AS pii"""


def _fast_acceptance(window: TsWindow = None) -> str:
    """SQL that holds only for a record every check of :func:`_checks` lets pass (it may
    fail for some good records too: those are judged again in detail). One conjunction
    of cheap tests: a field that looks like an object or array is not settled here."""
    tests = [f"v.{name} IS NOT NULL" for name in REQUIRED]
    # A first character that is printable ASCII and no space: trim() leaves something
    # (it also removes Unicode spaces, so those are left for the detailed checks).
    tests.append("ascii(v.log_id) BETWEEN 33 AND 126")
    tests.append("ts IS NOT NULL" if window is None else f"ts BETWEEN {window[0]} AND {window[1]}")
    # "a OR b" written as CASE: DuckDB evaluates it a little faster in a filter.
    for name in _STRING_FIELDS:
        # Not an object or array: it does not start with '[' or '{', or is no JSON.
        # (unicode() reads the first character only, where ascii() checks the whole text
        # for UTF-8 first; two starts_with() cost 2.7 times as much.)
        # The parse gives an object or array as minified JSON, ending in its bracket: a
        # text such as "[doc 1] The plan ..." is settled without parsing it.
        tests.append(f"CASE WHEN v.{name} IS NULL THEN true "
                     f"WHEN unicode(v.{name}) NOT IN (91, 123) THEN true "
                     f"WHEN NOT (suffix(v.{name}, ']') OR suffix(v.{name}, '}}')) THEN true "
                     f"ELSE NOT json_valid(v.{name}) END")
    for name in NUMBER_FIELDS:
        tests.append(f"CASE WHEN v.{name} IS NULL THEN true ELSE coalesce({_in_range(name)}, false) END")
    tests.append("CASE WHEN v.feedback IS NULL THEN true ELSE feedback IS NOT NULL END")
    tests.append(f"CASE WHEN NOT {_present('tags')} THEN true ELSE tags IS NOT NULL END")
    tests.append(f"CASE WHEN NOT {_present('messages')} THEN true ELSE messages IS NOT NULL END")
    tests.append(f"CASE WHEN NOT {_present('metadata')} THEN true ELSE metadata_json IS NOT NULL END")
    tests.append(r"NOT regexp_full_match(v.output, '\s*')")
    return "\n    AND ".join(tests)


def _sql_list(values) -> str:
    """Return a SQL list literal of strings."""
    return "[" + ", ".join("'" + v.replace("'", "''") + "'" for v in values) + "]::VARCHAR[]"


def fast_accepted_sql(batch: str, *, pii_gate: str | None = None,
                      key_lists: tuple[tuple[str, ...], ...] = (), window: TsWindow = None,
                      fix_ups: bool = False, documents: bool = True) -> str:
    """Return a SELECT of the batch's records that pass one combined acceptance test,
    as `logs` columns like :func:`accepted_sql` (``pii`` NULL but where a fix-up stands).

    It takes only records the detailed checks would accept, with the same values; the
    records it leaves out (broken ones, and good ones with an unusual field) are for
    the caller to judge with :func:`judged_sql`. With
    ``pii_gate`` (a regular expression, RE2), records whose input, output, context or
    messages match it are left out too, unless the batch's ``maybe_pii`` says they
    cannot match (False). ``key_lists``: the key lists (in order) most
    records of the batch have, as far as the caller knows (see :func:`_valued`).
    ``window``: the plausible timestamps (:func:`ts_window`). ``fix_ups``: the batch
    has the PII fix-ups of :mod:`flywheel.ingest.pii_ahead`; a record with one is taken
    scrubbed when its fields parse to the texts scrubbed and the scrubbed record no
    longer matches ``pii_gate`` (and held back otherwise, as without). ``documents=False``:
    the batch's ``doc`` is NULL throughout, each record is its line's ``text`` (taken as
    it is: coalesce() would copy every line).
    """
    if fix_ups:
        fixes = (f"fix_input, fix_output, fix_context, NULL::VARCHAR AS fix_messages, fix_pii, "
                 f"fix_session_id, fix_user_id, {', '.join(f'was_{name}' for name in SCRUBBED_FIELDS)},")
    else:
        fixes = ("NULL::VARCHAR AS fix_input, NULL::VARCHAR AS fix_output, NULL::VARCHAR AS fix_context, "
                 "NULL::VARCHAR AS fix_messages, NULL::VARCHAR[] AS fix_pii, "
                 "NULL::VARCHAR AS fix_session_id, NULL::VARCHAR AS fix_user_id,")
    staged = f"""
    SELECT rid, line, maybe_pii, {"coalesce(doc, text)" if documents else "text"} AS j, {fixes}
           NULL::VARCHAR[] AS fix_tags, NULL::VARCHAR AS fix_metadata
    FROM {batch}
    WHERE NOT blank AND pre_error IS NULL"""
    condition = ""
    if pii_gate is not None:
        # The batch's `maybe_pii` (a cheap test of the whole line, see the loader) is
        # False where the pattern cannot match: only the other records pay for it.
        # (A CASE, so that the regex runs on the flagged records only.)
        condition = (f"AND CASE WHEN maybe_pii IS NOT DISTINCT FROM false THEN true "
                     f"ELSE NOT {_holds_back(pii_gate, fix_ups=fix_ups)} END")
    # A document that is not JSON gives NULL instead of an error (the detailed statement
    # tests json_valid first, a third parse of every record). try() around the key list,
    # not the parsed record: try() copies what it returns, and the record is the larger.
    parse = "CASE WHEN record_keys IS NOT NULL THEN from_json(j, '{structure}') END"
    records = "valued"
    if fix_ups:
        # A fix-up stands only where this parse gives the very texts it scrubbed (the
        # reader's own parse could differ: a duplicate key, say) and the record has no
        # messages; elsewhere it is dropped, and the record judged as it is.
        same = " AND ".join(f"v.{name} IS NOT DISTINCT FROM was_{name}" for name in SCRUBBED_FIELDS)
        applies = f"fix_pii IS NOT NULL AND NOT {_present('messages')} AND {same}"
        kept = ", ".join(f"CASE WHEN fix_applies THEN fix_{name} END AS fix_{name}"
                         for name in (*SCRUBBED_FIELDS, "pii"))
        records = f"(SELECT * REPLACE ({kept}) FROM (SELECT *, {applies} AS fix_applies FROM valued))"
    return f"""{_valued(staged, with_values=True, key_lists=key_lists, parse=parse, keys_first=True)}
SELECT {_ACCEPTED_COLUMNS}
FROM {records}
WHERE v IS NOT NULL AND {_fast_acceptance(window)}
    {condition}
"""
