"""The fast paths of the log formats (flywheel.ingest.fast) give the very tables the
per-record Python mappers give: every column of `logs` (but the ingest time), the
rejections with their reasons, the duplicates and the per-file counts.

Each case ingests one landing folder twice into fresh homes, once with the fast paths
and once with ``fast_formats=False``, and compares the tables row for row. The inputs
are demo days (the demo's own writers), the tool-written fixtures, the hand-made fixture
logs, and demo lines bent into the shapes the fast statement must leave to Python.
"""

from __future__ import annotations

import json
import shutil
from datetime import date
from pathlib import Path

import pytest

from flywheel import store
from flywheel.demo import DemoSpec, generate
from flywheel.ingest.loader import ingest_day
from flywheel.settings import load
from tests.conftest import FIXTURES

DAY = "2026-01-01"
TABLES = {
    "logs": "* EXCLUDE (ingested_at)",
    "rejected_logs": "* EXCLUDE (rejected_at)",
    "duplicate_logs": "*",
    "ingest_files": "* EXCLUDE (ingested_at)",
}


def _ingest(home: Path, files: list[Path], *, fast_formats: bool) -> tuple[dict, object]:
    """Ingest ``files`` as the day DAY of a fresh home; return its tables (sorted rows) and report."""
    settings = load({"FLYWHEEL_HOME": str(home)})
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


def assert_same_both_ways(tmp_path: Path, files: list[Path]) -> dict:
    """Ingest ``files`` both ways; assert identical tables and reports; return the tables."""
    fast, fast_report = _ingest(tmp_path / "fast", files, fast_formats=True)
    slow, slow_report = _ingest(tmp_path / "python", files, fast_formats=False)
    for table in TABLES:
        assert len(fast[table]) == len(slow[table]), table
        for fast_row, slow_row in zip(fast[table], slow[table]):
            assert fast_row == slow_row, table
    assert fast_report.pii_counts == slow_report.pii_counts
    assert fast_report.rejected_reasons == slow_report.rejected_reasons
    assert [(f.source_file, f.read, f.blank_lines, f.error) for f in fast_report.files] == \
        [(f.source_file, f.read, f.blank_lines, f.error) for f in slow_report.files]
    return fast


def demo_day(tmp_path: Path, fmt: str, rows: int = 400) -> list[Path]:
    """Return the landing files of one demo day of ``rows`` records written as ``fmt``."""
    spec = DemoSpec(days=1, rows_per_day=rows, seed=11, start=date.fromisoformat(DAY), format_shares={fmt: 1.0})
    generate(tmp_path / "demo", spec)
    return sorted((tmp_path / "demo" / "landing" / DAY).iterdir())


@pytest.mark.parametrize("fmt", ["openai", "openai_batch", "langfuse"])
def test_demo_day_is_the_same_both_ways(tmp_path, fmt):
    tables = assert_same_both_ways(tmp_path, demo_day(tmp_path, fmt))
    assert len(tables["logs"]) > 300  # the day was read, not lost on both sides


def test_fixture_logs_are_the_same_both_ways(tmp_path):
    files = [p for p in (FIXTURES / "tools" / "logs").iterdir()]
    files += [p for p in (FIXTURES / "logs").iterdir() if p.name not in ("README.md", "make_parquet.py")]
    tables = assert_same_both_ways(tmp_path, files)
    assert {row[-2] for row in tables["logs"]} >= {"openai_chat"}  # source_format


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


@pytest.mark.parametrize("fmt, name", [("openai", "openai_chat"), ("openai_batch", "openai_batch_output"),
                                       ("langfuse", "langfuse")])
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
    out.insert(3, "{broken")
    bent = output.with_name("bent-batch-output.jsonl")
    bent.write_text("\n".join(out) + "\n", encoding="utf-8")
    tables = assert_same_both_ways(tmp_path, [*paths, bent])
    reasons = {row[3] for row in tables["rejected_logs"]}
    assert any(reason.startswith("batch request failed") for reason in reasons), reasons


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
    assert tables["rejected_logs"]
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
