"""PII fix-ups worked out while a canonical JSON-lines file is read (redact mode,
flywheel.ingest.pii_ahead): records the fix-ups settle are stored exactly as the
detailed checks would store them, and every record they cannot settle still goes to
the detailed checks."""

from __future__ import annotations

import json

import numpy as np
import pyarrow as pa

from flywheel.ingest import loader, pii_ahead
from tests.test_ingest import DAY, good, ingest, jsonl
from tests.conftest import land, rows

EMAIL = "write to jane.doe@example.com"
PHONE = "call +1 (415) 555-0132 after 5"
CARD = "my card is 4111 1111 1111 1111"
KEY = "sk-abcdefghijklmnopqrstuvwxyz012345 was pasted in the chat"

# Records the fix-ups settle: PII in the text fields only.
SETTLED = {
    "s1": good("s1", input=EMAIL),
    "s2": good("s2", output=PHONE, context=CARD + "\n" + EMAIL),
    "s3": good("s3", input=KEY, session_id="s-" + EMAIL, user_id="bob@example.org",
               metadata={"locale": "en-US"}, tags=["billing"]),
    # (its @ escaped in the JSON text)
    "s4": ('{"log_id": "s4", "ts": "2026-11-20T09:14:03Z", "input": "hi", "output": "ok", '
           '"context": "escaped: jane\\u0040example.com"}'),
}
# Records they leave to the detailed checks, each for its own reason.
LEFT = {
    "l1": good("l1", input=EMAIL, messages=[{"role": "user", "content": EMAIL}]),  # messages
    "l2": good("l2", input=EMAIL, tags=["x", "bob@example.org"]),  # PII in tags
    "l3": good("l3", input=EMAIL, metadata={"note": PHONE}),  # PII in metadata
    "l4": good("l4", input=EMAIL, referrer="bob@example.org"),  # PII in an unknown field
    "l5": good("l5", input="my password is Hunter2!x"),  # still candidates once scrubbed
    "l7": good("l7", input="use key: sk-abcdefghijklmnopqrstuvwxyz012345"),
    "l6": good("l6", input=4155550132, output=EMAIL),  # a number where text belongs
}
# Written by hand: a duplicate key (the reader's parse keeps the last, DuckDB the first)
# and an escaped lone surrogate (no Arrow string can hold it).
RAW = {
    "r1": ('{"log_id": "r1", "ts": "2026-11-20T09:14:03Z", "input": "mail ann@example.com", '
           '"input": "nothing here", "output": "ok"}'),
    "r2": ('{"log_id": "r2", "ts": "2026-11-20T09:14:03Z", "input": "bad \\ud800 ann@example.com", '
           '"output": "ok"}'),
}


# The other way round: the reader scrubs a text DuckDB does not see (and need not scrub).
REVERSED = ('{"log_id": "r3", "ts": "2026-11-20T09:14:03Z", "input": "nothing here", '
            '"input": "mail ann@example.com", "output": "ok"}')


def _lines() -> list:
    return [good("plain-1"), *SETTLED.values(), good("plain-2"), *LEFT.values(), *RAW.values(), REVERSED]


def test_fix_ups_store_what_the_detailed_checks_store(settings, monkeypatch):
    judged: list[int] = []  # the lines the detailed checks looked at
    second_look = loader._second_look

    def spy(con, day, source_file, fmt, second, **options):
        judged.extend(second.column("line").to_pylist())
        return second_look(con, day, source_file, fmt, second, **options)

    monkeypatch.setattr(loader, "_second_look", spy)
    land(settings, DAY, "a.jsonl", jsonl(*_lines()))
    fast_report = ingest(settings)
    logs_query = "SELECT * EXCLUDE (ingested_at) FROM logs ORDER BY source_line"
    rejected_query = "SELECT * EXCLUDE (rejected_at) FROM rejected_logs ORDER BY line"
    fast = rows(settings, logs_query), rows(settings, rejected_query)
    judged_fast = set(judged)

    # The same file with no fix-ups: every record with PII judged in detail.
    monkeypatch.setattr(loader, "ONE_RECORD_PER_LINE", ())
    detailed_report = ingest(settings)
    assert fast == (rows(settings, logs_query), rows(settings, rejected_query))
    assert fast_report.pii_counts == detailed_report.pii_counts

    line_of = {json.loads(text)["log_id"] if isinstance(text, str) else text["log_id"]: n
               for n, text in enumerate(_lines(), start=1)}
    assert not {line_of[log_id] for log_id in SETTLED} & judged_fast
    assert {line_of[log_id] for log_id in (*LEFT, *RAW)} <= judged_fast
    stored = {r[0]: r[1:] for r in rows(settings, "SELECT log_id, input, output, context, session_id, user_id, pii "
                                                  "FROM logs")}
    assert stored["s1"][0] == "write to [EMAIL]" and stored["s1"][5] == ["email"]
    assert stored["s2"][1:3] == ("call [PHONE] after 5", "my card is [CARD]\nwrite to [EMAIL]")
    assert stored["s3"][3:] == ("s-write to [EMAIL]", "[EMAIL]", ["email", "secret"])
    assert "example.com" not in stored["s4"][2] and stored["s4"][5] == ["email"]
    assert stored["r3"][0] == "nothing here" and stored["r3"][5] is None


def test_fix_up_columns_only_on_flagged_records_that_parse_as_text():
    lines = [json.dumps(good("a", input=EMAIL)), json.dumps(good("b", input=EMAIL)),
             json.dumps(good("c")), json.dumps(LEFT["l1"]), json.dumps(LEFT["l6"]), "{broken"]
    flagged = [False, True, True, True, True, True]
    columns = dict(zip([f.name for f in pii_ahead.FIELDS],
                       pii_ahead.fix_ups(pa.array(lines, pa.string()), np.array(flagged))))
    # Only b: a is not flagged, c holds nothing, l1 has messages, l6 a number, the last no JSON.
    assert columns["fix_pii"].to_pylist() == [None, ["email"], None, None, None, None]
    assert columns["fix_input"].to_pylist() == [None, "write to [EMAIL]", None, None, None, None]
    assert columns["was_input"].to_pylist()[1] == EMAIL
    assert columns["fix_output"].to_pylist()[1] is None  # nothing to scrub there
    assert columns["was_output"].to_pylist()[1] == good("b")["output"]


def test_fix_ups_are_given_up_on_a_file_whose_flagged_lines_hold_nothing_to_scrub():
    # Flagged for an IP-like version in metadata: nothing in the text fields to scrub.
    quiet = pa.array([json.dumps(good(f"q{i}", metadata={"build": "1.2.3.4"})) for i in range(1500)])
    loud = pa.array([json.dumps(good(f"l{i}", input=EMAIL)) for i in range(1500)])
    everything = np.ones(1500, dtype=bool)

    worth_it = pii_ahead.FixUps()
    for _ in range(3):
        assert len(worth_it(loud, everything)[-1].drop_null()) == 1500
    assert not worth_it.given_up

    not_worth_it = pii_ahead.FixUps()
    not_worth_it(quiet, everything)
    assert not not_worth_it.given_up  # not yet judged: 1,500 flagged lines so far
    not_worth_it(quiet, everything)
    assert not_worth_it.given_up
    # From then on NULL columns, even for lines with PII (the detailed checks scrub them).
    assert all(column.null_count == 1500 for column in not_worth_it(loud, everything))
