"""Batch API input files read by DuckDB (flywheel.ingest.fast.batch_input_sql) give the
very requests Python's reader gives (BatchRequests.read_python, the reference): the
same custom ids in the same order, the same bodies, the same ``object`` flags, and for
every body the fast statement joins, the same values as DuckDB reads them from the text
the Python reader stores. Lines DuckDB could read otherwise than Python are read by
Python; every other line is kept as it is."""

from __future__ import annotations

import gzip
import json
import re
import shutil
from pathlib import Path

import duckdb
import pyarrow as pa
import pytest

from flywheel import store
from flywheel.ingest.fast import batch_input_sql, text_bytes
from flywheel.ingest.formats import batch_input
from flywheel.ingest.formats.batch_input import BatchRequests
from flywheel.ingest.loader import ingest_day
from flywheel.settings import load
from tests.test_fast_formats import DAY, TABLES, demo_day


def _body(question: str, **extra) -> dict:
    return {"model": "gpt-4o-mini", "messages": [
        {"role": "system", "content": "Be brief.\n\nContext:\nThe sky is blue."},
        {"role": "user", "content": question}], "user": "u-1",
        "metadata": {"prompt_version": "v1", "source": "batch"}, **extra}


def _line(custom_id, body, **extra) -> bytes:
    return json.dumps({"custom_id": custom_id, "method": "POST", "url": "/v1/chat/completions",
                       "body": body, **extra}, ensure_ascii=False).encode()


# (line, how it is read): "raw" kept as it is, "python" read by Python, "none" no request
# either way (blank, broken, no custom_id), though it may go through Python to know it.
def _tricky_lines() -> list[tuple[bytes, str]]:
    deep = b"[" * 600 + b"]" * 600
    deeper = b"[" * 3000 + b"]" * 3000
    return [
        (_line("plain-1", _body("What colour is the sky?")), "raw"),
        (_line("plain-2", _body("Ünïcödé, emoji 😀, \u2028 a line separator, \"quotes\"")), "raw"),
        (json.dumps({"custom_id": "ascii-escaped", "body": _body("Ünïcödé 😀")}).encode(), "raw"),
        (_line("repeated", _body("first")), "raw"),
        (_line("repeated", _body("second")), "raw"),  # a later line wins
        (_line("repeated-2", _body("first, raw")), "raw"),
        (_line("repeated-2", _body("then Python"), note="x, ]"), "python"),
        (_line("repeated-3", _body("first, Python"), note=", ]"), "python"),
        (_line("repeated-3", _body("then raw")), "raw"),
        (_line(7, _body("a number")), "python"),
        (_line(1.0, _body("a float")), "python"),
        (_line(True, _body("a boolean")), "python"),
        (_line({"a": 1}, _body("an object as custom_id")), "python"),
        (_line(None, _body("a null custom_id")), "none"),
        (json.dumps({"body": _body("no custom_id")}).encode(), "none"),
        (_line("text-body", json.dumps(_body("a body as JSON text"))), "raw"),
        (_line("null-body", None), "raw"),
        (json.dumps({"custom_id": "no-body"}).encode(), "raw"),
        (_line("number-body", 12), "raw"),
        (_line("list-body", [1, 2]), "raw"),
        (b'{"custom_id": "twice", "custom_id": "twice-last", "body": {"model": "m"}}', "python"),
        (b'{"custom_id": "body-twice", "body": {"model": "first"}, "body": {"model": "last"}}', "python"),
        (b'{"custom_id": "escaped-twice", "body": {"model": "a"}, "\\u0062ody": {"model": "b"}}', "python"),
        (b'{"custom_id": "nested-twice", "body": {"messages": [{"role": "user", "content": "a", "content": "b"}]}}',
         "python"),
        (b'{"custom_id": "meta-twice", "body": {"model": "m", "metadata": {"k": {"x": 1, "x": 2}}}}', "python"),
        (b'{"custom_id": "trailing-comma", "body": {"model": "m",}}', "none"),
        (b'{"custom_id": "trailing-comma-list", "body": {"stop": ["a",]}}', "none"),
        (b'{"custom_id": "lower-nan", "body": {"temperature": nan}}', "none"),
        (b'{"custom_id": "lower-inf", "body": {"temperature": -inf}}', "none"),
        (b'{"custom_id": "NaN", "body": {"temperature": NaN, "top_p": Infinity, "x": [-Infinity]}}', "python"),
        (b'{"custom_id": "huge", "body": {"temperature": 1e400}}', "python"),
        (b'{"custom_id": "tiny", "body": {"temperature": 1e-400}}', "python"),
        (b'{"custom_id": "long-digits", "body": {"n": ' + b"9" * 320 + b'.5}}', "python"),
        (b'{"custom_id": "big-int", "body": {"n": ' + b"9" * 40 + b'}}', "raw"),
        (b'{"custom_id": "minus-zero", "body": {"n": -0, "m": -0.0, "e": 1E2}}', "raw"),
        (b'{"custom_id": "lone-surrogate", "body": {"messages": [{"role": "user", "content": "\\ud800"}]}}',
         "python"),
        (b'{"custom_id": "pair-escaped", "body": {"messages": [{"role": "user", "content": "\\ud83d\\ude00"}]}}',
         "raw"),
        (b'{"custom_id": "id-\\ud800", "body": {"model": "odd id"}}', "python"),
        (b'{"custom_id": "not-utf8-\xff", "body": {"model": "odd"}}', "python"),
        (b'{"custom_id": "body-not-utf8", "body": {"model": "\xfe"}}', "python"),
        (b'{"custom_id": "nul", "body": {"model": "a\\u0000b"}}', "raw"),
        (b'{"custom_id": "\\u0072eq-escaped", "body": {"model": "m"}}', "raw"),
        (b'{"custom_id": "deep", "body": {"x": ' + deep + b'}}', "python"),
        (b'{"custom_id": "deeper", "body": {"x": ' + deeper + b'}}', "none"),
        (b'{"custom_id": "content-looks-odd", "body": {"messages": [{"role": "user", "content": "x: inf, y"}]}}',
         "python"),
        (b'  {"custom_id": "spaces", "body": {"model": "m"}} \t', "raw"),
        (b'{"custom_id": "crlf", "body": {"model": "m"}}\r', "raw"),  # with the newline: a CRLF line end
        (b'{"custom_id": "vtab", "body": {"model": "m"}}\x0b', "none"),
        (b'\xc2\xa0{"custom_id": "nbsp", "body": {"model": "m"}}', "none"),
        (b'{"custom_id": "extra" "body": 1}', "none"),
        (b'{"custom_id": "garbage", "body": {}} x', "none"),
        (b'{"custom_id": "two"}{"custom_id": "values"}', "none"),
        (b"[1, 2]", "none"),
        (b'"a string"', "none"),
        (b"", "none"),
        (b"   \t", "none"),
        ("\u3000\u00a0".encode(), "none"),
        (b"{broken", "none"),
        (_line("last", _body("the last line")), "raw"),
    ]


def _write(path: Path, lines: list[bytes]) -> Path:
    path.write_bytes(b"\n".join(lines) + b"\n")
    return path


def _stored(requests: BatchRequests) -> dict[str, str | None]:
    """Return the text each custom_id is stored with (Arrow rows only)."""
    ids = requests.ids.column("custom_id").to_pylist()
    table = requests.subset(ids).table
    return dict(zip(table.column("custom_id").to_pylist(), table.column("line").to_pylist()))


def assert_same_requests(fast: BatchRequests, python: BatchRequests) -> None:
    """Assert that two readings of an input file hold the same requests, and that DuckDB
    reads the body of every request the fast statement may join as it reads the text
    the Python reader keeps."""
    assert fast.ids.column("custom_id").to_pylist() == python.ids.column("custom_id").to_pylist()
    assert fast.ids.column("object").to_pylist() == python.ids.column("object").to_pylist()
    assert list(fast) == list(python) and len(fast) == len(python)
    for custom_id in python:
        assert fast[custom_id] == python[custom_id] or (  # NaN is not equal to itself
            json.dumps(fast[custom_id]) == json.dumps(python[custom_id])), custom_id
    fast_texts, python_texts = _stored(fast), _stored(python)
    joined = [c for c, is_object in zip(fast.ids.column("custom_id").to_pylist(),
                                        fast.ids.column("object").to_pylist()) if is_object]
    with duckdb.connect() as con:
        for custom_id in joined:
            seen = con.execute("SELECT json_extract(?, '$.body')::VARCHAR, json_extract(?, '$.body')::VARCHAR",
                               [fast_texts[custom_id], python_texts[custom_id]]).fetchone()
            assert seen[0] == seen[1], custom_id


def test_tricky_input_lines_are_read_as_python_reads_them(tmp_path):
    cases = _tricky_lines()
    path = _write(tmp_path / "input.jsonl", [line for line, _ in cases])
    fast, python = BatchRequests.read(path), BatchRequests.read_python(path)
    assert_same_requests(fast, python)
    # What each line became: kept as it is, or written anew by the Python reader.
    stored = _stored(fast)
    assert stored["plain-1"] == cases[0][0].decode() + "\n"
    assert stored["repeated"].startswith('{"custom_id": "repeated"') and "second" in stored["repeated"]
    assert "then Python" in stored["repeated-2"] and stored["repeated-2"].startswith('{"body": ')
    assert "then raw" in stored["repeated-3"] and stored["repeated-3"].startswith('{"custom_id"')
    raw = {json.loads(t)["custom_id"] for t in stored.values() if t and not t.startswith('{"body": ')}
    expected_raw = set()
    for line, how in cases:
        if how == "raw":
            expected_raw.add(json.loads(line)["custom_id"])
    assert raw == expected_raw - {"repeated-2"}  # its later line was read by Python
    # The requests themselves, as the mapper sees them.
    assert fast["7"]["body"]["messages"][-1]["content"] == "a number"
    assert fast["True"]["body"]["messages"][-1]["content"] == "a boolean"
    assert fast["1.0"]["body"]["messages"][-1]["content"] == "a float"
    assert fast["{'a': 1}"]["body"]["messages"][-1]["content"] == "an object as custom_id"
    assert fast["twice-last"] == {"body": {"model": "m"}} and "twice" not in fast
    assert fast["body-twice"] == {"body": {"model": "last"}}
    assert fast["escaped-twice"] == {"body": {"model": "b"}}
    assert fast["nested-twice"]["body"]["messages"][0]["content"] == "b"
    assert fast["text-body"]["body"].startswith("{") and fast["null-body"] == {"body": None}
    assert fast["no-body"] == {"body": None} and fast["number-body"] == {"body": 12}
    assert fast["huge"]["body"]["temperature"] == float("inf")
    assert fast["id-\ud800"] == {"body": {"model": "odd id"}}
    assert fast["not-utf8-\udcff"] == {"body": {"model": "odd"}}
    assert fast["body-not-utf8"] == {"body": {"model": "\udcfe"}}
    assert fast["req-escaped"] == {"body": {"model": "m"}}
    assert fast["crlf"] == {"body": {"model": "m"}} and fast["spaces"] == {"body": {"model": "m"}}
    for missing in ("trailing-comma", "trailing-comma-list", "lower-nan", "lower-inf", "deeper", "vtab",
                    "nbsp", "garbage", "None"):
        assert missing not in fast, missing
    objects = dict(zip(fast.ids.column("custom_id").to_pylist(), fast.ids.column("object").to_pylist()))
    assert objects["plain-1"] and objects["nested-twice"] and objects["pair-escaped"]
    assert not objects["lone-surrogate"] and not objects["text-body"] and not objects["list-body"]


@pytest.mark.parametrize("chunk_rows", [3, 8192])
def test_tricky_lines_in_blocks_and_chunks(tmp_path, monkeypatch, chunk_rows):
    """Many blocks of lines (each read on a worker of its own, in order), chunks of a
    few requests, gzip: still the Python reader's requests."""
    from flywheel.ingest import loader

    monkeypatch.setattr(batch_input, "CHUNK_ROWS", chunk_rows)
    monkeypatch.setattr(batch_input_sql, "BLOCK_BYTES", 4096)  # a block every few lines
    cases = [line for line, _ in _tricky_lines()]
    lines = [*cases, *[_line(f"req-{i}", _body(f"question {i}")) for i in range(60)], *cases[:5]]
    plain = _write(tmp_path / "input.jsonl", lines)
    packed = tmp_path / "input.jsonl.gz"
    packed.write_bytes(gzip.compress(plain.read_bytes()))
    for path in (plain, packed):
        blocks = list(loader._line_batches(path, block_bytes=batch_input_sql.BLOCK_BYTES))
        assert len(blocks) > 5
        assert_same_requests(BatchRequests.read(path), BatchRequests.read_python(path))


@pytest.mark.parametrize("name, content", [
    ("lone-cr.jsonl", b'{"custom_id": "a", "body": {"model": "m"}}\r{"custom_id": "b", "body": {}}\n'),
    ("array.jsonl", b'[{"custom_id": "a", "body": {"model": "m"}},\n {"custom_id": "b", "body": {}}]\n'),
    ("pretty.jsonl", b'{\n  "custom_id": "a",\n  "body": {"model": "m"}\n}\n'),
    ("broken-first.jsonl", b'{"custom_id": "a", "body":\n{"custom_id": "b", "body": {"model": "m"}}\n'),
    ("bom.jsonl", b'\xef\xbb\xbf{"custom_id": "a", "body": {"model": "m"}}\n'),
    ("blank-first.jsonl", b'\n  \n{"custom_id": "a", "body": {"model": "m"}}\n'),
    ("magic-gzip.jsonl", gzip.compress(b'{"custom_id": "a", "body": {"model": "m"}}\n')),
    ("empty.jsonl", b""),
])
def test_files_not_cut_into_lines_as_python_does_are_read_by_python(tmp_path, name, content):
    path = tmp_path / name
    path.write_bytes(content)
    fast, python = BatchRequests.read(path), BatchRequests.read_python(path)
    assert_same_requests(fast, python)
    assert len(fast) == {"lone-cr.jsonl": 2, "array.jsonl": 2, "pretty.jsonl": 1, "broken-first.jsonl": 1,
                         "empty.jsonl": 0}.get(name, 1)


def test_a_broken_gzip_stream_is_read_by_python(tmp_path):
    from flywheel.ingest.records import UnreadableFile

    path = tmp_path / "input.jsonl.gz"
    path.write_bytes(gzip.compress(b"".join(_line(f"r{i}", _body("q")) + b"\n" for i in range(50)))[:-30])
    with pytest.raises(UnreadableFile, match="truncated gzip"):
        BatchRequests.read_python(path)
    with pytest.raises(UnreadableFile, match="truncated gzip"):
        BatchRequests.read(path)


def test_has_byte_looks_at_the_strings_only():
    values = pa.array(["ab\r", "cd", None, "ef"])
    assert text_bytes.has_byte(values, 13)
    assert not text_bytes.has_byte(values.slice(1), 13)  # the sliced-off value is not looked at
    assert not text_bytes.has_byte(values, 10)
    assert text_bytes.has_byte(pa.chunked_array([values.slice(1), pa.array(["\n"])]), 10)
    assert not text_bytes.has_byte(pa.chunked_array([], pa.string()), 13)


def test_holds_and_lone_carriage_return_look_at_the_strings_only():
    values = pa.array(['{"resourceLogs": []}\r\n', "cd\r\n", None, "ef"])
    assert text_bytes.holds(values, b'"resourceLogs"')
    assert not text_bytes.holds(values.slice(1), b'"resourceLogs"')  # sliced off: not looked at
    assert not text_bytes.lone_carriage_return(values)  # each carriage return ends its line with a newline
    assert text_bytes.lone_carriage_return(pa.chunked_array([values.slice(1), pa.array(["a\rb\n"])]))
    assert text_bytes.lone_carriage_return(pa.array(["ends here\r"]))


def test_subset_gathers_whole_and_partial_chunks(tmp_path, monkeypatch):
    monkeypatch.setattr(batch_input, "CHUNK_ROWS", 4)
    lines = [_line(f"r{i}", _body(f"q{i}")) for i in range(10)]
    path = _write(tmp_path / "input.jsonl", [*lines[:4], _line("r5", _body("replaced")), *lines[4:]])
    requests = BatchRequests.read(path)
    assert len(requests._chunks) == 3  # r0-r3, r5 (replaced) r4-r6, r7-r9
    # Chunk 0 asked whole, chunk 1 half (but it holds a replaced line: taken row by
    # row), chunk 2 a third: row by row.
    asked = ["r0", "r3", "r2", "r1", "r6", "r4", "nowhere", None, "r0", "r9"]
    subset = requests.subset(pa.array(asked))
    assert sorted(subset) == ["r0", "r1", "r2", "r3", "r4", "r6", "r9"]
    for custom_id in ("r9", "r0", "r3", "r6"):
        assert subset[custom_id]["body"]["messages"][-1]["content"] == "q" + custom_id[1:]
    assert subset.get("nowhere") is None and subset["r5"]["body"]["messages"][-1]["content"] == "q5"
    # Half of the last chunk asked: taken whole, its other request with it (the day's own).
    subset = requests.subset(["r8", "r9"])
    assert sorted(subset) == ["r7", "r8", "r9"] and subset["r7"]["body"]["messages"][-1]["content"] == "q7"
    assert subset.table.column_names == ["custom_id", "line", "object"]
    assert subset.table.column("object").to_pylist() == [True, True, True]
    assert requests.subset([]).table.num_rows == 0


def test_a_day_is_the_same_with_the_python_reader_of_input_files(tmp_path, monkeypatch):
    """A Batch API day whose input file holds the tricky lines: the tables are the same
    whether its requests are read by DuckDB or all by Python (the reader before), with
    the fast paths and without."""
    demo = demo_day(tmp_path / "demo", "openai_batch", rows=60)
    given = next(p for p in demo if "input" in p.name)
    output = next(p for p in demo if "output" in p.name)
    answers = [json.loads(line) for line in output.read_text(encoding="utf-8").splitlines() if line.strip()]
    inputs = given.read_bytes().splitlines()
    extra, extra_answers = [], []
    template = next(a for a in answers if not a.get("error") and a["response"]["status_code"] == 200)
    for i, (line, _) in enumerate(_tricky_lines()):
        try:
            custom_id = json.loads(line.decode("utf-8", errors="surrogateescape")).get("custom_id")
        except (ValueError, RecursionError):  # a line Python skips: its answer is an orphan
            named = re.search(rb'"custom_id": "([a-z-]+)"', line)
            if named is None:
                continue
            custom_id = named.group(1).decode()
        except AttributeError:  # not an object
            continue
        answer = json.loads(json.dumps(template))
        answer["custom_id"] = custom_id
        answer["response"]["body"]["id"] = f"chatcmpl-tricky-{i}"
        extra.append(line)
        extra_answers.append(json.dumps(answer))
    # An output line spelling its custom_id with an escape: its request is not found
    # for SQL (the ids are taken from the text), Python maps it.
    escaped = json.loads(json.dumps(template))
    escaped["custom_id"] = "plain-1"
    escaped["response"]["body"]["id"] = "chatcmpl-escaped-id"
    extra_answers.append(json.dumps(escaped).replace('"plain-1"', '"plain-\\u0031"'))
    landing = tmp_path / "landing"
    landing.mkdir()
    _write(landing / "batch-input.jsonl", [*inputs[:30], *extra, *inputs[30:]])
    (landing / "batch-output.jsonl").write_text(
        "\n".join([*extra_answers, *map(json.dumps, answers)]) + "\n", encoding="utf-8")

    def tables(home: Path, *, fast_formats: bool) -> dict:
        settings = load({"FLYWHEEL_HOME": str(home)})
        target = settings.landing_for(DAY)
        target.mkdir(parents=True)
        for path in landing.iterdir():
            shutil.copy(path, target / path.name)
        with store.connection(settings) as con:
            ingest_day(con, settings, DAY, fast_formats=fast_formats)
            return {t: sorted(con.execute(f"SELECT {c} FROM {t}").fetchall(), key=repr) for t, c in TABLES.items()}

    new = {fast: tables(tmp_path / f"new-{fast}", fast_formats=fast) for fast in (True, False)}
    monkeypatch.setattr(BatchRequests, "read", BatchRequests.read_python)
    before = {fast: tables(tmp_path / f"before-{fast}", fast_formats=fast) for fast in (True, False)}
    for fast in (True, False):
        for table in TABLES:
            assert new[fast][table] == before[fast][table], (fast, table)
    assert new[True]["logs"] == new[False]["logs"]
    logs = {row[0]: row for row in new[True]["logs"]}
    assert len(logs) >= 60 and "chatcmpl-tricky-0" in logs and "chatcmpl-escaped-id" in logs
    orphans = {row[3] for row in new[True]["rejected_logs"] if "no batch input line" in row[3]}
    assert {f"no batch input line for custom_id {c}" for c in ("None", "trailing-comma", "lower-nan", "deeper",
                                                               "garbage")} <= orphans, orphans


def test_context_strip_in_sql_is_python_strip():
    """The fast statements strip a context as Python's str.strip() does (both ends, every
    kind of blank, a text of blanks only)."""
    from flywheel.ingest.fast.openai_sql import _SPACE_CODES, _stripped

    blanks = "".join(map(chr, _SPACE_CODES)) + "\n"
    texts = ["", "a", "  a  ", "\n\n[doc] facts.\n", blanks, blanks + "x y" + blanks, "a\u00a0", "\u3000b",
             "mid  dle", "é\u2028", "\u200bzero-width stays\u200b", "tab\tin\tside\t"]
    with duckdb.connect() as con:
        for text in texts:
            assert con.execute(f"SELECT {_stripped('?')}", [text]).fetchone()[0] == text.strip(), repr(text)


def test_usual_key_lists_with_null_values_are_the_same_both_ways(tmp_path):
    """Output and input lines with the batch's usual keys, some values null: the fast
    statement writes their metadata entries from the usual key list (no loop over the
    keys) and leaves out the nulls as the Python mapper does; the lines are decided in
    SQL, and the tables are the Python path's."""
    import duckdb as db

    from flywheel.ingest import formats
    from flywheel.ingest.fast import fast_batches
    from tests.test_fast_formats import assert_same_both_ways

    paths = demo_day(tmp_path / "demo", "openai_batch", rows=80)
    given = next(p for p in paths if formats.detect_format(p) == "openai_batch_input")
    output = next(p for p in paths if formats.detect_format(p) == "openai_batch_output")
    inputs = [json.loads(line) for line in given.read_text(encoding="utf-8").splitlines() if line.strip()]
    answers = [json.loads(line) for line in output.read_text(encoding="utf-8").splitlines() if line.strip()]
    plain = [a for a in answers if not a.get("error") and a["response"]["status_code"] == 200
             and all("tool_calls" not in c["message"] for c in a["response"]["body"]["choices"])]
    nulled = {a["custom_id"] for a in plain[:12]}
    for answer in plain[:12]:
        answer["response"]["body"]["system_fingerprint"] = None
        answer["response"]["body"]["usage"]["total_tokens"] = None
    for line in inputs:
        if line["custom_id"] in nulled:
            line["body"]["temperature"] = None
            line["body"]["metadata"]["git_commit"] = None
    landing = tmp_path / "landing"
    landing.mkdir()
    (landing / "batch-input.jsonl").write_text("".join(json.dumps(i) + "\n" for i in inputs), encoding="utf-8")
    (landing / "batch-output.jsonl").write_text("".join(json.dumps(a) + "\n" for a in answers), encoding="utf-8")
    tables = assert_same_both_ways(tmp_path / "both", sorted(landing.iterdir()))
    stored = {row[0]: row for row in tables["logs"]}
    assert all(a["response"]["body"]["id"] in stored for a in plain[:12])
    stats: dict = {}
    requests = formats.load_companion(landing / "batch-input.jsonl", "openai_batch_input")
    with db.connect() as con:
        read = sum(batch.num_rows for batch in fast_batches(con, landing / "batch-output.jsonl", "openai_batch_output",
                                                            pii_gate=True, batch_requests=requests, stats=stats))
    assert read == len(answers) and stats["in_sql"] >= len(plain)  # the nulled lines too
