"""Format detection and normalization of every log format (flywheel.ingest.formats)."""

from __future__ import annotations

import csv
import gzip
import json
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from flywheel.ingest.formats import (
    FORMATS,
    detect_format,
    iter_records,
    load_batch_requests,
    open_text,
)
from flywheel.ingest.records import CANONICAL_FIELDS, RawRecord, UnreadableFile

LOGS = Path(__file__).parent / "fixtures" / "logs"


def read(name: str, fmt: str | None = None, **kwargs) -> list[RawRecord]:
    """Return all RawRecords of a fixture, detecting its format unless given."""
    path = LOGS / name
    return list(iter_records(path, fmt or detect_format(path), **kwargs))


def by_id(records: list[RawRecord]) -> dict[str, RawRecord]:
    """Return the parsed records keyed by log_id."""
    return {r.record["log_id"]: r for r in records if r.record is not None}


def errors(records: list[RawRecord]) -> list[tuple[int, str]]:
    """Return (line, error) of the broken records."""
    return [(r.line, r.error) for r in records if r.error is not None]


# --------------------------------------------------------------------------- detection


@pytest.mark.parametrize(
    ("name", "fmt"),
    [
        ("canonical.jsonl", "canonical_jsonl"),
        ("canonical.jsonl.gz", "canonical_jsonl"),
        ("canonical.csv", "canonical_csv"),
        ("canonical.parquet", "canonical_parquet"),
        ("openai_chat.jsonl", "openai_chat"),
        ("openai_batch_input.jsonl", "openai_batch_input"),
        ("openai_batch_output.jsonl", "openai_batch_output"),
        ("otel_genai.json", "otel"),
        ("otel_legacy.jsonl", "otel"),
        ("otel_openinference.json", "otel"),
        ("langfuse_traces.json", "langfuse"),
        ("langfuse_traces.jsonl", "langfuse"),
    ],
)
def test_detect_format_of_each_fixture(name, fmt):
    assert detect_format(LOGS / name) == fmt
    assert fmt in FORMATS


def test_truncated_gzip_is_detected_from_the_lines_before_the_cut(tmp_path):
    # The lines that decompress are read (the loader keeps their records, #13); a gzip
    # that breaks off before any line is unreadable and named.
    assert detect_format(LOGS / "truncated.jsonl.gz") == "canonical_jsonl"
    data = (LOGS / "truncated.jsonl.gz").read_bytes()
    path = tmp_path / "cut-early.jsonl.gz"
    path.write_bytes(data[:30])
    with pytest.raises(UnreadableFile) as info:
        detect_format(path)
    assert info.value.path == str(path)
    assert "cut-early.jsonl.gz" in str(info.value)
    assert "truncated gzip" in info.value.reason


def test_truncated_gzip_is_unreadable_during_iteration_too():
    with pytest.raises(UnreadableFile, match="truncated gzip"):
        list(iter_records(LOGS / "truncated.jsonl.gz", "canonical_jsonl"))


def test_unknown_format_is_unreadable_and_names_the_file():
    with pytest.raises(UnreadableFile) as info:
        detect_format(LOGS / "unknown.txt")
    assert info.value.path.endswith("unknown.txt")
    assert info.value.reason.startswith("unknown format")
    assert "Nightly export finished" in info.value.reason


def test_empty_and_blank_files_are_unreadable(tmp_path):
    for name, content in [("empty.jsonl", b""), ("blank.jsonl", b"\n  \n\n"), ("empty.jsonl.gz", gzip.compress(b""))]:
        path = tmp_path / name
        path.write_bytes(content)
        with pytest.raises(UnreadableFile, match="empty file"):
            detect_format(path)
    (tmp_path / "empty.parquet").write_bytes(b"")
    with pytest.raises(UnreadableFile, match="empty file"):
        detect_format(tmp_path / "empty.parquet")


def test_corrupt_gzip_is_unreadable_and_non_utf8_text_is_not(tmp_path):
    corrupt = tmp_path / "corrupt.jsonl.gz"
    corrupt.write_bytes(b"\x1f\x8b\x08\x00" + b"\x00" * 6 + b"not deflate data at all")
    with pytest.raises(UnreadableFile, match="gzip"):
        detect_format(corrupt)
    # A line that is not UTF-8 does not make the file unreadable: its record is
    # rejected (not valid UTF-8) by the loader, the other lines load (#13).
    latin1 = tmp_path / "latin1.jsonl"
    latin1.write_bytes('{"log_id": "x", "input": "café", "output": "ok"}\n'.encode("latin-1"))
    assert detect_format(latin1) == "canonical_jsonl"


def test_truncated_parquet_is_unreadable(tmp_path):
    data = (LOGS / "canonical.parquet").read_bytes()
    cut = tmp_path / "cut.parquet"
    cut.write_bytes(data[: len(data) // 2])
    with pytest.raises(UnreadableFile, match="truncated Parquet"):
        detect_format(cut)


def test_gzip_damaged_beyond_the_sniffed_head_fails_during_iteration(tmp_path):
    # Detection reads only the head, so the damage must surface while iterating, as
    # UnreadableFile (the loader then discards the file's records).
    lines = "".join(
        json.dumps({"log_id": f"L{i}", "ts": 1763630100 + i, "input": f"question {i} " * 5, "output": "answer " * 8}) + "\n"
        for i in range(3000)
    )
    data = gzip.compress(lines.encode(), mtime=0)
    path = tmp_path / "big.jsonl.gz"
    path.write_bytes(data[: int(len(data) * 0.9)])
    assert detect_format(path) == "canonical_jsonl"
    seen = []
    with pytest.raises(UnreadableFile, match="truncated gzip") as info:
        for raw in iter_records(path, "canonical_jsonl"):
            seen.append(raw)
    assert info.value.path == str(path)
    assert 0 < len(seen) < 3000


def test_detection_survives_broken_first_lines(tmp_path):
    path = tmp_path / "late.jsonl"
    path.write_text(
        '{"log_id": "a", "input": "x", "outp\n'
        "not json at all\n"
        '{"log_id": "b", "ts": "2026-11-20T09:00:00Z", "input": "q", "output": "a"}\n'
    )
    assert detect_format(path) == "canonical_jsonl"
    records = list(iter_records(path, "canonical_jsonl"))
    assert [(r.line, r.error is None) for r in records] == [(1, False), (2, False), (3, True)]
    assert records[0].error.startswith("invalid JSON: Unterminated string")
    assert records[2].record["log_id"] == "b"


def test_detect_by_content_ignores_misleading_extension_and_reads_gzip_magic(tmp_path):
    path = tmp_path / "export.log"  # gzip without a .gz name
    path.write_bytes(gzip.compress((LOGS / "openai_chat.jsonl").read_bytes()))
    assert detect_format(path) == "openai_chat"
    assert len(list(iter_records(path, "openai_chat"))) == 7


def test_detect_a_large_single_line_otel_document_by_its_keys(tmp_path):
    # Collector batches can put megabytes on one line: more than the sniffed head.
    doc = json.loads((LOGS / "otel_genai.json").read_text())
    spans = doc["resourceSpans"][0]["scopeSpans"][0]["spans"]
    spans.extend([dict(spans[0], spanId=f"{i:016x}") for i in range(200)])
    path = tmp_path / "otel.json"
    path.write_text(json.dumps(doc) + "\n")
    assert path.stat().st_size > 1 << 16
    assert detect_format(path) == "otel"
    assert len(list(iter_records(path, "otel"))) == 204  # 4 LLM spans + 200 copies


def test_open_text_reads_gzip_and_skips_a_bom(tmp_path):
    with open_text(LOGS / "canonical.jsonl.gz") as f:
        assert f.read() == (LOGS / "canonical.jsonl").read_text()
    bom = tmp_path / "bom.jsonl"
    bom.write_bytes(b"\xef\xbb\xbf" + b'{"log_id": "b1", "ts": 1, "input": "i", "output": "o"}\n')
    assert detect_format(bom) == "canonical_jsonl"
    assert [r.record["log_id"] for r in iter_records(bom, "canonical_jsonl")] == ["b1"]


def test_iter_records_rejects_formats_it_does_not_read():
    for fmt in ("canonical_csv", "canonical_parquet", "openai_batch_input", "nonsense"):
        with pytest.raises(ValueError, match=fmt):
            iter_records(LOGS / "canonical.csv", fmt)  # raised at the call, not on first next()


# --------------------------------------------------------------------------- canonical


def test_canonical_jsonl_records_and_line_numbers():
    records = read("canonical.jsonl")
    assert len(records) == 7  # every non-blank line yields exactly one record
    assert [r.line for r in records] == [1, 2, 4, 5, 6, 7, 8]
    assert errors(records) == [
        (5, "invalid JSON: Unterminated string starting at (col 124)"),
        (7, "not a JSON object"),
    ]
    assert records[3].raw.startswith('{"log_id": "7f3d"')
    ids = by_id(records)
    full = ids["7f3a"].record
    assert full["prompt_version"] == "v12" and full["latency_ms"] == 1240 and full["tags"] == ["billing"]
    assert "metadata" not in full  # nothing unknown to keep
    assert ids["7f3b"].record == {
        "log_id": "7f3b", "ts": 1763630100,
        "input": "Do you ship to Norway?", "output": "Yes, we ship to Norway within 5 business days.",
    }


def test_canonical_keeps_values_as_found_and_unknown_keys_in_metadata():
    rec = by_id(read("canonical.jsonl"))["7f3c"].record
    assert rec["latency_ms"] == "980" and rec["prompt_tokens"] == "120" and rec["feedback"] == "-1"
    assert rec["context"] is None and rec["model"] is None
    # Own metadata wins a clash; the top-level value is kept under "_region", not dropped.
    assert rec["metadata"] == {"channel": "web", "region": "eu-central", "_region": "eu-west", "ab_bucket": "B"}
    assert set(rec) - {"metadata"} <= set(CANONICAL_FIELDS)


def test_canonical_gzip_reads_like_plain_text():
    plain, gz = read("canonical.jsonl"), read("canonical.jsonl.gz")
    assert gz == plain


def test_canonical_csv_and_parquet_fixtures_are_what_the_readme_says():
    with open_text(LOGS / "canonical.csv") as f:
        rows = list(csv.DictReader(f))
    assert [r["log_id"] for r in rows] == ["c-001", "c-002", "c-003", "c-004"]
    assert json.loads(rows[0]["tags"]) == ["account"] and json.loads(rows[2]["metadata"])["app_version"] == "3.2.1"
    assert "\n" in rows[1]["input"] and rows[2]["latency_ms"] == "not-a-number"
    table = pq.read_table(LOGS / "canonical.parquet")
    assert table.num_rows == 4 and "region" in table.column_names
    assert str(table.schema.field("ts").type) == "timestamp[us, tz=UTC]"


def test_json_array_of_canonical_records_has_element_lines(tmp_path):
    path = tmp_path / "array.json"
    path.write_text(
        "[\n"
        '  {"log_id": "a1", "ts": 1, "input": "i", "output": "o"},\n'
        "  {\n"
        '    "log_id": "a2", "ts": 2, "input": "i2", "output": "o2", "extra": true\n'
        "  }\n"
        "]\n"
    )
    assert detect_format(path) == "canonical_jsonl"
    records = list(iter_records(path, "canonical_jsonl"))
    assert [(r.line, r.record["log_id"]) for r in records] == [(2, "a1"), (3, "a2")]
    assert json.loads(records[1].raw)["extra"] is True
    assert records[1].record["metadata"] == {"extra": True}


def test_broken_pretty_printed_document_is_unreadable_during_iteration(tmp_path):
    text = (LOGS / "otel_genai.json").read_text().replace('"name": "POST",', '"name": "POST"', 1)
    path = tmp_path / "broken.json"
    path.write_text(text)
    assert detect_format(path) == "otel"  # detected from its keys
    with pytest.raises(UnreadableFile, match=r"invalid JSON document: Expecting ',' delimiter \(line 261, col 15\)"):
        list(iter_records(path, "otel"))


def test_broken_element_of_a_json_array_is_unreadable(tmp_path):
    path = tmp_path / "array.json"
    path.write_text('[{"log_id": "a1", "ts": 1, "input": "i", "output": "o"},\n {"log_id": "a2" "ts": 2}]\n')
    with pytest.raises(UnreadableFile, match=r"Expecting ',' delimiter \(line 2, col 18\)"):
        list(iter_records(path, "canonical_jsonl"))


# --------------------------------------------------------------------------- OpenAI chat


def test_openai_chat_readme_record():
    records = read("openai_chat.jsonl")
    assert len(records) == 7
    rec = records[0].record
    assert records[0].line == 1
    assert rec["log_id"] == "chatcmpl-abc123"
    assert rec["ts"] == 1715854074
    assert rec["source"] == "tool_router"  # workload_id before client_id
    assert rec["model"] == "llama-3-70b-instruct"
    assert rec["input"] == "What approvals do I need for paternity leave?"
    assert rec["output"] == "According to the HR policy, your manager approves it."
    assert (rec["prompt_tokens"], rec["completion_tokens"]) == (15, 72)
    assert "context" not in rec  # no tool messages, no "Context:" section
    assert rec["messages"] == [
        {"role": "system", "content": "You are an HR assistant."},
        {"role": "user", "content": "What approvals do I need for paternity leave?"},
        {"role": "assistant", "content": "According to the HR policy, your manager approves it."},
    ]
    meta = rec["metadata"]
    assert meta["workload_id"] == "tool_router" and meta["client_id"] == "acme-prod"
    assert meta["temperature"] == 0.2 and meta["finish_reason"] == "stop"
    assert meta["response_id"] == "chatcmpl-abc123" and meta["total_tokens"] == 87


def test_openai_chat_tool_call_with_string_arguments():
    rec = by_id(read("openai_chat.jsonl"))["chatcmpl-tool1"].record
    assert rec["output"] == 'search_orders({"order_id": "A-1"})'
    assert rec["metadata"]["tool_calls"] == [{"id": "call_1", "name": "search_orders", "arguments": {"order_id": "A-1"}}]
    assert rec["ts"] == 1715854100  # no top-level timestamp: response.created
    assert rec["source"] == "acme-prod"  # only client_id
    assert rec["latency_ms"] == "812"  # as found; the loader validates
    assert rec["model"] == "gpt-4o-mini-2024-07-18"
    assert rec["metadata"]["request_model"] == "gpt-4o-mini"
    assert rec["metadata"]["tools"][0]["function"]["name"] == "search_orders"
    assert rec["metadata"]["finish_reason"] == "tool_calls"


def test_openai_chat_tool_calls_with_object_arguments_and_own_id():
    records = read("openai_chat.jsonl")
    raw = records[2]
    assert raw.line == 4  # after the blank line 3
    rec = raw.record
    assert rec["log_id"] == "log-3" and rec["ts"] == "2024-05-16T10:10:00Z"
    assert rec["output"] == 'search_orders({"order_id": "A-1"})\nsearch_orders({"order_id": "B-7"})'
    assert [c["arguments"] for c in rec["metadata"]["tool_calls"]] == [{"order_id": "A-1"}, {"order_id": "B-7"}]
    assert "prompt_tokens" not in rec and "completion_tokens" not in rec
    assert rec["metadata"]["response_id"] == "chatcmpl-tool2"


def test_openai_chat_content_parts_and_multi_turn():
    rec = by_id(read("openai_chat.jsonl"))["chatcmpl-vis1"].record
    assert rec["input"] == "Here it is.\nCan I get a refund?"  # last user message, text parts joined
    assert rec["output"] == "Yes, a dented item qualifies for a full refund."
    assert [m["role"] for m in rec["messages"]] == ["user", "assistant", "user", "assistant"]
    assert rec["messages"][1]["content"] == "Sorry to hear that! Can you send a photo?"
    assert (rec["prompt_tokens"], rec["completion_tokens"]) == ("850", "12")


def test_openai_chat_rag_context_latency_seconds_and_extras():
    rec = by_id(read("openai_chat.jsonl"))["chatcmpl-rag1"].record
    assert rec["context"] == "The X200 battery lasts 12 hours.\nThe X200 charges fully in 2 hours."
    assert rec["latency_ms"] == 1500.0
    assert rec["source"] == "docs_qa"
    meta = rec["metadata"]
    assert meta["region"] == "eu" and meta["retriever"] == "bm25"  # own metadata merged
    assert meta["env"] == "prod" and meta["temperature"] == 0


def test_openai_chat_tool_results_are_the_context():
    rec = by_id(read("openai_chat.jsonl"))["chatcmpl-tool3"].record
    assert rec["context"] == '{"order_id": "A-1", "status": "shipped", "carrier": "DHL"}'
    assert rec["input"] == "Where is my order A-1?"
    assert rec["output"] == "Order A-1 has shipped with DHL."
    assert [m["role"] for m in rec["messages"]] == ["user", "assistant", "tool", "assistant"]
    assert rec["messages"][1]["content"] == 'search_orders({"order_id": "A-1"})'


def test_openai_chat_request_user_and_metadata_fill_canonical_fields():
    ids = by_id(read("openai_chat.jsonl"))
    rec = ids["chatcmpl-tool3"].record
    assert rec["user_id"] == "u-88"  # request.user
    # Stored-completions metadata: canonical keys fill the record's fields, as found.
    assert (rec["prompt_name"], rec["prompt_version"], rec["session_id"]) == ("router", "v4", "s-31")
    assert (rec["git_commit"], rec["feedback"], rec["tags"]) == ("9c1e2ab", "1", "orders,tracking")
    meta = rec["metadata"]
    assert meta["experiment"] == "rerank-b"  # not a canonical field
    # A field the record has already keeps its value; the other one is kept in metadata.
    assert rec["source"] == "tool_router" and meta["source"] == "other-app"
    for used in ("prompt_name", "prompt_version", "session_id", "git_commit", "feedback", "tags"):
        assert used not in meta
    assert set(rec) - {"metadata"} <= set(CANONICAL_FIELDS)


def test_openai_chat_own_and_derived_values_win_over_request_metadata():
    ids = by_id(read("openai_chat.jsonl"))
    top = ids["log-3"].record
    assert top["session_id"] == "s-top" and top["metadata"]["session_id"] == "s-meta"
    assert top["prompt_version"] == "v2"
    assert "user_id" not in top  # no request.user, no metadata user_id
    rag = ids["chatcmpl-rag1"].record
    assert rag["user_id"] == "u-docs-1" and rag["prompt_version"] == "docs-7"
    assert rag["context"] == "The X200 battery lasts 12 hours.\nThe X200 charges fully in 2 hours."
    meta = rag["metadata"]
    assert meta["context"] == "Stale context."  # derived from the system prompt, so kept aside
    assert meta["region"] == "eu" and meta["_region"] == "us"  # the log's own metadata first
    first = by_id(read("openai_chat.jsonl"))["chatcmpl-abc123"].record
    assert "user_id" not in first and "prompt_version" not in first


def test_openai_chat_broken_line():
    records = read("openai_chat.jsonl")
    assert errors(records) == [(8, "invalid JSON: Expecting ',' delimiter (col 157)")]
    assert records[-1].record is None and records[-1].raw.startswith('{"timestamp": 1715854600')


# --------------------------------------------------------------------------- OpenAI batch


def test_load_batch_requests():
    requests = load_batch_requests(LOGS / "openai_batch_input.jsonl")
    assert sorted(requests) == ["req-1", "req-2", "req-3", "req-4"]
    assert requests["req-2"]["body"]["metadata"]["source"] == "nightly-summaries"


def test_batch_requests_keep_the_last_line_of_a_custom_id_in_arrow(tmp_path):
    from flywheel.ingest.formats import BATCH_INPUT, day_batch_requests, load_companion

    first, second = tmp_path / "a.jsonl", tmp_path / "b.jsonl"
    first.write_bytes(b'{"custom_id": "req-1", "body": {"model": "old"}}\n'
                      b'{"custom_id": "req-1", "body": {"model": "new"}}\n'
                      b'{"custom_id": 2, "body": "{\\"model\\": \\"as text\\"}"}\n'
                      b'{"custom_id": "not-utf8-\xff", "body": {"model": "odd"}}\n'
                      b'{"custom_id": "req-3"}\n')
    second.write_bytes(b'{"custom_id": "req-1", "body": {"model": "second file"}}\n')
    requests = load_batch_requests(first)
    assert requests["req-1"] == {"body": {"model": "new"}}
    assert requests["2"] == {"body": '{"model": "as text"}'}  # as found: the mapper parses it
    assert requests["not-utf8-\udcff"] == {"body": {"model": "odd"}}  # kept out of Arrow
    assert requests["req-3"] == {"body": None} and requests.get("req-9") is None
    assert requests.ids.column("custom_id").to_pylist() == ["req-1", "2", "req-3"]
    assert requests.ids.column("object").to_pylist() == [True, False, False]  # what SQL may join
    day = {**load_companion(first, "openai_batch_input"), **load_companion(second, "openai_batch_input")}
    assert sorted(key[0] for key in day) == [BATCH_INPUT, BATCH_INPUT]
    merged = day_batch_requests(day)
    assert merged["req-1"] == {"body": {"model": "second file"}} and len(merged) == 4
    # A subset answers for the custom ids it was cut for, and asks the whole day for others.
    subset = merged.subset(pa.array(["req-3", None, "req-3", "req-9"]))
    assert subset.table.num_rows == 1 and subset["req-3"] == {"body": None}
    assert subset["req-1"] == {"body": {"model": "second file"}} and "req-9" not in subset


def test_openai_batch_output_joins_the_input_file():
    requests = load_batch_requests(LOGS / "openai_batch_input.jsonl")
    records = read("openai_batch_output.jsonl", batch_requests=requests)
    assert len(records) == 5
    first = records[0].record
    assert first["log_id"] == "chatcmpl-b2" and first["ts"] == 1711652795
    assert first["input"] == "Summarize: invoice 2291 was charged twice."
    assert first["output"] == "Invoice 2291 was charged twice."
    assert first["source"] == "nightly-summaries"
    assert first["model"] == "gpt-4o-mini-2024-07-18"
    assert (first["prompt_tokens"], first["completion_tokens"]) == (22, 8)
    meta = first["metadata"]
    assert meta["custom_id"] == "req-2" and meta["batch_request_id"] == "batch_req_2" and meta["request_id"] == "req_b2"
    assert meta["ticket"] == "T-2291" and "source" not in meta
    second = records[1].record
    assert second["input"] == "Summarize: customer cannot log in after password reset, tried twice."
    assert second["messages"][0] == {"role": "system", "content": "Summarize the ticket in one sentence."}
    assert "source" not in second  # no body.metadata.source: absent (the loader defaults it)


def test_openai_batch_body_user_and_metadata_fill_canonical_fields():
    requests = load_batch_requests(LOGS / "openai_batch_input.jsonl")
    records = by_id(read("openai_batch_output.jsonl", batch_requests=requests))
    summary = records["chatcmpl-b1"].record
    assert summary["user_id"] == "u-3"  # body.user wins over metadata.user_id
    assert summary["metadata"]["user_id"] == "u-other"
    assert (summary["prompt_version"], summary["session_id"]) == ("sum-2", "s-77")
    assert "prompt_version" not in summary["metadata"] and "session_id" not in summary["metadata"]
    assert "source" not in summary
    invoice = records["chatcmpl-b2"].record
    assert (invoice["source"], invoice["prompt_name"]) == ("nightly-summaries", "ticket-summary")
    assert "user_id" not in invoice and "prompt_name" not in invoice["metadata"]
    assert invoice["metadata"]["ticket"] == "T-2291"


def test_openai_batch_output_failures_and_orphans_are_error_records():
    requests = load_batch_requests(LOGS / "openai_batch_input.jsonl")
    records = read("openai_batch_output.jsonl", batch_requests=requests)
    assert errors(records) == [
        (3, "batch request failed: server_error: The server had an error while processing your request."),
        (4, "batch request failed: status 400: invalid_value: max_tokens is too large: 5 is less than the minimum."),
        (5, "no batch input line for custom_id req-9"),
    ]
    assert records[4].field == "input"


def test_openai_batch_output_without_input_file_rejects_every_line():
    records = read("openai_batch_output.jsonl")
    assert len(records) == 5 and all(r.error for r in records)
    assert records[0].error == "no batch input line for custom_id req-2"


# --------------------------------------------------------------------------- OpenTelemetry


def test_otel_current_genai_names():
    stats: dict = {}
    records = read("otel_genai.json", stats=stats)
    assert stats["ignored_spans"] == 2  # the HTTP span and the embeddings span
    assert [r.record["log_id"] for r in records] == [
        "eee19b7ec3c1b174", "00f067aa0ba902b7", "4a1c2e3f5b6d7e8f", "6e0c63257de34c92",
    ]
    # Line of each span's "spanId" member; the second is found past the first span's
    # parentSpanId, which holds the same id.
    assert [r.line for r in records] == [35, 137, 190, 350]
    rec = records[0].record
    assert rec["ts"] == "2024-05-16T10:07:54.000000Z"
    assert rec["latency_ms"] == 1200.0
    assert rec["source"] == "docs-assistant"
    assert rec["model"] == "gpt-4o-2024-08-06"
    assert (rec["prompt_tokens"], rec["completion_tokens"]) == (52, 47)
    assert rec["input"] == "What is the API rate limit?"
    assert rec["output"] == "The limit is 600 requests per minute."
    assert rec["context"] == "The API rate limit is 600 requests per minute."
    assert rec["session_id"] == "conv-42" and rec["user_id"] == "u-7"
    assert rec["messages"][0]["role"] == "system" and len(rec["messages"]) == 3
    meta = rec["metadata"]
    assert meta["trace_id"] == "5b8efff798038103d269b633813fc60c"
    assert meta["span_name"] == "chat gpt-4o"
    assert meta["scope_name"] == "opentelemetry.instrumentation.openai_v2"
    assert meta["gen_ai.request.model"] == "gpt-4o"  # not the one used as model
    assert meta["gen_ai.request.temperature"] == 0.3
    assert meta["gen_ai.response.finish_reasons"] == ["stop"]
    assert meta["resource.deployment.environment.name"] == "production"
    assert "gen_ai.input.messages" not in meta and "gen_ai.usage.input_tokens" not in meta
    assert json.loads(records[0].raw)["spanId"] == "eee19b7ec3c1b174"


def test_otel_tool_calls_and_tool_responses():
    ids = by_id(read("otel_genai.json"))
    call = ids["00f067aa0ba902b7"].record
    assert call["output"] == 'get_weather({"city": "Paris"})'
    assert call["metadata"]["tool_calls"] == [{"id": "call_w1", "name": "get_weather", "arguments": {"city": "Paris"}}]
    assert call["prompt_tokens"] == 40 and call["model"] == "gpt-4o"
    answer = ids["4a1c2e3f5b6d7e8f"].record
    assert answer["context"] == "rainy, 57°F"
    assert answer["output"] == "It is rainy in Paris, 57°F."
    assert answer["metadata"]["status"] == {"code": 1}
    no_content = ids["6e0c63257de34c92"].record
    assert no_content["source"] == "billing-bot"
    assert "input" not in no_content and "output" not in no_content  # the loader rejects it, visibly


def test_otel_legacy_names_events_and_broken_line():
    stats: dict = {}
    records = read("otel_legacy.jsonl", stats=stats)
    assert stats["ignored_spans"] == 1  # the traceloop workflow span
    assert [r.line for r in records] == [1, 3, 4, 5, 6]
    assert records[2].error == "invalid JSON: Unterminated string starting at (col 179)"
    openllmetry = records[0].record
    assert openllmetry["log_id"] == "3333cccc4444dddd"
    assert openllmetry["input"] == "Can I return shoes after 3 weeks?"
    assert openllmetry["output"] == "Yes, returns are accepted within 30 days."
    assert openllmetry["context"] == "Shoes can be returned within 30 days."
    assert (openllmetry["prompt_tokens"], openllmetry["completion_tokens"]) == (41, 9)
    assert openllmetry["model"] == "gpt-3.5-turbo-0125"
    assert openllmetry["metadata"]["llm.usage.total_tokens"] == 50
    assert openllmetry["metadata"]["llm.is_streaming"] is False
    assert not any(k.startswith("gen_ai.prompt.") for k in openllmetry["metadata"])
    events = records[1].record
    assert events["input"] == "Do you sell gift cards?"
    assert events["output"] == "Yes, from 10 to 200 euros."
    assert events["messages"][0] == {"role": "system", "content": "You are a shop assistant."}
    assert events["metadata"]["events"][0]["name"] == "exception"
    assert events["metadata"]["finish_reason"] == "stop"
    assert events["ts"] == "2024-05-16T11:48:20.000000Z" and events["latency_ms"] == 750.0
    old = records[3].record
    # protobuf-JSON base64 ids come out as the hex ids OTLP/JSON writes for the same span
    assert old["log_id"] == "ee19c7b7e3c1b174"
    assert old["metadata"]["trace_id"] == "ab5a3fe69de5907774bfc020f5143ecc"
    assert (old["input"], old["output"]) == ("Translate 'thank you' to German.", "Danke.")
    tool = records[4].record
    assert tool["output"] == 'book_table({"people": 2, "time": "19:00"})'
    assert tool["metadata"]["tool_calls"][0]["arguments"] == {"people": 2, "time": "19:00"}


def test_otel_openinference():
    stats: dict = {}
    records = read("otel_openinference.json", stats=stats)
    assert stats["ignored_spans"] == 2  # CHAIN and RETRIEVER
    assert [r.line for r in records] == [94, 253, 306]
    rec = records[0].record
    assert rec["log_id"] == "e2e2e2e2e2e2e2e2"
    assert rec["model"] == "gpt-4o-mini"
    assert rec["input"] == "What does the premium plan cost?"
    assert rec["output"] == "The premium plan costs 20 dollars per month."
    assert rec["context"] == "Premium: $20/month, billed monthly."
    assert (rec["prompt_tokens"], rec["completion_tokens"]) == (58, 11)
    assert rec["session_id"] == "sess-77" and rec["user_id"] == "u-19"
    assert rec["prompt_version"] == "v3" and rec["tags"] == ["pricing", "rag"]
    assert rec["latency_ms"] == 2400.0 and rec["ts"] == "2024-05-16T14:33:20.500000Z"
    assert rec["metadata"]["experiment"] == "rerank-v2"  # the OpenInference metadata JSON
    assert rec["metadata"]["llm.token_count.total"] == 69
    assert "input.value" not in rec["metadata"]
    plain = records[1].record
    assert (plain["input"], plain["output"]) == ("Write a tagline for a bakery.", "Fresh from our oven to your heart.")
    assert (plain["prompt_tokens"], plain["completion_tokens"]) == (7, "9")
    parts = records[2].record
    assert parts["input"] == "Is this receipt valid?"
    assert parts["output"] == 'check_receipt({"receipt_id": "R-88"})'


def test_otel_stats_counts_across_documents_in_one_dict():
    stats = {"ignored_spans": 5}  # the loader may share one dict over several files
    read("otel_legacy.jsonl", stats=stats)
    assert stats["ignored_spans"] == 6


def test_non_otlp_json_line_in_an_otel_file_is_an_error(tmp_path):
    path = tmp_path / "mixed.jsonl"
    good = (LOGS / "otel_legacy.jsonl").read_text().split("\n")[0]
    path.write_text(good + "\n" + '{"hello": "world"}\n')
    records = list(iter_records(path, "otel"))
    assert [(r.line, r.error) for r in records] == [(1, None), (2, "not an OTLP/JSON document (no resourceSpans)")]


# --------------------------------------------------------------------------- Langfuse


def test_langfuse_array_trace_with_dict_input():
    records = read("langfuse_traces.json")
    assert [r.line for r in records] == [2, 101, 157, 210]  # where each trace object starts
    rec = records[0].record
    assert rec["log_id"] == "t-1" and rec["ts"] == "2025-06-01T10:00:00Z" and rec["source"] == "qa"
    assert rec["input"] == "reset pw?"
    assert rec["context"] == "Passwords are reset via 'Forgot password'.\n\nReset links expire after 1 hour."
    assert rec["output"] == "Click 'Forgot password'"
    assert rec["session_id"] == "s-9" and rec["user_id"] == "u-7" and rec["tags"] == ["prod"]
    assert rec["model"] == "gpt-4o-mini" and rec["prompt_name"] == "qa" and rec["prompt_version"] == 4
    assert (rec["prompt_tokens"], rec["completion_tokens"]) == (12, 8)
    assert rec["latency_ms"] == 1200.0 and rec["cost_usd"] == 0.0004
    assert rec["feedback"] == 1  # API user-feedback 1; the ANNOTATION score is a label
    meta = rec["metadata"]
    assert meta["tenant"] == "acme" and meta["release"] == "v3" and meta["input.locale"] == "en-GB"
    assert [s["id"] for s in meta["langfuse_scores"]] == ["sc-1", "sc-2"]
    assert [o["id"] for o in meta["langfuse_observations"]] == ["o-0", "o-1"]
    assert "input" not in meta["langfuse_observations"][1]
    assert json.loads(records[0].raw)["id"] == "t-1"


def test_langfuse_message_input_environment_source_and_thumbs():
    rec = by_id(read("langfuse_traces.json"))["t-2"].record
    assert rec["source"] == "production"  # no name
    assert rec["input"] == "When do flights to Oslo leave?"
    assert rec["context"] == "Flights to Oslo leave at 08:00 and 17:30."
    assert rec["output"] == "At 08:00 and 17:30."
    assert rec["messages"][-1] == {"role": "assistant", "content": "At 08:00 and 17:30."}
    assert rec["latency_ms"] == 850.0  # "0.85" seconds
    assert (rec["prompt_tokens"], rec["completion_tokens"]) == (140, 9)
    assert rec["feedback"] == -1  # BOOLEAN thumbs 0 -> -1
    assert "cost_usd" not in rec and "session_id" not in rec


def test_langfuse_answer_output_latest_feedback_and_generation_fallback():
    ids = by_id(read("langfuse_traces.json"))
    t3 = ids["t-3"].record
    assert t3["output"] == "No, we deliver Monday to Saturday."
    assert t3["feedback"] == -1  # the latest API feedback wins; ANNOTATION ignored
    assert t3["metadata"]["langfuse_observations"] == ["o-3a", "o-3b"]
    assert "model" not in t3 and "latency_ms" not in t3
    t4 = ids["t-4"].record
    assert t4["input"] == "Summarize the meeting notes." and t4["output"] == "Decisions: ship Friday."
    assert (t4["prompt_tokens"], t4["completion_tokens"]) == (900, 6)
    assert t4["prompt_name"] == "summarize" and t4["cost_usd"] == 0.0021 and "feedback" not in t4


def test_langfuse_jsonl_with_damage():
    records = read("langfuse_traces.jsonl")
    assert [r.line for r in records] == [1, 2, 3, 4, 5]
    assert errors(records) == [(3, "invalid JSON: Expecting value (col 96)"), (4, "not a JSON object")]
    t6 = records[1].record
    assert t6["input"] == "price of plan B" and t6["metadata"]["input.filters"] == {"region": "eu"}
    assert t6["output"] == "Plan B costs 12 euros."
    assert t6["feedback"] == -1  # CATEGORICAL "thumbs down"
    assert t6["cost_usd"] == "0.0001" and t6["prompt_version"] == "3"
    assert (t6["prompt_tokens"], t6["completion_tokens"]) == (30, 7)
    assert records[4].record["log_id"] == "t-9" and "feedback" not in records[4].record


def test_langfuse_data_wrapper(tmp_path):
    traces = json.loads((LOGS / "langfuse_traces.json").read_text())
    path = tmp_path / "api.json"
    path.write_text(json.dumps({"data": traces[:2], "meta": {"page": 1, "totalItems": 2}}, indent=2))
    assert detect_format(path) == "langfuse"
    records = list(iter_records(path, "langfuse"))
    assert [r.record["log_id"] for r in records] == ["t-1", "t-2"]
    assert records[0].line < records[1].line
    lines = path.read_text().split("\n")
    assert '"id": "t-2"' in lines[records[1].line - 1]


@pytest.mark.parametrize(
    ("score", "expected"),
    [
        ({"name": "user-feedback", "source": "API", "dataType": "NUMERIC", "value": 0}, 0),
        ({"name": "user-feedback", "source": "API", "dataType": "NUMERIC", "value": 0.5}, 1),
        ({"name": "user-feedback", "source": "EVAL", "dataType": "NUMERIC", "value": -3}, -1),
        ({"name": "thumbs", "source": "API", "value": 0}, -1),
        ({"name": "thumbs", "source": "API", "value": "1"}, 1),
        ({"name": "feedback", "source": "API", "dataType": "BOOLEAN", "value": 1, "stringValue": "True"}, 1),
        ({"name": "feedback", "source": "ANNOTATION", "dataType": "NUMERIC", "value": 1}, None),
        ({"name": "relevance", "source": "API", "dataType": "NUMERIC", "value": 1}, None),
    ],
)
def test_langfuse_feedback_rule(tmp_path, score, expected):
    path = tmp_path / "t.jsonl"
    trace = {"id": "t", "timestamp": "2025-06-01T00:00:00Z", "name": "x", "input": "i", "output": "o", "scores": [score]}
    path.write_text(json.dumps(trace) + "\n")
    [raw] = iter_records(path, "langfuse")
    assert raw.record.get("feedback") == expected


def test_openai_chat_top_level_canonical_fields_win_but_nulls_do_not_erase(tmp_path):
    entry = json.loads((LOGS / "openai_chat.jsonl").read_text().split("\n")[0])
    entry.update({"log_id": "proxy-1", "id": "row-9", "ts": None, "source": "hr-portal", "session_id": "s-5", "feedback": -1})
    path = tmp_path / "proxy.jsonl"
    path.write_text(json.dumps(entry) + "\n")
    [raw] = iter_records(path, "openai_chat")
    rec = raw.record
    assert rec["log_id"] == "proxy-1" and rec["metadata"]["id"] == "row-9"
    assert rec["ts"] == 1715854074  # "ts": null leaves the derived timestamp
    assert (rec["source"], rec["session_id"], rec["feedback"]) == ("hr-portal", "s-5", -1)


def test_broken_pretty_document_with_lone_list_items_is_still_one_document(tmp_path):
    # Lines like `"prod"` parse on their own but are no JSON lines records.
    path = tmp_path / "trace.json"
    path.write_text('{\n  "id": "t-1",\n  "timestamp": "2025-06-01T10:00:00Z",\n  "tags": [\n    "prod"\n  ]\n  "latency": 1\n}\n')
    with pytest.raises(UnreadableFile, match=r"invalid JSON document: Expecting ',' delimiter \(line 7"):
        list(iter_records(path, "langfuse"))


# --------------------------------------------------------------------------- files written by the tools
#
# tests/fixtures/tools/logs/ holds files the tools wrote themselves (or built by the
# tool's own published code where it cannot run here), see tests/fixtures/ORIGIN.md.
# Expected values are read from the fixture's own fields, not typed in.

TOOLS = LOGS.parent / "tools" / "logs"
QUESTIONS = ["How do I change my billing email?", "When are invoices sent?"]
ANSWERS = ["Go to Settings > Billing and edit the contact email.",
           "Invoices are sent on the first day of each month."]
CONTEXT = ("Invoices are sent on the first day of each month. The billing contact can be "
           "changed under Settings > Billing.")


def read_tool(name: str, companions: tuple[str, ...] = ()) -> list[RawRecord]:
    """Return the RawRecords of a tool-written fixture, with its companion files loaded."""
    from flywheel.ingest.formats import load_companion

    extra: dict = {}
    for companion in companions:
        extra.update(load_companion(TOOLS / companion, detect_format(TOOLS / companion)))
    return list(iter_records(TOOLS / name, detect_format(TOOLS / name), batch_requests=extra))


def otlp_spans(name: str) -> list[dict]:
    """Return the spans of an OTLP/JSON file (every line), as the file has them."""
    spans = []
    with open(TOOLS / name) as f:
        docs = [json.loads(line) for line in f if line.strip()] if name.endswith(".jsonl") else [json.load(f)]
    for doc in docs:
        for rs in doc["resourceSpans"]:
            for ss in rs["scopeSpans"]:
                spans.extend(ss["spans"])
    return spans


def attribute(span: dict, key: str):
    """Return the OTLP attribute ``key`` of a span as written (its one typed value)."""
    value = next(a["value"] for a in span["attributes"] if a["key"] == key)
    return next(iter(value.values()))


def assert_support_chat(records: list[RawRecord], spans: list[dict]) -> None:
    """Assert the two support conversations were read field by field from the spans."""
    assert [r.error for r in records] == [None, None]
    for record, span, question, answer in zip((r.record for r in records), spans, QUESTIONS, ANSWERS):
        assert record["log_id"] == span["spanId"]
        assert (record["input"], record["output"], record["context"]) == (question, answer, CONTEXT)
        assert record["source"] == "support-bot"
        start, end = int(span["startTimeUnixNano"]), int(span["endTimeUnixNano"])
        assert record["latency_ms"] == pytest.approx((end - start) / 1e6)
        assert record["messages"][0]["role"] == "system" and record["messages"][-1] == {
            "role": "assistant", "content": answer}


def test_otel_openai_v2_default_mode_reads_content_from_its_log_records():
    assert detect_format(TOOLS / "otel_openai_v2_default.spans.jsonl") == "otel"
    assert detect_format(TOOLS / "otel_openai_v2_default.logs.jsonl") == "otel_logs"
    spans = otlp_spans("otel_openai_v2_default.spans.jsonl")
    # The spans alone carry no content in this mode (it is in the log records).
    alone = read_tool("otel_openai_v2_default.spans.jsonl")
    assert all("input" not in r.record and "output" not in r.record for r in alone)
    records = read_tool("otel_openai_v2_default.spans.jsonl", ("otel_openai_v2_default.logs.jsonl",))
    assert_support_chat(records, spans)
    for record, span in zip((r.record for r in records), spans):
        assert record["model"] == attribute(span, "gen_ai.response.model") == "gpt-4o-mini-2024-07-18"
        assert record["prompt_tokens"] == int(attribute(span, "gen_ai.usage.input_tokens"))
        assert record["completion_tokens"] == int(attribute(span, "gen_ai.usage.output_tokens"))
        assert record["metadata"]["trace_id"] == span["traceId"]
        assert record["metadata"]["finish_reason"] == "stop"


def test_otel_protobuf_json_ids_are_normalized_to_the_hex_of_otlp_json():
    hex_records = read_tool("otel_openai_v2_default.spans.jsonl", ("otel_openai_v2_default.logs.jsonl",))
    pb_records = read_tool("otel_openai_v2_default.spans.pb.json", ("otel_openai_v2_default.logs.pb.json",))
    pb_span = otlp_spans("otel_openai_v2_default.spans.pb.json")[0]
    assert pb_span["spanId"].endswith("=")  # MessageToJson writes base64
    assert [r.record["log_id"] for r in pb_records] == [s["spanId"] for s in otlp_spans("otel_openai_v2_default.spans.jsonl")]
    for pb, plain in zip(pb_records, hex_records):
        for field in ("log_id", "ts", "input", "output", "context", "model", "prompt_tokens",
                      "completion_tokens", "latency_ms", "source"):
            assert pb.record[field] == plain.record[field], field
        assert pb.record["metadata"]["trace_id"] == plain.record["metadata"]["trace_id"]


def test_otel_ids_normalization_keeps_what_is_no_id():
    from flywheel.ingest.formats import normalize_id

    assert normalize_id("bfKrGCn1DJ0=") == "6df2ab1829f50c9d"
    assert normalize_id("6DF2AB1829F50C9D") == "6df2ab1829f50c9d"
    assert normalize_id("") == "" and normalize_id(None) is None and normalize_id("not-an-id") == "not-an-id"


def test_otel_openai_v2_latest_conventions_content_on_the_span():
    spans = otlp_spans("otel_openai_v2_latest.spans.jsonl")
    records = read_tool("otel_openai_v2_latest.spans.jsonl")
    assert_support_chat(records, spans)
    assert records[0].record["prompt_tokens"] == int(attribute(spans[0], "gen_ai.usage.input_tokens"))


def test_otel_openinference_spans():
    spans = otlp_spans("otel_openinference.spans.jsonl")
    records = read_tool("otel_openinference.spans.jsonl")
    assert_support_chat(records, spans)
    first = records[0].record
    assert first["model"] == attribute(spans[0], "llm.model_name")
    assert first["prompt_tokens"] == int(attribute(spans[0], "llm.token_count.prompt"))
    assert first["completion_tokens"] == int(attribute(spans[0], "llm.token_count.completion"))


def test_otel_traceloop_spans():
    spans = otlp_spans("otel_traceloop.spans.jsonl")
    records = read_tool("otel_traceloop.spans.jsonl")
    assert_support_chat(records, spans)
    for record, span in zip((r.record for r in records), spans):
        assert record["user_id"] == attribute(span, "gen_ai.user") == "u-7"
        assert record["model"] == attribute(span, "gen_ai.response.model")
        assert record["prompt_tokens"] == int(attribute(span, "gen_ai.usage.input_tokens"))
        assert record["completion_tokens"] == int(attribute(span, "gen_ai.usage.output_tokens"))


def test_openai_batch_for_the_responses_api():
    outputs = [json.loads(line) for line in open(TOOLS / "openai_batch_responses_output.jsonl")]
    inputs = {line["custom_id"]: line for line in map(json.loads, open(TOOLS / "openai_batch_responses_input.jsonl"))}
    assert detect_format(TOOLS / "openai_batch_responses_input.jsonl") == "openai_batch_input"
    records = read_tool("openai_batch_responses_output.jsonl", ("openai_batch_responses_input.jsonl",))
    assert len(records) == len(outputs) == 3
    for record, line in zip((r.record for r in records[:2]), outputs):
        body, request = line["response"]["body"], inputs[line["custom_id"]]["body"]
        assert record["log_id"] == body["id"] and record["log_id"].startswith("resp_")
        assert record["input"] == request["input"]
        assert record["output"] == body["output"][0]["content"][0]["text"]
        assert record["context"] == CONTEXT  # from the Context: line of the instructions
        assert record["messages"][0] == {"role": "system", "content": request["instructions"]}
        assert record["model"] == body["model"]
        assert (record["prompt_tokens"], record["completion_tokens"]) == (
            body["usage"]["input_tokens"], body["usage"]["output_tokens"])
        assert record["ts"] == int(body["created_at"])
        assert (record["source"], record["prompt_version"]) == ("support-bot", "v3")  # request metadata
        assert record["metadata"]["request_id"] == line["response"]["request_id"]
    assert records[2].record is None and "batch_expired" in records[2].error


def test_nvidia_flywheel_records_get_a_stable_id_from_their_content(tmp_path):
    lines = [json.loads(line) for line in open(TOOLS / "nvidia_flywheel.jsonl")]
    assert all("id" not in line["response"] for line in lines)
    records = read_tool("nvidia_flywheel.jsonl")
    again = read_tool("nvidia_flywheel.jsonl")
    ids = [r.record["log_id"] for r in records]
    assert ids == [r.record["log_id"] for r in again] and len(set(ids)) == 2
    assert all(i.startswith("sha256:") and len(i) == len("sha256:") + 32 for i in ids)
    for record, line, question in zip((r.record for r in records), lines, QUESTIONS):
        assert record["metadata"]["log_id_from"] == "content"
        assert (record["input"], record["context"]) == (question, CONTEXT)
        assert record["output"] == line["response"]["choices"][0]["message"]["content"]
        assert (record["source"], record["ts"], record["model"]) == ("aiva_1", line["timestamp"], line["request"]["model"])
    # Any change to the record gives another id.
    changed = dict(lines[0], timestamp=lines[0]["timestamp"] + 1)
    path = tmp_path / "changed.jsonl"
    path.write_text(json.dumps(changed) + "\n")
    assert next(iter_records(path, "openai_chat")).record["log_id"] not in ids


@pytest.mark.parametrize("name", ["langfuse_ui_export.json", "langfuse_ui_export.jsonl"])
def test_langfuse_ui_export(name):
    rows = json.loads((TOOLS / "langfuse_ui_export.json").read_text())
    assert isinstance(rows[0]["input"], str)  # JSON text, as the export writes it
    records = read_tool(name)
    assert [r.error for r in records] == [None, None]
    for record, row, question, answer in zip((r.record for r in records), rows, QUESTIONS, ANSWERS):
        assert (record["log_id"], record["ts"], record["source"]) == (row["id"], row["timestamp"], row["name"])
        assert (record["input"], record["output"], record["context"]) == (question, answer, CONTEXT)
        assert (record["prompt_tokens"], record["completion_tokens"]) == (
            row["usage"]["promptTokens"], row["usage"]["completionTokens"])
        assert record["latency_ms"] == pytest.approx(row["latency"] * 1000)
        assert record["feedback"] == row["user-feedback"][-1]  # the score column, not metadata
        assert (record["session_id"], record["user_id"]) == (row["sessionId"], row["userId"])
        assert record["metadata"]["prompt_version"] == "v3"  # metadata JSON text parsed


@pytest.mark.parametrize("name", ["langfuse_trace_download.json", "langfuse_trace_download_old.json"])
def test_langfuse_single_trace_download(name):
    doc = json.loads((TOOLS / name).read_text())
    generation = doc["observations"][0]
    [raw] = read_tool(name)
    record = raw.record
    assert raw.error is None
    assert record["log_id"] == generation["traceId"]
    assert record["ts"] == generation["startTime"]
    assert (record["input"], record["output"], record["context"]) == (QUESTIONS[0], ANSWERS[0], CONTEXT)
    assert record["model"] == generation["model"]
    assert (record["prompt_tokens"], record["completion_tokens"]) == (
        generation["usageDetails"]["input"], generation["usageDetails"]["output"])
    assert record["latency_ms"] == pytest.approx(1200.0)
    assert record["feedback"] == 1  # the user-feedback score (source API)


def test_a_day_of_tool_files_loads_and_an_unreadable_file_does_not_fail_rejected_share(settings):
    """The loader joins a day's OTel logs with its spans, completes batch output from its
    input file, names an unreadable file with its reason, and the day's rejected_share
    check passes because no record of the readable files was rejected."""
    import shutil

    from flywheel import quality, store
    from flywheel.ingest.loader import ingest_day

    day = "2026-11-21"
    folder = settings.landing_for(day)
    folder.mkdir(parents=True)
    for path in TOOLS.iterdir():
        if ".pb." not in path.name:  # the protobuf copies hold the same spans again
            shutil.copy(path, folder / path.name)
    (folder / "notes.txt").write_text("exported by hand, not a log format\n")
    with store.connection(settings) as con:
        report = ingest_day(con, settings, day)
        by_name = {f.source_file.rsplit("/", 1)[-1]: f for f in report.files}
        assert "unknown format" in by_name["notes.txt"].error
        assert by_name["otel_openai_v2_default.logs.jsonl"].format == "otel_logs"
        assert by_name["otel_openai_v2_default.spans.jsonl"].accepted == 2
        assert by_name["otel_openai_v2_default.spans.jsonl"].rejected == 0
        assert by_name["openai_batch_responses_output.jsonl"].accepted == 2
        assert by_name["openai_batch_responses_output.jsonl"].rejected == 1  # the expired request
        for name in ("nvidia_flywheel.jsonl", "langfuse_ui_export.json", "otel_openinference.spans.jsonl",
                     "otel_openai_v2_latest.spans.jsonl", "langfuse_trace_download.json"):
            assert by_name[name].accepted >= 1 and by_name[name].rejected == 0, name
        stored = con.execute(
            "SELECT input, context FROM logs WHERE day = ? AND source_format = 'otel' AND source_file LIKE '%default%'",
            [day]).fetchall()
        assert sorted(stored) == sorted((q, CONTEXT) for q in QUESTIONS)
        outcome = next(o for o in quality.check_partition(con, day, max_rejected_share=0.2)
                       if o.name == "rejected_share")
    assert outcome.passed, outcome.description
    assert outcome.metadata["rejected"] == 1


def test_otel_collector_file_with_logs_and_spans_together(tmp_path):
    """A collector writing both pipelines to one file: log lines first, then span lines."""
    mixed = tmp_path / "otel-collector.jsonl"
    mixed.write_text((TOOLS / "otel_openai_v2_default.logs.jsonl").read_text()
                     + (TOOLS / "otel_openai_v2_default.spans.jsonl").read_text())
    assert detect_format(mixed) == "otel"
    records = list(iter_records(mixed, "otel"))
    assert_support_chat(records, otlp_spans("otel_openai_v2_default.spans.jsonl"))


def test_otel_openai_v2_latest_conventions_content_in_an_operation_details_log_record():
    spans = otlp_spans("otel_openai_v2_latest_events.spans.jsonl")
    assert not any(a["key"] == "gen_ai.input.messages" for a in spans[0]["attributes"])
    records = read_tool("otel_openai_v2_latest_events.spans.jsonl", ("otel_openai_v2_latest_events.logs.jsonl",))
    assert_support_chat(records, spans)
    assert "events" not in records[0].record["metadata"]  # the content is not kept twice
