"""The fast paths of the log formats (flywheel.ingest.fast) give the very tables the
per-record Python mappers give: every column of `logs` (but the ingest time), the
rejections with their reasons, the duplicates and the per-file counts.

Each case ingests one landing folder twice into fresh homes, once with the fast paths
and once with ``fast_formats=False``, and compares the tables row for row. The inputs
are demo days (the demo's own writers), the tool-written fixtures, the hand-made fixture
logs, and demo lines bent into the shapes the fast statement must leave to Python.
"""

from __future__ import annotations

import base64
import gzip
import json
import shutil
from datetime import date
from pathlib import Path

import pytest

from flywheel import store
from flywheel.demo import DemoSpec, _attr, generate
from flywheel.ingest.loader import ingest_day
from flywheel.settings import load
from tests.conftest import FIXTURES

DAY = "2026-01-01"
# The columns of `logs` in table order (the rows ``_ingest`` returns are in it).
_LOG_NAMES = [
    "log_id", "ts", "day", "source", "input", "output", "context", "model", "prompt_name", "prompt_version",
    "feedback", "messages", "git_commit", "session_id", "user_id", "latency_ms", "prompt_tokens",
    "completion_tokens", "cost_usd", "tags", "metadata", "pii", "source_file", "source_format", "source_line",
]
TABLES = {
    "logs": "* EXCLUDE (ingested_at)",
    "rejected_logs": "* EXCLUDE (rejected_at)",
    "duplicate_logs": "*",
    "ingest_files": "* EXCLUDE (ingested_at)",
}


def _ingest(home: Path, files: list[Path], *, fast_formats: bool, pii_mode: str = "redact") -> tuple[dict, object]:
    """Ingest ``files`` as the day DAY of a fresh home; return its tables (sorted rows) and report."""
    settings = load({"FLYWHEEL_HOME": str(home), "FLYWHEEL_PII_MODE": pii_mode})
    landing = settings.landing_for(DAY)
    landing.mkdir(parents=True)
    for path in files:
        shutil.copy(path, landing / path.name)
    with store.connection(settings) as con:
        report = ingest_day(con, settings, DAY, fast_formats=fast_formats)
        tables = {
            table: sorted(con.execute(f"SELECT {columns} FROM {table}").fetchall(), key=repr)
            for table, columns in TABLES.items()
        }
    return tables, report


def assert_same_both_ways(tmp_path: Path, files: list[Path], *, pii_mode: str = "redact") -> dict:
    """Ingest ``files`` both ways; assert identical tables and reports; return the tables."""
    fast, fast_report = _ingest(tmp_path / "fast", files, fast_formats=True, pii_mode=pii_mode)
    slow, slow_report = _ingest(tmp_path / "python", files, fast_formats=False, pii_mode=pii_mode)
    for table in TABLES:
        assert len(fast[table]) == len(slow[table]), table
        for fast_row, slow_row in zip(fast[table], slow[table]):
            assert fast_row == slow_row, table
    assert fast_report.pii_counts == slow_report.pii_counts
    assert fast_report.rejected_reasons == slow_report.rejected_reasons
    assert [(f.source_file, f.read, f.blank_lines, f.ignored, f.error) for f in fast_report.files] == \
        [(f.source_file, f.read, f.blank_lines, f.ignored, f.error) for f in slow_report.files]
    return fast


def demo_day(tmp_path: Path, fmt: str, rows: int = 400) -> list[Path]:
    """Return the landing files of one demo day of ``rows`` records written as ``fmt``."""
    spec = DemoSpec(days=1, rows_per_day=rows, seed=11, start=date.fromisoformat(DAY), format_shares={fmt: 1.0})
    generate(tmp_path / "demo", spec)
    return sorted((tmp_path / "demo" / "landing" / DAY).iterdir())


@pytest.mark.parametrize("fmt", ["openai", "openai_batch", "langfuse", "otel"])
def test_demo_day_is_the_same_both_ways(tmp_path, fmt):
    tables = assert_same_both_ways(tmp_path, demo_day(tmp_path, fmt))
    assert len(tables["logs"]) > 300  # the day was read, not lost on both sides


@pytest.mark.parametrize("pii_mode", ["redact", "flag"])
def test_otel_spans_with_pii_are_the_same_both_ways(tmp_path, pii_mode):
    # The span statement holds PII candidates for the fast path to scrub (redact) or flag
    # itself, as the second look does on the Python path.
    tables = assert_same_both_ways(tmp_path, demo_day(tmp_path, "otel", rows=1500), pii_mode=pii_mode)
    flagged = [row for row in tables["logs"] if row[_LOG_NAMES.index("pii")]]
    assert len(flagged) >= 10  # the demo writes e-mail addresses and phone numbers into some turns
    texts = " ".join(str(row[_LOG_NAMES.index("input")]) + str(row[_LOG_NAMES.index("messages")]) for row in flagged)
    assert ("[EMAIL]" in texts or "[PHONE]" in texts) == (pii_mode == "redact")


def test_fixture_logs_are_the_same_both_ways(tmp_path):
    files = [p for p in (FIXTURES / "tools" / "logs").iterdir()]
    files += [p for p in (FIXTURES / "logs").iterdir() if p.name not in ("README.md", "make_parquet.py")]
    tables = assert_same_both_ways(tmp_path, files)
    assert {row[-2] for row in tables["logs"]} >= {"openai_chat", "otel"}  # source_format


def _bent_openai_lines(lines: list[str]) -> str:
    """Return demo OpenAI lines bent into shapes the fast statement leaves to Python (or
    decides with care), one per line, with blank, broken and duplicate lines among them."""
    records = [json.loads(line) for line in lines if line.strip()]
    out = []

    def bend(i: int, change) -> None:
        record = json.loads(json.dumps(records[i % len(records)]))
        change(record)
        out.append(json.dumps(record, ensure_ascii=False))

    bend(0, lambda r: r.update(latency=1.2345))  # a top-level key the statement does not know
    bend(1, lambda r: r["request"]["messages"][0].update(content="No context here. context: in the middle"))
    bend(2, lambda r: r["request"]["messages"][0].update(content="Rules\n  CONTEXT:   \n\n  the facts  \n"))
    bend(3, lambda r: r["request"]["messages"][0].update(content="Rules\n\u3000context:\u00a0x\u2003"))
    bend(4, lambda r: r["request"]["messages"].insert(0, {"role": "developer", "content": "Context: first\nmore"}))
    bend(5, lambda r: r["request"]["messages"].append({"role": "tool", "content": "retrieved"}))
    bend(6, lambda r: r["response"].update(model=""))
    bend(7, lambda r: r["response"].update(model="other-model"))
    bend(8, lambda r: r["response"]["choices"][0]["message"].update(role=None))
    bend(9, lambda r: r["response"]["choices"][0]["message"].update(content="   "))  # empty output: rejected
    bend(10, lambda r: r.pop("timestamp"))  # falls back to response.created
    bend(11, lambda r: r.update(timestamp="not a time"))  # rejected: unparseable timestamp
    bend(12, lambda r: r["request"].update(metadata={"tags": "a, b", "feedback": "1", "team": "x", "note": None}))
    bend(13, lambda r: r["request"].update(metadata={"source": "elsewhere"}))
    bend(14, lambda r: r["response"]["usage"].update(total_tokens=None, cached=3))
    bend(15, lambda r: r["response"].update(system_fingerprint=None, service_tier="default"))
    bend(16, lambda r: r["request"]["messages"][1].update(content="call me at +1 415 555 0134 or a@b.example"))
    bend(17, lambda r: r["response"]["choices"].append({"index": 1, "message": {"role": "assistant", "content": "x"}}))
    bend(18, lambda r: r["request"].update(temperature=0.30000000000000004, top_p=1e16))
    bend(19, lambda r: r["request"]["messages"][-1].update(content=[{"type": "text", "text": "parts"}]))
    bend(20, lambda r: r["response"].update(id=None))  # an id derived from the content
    bend(21, lambda r: r.update(workload_id=None))
    bend(22, lambda r: r["response"]["choices"][0]["message"].update(refusal="no"))
    bend(23, lambda r: r["request"]["messages"][0].update(content="Ünïcödé \u2028 Context:\r\nré\tsumé \"quoted\" \\ "))
    bend(24, lambda r: r["request"]["messages"][0].update(content="Rules\nContext:\u3000 facts \u2003\n\u00a0"))
    bend(25, lambda r: r["request"]["messages"][0].update(content="Rules\nContext:  \n\u2028 "))  # no context
    bend(26, lambda r: r["request"]["messages"][0].update(content="A\nContext: one\ncontext: two"))
    bend(27, lambda r: r["request"]["messages"][0].update(content="  context: early\nContext: late"))
    # a lone surrogate written as a JSON escape: parsed, but no UTF-8 text can hold it
    bend(28, lambda r: r["response"]["choices"][0]["message"].update(content="LONE-SURROGATE in the answer"))
    out[-1] = out[-1].replace("LONE-SURROGATE", "\\ud800")
    out.insert(5, "")
    out.insert(9, "   \t  ")
    out.insert(12, "{not json")
    out.insert(14, "[1, 2]")
    out.append(out[3])  # a duplicate log id
    out.append(json.dumps(records[0]).replace("}", "}\r", 1).replace("}\r", "}", 1) + "\r")
    return "\n".join(out) + "\n"


def test_bent_openai_lines_are_the_same_both_ways(tmp_path):
    demo = demo_day(tmp_path / "demo", "openai", rows=40)
    lines = demo[0].read_text(encoding="utf-8").splitlines()
    bent = tmp_path / "bent-openai.jsonl"
    bent.write_text(_bent_openai_lines(lines), encoding="utf-8")
    crlf = tmp_path / "crlf-openai.jsonl"
    crlf.write_bytes("\r\n".join(lines[:20]).encode() + b"\r\n")
    tables = assert_same_both_ways(tmp_path, [bent, crlf])
    assert tables["rejected_logs"]  # the broken lines are there, with their reasons
    assert "not valid UTF-8" in {row[3] for row in tables["rejected_logs"]}  # the lone surrogate
    assert tables["duplicate_logs"]


def test_a_file_the_fast_path_cannot_number_is_read_the_python_way(tmp_path):
    demo = demo_day(tmp_path / "demo", "openai", rows=20)
    lines = demo[0].read_text(encoding="utf-8").splitlines()
    bom = tmp_path / "bom-openai.jsonl"
    bom.write_bytes(b"\xef\xbb\xbf" + "\n".join(lines).encode() + b"\n")
    lone_cr = tmp_path / "lone-cr-openai.jsonl"
    lone_cr.write_bytes("\n".join(lines[:5]).encode() + b"\n\r" + "\n".join(lines[5:]).encode() + b"\n")
    array = tmp_path / "array-openai.json"
    array.write_text("[\n" + ",\n".join(lines) + "\n]\n", encoding="utf-8")
    tables = assert_same_both_ways(tmp_path, [bom, lone_cr, array])
    assert len(tables["logs"]) > 0


@pytest.mark.parametrize("fmt, name", [("openai", "openai_chat"), ("otel", "otel")])
def test_a_file_of_many_batches_is_mapped_ahead_the_same_both_ways(tmp_path, monkeypatch, fmt, name):
    """Batches of a few lines: the mapping thread works ahead of the loader over many of
    them, on a connection of its own, and the tables are still those of the Python path."""
    import threading

    import duckdb

    from flywheel.ingest.fast import fast_batches, lines

    monkeypatch.setattr(lines, "FAST_BLOCK_BYTES", 24 << 10)
    paths = demo_day(tmp_path, fmt, rows=300)
    stats: dict = {}
    with duckdb.connect() as con:
        batches = [batch for path in paths if name in path.name or fmt in path.name
                   for batch in fast_batches(con, path, name, pii_gate=True, stats=stats)]
        assert con.execute("SELECT current_setting('disabled_optimizers')").fetchone()[0] == ""
    assert len(batches) >= 10  # many batches, mapped ahead: not one
    assert stats["in_sql"] >= 200, stats
    tables = assert_same_both_ways(tmp_path / "both", paths)
    assert len(tables["logs"]) > 250
    assert not [t for t in threading.enumerate() if t.name == "flywheel-read-ahead"]


def test_a_later_batch_the_fast_path_cannot_number_sends_the_file_the_python_way(tmp_path, monkeypatch):
    """The mapping thread finds a lone carriage return batches into the file: what the
    file had stored is forgotten, and it is read the Python way (same tables)."""
    import threading

    from flywheel.ingest.fast import lines as fast_lines

    monkeypatch.setattr(fast_lines, "FAST_BLOCK_BYTES", 16 << 10)
    demo = demo_day(tmp_path / "demo", "openai", rows=200)
    text = demo[0].read_text(encoding="utf-8").splitlines()
    late_cr = tmp_path / "late-cr-openai.jsonl"
    late_cr.write_bytes("\n".join(text[:150]).encode() + b"\n\r" + "\n".join(text[150:]).encode() + b"\n")
    assert late_cr.stat().st_size > 5 * (16 << 10)  # the carriage return is batches in
    tables = assert_same_both_ways(tmp_path, [late_cr])
    assert len(tables["logs"]) > 150
    assert not [t for t in threading.enumerate() if t.name == "flywheel-read-ahead"]


@pytest.mark.parametrize("fmt, name", [("openai", "openai_chat"), ("openai_batch", "openai_batch_output"),
                                       ("langfuse", "langfuse"), ("otel", "otel")])
def test_most_demo_records_are_mapped_in_sql(tmp_path, fmt, name):
    import duckdb

    from flywheel.ingest.fast import fast_batches

    from flywheel.ingest import formats

    paths = demo_day(tmp_path, fmt)
    companions: dict = {}
    for path in paths:
        if formats.detect_format(path) in formats.COMPANION_FORMATS:
            companions.update(formats.load_companion(path, formats.detect_format(path)))
    stats: dict = {}
    read = 0
    with duckdb.connect() as con:
        for path in paths:
            if formats.detect_format(path) == name:
                read += sum(batch.num_rows for batch in fast_batches(
                    con, path, name, pii_gate=True, batch_requests=companions, stats=stats))
    assert read >= 300
    assert read == stats["in_sql"] + stats["in_python"]
    # The demo's tool-calling turns are left to Python; the rest are decided in SQL.
    assert stats["in_sql"] >= 0.8 * read, stats


def test_bent_batch_lines_are_the_same_both_ways(tmp_path):
    from flywheel.ingest import formats

    paths = demo_day(tmp_path / "demo", "openai_batch", rows=40)
    output = next(p for p in paths if formats.detect_format(p) == "openai_batch_output")
    records = [json.loads(line) for line in output.read_text(encoding="utf-8").splitlines() if line.strip()]
    out = []

    def bend(i: int, change) -> None:
        record = json.loads(json.dumps(records[i % len(records)]))
        change(record)
        out.append(json.dumps(record, ensure_ascii=False))

    bend(0, lambda r: r.update(error={"code": "server_error", "message": "boom"}))
    bend(1, lambda r: r["response"].update(status_code=500))
    bend(2, lambda r: r.update(custom_id="no-such-request"))
    bend(3, lambda r: r["response"]["body"].update(id=""))  # the line's id instead
    bend(4, lambda r: r["response"]["body"].update(created=1767225602.0))
    bend(5, lambda r: r["response"].update(status_code="200"))
    bend(6, lambda r: r.update(extra_field={"kept": True}))
    bend(7, lambda r: r["response"]["body"]["usage"].update(prompt_tokens=None, input_tokens=7))
    bend(8, lambda r: r["response"].pop("request_id"))
    bend(9, lambda r: r["response"]["body"]["choices"][0]["message"].update(content="LONE-SURROGATE answer"))
    out[-1] = out[-1].replace("LONE-SURROGATE", "\\ud800")  # an escaped lone surrogate: rejected
    out.insert(3, "{broken")
    bent = output.with_name("bent-batch-output.jsonl")
    bent.write_text("\n".join(out) + "\n", encoding="utf-8")
    tables = assert_same_both_ways(tmp_path, [*paths, bent])
    reasons = {row[3] for row in tables["rejected_logs"]}
    assert any(reason.startswith("batch request failed") for reason in reasons), reasons
    assert "not valid UTF-8" in reasons


def _bent_langfuse_traces(traces: list[dict]) -> list[str]:
    """Return demo Langfuse traces bent into shapes the fast statement leaves to Python
    (or decides with care), one JSON text each."""
    out = []

    def bend(i: int, change) -> None:
        trace = json.loads(json.dumps(traces[i % len(traces)]))
        change(trace)
        out.append(json.dumps(trace, ensure_ascii=False))

    feedback = {"id": "s1", "name": "user-feedback", "source": "API", "dataType": "BOOLEAN", "value": 1,
                "stringValue": "True", "timestamp": "2026-01-01T03:00:00.000Z", "comment": None}
    bend(0, lambda t: t.update(htmlPath="/project/p/traces/x"))  # a key the statement does not know
    bend(1, lambda t: t.update(input="How do I reset it?"))  # plain text input
    bend(2, lambda t: t.update(input='{"question": "as JSON text"}'))  # JSON text: parsed by Python
    bend(3, lambda t: t.update(input=None))  # the generation's messages instead
    bend(4, lambda t: t["input"].update(documents=["a", "b"]))
    bend(5, lambda t: t.update(output={"content": "an answer"}))
    bend(6, lambda t: t.update(latency=1.23456))
    bend(7, lambda t: t.update(latency="0.4"))
    bend(8, lambda t: t.update(latency=None))
    bend(9, lambda t: t.update(scores=[feedback]))
    bend(10, lambda t: t.update(scores=[{**feedback, "value": 0, "stringValue": "False"}]))
    bend(11, lambda t: t.update(scores=[{**feedback, "source": "ANNOTATION"}]))
    bend(12, lambda t: t.update(scores=[feedback, {**feedback, "value": 0, "timestamp": "2026-01-01T04:00:00.000Z"}]))
    bend(13, lambda t: t.update(scores=[{**feedback, "dataType": "CATEGORICAL", "value": None, "stringValue": "up"}]))
    bend(14, lambda t: t["metadata"].update(release="other", note=None))  # a clash with a trace key
    bend(15, lambda t: t.update(metadata=None, name="", environment=None, release=None))
    bend(16, lambda t: t.update(metadata="as text"))
    bend(17, lambda t: t.update(observations=[]))
    bend(18, lambda t: t["observations"][0].update(usageDetails={"input": 3, "output": 4}))
    bend(19, lambda t: t["observations"][0].update(type="SPAN"))
    bend(20, lambda t: t["observations"].append({"id": "o2", "type": "EVENT", "input": "x", "extra": None}))
    bend(21, lambda t: t["observations"][0]["usage"].update(input=None))
    bend(22, lambda t: t["observations"][0].pop("usage"))
    bend(23, lambda t: t.update(tags=[], public=True, totalCost="0.0001"))
    bend(24, lambda t: t.update(id=None))
    bend(25, lambda t: t.update(timestamp="not a time"))  # rejected
    bend(26, lambda t: t.update(output="   "))  # rejected: empty output
    bend(27, lambda t: t["input"].update(question="mail me at jane.doe@example.com, Ünïcödé \u2028 \"q\""))
    bend(28, lambda t: t.update(observations=[{**t["observations"][0], "type": "generation"}]))
    bend(29, lambda t: t.update(trace={"id": "inner"}))
    bend(30, lambda t: t.update(output="LONE-SURROGATE answer"))
    out[-1] = out[-1].replace("LONE-SURROGATE", "\\ud800")  # an escaped lone surrogate: rejected
    return out


def test_bent_langfuse_traces_are_the_same_both_ways(tmp_path):
    demo = demo_day(tmp_path / "demo", "langfuse", rows=40)
    traces = json.loads(demo[0].read_text(encoding="utf-8"))
    bent = _bent_langfuse_traces(traces)
    array = tmp_path / "bent-langfuse.json"
    array.write_text("[\n" + ",\n".join(bent) + "\n]\n", encoding="utf-8")
    lines = tmp_path / "bent-langfuse.jsonl"
    lines.write_text("\n".join(bent[:10]) + "\n\n{broken\n" + "\n".join(bent[10:]) + "\n", encoding="utf-8")
    crlf = tmp_path / "crlf-langfuse.json"
    crlf.write_bytes(("[\r\n" + ",\r\n".join(bent[:8]) + "\r\n]\r\n").encode())
    tables = assert_same_both_ways(tmp_path, [array, lines, crlf])
    assert "not valid UTF-8" in {row[3] for row in tables["rejected_logs"]}
    assert tables["duplicate_logs"]


def test_langfuse_files_the_fast_path_cannot_read_are_read_the_python_way(tmp_path):
    demo = demo_day(tmp_path / "demo", "langfuse", rows=20)
    traces = [json.dumps(t) for t in json.loads(demo[0].read_text(encoding="utf-8"))]
    broken = tmp_path / "broken-array-langfuse.json"  # unreadable as a whole
    broken.write_text("[\n" + ",\n".join(traces[:5]) + ",\n{broken},\n" + ",\n".join(traces[5:]) + "\n]\n")
    two_per_line = tmp_path / "two-per-line-langfuse.json"
    two_per_line.write_text("[\n" + ",\n".join(f"{a}, {b}" for a, b in zip(traces[::2], traces[1::2])) + "\n]\n")
    pretty = tmp_path / "pretty-langfuse.json"
    pretty.write_text(json.dumps(json.loads(demo[0].read_text(encoding="utf-8")), indent=2))
    wrapper = tmp_path / "wrapper-langfuse.jsonl"
    wrapper.write_text("\n".join([traces[0], json.dumps({"data": [json.loads(t) for t in traces[1:4]]})]) + "\n")
    no_end = tmp_path / "no-end-langfuse.json"
    no_end.write_text("[\n" + ",\n".join(traces[:5]) + "\n")
    tables = assert_same_both_ways(tmp_path, [broken, two_per_line, pretty, wrapper, no_end])
    assert len(tables["logs"]) >= 20


def test_batch_requests_across_input_files_are_the_same_both_ways(tmp_path, monkeypatch):
    """The requests of a Batch API day come from two input files (a later file wins a
    custom_id, within a file a later line does); some are broken, keyed by a number or
    a boolean, or have a body given as JSON text; one output line has no request. The
    fast path (the requests each batch names, joined in SQL) and the Python path give
    the same tables, and the requests found are the right ones."""
    from flywheel.ingest import formats
    from flywheel.ingest.formats import batch_input

    # Chunks of 3 requests: a custom_id repeated across chunks, a batch's requests
    # gathered from many chunks, the Python path's output lines taken 3 at a time.
    monkeypatch.setattr(batch_input, "CHUNK_ROWS", 3)

    paths = demo_day(tmp_path / "demo", "openai_batch", rows=40)
    output = next(p for p in paths if formats.detect_format(p) == "openai_batch_output")
    given = next(p for p in paths if formats.detect_format(p) == "openai_batch_input")
    inputs = [json.loads(line) for line in given.read_text(encoding="utf-8").splitlines() if line.strip()]
    outputs = [json.loads(line) for line in output.read_text(encoding="utf-8").splitlines() if line.strip()]
    good = [o for o in outputs if not o.get("error") and o["response"]["status_code"] == 200]
    assert len(inputs) == 40 and len(good) >= 12
    by_id = {i["custom_id"]: i for i in inputs}

    def asking(line: dict, text: str) -> dict:
        """The input line of an output line, asking ``text`` instead."""
        changed = json.loads(json.dumps(by_id[line["custom_id"]]))
        changed["body"]["messages"][-1]["content"] = text
        return changed

    def answering(line: dict, custom_id, log_id: str) -> str:
        changed = json.loads(json.dumps(line))
        changed["custom_id"] = custom_id
        changed["response"]["body"]["id"] = log_id
        return json.dumps(changed, ensure_ascii=False)

    # The first file holds half of the requests, the second the other half: each
    # batch of output lines names requests of both.
    rest = [json.dumps(i) for i in inputs if i["custom_id"] not in (good[1]["custom_id"], good[3]["custom_id"])]
    first = [
        json.dumps(asking(good[3], "asked before the same custom_id's later line")),
        json.dumps(by_id[good[3]["custom_id"]]),
        '{"custom_id": "req-broken", "body": {',  # broken: skipped, its output line is an orphan
        json.dumps({"method": "POST", "body": inputs[6]["body"]}),  # no custom_id: skipped
        json.dumps(asking(good[1], "asked in the first file, then again in the second")),
        *rest[:20],
        json.dumps({"custom_id": 7, "body": asking(good[7], "a number as custom_id")["body"]}),
        json.dumps({"custom_id": True, "body": asking(good[8], "a boolean as custom_id")["body"]}),
        json.dumps({"custom_id": "as-text", "body": json.dumps(asking(good[9], "a body as JSON text")["body"])}),
    ]
    second = [*rest[20:], json.dumps(asking(good[1], "asked in the second file"))]
    landing = tmp_path / "landing"
    landing.mkdir()
    (landing / "a-batch-input.jsonl").write_text("\n".join(first) + "\n", encoding="utf-8")
    (landing / "b-batch-input.jsonl").write_text("\n".join(second) + "\n", encoding="utf-8")
    answers = [json.dumps(o, ensure_ascii=False) for o in outputs]
    answers += [answering(good[7], 7, "chatcmpl-number"), answering(good[8], True, "chatcmpl-boolean"),
                answering(good[9], "as-text", "chatcmpl-text"), answering(good[10], "req-broken", "x"),
                answering(good[11], "req-nowhere", "y")]
    (landing / "c-batch-output.jsonl").write_text("\n".join(answers) + "\n", encoding="utf-8")

    tables = assert_same_both_ways(tmp_path, sorted(landing.iterdir()))
    with store.connection(load({"FLYWHEEL_HOME": str(tmp_path / "fast")})) as con:
        asked = dict(con.execute("SELECT log_id, input FROM logs").fetchall())
    assert asked[good[1]["response"]["body"]["id"]] == "asked in the second file"
    assert asked[good[3]["response"]["body"]["id"]] != "asked before the same custom_id's later line"
    assert asked["chatcmpl-number"] == "a number as custom_id"
    assert asked["chatcmpl-boolean"] == "a boolean as custom_id"
    assert asked["chatcmpl-text"] == "a body as JSON text"
    orphans = sorted(row[3] for row in tables["rejected_logs"] if row[3].startswith("no batch input line"))
    assert orphans == ["no batch input line for custom_id req-broken", "no batch input line for custom_id req-nowhere"]


# ----------------------------------------------------------------------------- OTel spans


def _set(span: dict, key: str, value) -> None:
    """Set (or add) the span attribute ``key``; a None value removes it."""
    kept = [a for a in span["attributes"] if a["key"] != key]
    span["attributes"] = kept + ([] if value is None else [_attr(key, value)])


def _get(span: dict, key: str):
    return next(a["value"] for a in span["attributes"] if a["key"] == key)


def _messages(span: dict, key: str) -> list:
    return json.loads(_get(span, key)["stringValue"])


def _set_messages(span: dict, key: str, messages: list) -> None:
    next(a for a in span["attributes"] if a["key"] == key)["value"] = {"stringValue": json.dumps(messages)}


def _llm_spans(lines: list[str]) -> dict[str, list[dict]]:
    """Return demo LLM spans by convention (current gen_ai, OpenLLMetry, OpenInference)."""
    found: dict[str, list[dict]] = {"current": [], "openllmetry": [], "openinference": []}
    for line in lines:
        for resource in json.loads(line)["resourceSpans"]:
            for scope in resource["scopeSpans"]:
                for span in scope["spans"]:
                    keys = {a["key"] for a in span["attributes"]}
                    if "gen_ai.input.messages" in keys:
                        found["current"].append(span)
                    elif "gen_ai.prompt.0.role" in keys:
                        found["openllmetry"].append(span)
                    elif "openinference.span.kind" in keys:
                        found["openinference"].append(span)
    return found


def _request(*spans: dict, resource: list | None = None) -> str:
    """Return one OTLP/JSON line (an export request) holding ``spans``."""
    attributes = resource if resource is not None else [_attr("service.name", "bent-bot"),
                                                        _attr("service.version", "1.0")]
    return json.dumps({"resourceSpans": [{"resource": {"attributes": attributes},
                                          "scopeSpans": [{"scope": {"name": "bent"}, "spans": list(spans)}]}]},
                      ensure_ascii=False)


def _bent_otel_lines(lines: list[str]) -> list[str]:
    """Return demo OTel spans bent into shapes the fast statement leaves to Python (or
    decides with care), one export request per line, with broken lines among them."""
    spans = _llm_spans(lines)
    out = []
    counter = iter(range(1, 1000))

    def bend(kind: str, change, *, index: int = 0, also: tuple = ()) -> None:
        span = json.loads(json.dumps(spans[kind][index % len(spans[kind])]))
        span["spanId"] = f"{0xbe00 + next(counter):016x}"  # an id of its own
        change(span)
        out.append(_request(span, *also))

    def parts(span: dict, key: str, change) -> None:
        messages = _messages(span, key)
        change(messages)
        _set_messages(span, key, messages)

    http = {"traceId": "ab" * 16, "spanId": "cd" * 8, "name": "GET", "kind": 3,
            "startTimeUnixNano": "1767232800000000000", "endTimeUnixNano": "1767232800100000000",
            "attributes": [_attr("http.request.method", "GET")], "status": {}}
    day_start = 1767225600 * 10**9  # 2026-01-01T00:00:00Z in nanoseconds
    bend("current", lambda s: None, also=(http,))  # as written, with a plain HTTP span
    bend("current", lambda s: s.update(spanId=base64.b64encode(bytes.fromhex(s["spanId"])).decode()))
    bend("current", lambda s: s.update(traceId=s["traceId"].upper()))
    bend("current", lambda s: s.update(parentSpanId=""))
    bend("current", lambda s: s.update(parentSpanId=None))  # a JSON null: to Python
    bend("current", lambda s: s.update(status={"code": 2, "message": "boom"}))
    bend("current", lambda s: s.pop("endTimeUnixNano"))  # no latency
    bend("current", lambda s: s.update(endTimeUnixNano=str(int(s["startTimeUnixNano"]) - 5)))
    bend("current", lambda s: s.update(endTimeUnixNano=str(int(s["startTimeUnixNano"]) + 2 * 3600 * 10**9)))
    bend("current", lambda s: s.update(startTimeUnixNano=str(day_start - 8000 * 86400 * 10**9),
                                       endTimeUnixNano=str(day_start - 8000 * 86400 * 10**9 + 10**9)))  # far: rejected
    bend("current", lambda s: s.update(startTimeUnixNano=int(s["startTimeUnixNano"]) + 123_456))  # a JSON number
    bend("current", lambda s: s.update(events=[{"name": "exception", "attributes": []}]))
    bend("current", lambda s: _set(s, "gen_ai.usage.input_tokens", 3_000_000))  # rejected
    bend("current", lambda s: _set(s, "gen_ai.usage.output_tokens", "12"))  # a string
    # Not a number: rejected by the loader (the span statement casts only digits: no error).
    bend("current", lambda s: _set(s, "gen_ai.usage.input_tokens", "many"))
    bend("current", lambda s: s["attributes"].append({"key": "gen_ai.usage.input_tokens", "value": {"intValue": 12}}))
    bend("current", lambda s: _set(s, "gen_ai.request.temperature", 1.0))
    bend("current", lambda s: next(a for a in s["attributes"] if a["key"] == "gen_ai.request.temperature")
         .update(value={"doubleValue": 1}))
    bend("current", lambda s: s["attributes"].append({"key": "x.list", "value": {"arrayValue": {"values": [
        {"intValue": "1"}]}}}))
    bend("current", lambda s: s["attributes"].append({"key": "x.map", "value": {"kvlistValue": {"values": []}}}))
    bend("current", lambda s: s["attributes"].append({"key": "x.empty", "value": {"arrayValue": {}}}))
    bend("current", lambda s: s["attributes"].append({"key": "x.two", "value": {"stringValue": "a", "intValue": "1"}}))
    bend("current", lambda s: _set(s, "status", "ok"))  # clashes with the span's status
    bend("current", lambda s: _set(s, "gen_ai.system_instructions", '[{"type": "text", "content": "Be brief."}]'))
    bend("current", lambda s: _set(s, "gen_ai.operation.name", "embeddings"))  # not an LLM call
    bend("current", lambda s: _set(s, "gen_ai.response.model", None))  # the request model instead
    bend("current", lambda s: _set(s, "user.id", "jane.doe@example.com"))  # PII in an id
    bend("current", lambda s: parts(s, "gen_ai.output.messages", lambda m: m[0]["parts"].append(
        {"type": "text", "content": "Second part, Ünïcödé \u2028 \"quoted\" \\ tab\t."})))
    bend("current", lambda s: parts(s, "gen_ai.output.messages", lambda m: m[0]["parts"].insert(0, {"type": "text", "content": ""})))
    bend("current", lambda s: parts(s, "gen_ai.output.messages", lambda m: m[0]["parts"].append(
        {"type": "tool_call", "id": "c1", "name": "search", "arguments": {"q": "x"}})))
    bend("current", lambda s: parts(s, "gen_ai.output.messages", lambda m: m[0]["parts"].__setitem__(0, {"type": "text", "content": "   "})))
    bend("current", lambda s: parts(s, "gen_ai.input.messages", lambda m: m.pop()))  # no user message
    bend("current", lambda s: parts(s, "gen_ai.input.messages", lambda m: m.append(
        {"role": "tool", "parts": [{"type": "tool_call_response", "id": "c1", "response": "retrieved"}]})))
    bend("current", lambda s: parts(s, "gen_ai.input.messages", lambda m: m[0]["parts"][0].update(
        content="Rules\n  CONTEXT:   \n\n  the facts  \n")))
    bend("current", lambda s: parts(s, "gen_ai.input.messages", lambda m: m[-1]["parts"][0].update(
        content="call me at +1 415 555 0134, the value is: null \ud83d\ude00")))
    # PII only in an earlier turn, or only in an attribute that goes into metadata: neither
    # in the input nor in the output (scrubbed all the same).
    bend("current", lambda s: parts(s, "gen_ai.input.messages", lambda m: m.insert(0, {"role": "user", "parts": [
        {"type": "text", "content": "my card is 4111 1111 1111 1111, mail jo.smith@example.com"}]})))
    bend("current", lambda s: _set(s, "app.note", "call back on +44 20 7946 0958"))
    bend("openllmetry", lambda s: None)
    bend("openllmetry", lambda s: _set(s, "gen_ai.prompt.2.content", "a second question"))  # no role
    bend("openllmetry", lambda s: _set(s, "gen_ai.prompt.01.role", "user"))  # an index Python reads as 1
    bend("openllmetry", lambda s: _set(s, "gen_ai.completion.0.tool_calls.0.name", "search"))
    bend("openllmetry", lambda s: _set(s, "gen_ai.prompt.1.content", '[{"type": "text", "text": "parts"}]'))
    bend("openllmetry", lambda s: _set(s, "gen_ai.prompt.name", "support"))
    bend("openllmetry", lambda s: _set(s, "gen_ai.completion.0.content", "ESCAPED-PAIR"))
    out[-1] = out[-1].replace("ESCAPED-PAIR", "a surrogate pair escaped: \\ud83d\\ude00")
    bend("openinference", lambda s: None)
    bend("openinference", lambda s: _set(s, "openinference.span.kind", "CHAIN"))  # not an LLM call
    # An LLM call to Python only by its kind, written as bytes (Python reads the text as it is).
    bend("openinference", lambda s: s.update(attributes=[
        {"key": "openinference.span.kind", "value": {"bytesValue": "LLM"}},
        _attr("input.value", "What is the refund window?"), _attr("output.value", "30 days.")]))
    bend("openinference", lambda s: _set(s, "llm.input_messages.1.message.content", None))  # input.value then
    bend("openinference", lambda s: _set(s, "llm.output_messages.0.message.finish_reason", "length"))
    out.append(_request(json.loads(json.dumps(spans["current"][0])), resource=[
        _attr("deployment.environment", "prod"), {"key": "host.tags", "value": {"arrayValue": {"values": [
            {"stringValue": "a"}, {"stringValue": "b"}]}}}]))  # no service.name
    # Resource attributes named as span attributes the statement parses or leaves out:
    # in metadata with their values all the same.
    resourced = {**json.loads(json.dumps(spans["current"][0])), "spanId": f"{0xbe00 + next(counter):016x}"}
    out.append(_request(resourced, resource=[
        _attr("service.name", "support-bot"), _attr("gen_ai.input.messages", "resource-wide text"),
        _attr("input.value", "resource input")]))
    # A resource attribute key written as a number (Python keeps it, as "resource.5").
    out.append(_request(json.loads(json.dumps(spans["current"][1]))).replace('"key": "service.name"', '"key": 5', 1))
    # What DuckDB reads and Python does not, or reads otherwise.
    plain = out[0]
    out.append(plain.replace('"status": {}', '"status": {"code": 1,}', 1))  # a trailing comma
    out.append(plain.replace('"kind": 3', '"kind": NaN', 1))
    out.append(plain.replace('"kind": 3', '"kind": -Infinity', 1))
    out.append(plain.replace('"kind": 3', '"kind": 3e999', 1))
    out.append(plain.replace('"kind": 3', '"kind": 123456789012345678901234567890', 1))
    out.insert(3, "")
    out.insert(6, "{not json")
    out.insert(8, "[1, 2]")
    out.insert(10, '{"resourceSpans": 5}')
    out.insert(12, '{"resourceSpans": [7, {"scopeSpans": [{"spans": [3]}]}]}')
    out.append(out[1])  # the same span again: a duplicate
    return out


def test_bent_otel_lines_are_the_same_both_ways(tmp_path):
    demo = demo_day(tmp_path / "demo", "otel", rows=120)
    lines = demo[0].read_text(encoding="utf-8").splitlines()
    bent = _bent_otel_lines(lines)
    jsonl = tmp_path / "bent-otel.jsonl"
    jsonl.write_text("\n".join(bent) + "\n", encoding="utf-8")
    crlf = tmp_path / "crlf-otel.jsonl"
    crlf.write_bytes("\r\n".join(lines[:20]).encode() + b"\r\n")
    tables = assert_same_both_ways(tmp_path, [jsonl, crlf])
    reasons = {row[3] for row in tables["rejected_logs"]}
    assert {"invalid JSON", "not an OTLP/JSON document (no resourceSpans)", "span is not a JSON object",
            "timestamp too far from the day", "value out of range", "empty output"} <= {r.split(":")[0] for r in reasons}
    assert tables["duplicate_logs"]
    assert any(row[-5] for row in tables["logs"])  # PII found (pii column) in some rows


def test_most_bent_otel_spans_of_a_plain_shape_are_mapped_in_sql(tmp_path):
    import duckdb

    from flywheel.ingest.fast import fast_batches

    demo = demo_day(tmp_path / "demo", "otel", rows=120)
    bent = _bent_otel_lines(demo[0].read_text(encoding="utf-8").splitlines())
    path = tmp_path / "bent-otel.jsonl"
    path.write_text("\n".join(bent) + "\n", encoding="utf-8")
    stats: dict = {}
    with duckdb.connect() as con:
        read = sum(batch.num_rows for batch in fast_batches(con, path, "otel", pii_gate=True, stats=stats))
    assert read == stats["in_sql"] + stats["in_python"]
    # The plain ones and those bent within what the statement maps (not all are).
    assert stats["in_sql"] >= 15 and stats["in_python"] >= 20, stats


def test_otel_files_the_fast_path_leaves_to_python_are_the_same_both_ways(tmp_path):
    demo = demo_day(tmp_path / "demo", "otel", rows=40)
    lines = demo[0].read_text(encoding="utf-8").splitlines()
    spans = _llm_spans(lines)
    span = spans["current"][0]
    record = {"timeUnixNano": span["startTimeUnixNano"], "traceId": span["traceId"], "spanId": span["spanId"],
              "eventName": "gen_ai.user.message", "body": {"stringValue": "the question, from a log record"}}
    both = tmp_path / "collector-both-signals.jsonl"  # a collector wrote spans and logs in one file
    both.write_text("\n".join(lines + [json.dumps({"resourceLogs": [{"resource": {}, "scopeLogs": [
        {"logRecords": [record]}]}]})]) + "\n", encoding="utf-8")
    bom = tmp_path / "bom-otel.jsonl"
    bom.write_bytes(b"\xef\xbb\xbf" + "\n".join(lines[:5]).encode() + b"\n")
    gz = tmp_path / "spans-otel.jsonl.gz"
    gz.write_bytes(gzip.compress("\n".join(lines[5:15]).encode() + b"\n"))
    lone_cr = tmp_path / "lone-cr-otel.jsonl"
    lone_cr.write_bytes("\n".join(lines[:3]).encode() + b"\n\r" + "\n".join(lines[3:6]).encode() + b"\n")
    tables = assert_same_both_ways(tmp_path, [both, bom, gz, lone_cr])
    assert len(tables["logs"]) >= 40

