"""Hostile input to the ingest (#13): empty days, poison records, impossible values and
cross-day duplicates in any order. Every record read ends up accepted, rejected with a
reason, or counted as a duplicate; a bad record costs only itself."""

from __future__ import annotations

import gzip
import json
import shutil
import time
import zlib

import dagster as dg
import pytest
from typer.testing import CliRunner

from assets.ingest import logs
from assets.resources import FlywheelResource
from flywheel import store
from flywheel.ingest.loader import EmptyLandingFolder, ingest_day
from jobs.cli import app
from tests.conftest import FIXTURES, land, rows

DAY = "2026-11-20"


def good(log_id: str, **fields) -> dict:
    record = {"log_id": log_id, "ts": f"{DAY}T09:14:03Z", "source": "support-bot",
              "input": "How do I change my billing email?", "output": "Settings > Billing."}
    record.update(fields)
    return record


def jsonl(*records) -> str:
    return "".join((r if isinstance(r, str) else json.dumps(r)) + "\n" for r in records)


def ingest(settings, day=DAY, **options):
    with store.connection(settings) as con:
        return ingest_day(con, settings, day, **options)


def day_counts(settings, day=DAY) -> tuple:
    return rows(settings, """SELECT (SELECT count(*) FROM logs WHERE day = $d), (SELECT count(*) FROM rejected_logs WHERE day = $d),
                             (SELECT count(*) FROM duplicate_logs WHERE day = $d), (SELECT count(*) FROM ingest_files WHERE day = $d)""",
                {"d": day})[0]


# --- empty days -------------------------------------------------------------------------

@pytest.mark.parametrize("landing", ["missing", "empty", "hidden files only"])
def test_an_empty_landing_folder_does_not_replace_a_stored_day(settings, landing):
    land(settings, DAY, "a.jsonl", jsonl(good("a"), good("b"), "{broken", good("a")))
    ingest(settings)
    before = day_counts(settings)
    assert before == (2, 1, 1, 1)
    shutil.rmtree(settings.landing_for(DAY))
    if landing != "missing":
        settings.landing_for(DAY).mkdir(parents=True)
    if landing == "hidden files only":
        (settings.landing_for(DAY) / ".a.jsonl.partial").write_text(jsonl(good("c")))
    with pytest.raises(EmptyLandingFolder) as refused:
        ingest(settings)
    message = str(refused.value)
    assert "\n" not in message and f"landing/{DAY}" in message and "--allow-empty" in message
    assert "2 logs" in message  # says what would have been lost
    assert day_counts(settings) == before
    # Asked for explicitly, the day is stored empty (and says so).
    said = []
    report = ingest(settings, allow_empty=True, progress=said.append)
    assert report.files == [] and day_counts(settings) == (0, 0, 0, 0)
    assert any("holds 0 files" in line for line in said)


def test_the_logs_asset_refuses_an_empty_day_at_once_and_takes_allow_empty_as_config(settings):
    land(settings, DAY, "a.jsonl", jsonl(good("a")))
    ingest(settings)
    shutil.rmtree(settings.landing_for(DAY))
    resources = {"flywheel": FlywheelResource(home=str(settings.home))}
    with dg.instance_for_test() as instance:
        started = time.monotonic()
        result = dg.materialize([logs], partition_key=DAY, instance=instance, resources=resources,
                                raise_on_error=False)
        assert not result.success
        assert time.monotonic() - started < 10  # not retried: trying again changes nothing
        (failure,) = [e for e in result.all_events if e.is_step_failure]
        assert "refusing to replace" in failure.step_failure_data.error.message
        assert [e for e in result.all_events if e.event_type_value == "STEP_UP_FOR_RETRY"] == []
        assert day_counts(settings)[0] == 1
        allowed = dg.materialize([logs], partition_key=DAY, instance=instance, resources=resources,
                                 run_config={"ops": {"logs": {"config": {"allow_empty": True}}}})
        assert allowed.success
        warnings = [e.message for e in instance.all_logs(allowed.run_id) if e.level == 30]
        assert any("holds 0 files" in m for m in warnings), warnings
    assert day_counts(settings) == (0, 0, 0, 0)


def test_flywheel_run_refuses_an_empty_day_in_one_line_and_allow_empty_empties_it(settings, monkeypatch, tmp_path):
    monkeypatch.setenv("FLYWHEEL_HOME", str(settings.home))
    monkeypatch.setenv("DAGSTER_HOME", str(tmp_path / "dagster"))
    (tmp_path / "dagster").mkdir()
    land(settings, DAY, "a.jsonl", jsonl(good("a"), good("b")))
    ingest(settings)
    shutil.rmtree(settings.landing_for(DAY))
    result = CliRunner().invoke(app, ["run", "--day", DAY])
    assert result.exit_code == 1, result.output
    failures = [line.strip() for line in result.output.splitlines() if line.strip().startswith("step logs failed")]
    assert len(failures) == 1 and "refusing to replace the 2 logs" in failures[0], result.output
    assert f"ingest {DAY}: ok" not in result.output
    assert day_counts(settings)[0] == 2
    allowed = CliRunner().invoke(app, ["run", "--day", DAY, "--allow-empty"])
    assert f"ingest {DAY}: ok" in allowed.output, allowed.output
    assert day_counts(settings) == (0, 0, 0, 0)


# --- impossible values --------------------------------------------------------------------

IMPOSSIBLE = [
    # (record fields, rejected field)
    ({"latency_ms": "NaN"}, "latency_ms"),
    ({"latency_ms": "Infinity"}, "latency_ms"),
    ({"latency_ms": "-Infinity"}, "latency_ms"),
    ({"cost_usd": 1.7e308}, "cost_usd"),
    ({"latency_ms": 4e6}, "latency_ms"),
    ({"prompt_tokens": 5_000_000}, "prompt_tokens"),
    ({"completion_tokens": 9_000_000}, "completion_tokens"),
]
FAR = "timestamp too far from the day"
FAR_TIMESTAMPS = [("99999-01-01T00:00:00Z", FAR), ("1900-01-01T00:00:00Z", FAR), ("2046-11-20T00:00:00Z", FAR), (0, FAR),
                  # Seconds beyond any timestamp: no timestamp (and no error stopping the day).
                  (1e300, "unparseable timestamp")]


def _value_lines() -> list:
    lines = [good("fine-1", latency_ms=3_599_999, cost_usd=999.0, prompt_tokens=2_000_000)]
    lines += [good(f"bad-{i}", **fields) for i, (fields, _) in enumerate(IMPOSSIBLE)]
    lines += [good(f"far-{i}", ts=ts) for i, (ts, _) in enumerate(FAR_TIMESTAMPS)]
    # Near the day is fine: a late or early record, a time zone off.
    lines += [good("near-1", ts="2026-11-19T22:00:00-05:00"), good("near-2", ts="2026-10-01T00:00:00Z")]
    return lines


@pytest.mark.parametrize("path", ["fast", "detailed"])
def test_impossible_values_and_far_timestamps_cost_only_their_record(settings, monkeypatch, path):
    from flywheel.ingest import loader
    from flywheel.quality import check_partition

    if path == "detailed":
        monkeypatch.setattr(loader, "ONE_RECORD_PER_LINE", ())
    land(settings, DAY, "a.jsonl", jsonl(*_value_lines()))
    report = ingest(settings)
    got = rows(settings, "SELECT line, reason, field FROM rejected_logs ORDER BY line")
    expected = [(i + 2, "value out of range", name) for i, (_, name) in enumerate(IMPOSSIBLE)]
    first_far = len(IMPOSSIBLE) + 2
    expected += [(first_far + i, reason, "ts") for i, (_, reason) in enumerate(FAR_TIMESTAMPS)]
    assert got == expected
    assert sorted(r[0] for r in rows(settings, "SELECT log_id FROM logs")) == ["fine-1", "near-1", "near-2"]
    assert report.reconciles
    # The day passes its blocking checks: nothing impossible was stored.
    with store.connection(settings) as con:
        outcomes = {o.name: o.passed for o in check_partition(con, DAY, max_rejected_share=1.0)}
    assert outcomes["value_ranges"], outcomes


def test_the_timestamp_window_is_a_setting(settings):
    land(settings, DAY, "a.jsonl", jsonl(good("near", ts="2026-11-10T00:00:00Z"), good("today")))
    ingest(settings)
    assert rows(settings, "SELECT count(*) FROM logs") == [(2,)]
    strict = settings.replace(max_ts_skew_days=2)
    ingest(strict)
    assert rows(settings, "SELECT log_id FROM logs") == [("today",)]
    assert rows(settings, "SELECT reason, field FROM rejected_logs") == [("timestamp too far from the day", "ts")]


def test_impossible_values_in_csv_and_parquet_cost_only_their_row(settings):
    import pyarrow as pa
    import pyarrow.parquet as pq

    land(settings, DAY, "a.csv", "log_id,ts,input,output,latency_ms,cost_usd\n"
         f"c1,{DAY}T10:00:00Z,q,a,12,0.1\nc2,{DAY}T10:00:00Z,q,a,NaN,0.1\n"
         f"c3,{DAY}T10:00:00Z,q,a,inf,0.1\nc4,{DAY}T10:00:00Z,q,a,5,1.7e308\n")
    table = pa.table({"log_id": ["p1", "p2", "p3"], "ts": [f"{DAY}T10:00:00Z"] * 3, "input": ["q"] * 3,
                      "output": ["a"] * 3, "latency_ms": [10.0, float("nan"), float("inf")]})
    pq.write_table(table, settings.landing_for(DAY) / "b.parquet")
    report = ingest(settings)
    assert sorted(r[0] for r in rows(settings, "SELECT log_id FROM logs")) == ["c1", "p1"]
    assert rows(settings, "SELECT source_file, line, reason, field FROM rejected_logs ORDER BY 1, 2") == [
        (f"landing/{DAY}/a.csv", 3, "value out of range", "latency_ms"),
        (f"landing/{DAY}/a.csv", 4, "value out of range", "latency_ms"),
        (f"landing/{DAY}/a.csv", 5, "value out of range", "cost_usd"),
        (f"landing/{DAY}/b.parquet", 2, "value out of range", "latency_ms"),
        (f"landing/{DAY}/b.parquet", 3, "value out of range", "latency_ms"),
    ]
    assert report.reconciles and not report.unreadable


# --- cross-day duplicates, whatever order the days come in --------------------------------

DAYS = ["2026-11-18", "2026-11-19", "2026-11-20"]


def _land_overlapping_days(settings) -> None:
    """Three days sharing log ids: `s` on every day, `a` twice on the last day and once on
    the first, `b` on the last two, `c` once."""
    land(settings, DAYS[2], "x.jsonl", jsonl(good("s", output="third"), good("a", output="third"),
                                              good("b", output="third"), good("a", output="third again")))
    land(settings, DAYS[1], "y.jsonl", jsonl(good("b", output="second"), good("s", output="second")))
    land(settings, DAYS[0], "z.jsonl", jsonl(good("c"), good("a", output="first"), good("s", output="first")))


def _all_tables(settings) -> dict[str, list[tuple]]:
    queries = {
        "logs": "SELECT * EXCLUDE (ingested_at) FROM logs ORDER BY ALL",
        "duplicate_logs": "SELECT * FROM duplicate_logs ORDER BY ALL",
        "duplicate_rows": "SELECT * EXCLUDE (ingested_at) FROM duplicate_rows ORDER BY ALL",
        "ingest_files": "SELECT * EXCLUDE (ingested_at) FROM ingest_files ORDER BY ALL",
    }
    with store.connection(settings, read_only=True) as con:
        return {name: con.execute(sql).fetchall() for name, sql in queries.items()}


@pytest.mark.parametrize("storage", ["duckdb", "ducklake"])
def test_which_day_keeps_a_duplicate_does_not_depend_on_the_ingest_order(tmp_path, storage):
    from flywheel.settings import load

    orders = [DAYS, DAYS[::-1], [DAYS[1], DAYS[2], DAYS[0]], [DAYS[2], DAYS[0], DAYS[1], DAYS[2], DAYS[0]]]
    tables = []
    for i, order in enumerate(orders):
        settings = load({"FLYWHEEL_HOME": str(tmp_path / f"home-{i}"), "FLYWHEEL_STORAGE": storage,
                         "FLYWHEEL_DUCKDB_THREADS": "1"})
        _land_overlapping_days(settings)
        for day in order:
            ingest(settings, day)
        tables.append(_all_tables(settings))
        if i == 0:
            # The earliest day keeps each id; every other copy is a duplicate naming it.
            kept = {(r[0], r[2].isoformat(), r[5]) for r in tables[0]["logs"]}
            assert kept == {("c", DAYS[0], good("c")["output"]), ("a", DAYS[0], "first"), ("s", DAYS[0], "first"),
                            ("b", DAYS[1], "second")}
            dups = {(r[1], r[0].isoformat(), r[4].isoformat()) for r in tables[0]["duplicate_logs"]}
            assert dups == {("s", DAYS[1], DAYS[0]), ("s", DAYS[2], DAYS[0]), ("a", DAYS[2], DAYS[0]),
                            ("b", DAYS[2], DAYS[1])} and len(tables[0]["duplicate_logs"]) == 5
            assert len(tables[0]["duplicate_rows"]) == 5
            counts = {(r[0].isoformat(), r[3], r[4], r[6]) for r in tables[0]["ingest_files"]}
            assert counts == {(DAYS[0], 3, 3, 0), (DAYS[1], 2, 1, 1), (DAYS[2], 4, 0, 4)}
    for other in tables[1:]:
        assert other == tables[0]


def test_ingesting_a_day_again_without_the_kept_copy_brings_the_next_copy_back(settings):
    _land_overlapping_days(settings)
    for day in DAYS:
        ingest(settings, day)
    # The first day is landed again without `a` and `s`: the next copies take their place.
    (settings.landing_for(DAYS[0]) / "z.jsonl").write_text(jsonl(good("c")))
    ingest(settings, DAYS[0])
    kept = dict(((log_id, day.isoformat()), output) for log_id, day, output in
                rows(settings, "SELECT log_id, day, output FROM logs"))
    assert kept == {("c", DAYS[0]): good("c")["output"], ("a", DAYS[2]): "third", ("s", DAYS[1]): "second",
                    ("b", DAYS[1]): "second"}
    dups = rows(settings, "SELECT log_id, day::VARCHAR, line, first_day::VARCHAR, first_line FROM duplicate_logs ORDER BY ALL")
    assert dups == [("a", DAYS[2], 4, DAYS[2], 2), ("b", DAYS[2], 3, DAYS[1], 1), ("s", DAYS[2], 1, DAYS[1], 2)]
    # The same tables as a home that only ever saw these files.
    fresh = settings.replace(home=settings.home.parent / "fresh")
    _land_overlapping_days(fresh)
    (fresh.landing_for(DAYS[0]) / "z.jsonl").write_text(jsonl(good("c")))
    for day in DAYS:
        ingest(fresh, day)
    assert _all_tables(fresh) == {name: [tuple(r) for r in got] for name, got in _all_tables(settings).items()}


# --- poison records cost only themselves ----------------------------------------------------

DEEP = '{"log_id": "deep", "ts": "2026-11-20T09:00:00Z", "input": "q", "output": "a", "metadata": ' + "[" * 3000 + "]" * 3000 + "}"


def rejected(settings) -> list[tuple]:
    return rows(settings, "SELECT regexp_extract(source_file, '[^/]+$'), line, reason, field FROM rejected_logs ORDER BY ALL")


def test_a_record_nested_thousands_deep_costs_only_itself(settings):
    lines = [good(f"id-{i}") for i in range(6)]
    deep_object = json.dumps(good("deep-object"))[:-1] + ', "metadata": ' + '{"a": ' * 3000 + "1" + "}" * 3000 + "}"
    land(settings, DAY, "a.jsonl", jsonl(*lines[:2], DEEP, *lines[2:], deep_object))
    report = ingest(settings)
    # Deep metadata that is an object is fine (DuckDB parses it); a list is the wrong type.
    assert rows(settings, "SELECT count(*) FROM logs") == [(7,)]
    assert rejected(settings) == [("a.jsonl", 3, "wrong type", "metadata")]
    assert report.reconciles and report.total("read") == 8


def test_a_utf8_byte_order_mark_costs_no_record(settings):
    body = jsonl(good("j1"), good("j2"))
    land(settings, DAY, "a.jsonl", b"\xef\xbb\xbf" + body.encode())
    land(settings, DAY, "b.jsonl.gz", gzip.compress(b"\xef\xbb\xbf" + jsonl(good("g1")).encode()))
    land(settings, DAY, "c.csv", b"\xef\xbb\xbflog_id,ts,input,output\nc1," + f"{DAY}T10:00:00Z,q,a\n".encode())
    report = ingest(settings)
    assert sorted(r[0] for r in rows(settings, "SELECT log_id FROM logs")) == ["c1", "g1", "j1", "j2"]
    assert rejected(settings) == [] and report.reconciles


def _gzip_cut(text: str, keep: float = 0.5) -> bytes:
    whole = gzip.compress(text.encode())
    return whole[: int(len(whole) * keep)]


def test_a_truncated_gzip_keeps_every_record_that_decompresses(settings):
    n = 3000
    land(settings, DAY, "a.jsonl.gz", _gzip_cut(jsonl(*[good(f"j{i}", output=f"answer {i} " * 20) for i in range(n)])))
    land(settings, DAY, "b.csv.gz", _gzip_cut("log_id,ts,input,output\n"
                                             + "".join(f"c{i},{DAY}T10:00:00Z,q,answer {i} {'x' * 150}\n" for i in range(n))))
    report = ingest(settings)
    by_name = {f.source_file.rsplit("/", 1)[-1]: f for f in report.files}
    for name, prefix in (("a.jsonl.gz", "j"), ("b.csv.gz", "c")):
        f = by_name[name]
        assert f.partial and "truncated gzip" in f.error and f.reconciles, f
        # Every record before the cut is there, in order, and the cut one is rejected.
        (kept, top), = rows(settings, f"SELECT count(*), max(source_line) FROM logs WHERE log_id LIKE '{prefix}%'")
        assert kept > n // 4 and kept == f.accepted == f.read - 1
        ((line, reason),) = rows(settings, "SELECT line, reason FROM rejected_logs WHERE source_file LIKE ?", [f"%{name}"])
        assert line == top + 1 and reason.startswith("truncated gzip stream")
        # The kept records are all those before the cut: every whole line that decompresses.
        prefix = zlib.decompressobj(wbits=31).decompress((settings.landing_for(DAY) / name).read_bytes())
        assert kept == prefix.count(b"\n") - (1 if name.endswith(".csv.gz") else 0)
    assert report_row(settings, "a.jsonl.gz")[0].startswith("truncated gzip stream")


def report_row(settings, name):
    return rows(settings, "SELECT error, read, accepted, rejected FROM ingest_files WHERE source_file LIKE ?", [f"%{name}"])[0]


def test_a_ragged_csv_row_costs_only_itself_with_its_exact_line(settings):
    land(settings, DAY, "a.csv",
         "log_id,ts,input,output\n"
         f"c1,{DAY}T10:00:00Z,q,a\n"
         f'c2,{DAY}T10:00:00Z,"a question\nover two lines",a\n'
         f"c3,{DAY}T10:00:00Z,q,a,one cell too many\n"
         f"c4,{DAY}T10:00:00Z,q\n"
         "\n"
         f"c5,{DAY}T10:00:00Z,q,a\n")
    report = ingest(settings)
    assert rows(settings, "SELECT log_id, source_line FROM logs ORDER BY 2") == [("c1", 2), ("c2", 3), ("c5", 8)]
    assert rows(settings, "SELECT line, reason, raw FROM rejected_logs ORDER BY line") == [
        (5, "wrong number of cells: 5, the header has 4", f"c3,{DAY}T10:00:00Z,q,a,one cell too many"),
        (6, "wrong number of cells: 3, the header has 4", f"c4,{DAY}T10:00:00Z,q"),
    ]
    f = report.files[0]
    assert (f.read, f.accepted, f.rejected, f.error) == (5, 3, 2, None)


def test_a_first_line_nested_thousands_deep_or_in_another_format_costs_only_itself(settings):
    chat = (FIXTURES / "logs" / "openai_chat.jsonl").read_text().splitlines(keepends=True)
    land(settings, DAY, "a.jsonl", jsonl(DEEP, good("after-1"), good("after-2")))
    land(settings, DAY, "b.jsonl", "".join(chat[:1]) + DEEP + "\n" + "".join(chat[1:]))
    report = ingest(settings)
    by_name = {f.source_file.rsplit("/", 1)[-1]: f for f in report.files}
    assert by_name["a.jsonl"].format == "canonical_jsonl" and by_name["a.jsonl"].accepted == 2
    assert by_name["b.jsonl"].format == "openai_chat" and not by_name["b.jsonl"].error
    assert ("b.jsonl", 2, "invalid JSON: nested too deeply", None) in rejected(settings)
    assert [r[:2] for r in rejected(settings) if r[0] == "a.jsonl"] == [("a.jsonl", 1)]
    assert report.reconciles


def test_a_line_that_is_not_utf8_early_in_a_file_costs_only_itself(settings):
    bad = b'{"log_id": "bad\xff\xfe", "ts": "2026-11-20T09:00:00Z", "input": "q", "output": "a"}\n'
    land(settings, DAY, "a.jsonl", jsonl(good("j1")).encode() + bad + jsonl(good("j2")).encode())
    land(settings, DAY, "b.csv", f"log_id,ts,input,output\nc1,{DAY}T10:00:00Z,q,a\n".encode()
         + f"c2,{DAY}T10:00:00Z,q\xff,a\n".encode("latin-1") + f"c3,{DAY}T10:00:00Z,q,a\n".encode())
    chat = (FIXTURES / "logs" / "openai_chat.jsonl").read_bytes()
    land(settings, DAY, "c.jsonl", chat.replace(b"HR assistant", b"HR \xff assistant", 1))
    report = ingest(settings)
    by_name = {f.source_file.rsplit("/", 1)[-1]: f for f in report.files}
    assert not report.unreadable, [(f.source_file, f.error) for f in report.unreadable]
    assert sorted(r[0] for r in rows(settings, "SELECT log_id FROM logs WHERE source_format LIKE 'canonical%'")) == [
        "c1", "c3", "j1", "j2"]
    bad_lines = [r[:3] for r in rejected(settings) if r[2] == "not valid UTF-8"]
    assert bad_lines == [("a.jsonl", 2, "not valid UTF-8"), ("b.csv", 3, "not valid UTF-8"),
                         ("c.jsonl", 1, "not valid UTF-8")]
    assert by_name["c.jsonl"].accepted > 0 and report.reconciles


def test_a_small_truncated_gzip_keeps_what_decompresses_in_every_json_format(settings):
    land(settings, DAY, "a.jsonl.gz", _gzip_cut(jsonl(*[good(f"j{i}", output="x" * 200) for i in range(200)])))
    chat = (FIXTURES / "logs" / "openai_chat.jsonl").read_text()
    land(settings, DAY, "b.jsonl.gz", _gzip_cut(chat * 3, keep=0.8))
    report = ingest(settings)
    by_name = {f.source_file.rsplit("/", 1)[-1]: f for f in report.files}
    for name in ("a.jsonl.gz", "b.jsonl.gz"):
        f = by_name[name]
        assert f.partial and "truncated gzip" in f.error and f.accepted > 0 and f.reconciles, f
    assert by_name["b.jsonl.gz"].format == "openai_chat"


def test_an_annotation_record_nested_thousands_deep_costs_only_itself(settings):
    from flywheel.annotations import import_inbox

    land(settings, DAY, "logs.jsonl", jsonl(good("l-1"), good("l-2")))
    ingest(settings)
    settings.annotations_inbox.mkdir(parents=True)
    deep = '{"log_id": "l-1", "annotator": "a", "label": "hallucination", "value": ' + "[" * 3000 + "]" * 3000 + "}"
    label = json.dumps({"log_id": "l-2", "annotator": "a", "label": "hallucination", "value": "yes"})
    (settings.annotations_inbox / "a.jsonl").write_text(deep + "\n" + label + "\n")
    (settings.annotations_inbox / "b.jsonl").write_text(label.replace("l-2", "l-1") + "\n" + deep + "\n")
    (settings.annotations_inbox / "c.json").write_text("[" + label.replace('"a"', '"c"') + ",\n" + deep + "]")
    (settings.annotations_inbox / "d.jsonl").write_text(label.replace('"a"', '"d"') + "\n")
    with store.connection(settings) as con:
        report = import_inbox(con, settings)
    files = {f.source_file.rsplit("/", 1)[-1]: f for f in report.files}
    assert (files["a.jsonl"].accepted, files["a.jsonl"].rejected) == (1, 1)
    assert (files["b.jsonl"].accepted, files["b.jsonl"].rejected) == (1, 1)
    assert (files["c.json"].accepted, files["c.json"].rejected) == (1, 1)
    assert files["d.jsonl"].accepted == 1  # the files after them are imported too
    reasons = rows(settings, "SELECT regexp_extract(source_file, '[^/]+$'), line, detail FROM rejected_annotations ORDER BY 1")
    assert [(name, line) for name, line, _ in reasons] == [("a.jsonl", 1), ("b.jsonl", 2), ("c.json", 2)]
    assert all("nested too deeply" in (detail or "") for _, _, detail in reasons), reasons
