"""Ingestion of a landing folder into logs / rejected_logs / duplicate_logs."""

from __future__ import annotations

import dataclasses
import gzip
import json
import shutil

import pytest

from flywheel import store
from flywheel.ingest.loader import ingest_day, report_summary
from tests.conftest import FIXTURES, land, rows

DAY = "2026-11-20"


def good(log_id: str, **fields) -> dict:
    record = {
        "log_id": log_id,
        "ts": "2026-11-20T09:14:03Z",
        "source": "support-bot",
        "input": "How do I change my billing email?",
        "output": "Go to Settings > Billing and edit the contact email.",
    }
    record.update(fields)
    return record


def jsonl(*records) -> str:
    return "".join((r if isinstance(r, str) else json.dumps(r)) + "\n" for r in records)


def ingest(settings, day=DAY):
    with store.connection(settings) as con:
        return ingest_day(con, settings, day)


def test_every_fixture_format_lands_and_reconciles(settings):
    settings.landing_for(DAY).mkdir(parents=True)
    for path in (FIXTURES / "logs").iterdir():
        if path.name not in ("README.md", "make_parquet.py"):
            shutil.copy(path, settings.landing_for(DAY) / path.name)
    report = ingest(settings)
    by_name = {f.source_file.rsplit("/", 1)[-1]: f for f in report.files}
    assert report.reconciles, [(f.source_file, f.read, f.accepted, f.rejected, f.duplicates) for f in report.files]
    # Unreadable files are named with a reason, and the other files still load.
    assert by_name["truncated.jsonl.gz"].error and "gzip" in by_name["truncated.jsonl.gz"].error
    assert by_name["unknown.txt"].error
    for name in ("canonical.jsonl", "canonical.csv", "canonical.parquet", "openai_chat.jsonl",
                 "openai_batch_output.jsonl", "otel_genai.json", "otel_legacy.jsonl",
                 "otel_openinference.json", "langfuse_traces.json", "langfuse_traces.jsonl"):
        assert by_name[name].accepted > 0, name
        assert by_name[name].error is None, name
    assert by_name["openai_batch_input.jsonl"].format == "openai_batch_input"
    formats = dict(rows(settings, "SELECT source_format, count(*) FROM logs GROUP BY 1"))
    assert {"canonical_jsonl", "canonical_csv", "canonical_parquet", "openai_chat",
            "openai_batch_output", "otel", "langfuse"} <= set(formats)
    # The gzipped canonical file holds the same ids as the plain one: they are duplicates.
    assert by_name["canonical.jsonl.gz"].duplicates > 0 or by_name["canonical.jsonl"].duplicates > 0
    # Every stored row has the required fields.
    assert rows(settings, "SELECT count(*) FROM logs WHERE log_id IS NULL OR ts IS NULL OR trim(output) = ''") == [(0,)]
    # And the counts kept in ingest_files are those of the report.
    stored = rows(settings, "SELECT sum(read), sum(accepted), sum(rejected), sum(duplicates) FROM ingest_files WHERE day = ?", [DAY])
    assert stored == [(report.total("read"), report.total("accepted"), report.total("rejected"), report.total("duplicates"))]


def test_each_rejection_reason_is_recorded_with_line_and_raw(settings):
    lines = [
        good("ok-1"),
        '{"log_id": "broken", "ts": ',
        {k: v for k, v in good("no-output").items() if k != "output"},
        good("bad-latency", latency_ms="fast"),
        good("bad-ts", ts="the day before yesterday"),
        good("empty-out", output="   "),
        "",
        '["not", "an", "object"]',
        good("bad-feedback", feedback=5),
        good("bad-tokens", prompt_tokens=-3),
        good("bad-input", input={"question": "?"}),
        good("ok-2", latency_ms="980", feedback="-1", ts=1763630100),
    ]
    land(settings, DAY, "app.jsonl", jsonl(*lines))
    report = ingest(settings)
    got = rows(settings, "SELECT line, reason, field, raw FROM rejected_logs ORDER BY line")
    expected = [
        (2, "invalid JSON", None),
        (3, "missing required field", "output"),
        (4, "wrong type", "latency_ms"),
        (5, "unparseable timestamp", "ts"),
        (6, "empty output", "output"),
        (8, "not a JSON object", None),
        (9, "value out of range", "feedback"),
        (10, "value out of range", "prompt_tokens"),
        (11, "wrong type", "input"),
    ]
    assert [(line, reason, field) for line, reason, field, _ in got] == expected
    assert got[0][3] == '{"log_id": "broken", "ts": '
    assert json.loads(got[2][3])["latency_ms"] == "fast"
    f = report.files[0]
    assert (f.read, f.accepted, f.rejected, f.duplicates, f.blank_lines) == (11, 2, 9, 0, 1)
    ok2 = rows(settings, "SELECT latency_ms, feedback, ts::VARCHAR FROM logs WHERE log_id = 'ok-2'")
    assert ok2 == [(980.0, -1, "2025-11-20 09:15:00+00")]


def test_rerun_replaces_the_partition_exactly(settings):
    land(settings, DAY, "a.jsonl", jsonl(good("a"), good("b"), "{oops"))
    ingest(settings)
    query = "SELECT * EXCLUDE (ingested_at) FROM logs ORDER BY log_id"
    first = (rows(settings, query), rows(settings, "SELECT line, reason FROM rejected_logs"))
    ingest(settings)
    second = (rows(settings, query), rows(settings, "SELECT line, reason FROM rejected_logs"))
    assert first == second
    assert len(first[0]) == 2 and len(first[1]) == 1
    assert rows(settings, "SELECT count(*) FROM ingest_files") == [(1,)]


def test_log_ids_seen_before_are_duplicates_not_new_rows(settings):
    land(settings, "2026-11-19", "a.jsonl", jsonl(good("x"), good("y")))
    ingest(settings, "2026-11-19")
    land(settings, DAY, "a.jsonl", jsonl(good("y"), good("z"), good("z", output="second copy")))
    report = ingest(settings, DAY)
    assert rows(settings, "SELECT log_id, day::VARCHAR FROM logs ORDER BY 1") == [
        ("x", "2026-11-19"), ("y", "2026-11-19"), ("z", DAY)]
    assert rows(settings, "SELECT log_id, line, first_day::VARCHAR, first_line FROM duplicate_logs ORDER BY line") == [
        ("y", 1, "2026-11-19", 2), ("z", 3, DAY, 2)]
    f = report.files[0]
    assert (f.read, f.accepted, f.duplicates) == (3, 1, 2) and f.reconciles
    # The kept copy is the first one, not the later one.
    assert rows(settings, "SELECT output FROM logs WHERE log_id = 'z'") == [(good("z")["output"],)]
    # Re-running the earlier day does not turn its own rows into duplicates.
    ingest(settings, "2026-11-19")
    assert rows(settings, "SELECT count(*) FROM logs WHERE day = '2026-11-19'") == [(2,)]


def test_gzip_is_read_and_a_truncated_gzip_is_named_and_keeps_what_decompresses(settings):
    land(settings, DAY, "ok.jsonl.gz", gzip.compress(jsonl(good("g1"), good("g2")).encode()))
    whole = gzip.compress(jsonl(*[good(f"t{i}", output="x" * 200) for i in range(200)]).encode())
    land(settings, DAY, "cut.jsonl.gz", whole[: len(whole) // 2])
    land(settings, DAY, "early.jsonl.gz", whole[:30])
    report = ingest(settings)
    by_name = {f.source_file.rsplit("/", 1)[-1]: f for f in report.files}
    assert by_name["ok.jsonl.gz"].accepted == 2
    # Broken off half-way: named, and the records before the cut are kept (#13).
    assert "cut.jsonl.gz" in report_summary(report)["partly_read_files"]
    assert "truncated gzip" in by_name["cut.jsonl.gz"].error and by_name["cut.jsonl.gz"].reconciles
    kept = rows(settings, "SELECT count(*) FROM logs WHERE source_file LIKE '%cut%'")[0][0]
    assert 0 < kept == by_name["cut.jsonl.gz"].accepted < 200
    # Broken before its first line: unreadable, named.
    assert "early.jsonl.gz" in report_summary(report)["unreadable_files"]
    assert "gzip" in by_name["early.jsonl.gz"].error


def test_unknown_fields_go_to_metadata(settings):
    land(settings, DAY, "a.jsonl", jsonl(good("m", region="eu-west", ab={"bucket": "B"}, metadata={"channel": "web"})))
    ingest(settings)
    (metadata,), = rows(settings, "SELECT metadata FROM logs")
    assert json.loads(metadata) == {"channel": "web", "region": "eu-west", "ab": {"bucket": "B"}}


PII_INPUT = "Mail me at jane.doe@example.com or call +1 (415) 555-0132, card 4111 1111 1111 1111"


@pytest.mark.parametrize("mode", ["redact", "flag", "off"])
def test_pii_modes(settings, mode):
    settings = settings.replace(pii_mode=mode)
    land(settings, DAY, "a.jsonl", jsonl(
        good("p1", input=PII_INPUT, messages=[{"role": "user", "content": PII_INPUT}]),
        good("p2"),
        '{"log_id": "p3", "input": "key sk-proj-abcdefghijklmnopqrstuvwxyz0123456789ABCD", ',
    ))
    report = ingest(settings)
    (text, messages, pii), = rows(settings, "SELECT input, messages, pii FROM logs WHERE log_id = 'p1'")
    (raw,), = rows(settings, "SELECT raw FROM rejected_logs")
    assert rows(settings, "SELECT pii FROM logs WHERE log_id = 'p2'") == [(None,)]
    if mode == "redact":
        assert "jane.doe@example.com" not in text and "[EMAIL]" in text and "[PHONE]" in text and "[CARD]" in text
        assert "jane.doe" not in messages
        assert "sk-proj" not in raw and "[SECRET]" in raw
    else:
        assert text == PII_INPUT and "sk-proj" in raw
    if mode == "off":
        assert pii is None and report.pii_counts == {}
    else:
        assert sorted(pii) == ["card", "email", "phone"]
        assert report.pii_counts["email"] == 1 and report.pii_counts["secret"] == 1


def test_numbers_in_metadata_hold_no_record_back_but_its_strings_are_scanned(settings, monkeypatch):
    """Only the strings of metadata, tags and unknown fields can hold PII: a number that
    looks like a phone (an epoch timestamp) does not send its record to the Python scan,
    digits inside a string still do (also right after a colon, where a number would be)."""
    from flywheel.ingest import loader

    scanned: list[int] = []
    real = loader._pii_fixes

    def spy(docs, mode, report):
        scanned.append(len(docs))
        return real(docs, mode, report)

    monkeypatch.setattr(loader, "_pii_fixes", spy)
    land(settings, DAY, "a.jsonl", jsonl(
        good("n1", metadata={"created": 1767243711, "scores": [4155550134, -3.5e10]}, started_ns=4155550199),
        good("n2", metadata={"note": "tel:4155550134", "n": 1767243711}),
        good("n3", region="call +1 (415) 555-0132"),
        good("n4", metadata={"quoted": 'say \\"4155550134\\"'}),
    ))
    report = ingest(settings)
    stored = {log_id: (json.loads(metadata), pii) for log_id, metadata, pii in rows(
        settings, "SELECT log_id, metadata, pii FROM logs")}
    assert stored["n1"] == ({"created": 1767243711, "scores": [4155550134, -3.5e10], "started_ns": 4155550199}, None)
    assert stored["n2"] == ({"note": "tel:[PHONE]", "n": 1767243711}, ["phone"])
    assert stored["n3"][0]["region"] == "call [PHONE]" and stored["n3"][1] == ["phone"]
    assert "4155550134" not in json.dumps(stored["n4"][0]) and stored["n4"][1] == ["phone"]
    assert sum(scanned) == 3  # n2, n3, n4; not n1
    assert report.pii_counts == {"phone": 3}


def test_pii_in_messages_given_as_json_text_is_redacted(settings):
    """A CSV cell holds messages as JSON text: they are scanned like a JSON array."""
    messages = json.dumps([{"role": "user", "content": "mail bob@example.com"}])
    land(settings, DAY, "a.csv", "log_id,ts,input,output,messages\n"
         f'c1,2026-11-20T09:00:00Z,hi,ok,"{messages.replace(chr(34), chr(34) * 2)}"\n')
    report = ingest(settings)
    (stored, pii), = rows(settings, "SELECT messages, pii FROM logs")
    assert json.loads(stored) == [{"role": "user", "content": "mail [EMAIL]"}]
    assert pii == ["email"] and report.pii_counts == {"email": 1}


def test_missing_landing_folder_is_an_empty_day_when_asked_for(settings):
    with store.connection(settings) as con:
        report = ingest_day(con, settings, DAY, allow_empty=True)
    assert report.files == [] and report.reconciles
    assert rows(settings, "SELECT count(*) FROM logs") == [(0,)]


def test_pii_fixups_land_on_their_own_record_when_records_share_a_line(settings):
    # One OTLP/JSON document per line: several spans share a line number.
    def span(span_id: str, text: str) -> dict:
        messages = json.dumps([{"role": "user", "parts": [{"type": "text", "content": text}]}])
        answer = json.dumps([{"role": "assistant", "parts": [{"type": "text", "content": "Noted."}]}])
        attrs = [
            {"key": "gen_ai.operation.name", "value": {"stringValue": "chat"}},
            {"key": "gen_ai.request.model", "value": {"stringValue": "gpt-4o"}},
            {"key": "gen_ai.input.messages", "value": {"stringValue": messages}},
            {"key": "gen_ai.output.messages", "value": {"stringValue": answer}},
        ]
        return {"traceId": "5b8efff798038103d269b633813fc60c", "spanId": span_id, "name": "chat gpt-4o",
                "startTimeUnixNano": "1763630100000000000", "endTimeUnixNano": "1763630101000000000",
                "attributes": attrs}

    texts = {"aaaaaaaaaaaaaaa1": "plain question", "aaaaaaaaaaaaaaa2": "mail me: a.b@example.com",
             "aaaaaaaaaaaaaaa3": "another plain one", "aaaaaaaaaaaaaaa4": "call +44 20 7946 0958"}
    document = {"resourceSpans": [{"resource": {"attributes": []}, "scopeSpans": [
        {"scope": {"name": "test"}, "spans": [span(k, v) for k, v in texts.items()]}]}]}
    land(settings, DAY, "spans.jsonl", json.dumps(document) + "\n")
    report = ingest(settings)
    got = dict(rows(settings, "SELECT log_id, input FROM logs"))
    assert got == {"aaaaaaaaaaaaaaa1": "plain question", "aaaaaaaaaaaaaaa2": "mail me: [EMAIL]",
                   "aaaaaaaaaaaaaaa3": "another plain one", "aaaaaaaaaaaaaaa4": "call [PHONE]"}
    assert report.total("duplicates") == 0 and report.reconciles


# --- the fast path and the detailed path ------------------------------------------------

def _varied_records() -> list:
    """Good records that exercise every conversion, with broken and PII lines between."""
    return [
        good("v-1", context="[docs/billing] The plan costs $9.", tags=["billing"], metadata={"turn": 1}),
        good("v-2", ts=1763630100, latency_ms="980", prompt_tokens=12, cost_usd=0.0001, feedback=True),
        good("v-3", tags="a, b,, c", feedback="-1", extra_field={"nested": [1, 2]}, another="x"),
        good("v-4", messages=[{"role": "user", "content": "hi"}], model=7, source=None),
        good("v-5", input="[not json] but text", output="{also not json", session_id="s-1"),
        '{"log_id": "broken", ',
        good("v-6", input="mail me at ann@example.com", metadata={"a": "b"}, feedback=None),
        good("v-7", output="[1, 2, 3]"),  # a string that is valid JSON text
        good("v-8", input=["an", "array"]),  # wrong type
        good("v-9", output="  \t "),  # empty output
        good(" ", output="blank id"),  # missing log_id
        good("v-10", ts="2026-11-20 09:14:03+02:00", git_commit="abc", user_id="u-1", prompt_name="p",
             prompt_version="v2", completion_tokens="5"),
        good("v-11", prompt_tokens=-1),
        "",
        good("v-12", context="call +44 20 7946 0958 or use key: sk-abcdefghijklmnopqrstuvwxyz012345"),
        good("\u3000", output="an id of one wide space"),  # trim() makes it empty
        # numbers in text with spaces around them, Unicode ones too (trim() takes those)
        good("v-13", latency_ms=" 980\u00a0", completion_tokens="\u20035 ", feedback="\t1"),
        good("v-14", context={"doc": 1}),  # wrong type: an object
    ]


def test_json_types_told_by_the_first_character_match_json_type():
    """The statements tell a JSON field's type mostly by the first character of the
    parse's text: the same as json_type for every kind of value, however written."""
    import duckdb

    from flywheel.ingest.normalize import _json_type

    values = ['[1, 2]', ' [ ]', '{"a": {"b": []}}', '{ }', '"text"', '"[not an array]"', '" {"', '""', '12',
              '-0.5e3', '1e400', '18446744073709551615', '-9223372036854775808', 'true', 'false', 'null',
              '"\\u00e9t\\u00e9"', '["\\"", {"k": "v"}]']
    con = duckdb.connect()
    structure = '{"tags": "JSON"}'
    for value in values:
        document = '{"tags": ' + value + '}'
        told, expected = con.execute(
            f"SELECT {_json_type('tags')}, json_type(v.tags) FROM (SELECT from_json(?, '{structure}') AS v)",
            [document]).fetchone()
        assert told == expected, (value, told, expected)


@pytest.mark.parametrize("mode", ["redact", "flag", "off"])
def test_fast_and_detailed_paths_give_identical_tables(settings, monkeypatch, mode):
    from flywheel.ingest import loader

    settings = dataclasses.replace(settings, pii_mode=mode)
    land(settings, DAY, "a.jsonl", jsonl(*_varied_records()))
    fast_report = ingest(settings)
    logs_query = "SELECT * EXCLUDE (ingested_at) FROM logs ORDER BY source_line"
    rejected_query = "SELECT * EXCLUDE (rejected_at) FROM rejected_logs ORDER BY line"
    fast = rows(settings, logs_query), rows(settings, rejected_query)
    # The same file through the detailed statement only.
    monkeypatch.setattr(loader, "ONE_RECORD_PER_LINE", ())
    detailed_report = ingest(settings)
    detailed = rows(settings, logs_query), rows(settings, rejected_query)
    assert fast == detailed
    assert fast_report.pii_counts == detailed_report.pii_counts
    accepted = {r[0] for r in fast[0]}
    assert accepted == {"v-1", "v-2", "v-3", "v-4", "v-5", "v-6", "v-7", "v-10", "v-12", "v-13"}
    assert [(r[2], r[3], r[4]) for r in fast[1]] == [
        (6, "invalid JSON", None), (9, "wrong type", "input"), (10, "empty output", "output"),
        (11, "missing required field", "log_id"), (13, "value out of range", "prompt_tokens"),
        (16, "missing required field", "log_id"), (18, "wrong type", "context")]
    by_id = {r[0]: r for r in rows(settings, "SELECT log_id, metadata, pii, input, context, latency_ms, "
                                             "completion_tokens, feedback FROM logs")}
    assert json.loads(by_id["v-3"][1]) == {"extra_field": {"nested": [1, 2]}, "another": "x"}
    assert by_id["v-13"][5:] == (980.0, 5, 1)
    if mode == "off":
        assert by_id["v-6"][2] is None and "ann@example.com" in by_id["v-6"][3]
    else:
        assert by_id["v-6"][2] == ["email"] and by_id["v-12"][2] == ["phone", "secret"]
        assert ("[EMAIL]" in by_id["v-6"][3]) == (mode == "redact")


@pytest.mark.parametrize("stash_bytes", [256 << 20, 0])
def test_bad_lines_in_a_big_file_keep_their_line_numbers(settings, monkeypatch, stash_bytes):
    from flywheel.ingest import loader

    # Small blocks, so that the file is read in many batches and bad lines fall on
    # batch edges too; without a stash, the records left out are read again.
    monkeypatch.setattr(loader, "LINES_BLOCK_BYTES", 50_000)
    monkeypatch.setattr(loader, "STASH_BYTES", stash_bytes)
    bad = {2: "{not json", 997: '{"log_id": 5}', 1500: "[1, 2]", 2999: '{"log_id": "x", "ts": '}
    lines = [bad.get(i) or json.dumps(good(f"id-{i}", output=f"answer {i}" + "." * (i % 97)
                                           + (" write to a@example.org" if i % 500 == 7 else "")))
             for i in range(1, 3001)]
    land(settings, DAY, "big.jsonl", "\n".join(lines))  # no newline after the last line
    report = ingest(settings)
    f = report.files[0]
    assert (f.read, f.accepted, f.rejected) == (3000, 2996, 4) and f.reconciles
    assert rows(settings, "SELECT line, reason FROM rejected_logs ORDER BY line") == [
        (2, "invalid JSON"), (997, "missing required field"), (1500, "not a JSON object"),
        (2999, "invalid JSON")]
    # Every accepted record carries its own line number.
    assert rows(settings, "SELECT count(*) FROM logs WHERE log_id <> 'id-' || source_line") == [(0,)]
    assert rows(settings, "SELECT max(source_line) FROM logs") == [(3000,)]
    # The PII lines were held back, scrubbed and stored on their own line.
    assert rows(settings, "SELECT source_line FROM logs WHERE pii IS NOT NULL ORDER BY 1") == [
        (i,) for i in range(7, 3001, 500)]
    assert rows(settings, "SELECT count(*) FROM logs WHERE output LIKE '%[EMAIL]%'") == [(6,)]


# --- the DuckLake storage mode ------------------------------------------------------------

def _day_tables(settings, day=DAY) -> dict[str, list[tuple]]:
    """The day's rows of every table the ingest writes, without the clock columns."""
    queries = {
        "logs": "SELECT * EXCLUDE (ingested_at) FROM logs WHERE day = ? ORDER BY source_file, source_line, log_id",
        "rejected_logs": "SELECT * EXCLUDE (rejected_at) FROM rejected_logs WHERE day = ? ORDER BY source_file, line",
        "duplicate_logs": "SELECT * FROM duplicate_logs WHERE day = ? ORDER BY source_file, line",
        "ingest_files": "SELECT * EXCLUDE (ingested_at) FROM ingest_files WHERE day = ? ORDER BY source_file",
    }
    with store.connection(settings, read_only=True) as con:
        return {name: con.execute(sql, [day]).fetchall() for name, sql in queries.items()}


def test_lake_mode_stores_the_same_tables_as_duckdb_mode(tmp_path):
    """Bad records, PII, duplicates (within the day and from an earlier day) and every
    format, ingested twice in each storage mode: the lake holds exactly what the DuckDB
    file holds."""
    from flywheel.settings import load

    tables = {}
    for storage in ("duckdb", "ducklake"):
        settings = load({"FLYWHEEL_HOME": str(tmp_path / storage), "FLYWHEEL_STORAGE": storage,
                         "FLYWHEEL_DUCKDB_THREADS": "2"})
        land(settings, "2026-11-19", "a.jsonl", jsonl(good("v-1"), good("earlier")))
        ingest(settings, "2026-11-19")
        land(settings, DAY, "a.jsonl", jsonl(*_varied_records(), good("earlier"), good("v-2", output="again")))
        for path in (FIXTURES / "logs").iterdir():
            if path.name not in ("README.md", "make_parquet.py"):
                shutil.copy(path, settings.landing_for(DAY) / path.name)
        ingest(settings)
        report = ingest(settings)  # a re-run replaces the day
        assert report.reconciles and report.pii_counts["email"] >= 1
        tables[storage] = _day_tables(settings)
    duckdb_mode, lake_mode = tables["duckdb"], tables["ducklake"]
    assert {name: len(got) for name, got in lake_mode.items()} == {name: len(got) for name, got in duckdb_mode.items()}
    for name in duckdb_mode:
        assert lake_mode[name] == duckdb_mode[name], name
    # The day holds what the test put there: rejections, duplicates and scrubbed PII.
    assert {r[3] for r in lake_mode["rejected_logs"]} >= {"invalid JSON", "empty output", "wrong type"}
    assert {(r[1], r[4].isoformat()) for r in lake_mode["duplicate_logs"]} >= {("earlier", "2026-11-19")}
    assert any("[EMAIL]" in (r[4] or "") for r in lake_mode["logs"])


def test_lake_mode_a_day_that_loses_a_commit_race_is_run_again(tmp_path):
    """Another writer commits the same day while this one is half-way: this one's COMMIT
    fails with a conflict (not hidden by the rollback), and the retry replaces the day."""
    from flywheel.settings import load

    settings = load({"FLYWHEEL_HOME": str(tmp_path / "home"), "FLYWHEEL_STORAGE": "ducklake",
                     "FLYWHEEL_DUCKDB_THREADS": "1"})
    land(settings, DAY, "a.jsonl", jsonl(good("a"), good("b"), "{oops", good("a")))
    ingest(settings)
    attempts = []

    def meanwhile(_message: str) -> None:
        if "rival" not in attempts:  # only during the first attempt: a rival run of the same day
            attempts.append("rival")
            ingest(settings)

    with store.connection(settings) as con:
        def once():
            attempts.append("ours")
            return ingest_day(con, settings, DAY, progress=meanwhile)

        with pytest.raises(Exception) as lost:
            once()
        assert store.is_conflict(lost.value), lost.value
        assert "no transaction is active" not in str(lost.value)  # the conflict itself, not hidden
        report = store.retry_conflicts(once)
    assert attempts == ["ours", "rival", "ours"]
    assert (report.total("read"), report.total("accepted"), report.total("rejected"),
            report.total("duplicates")) == (4, 2, 1, 1)
    tables = _day_tables(settings)
    assert [r[0] for r in tables["logs"]] == ["a", "b"]
    assert len(tables["rejected_logs"]) == len(tables["duplicate_logs"]) == len(tables["ingest_files"]) == 1


def test_second_look_scans_the_strings_the_prefilter_matches_in_one_pass():
    """The second look tests the strings of messages, tags and metadata with the prefilter
    all at once (RE2 in Arrow) and scans those it matches: the same fix-ups as scanning
    every string, also for a string Arrow cannot hold (a lone surrogate: tested in Python)."""
    from flywheel import pii
    from flywheel.ingest import loader

    messages = [{"role": "system", "content": "Be brief."}, {"role": "user", "content": "mail bob@example.com"},
                {"role": "assistant", "content": "call +1 415 555 0134 or not"}]
    metadata = {"note": "api key: sk-abcdefghijklmnopqrstuvwx0123", "turn": 2, "deep": [{"ip": "10.1.2.3"}]}
    docs = [(0, "hi", None, None, None, None, json.dumps(messages), ["billing", "ann@example.org"],
             json.dumps(metadata)),
            (1, None, None, None, None, None, json.dumps([{"role": "user", "content": "clean"}]), None, None)]
    report = loader.IngestReport(day=DAY, pii_mode="redact")
    fixes = loader._pii_fixes(docs, "redact", report).to_pylist()

    def scanned(value):
        return pii.scan_value(value)[0]

    assert json.loads(fixes[0]["messages"]) == scanned(messages)
    assert fixes[0]["tags"] == scanned(["billing", "ann@example.org"])
    assert json.loads(fixes[0]["metadata"]) == scanned(metadata)
    assert fixes[0]["pii"] == ["email", "ip", "phone", "secret"]
    assert fixes[1]["pii"] is None and fixes[1]["messages"] is None

    lone = "\ud800 write to ann@example.org"
    scan = loader._PrefilteredScan([(0, [], [{"role": "user", "content": lone}, {"content": "plain"}], None, None)])
    found = scan(lone)
    assert found == pii.scan(lone) and found[1] == {"email"}
    assert scan("plain") == ("plain", frozenset())
