"""Tests of the demo data generator (flywheel.demo).

The landing files are read back here with small readers of our own, independent of the
ingestion code, so that these tests pin down what the generator promises: every format
every day, ids as the ingestion will see them, the truth covering exactly the good
records, the planted slices, the bad records and duplicates counted in the summary.
"""

from __future__ import annotations

import csv
import datetime as dt
import gzip
import inspect
import json
import re
import tracemalloc
from itertools import islice
from collections import Counter, defaultdict
from pathlib import Path

import pyarrow.parquet as pq
import pytest

from flywheel import demo
from flywheel.demo import (
    BAD_RECORD_KINDS,
    LANDING_FILES,
    PLANTED_SLICES,
    DemoSpec,
    generate,
    iter_canonical_records,
    write_canonical_jsonl,
)

START = dt.date(2025, 3, 1)
SMALL = DemoSpec(days=2, rows_per_day=300, start=START)
LARGE = DemoSpec(days=3, rows_per_day=2500, start=START)  # for rates and rare variations
REQUIRED = ("log_id", "ts", "input", "output")


@pytest.fixture(scope="module")
def small(tmp_path_factory):
    home = tmp_path_factory.mktemp("demo-small")
    return home, generate(home, SMALL)


@pytest.fixture(scope="module")
def large(tmp_path_factory):
    home = tmp_path_factory.mktemp("demo-large")
    return home, generate(home, LARGE)


def _days(spec: DemoSpec) -> list[str]:
    return [(spec.start + dt.timedelta(days=k)).isoformat() for k in range(spec.days)]


def _truth(home: Path, day: str) -> list[dict]:
    return pq.read_table(home / "demo" / f"truth-{day}.parquet").to_pylist()


def _all_truth(home: Path, spec: DemoSpec) -> list[dict]:
    return [row for day in _days(spec) for row in _truth(home, day)]


# ------------------------------------------------------------------------------------
# Independent readers of the landing files
# ------------------------------------------------------------------------------------


def _canonical_problem(line: str) -> str | None:
    """Return why a canonical JSON line would be rejected (a BAD_RECORD_KINDS name)."""
    try:
        rec = json.loads(line)
    except json.JSONDecodeError:
        return "broken_json"
    if any(f not in rec for f in REQUIRED):
        return "missing_field"
    if "latency_ms" in rec and not isinstance(rec["latency_ms"], int):
        return "wrong_type"
    ts = rec["ts"]
    if not isinstance(ts, int):
        try:
            dt.datetime.fromisoformat(ts.replace("Z", "+00:00"))
        except ValueError:
            return "bad_timestamp"
    if rec["output"] == "":
        return "empty_output"
    return None


def _is_llm_span(span: dict) -> bool:
    return any(a["key"].startswith(("gen_ai.", "llm.", "openinference.")) for a in span["attributes"])


def _otel_spans(path: Path) -> list[tuple[str, dict]]:
    """Return (service.name, span) of every span in an OTLP/JSON lines file."""
    out = []
    for line in path.read_text().splitlines():
        for rs in json.loads(line)["resourceSpans"]:
            service = {a["key"]: a["value"] for a in rs["resource"]["attributes"]}["service.name"]["stringValue"]
            for ss in rs["scopeSpans"]:
                out.extend((service, span) for span in ss["spans"])
    return out


def _landing(folder: Path) -> dict:
    """Read one landing day: ids per format, bad lines per kind, the web-chat lines."""
    ids: dict[str, list[str]] = {}
    bad: Counter = Counter()
    web_lines = (folder / "web-chat.jsonl").read_text().splitlines()
    web_ids = []
    for line in web_lines:
        problem = _canonical_problem(line)
        if problem:
            bad[problem] += 1
        else:
            web_ids.append(json.loads(line)["log_id"])
    ids["canonical_jsonl"] = web_ids
    with gzip.open(folder / "docs-assistant.jsonl.gz", "rt") as f:
        ids["canonical_jsonl_gz"] = [json.loads(line)["log_id"] for line in f]
    ids["parquet"] = pq.read_table(folder / "api.parquet").column("log_id").to_pylist()
    with open(folder / "partner.csv", newline="") as f:
        ids["csv"] = [row["log_id"] for row in csv.DictReader(f)]
    ids["openai"] = [json.loads(line)["response"]["id"]
                     for line in (folder / "mobile-openai.jsonl").read_text().splitlines()]
    outputs = [json.loads(line) for line in (folder / "batch-output.jsonl").read_text().splitlines()]
    ids["openai_batch"] = [o["response"]["body"]["id"] for o in outputs]
    ids["otel"] = [span["spanId"] for _, span in _otel_spans(folder / "support-bot-otel.jsonl") if _is_llm_span(span)]
    ids["langfuse"] = [t["id"] for t in json.loads((folder / "langfuse-traces.json").read_text())]
    return {"ids": ids, "bad": bad, "web_lines": web_lines}


# ------------------------------------------------------------------------------------
# Files, ids, truth
# ------------------------------------------------------------------------------------


def test_same_spec_gives_byte_identical_files(tmp_path):
    first, second = tmp_path / "a", tmp_path / "b"
    generate(first, SMALL)
    generate(second, SMALL)
    files_a = sorted(p.relative_to(first) for p in first.rglob("*") if p.is_file())
    files_b = sorted(p.relative_to(second) for p in second.rglob("*") if p.is_file())
    assert files_a == files_b
    prompt_templates = len({src.prompt_name for src in demo.SOURCES})  # prompts/templates/*.txt
    assert len(files_a) == SMALL.days * (9 + 4 + 1) + 1 + prompt_templates  # landing, inbox, truth; summary
    for rel in files_a:
        assert (first / rel).read_bytes() == (second / rel).read_bytes(), rel
    # Two runs within one second would hide a gzip time stamp: check the header itself.
    header = (first / "landing" / START.isoformat() / "docs-assistant.jsonl.gz").read_bytes()[:10]
    assert header[3] & 0x08 == 0 and header[4:8] == b"\0\0\0\0"  # no file name, mtime 0


def test_another_seed_gives_other_data(tmp_path):
    other = DemoSpec(days=1, rows_per_day=300, start=START, seed=8)
    generate(tmp_path, other)
    theirs = {r["log_id"] for r in _truth(tmp_path, START.isoformat()) if r["source"] == "mobile"}
    mine = {r["log_id"] for r in iter_canonical_records(SMALL, 0) if r["source"] == "mobile"}
    assert theirs and mine and not theirs & mine


def test_every_day_has_every_landing_file(small):
    home, summary = small
    expected = sorted(name for names in LANDING_FILES.values() for name in names)
    for day in _days(SMALL):
        found = sorted(p.name for p in (home / "landing" / day).iterdir())
        assert found == expected
        for name in found:
            assert (home / "landing" / day / name).stat().st_size > 100
    assert [d.day for d in summary.days] == _days(SMALL)
    assert not list(home.glob("landing/*/truth*")), "the truth must not be in landing"


def test_truth_covers_exactly_the_good_records(small):
    home, summary = small
    all_ids: list[str] = []
    previous_ids: set[str] = set()
    for day_summary, day in zip(summary.days, _days(SMALL)):
        read = _landing(home / "landing" / day)
        truth = _truth(home, day)
        truth_ids = [r["log_id"] for r in truth]
        assert len(truth_ids) == len(set(truth_ids)) == SMALL.rows_per_day
        landing_ids = [i for ids in read["ids"].values() for i in ids]
        duplicates = [i for i in landing_ids if i in previous_ids]
        assert len(duplicates) == day_summary.duplicates
        assert sorted(set(landing_ids) - set(duplicates)) == sorted(truth_ids)
        # Each format holds the rows the summary says, by the truth's source.
        for fmt, ids in read["ids"].items():
            extra = sum(1 for i in ids if i in previous_ids)
            assert len(ids) - extra == day_summary.rows[fmt], fmt
        by_source = Counter(r["source"] for r in truth)
        assert by_source == Counter({demo._SOURCE_BY_FORMAT[f].name: n for f, n in day_summary.rows.items()})
        assert read["bad"] == Counter({k: v for k, v in day_summary.bad_records.items() if v})
        all_ids += truth_ids
        previous_ids = set(truth_ids)
    assert len(all_ids) == len(set(all_ids)), "log ids are unique across days"


def test_id_conventions(small):
    home, _ = small
    day = _days(SMALL)[0]
    by_source = defaultdict(list)
    for row in _truth(home, day):
        by_source[row["source"]].append(row["log_id"])
    assert all(re.fullmatch(r"web-chat-20250301-\d{6}", i) for i in by_source["web-chat"])
    assert all(re.fullmatch(r"chatcmpl-[0-9a-f]{24}", i) for i in by_source["mobile"] + by_source["batch-reports"])
    assert all(re.fullmatch(r"[0-9a-f]{16}", i) for i in by_source["support-bot"])
    assert all(re.fullmatch(r"[0-9a-f]{8}(-[0-9a-f]{4}){3}-[0-9a-f]{12}", i) for i in by_source["intranet"])


def test_bad_records_and_duplicates(small):
    home, summary = small
    first, second = summary.days
    assert first.duplicates == 0 and second.duplicates == SMALL.duplicates_per_day
    for d in summary.days:
        assert set(d.bad_records) == set(BAD_RECORD_KINDS)
        assert all(n >= 1 for n in d.bad_records.values())
        assert sum(d.bad_records.values()) >= max(5, round(0.003 * SMALL.rows_per_day))
    # The duplicates are the previous day's lines, byte for byte, at the start of the file.
    lines_1 = (home / "landing" / first.day / "web-chat.jsonl").read_text().splitlines()
    lines_2 = (home / "landing" / second.day / "web-chat.jsonl").read_text().splitlines()
    assert lines_2[:2] == lines_1[:2]
    saved = json.loads((home / "demo" / "summary.json").read_text())
    assert saved["total_bad_records"] == summary.total_bad_records
    assert [d["bad_records"] for d in saved["days"]] == [d.bad_records for d in summary.days]
    assert [d["duplicates"] for d in saved["days"]] == [0, 2]
    assert saved["total_rows"] == SMALL.days * SMALL.rows_per_day


# ------------------------------------------------------------------------------------
# Rates and planted slices
# ------------------------------------------------------------------------------------


def test_rates_match_the_spec(large):
    home, _ = large
    truth = _all_truth(home, LARGE)
    n = len(truth)
    assert n == LARGE.days * LARGE.rows_per_day
    hallucinated = sum(r["hallucinated"] for r in truth) / n
    off_topic = sum(r["off_topic"] for r in truth) / n
    assert abs(hallucinated - LARGE.hallucination_rate) < 0.02
    assert abs(off_topic - LARGE.off_topic_rate) < 0.015
    assert not any(r["hallucinated"] and r["off_topic"] for r in truth)
    pii = sum(r["pii"] is not None for r in truth) / n
    assert 0.01 < pii < 0.035
    assert set(r["pii"] for r in truth) == {None, "email", "phone", "card", "api_key"}


def _rate(rows, key):
    return sum(r[key] for r in rows) / max(1, len(rows))


def test_planted_slices_are_clearly_worse(large):
    home, _ = large
    truth = _all_truth(home, LARGE)
    baseline = [r for r in truth if not r["planted"]]
    assert len(baseline) > 1000
    base_h, base_o = _rate(baseline, "hallucinated"), _rate(baseline, "off_topic")
    for dimension, values in PLANTED_SLICES.items():
        for value, multipliers in values.items():
            name = f"{dimension}={value}"
            inside = [r for r in truth if name in r["planted"]]
            assert len(inside) > 200, name
            if multipliers["hallucination"] >= 2:
                assert _rate(inside, "hallucinated") > 2.0 * base_h, name
            if multipliers["off_topic"] >= 2:
                assert _rate(inside, "off_topic") > 2.0 * base_o, name
    # Membership follows the truth's own columns.
    for r in truth:
        assert ("source=mobile" in r["planted"]) == (r["source"] == "mobile")
        assert ("prompt_version=v13" in r["planted"]) == (r["prompt_version"] == "v13")
        assert ("topic=warranty" in r["planted"]) == (r["topic"] == "warranty")


def test_bad_answers_get_negative_feedback_more_often(large):
    home, _ = large
    truth = [r for r in _all_truth(home, LARGE) if r["source"] in ("web-chat", "docs-assistant", "api", "partner")]
    bad = [r for r in truth if r["hallucinated"] or r["off_topic"]]
    good = [r for r in truth if not (r["hallucinated"] or r["off_topic"])]
    negative = lambda rows: sum(r["feedback"] == -1 for r in rows) / len(rows)  # noqa: E731
    assert negative(bad) > 4 * negative(good)
    assert sum(r["feedback"] is None for r in truth) / len(truth) > 0.5  # mostly absent


def test_keyword_slice_is_the_keyword_in_the_input(large):
    home, summary = large
    day = _days(LARGE)[0]
    truth = {r["log_id"]: r for r in _truth(home, day)}
    checked = 0
    for line in (home / "landing" / day / "web-chat.jsonl").read_text().splitlines():
        if _canonical_problem(line):
            continue
        rec = json.loads(line)
        planted = truth[rec["log_id"]]["planted"]
        assert ("keyword=refund" in planted) == ("refund" in rec["input"].lower())
        checked += 1
    assert checked == summary.days[0].rows["canonical_jsonl"]


# ------------------------------------------------------------------------------------
# Content
# ------------------------------------------------------------------------------------


def test_every_template_renders_with_every_entity():
    slots = {"order": "A123456", "date": "May 3", "amount": "$12.00", "name": "Ada", "n": "7"}
    for topic in demo._TOPICS:
        for intent in topic.intents:
            for e, facts in enumerate(intent.facts):
                values = facts | slots
                for q, query in enumerate(intent.queries):
                    assert "{" not in query.format_map(values)
                    for template in intent.grounded[q]:
                        assert "{x_" not in template, "grounded answers use the context's facts"
                        assert "{" not in template.format_map(values)
                    for alt in intent.alts[e]:
                        for template in intent.hallucinated[q]:
                            assert "{" not in template.format_map(values | alt)
                for passage in intent.passages[e]:
                    assert "{" not in passage


def test_records_are_canonical_and_realistic():
    records = list(iter_canonical_records(SMALL, 0))
    assert len(records) == SMALL.rows_per_day
    for rec in records:
        assert all(isinstance(rec[f], str) and rec[f] for f in REQUIRED)
        assert rec["model"] in demo.MODELS
        # Langfuse numbers prompt versions: the intranet's are "11".."13", as ingested.
        versions = ("11", "12", "13") if rec["source"] == "intranet" else demo.PROMPT_VERSIONS
        assert rec["prompt_version"] in versions
        assert rec["feedback"] in (-1, 0, 1, None)
        assert 1 <= rec["context"].count("[") <= 3  # 1-3 retrieved passages
        assert rec["latency_ms"] > 0 and rec["completion_tokens"] > 0 and rec["cost_usd"] > 0
        assert dt.datetime.fromisoformat(rec["ts"].replace("Z", "+00:00")).date() == START
    assert len({r["session_id"] for r in records}) < len(records)  # multi-turn sessions
    assert len({r["output"] for r in records}) > 0.9 * len(records)
    web = [r["ts"] for r in records if r["source"] == "web-chat"]
    assert web == sorted(web)


def test_payment_cards_in_inputs_are_luhn_valid(large):
    home, _ = large

    def luhn(digits: str) -> bool:
        total = 0
        for k, ch in enumerate(reversed(digits)):
            d = int(ch) * (2 if k % 2 else 1)
            total += d - 9 if d > 9 else d
        return total % 10 == 0

    cards = 0
    for rec in iter_canonical_records(LARGE, 0):
        for match in re.finditer(r"card (?:I used is |)([\d -]{13,23}\d)", rec["input"]):
            assert luhn(re.sub(r"\D", "", match.group(1)))
            cards += 1
    assert cards > 0


# ------------------------------------------------------------------------------------
# Formats
# ------------------------------------------------------------------------------------


def test_openai_logs_and_batch_shapes(large):
    home, _ = large
    folder = home / "landing" / _days(LARGE)[1]
    lines = [json.loads(line) for line in (folder / "mobile-openai.jsonl").read_text().splitlines()]
    assert all(line["workload_id"] == "mobile" for line in lines)
    systems = [line["request"]["messages"][0] for line in lines]
    assert all(m["role"] == "system" and "Context:\n" in m["content"] for m in systems)
    assert all(line["request"]["messages"][-1]["role"] == "user" for line in lines)
    assert any(len(line["request"]["messages"]) == 4 for line in lines)  # with the previous turn
    args = [c["function"]["arguments"] for line in lines
            for c in line["response"]["choices"][0]["message"].get("tool_calls", [])]
    assert any(isinstance(a, str) for a in args) and any(isinstance(a, dict) for a in args)
    inputs = {json.loads(line)["custom_id"]: json.loads(line)
              for line in (folder / "batch-input.jsonl").read_text().splitlines()}
    outputs = [json.loads(line) for line in (folder / "batch-output.jsonl").read_text().splitlines()]
    assert sorted(inputs) == sorted(o["custom_id"] for o in outputs)
    assert [o["custom_id"] for o in outputs] != sorted(inputs)  # results come back out of order
    assert all(i["body"]["metadata"]["source"] == "batch-reports" for i in inputs.values())


def test_otel_spans_mix_conventions_and_http_spans(large):
    home, _ = large
    spans = _otel_spans(home / "landing" / _days(LARGE)[0] / "support-bot-otel.jsonl")
    assert {service for service, _ in spans} == {"support-bot"}
    keys = [{a["key"] for a in span["attributes"]} for _, span in spans]
    current = [k for k in keys if "gen_ai.input.messages" in k]
    older = [k for k in keys if "gen_ai.prompt.0.content" in k and "gen_ai.usage.prompt_tokens" in k]
    openinference = [k for k in keys if "llm.input_messages.0.message.content" in k]
    http = [k for k in keys if "http.request.method" in k]
    assert len(current) > len(older) > 0 and len(openinference) > 0 and len(http) > 0
    for _, span in spans:
        assert re.fullmatch(r"[0-9a-f]{16}", span["spanId"]) and re.fullmatch(r"[0-9a-f]{32}", span["traceId"])
        attrs = {a["key"]: a["value"] for a in span["attributes"]}
        if "gen_ai.input.messages" in attrs:
            messages = json.loads(attrs["gen_ai.input.messages"]["stringValue"])
            assert messages[0]["role"] == "system" and "Context:" in messages[0]["parts"][0]["content"]
            assert attrs["gen_ai.usage.input_tokens"]["intValue"].isdigit()
    span_ids = [span["spanId"] for _, span in spans]
    assert len(span_ids) == len(set(span_ids))


def test_langfuse_traces(large):
    home, _ = large
    traces = json.loads((home / "landing" / _days(LARGE)[0] / "langfuse-traces.json").read_text())
    assert traces and all(set(t["input"]) == {"question", "context"} for t in traces)
    assert all(isinstance(t["output"], str) for t in traces)
    assert all([o["type"] for o in t["observations"]] == ["GENERATION"] for t in traces)
    scores = [s for t in traces for s in t["scores"]]
    assert scores and all(s["name"] == "user-feedback" and s["source"] == "API" and s["dataType"] == "BOOLEAN"
                          and s["value"] in (0, 1) and s["stringValue"] == str(bool(s["value"]))
                          for s in scores)
    assert {s["value"] for s in scores} == {0, 1}
    versions = {o["promptVersion"] for t in traces for o in t["observations"]}
    assert versions <= {11, 12, 13} and 13 in versions


def test_format_shares_are_a_parameter(tmp_path):
    spec = DemoSpec(days=1, rows_per_day=100, start=START, format_shares={"canonical_jsonl": 3, "otel": 1})
    assert {r["source"] for r in iter_canonical_records(spec, 0)} == {"web-chat", "support-bot"}
    summary = generate(tmp_path, spec)
    assert summary.days[0].rows == {"canonical_jsonl": 75, "otel": 25}
    assert sorted(p.name for p in (tmp_path / "landing" / START.isoformat()).iterdir()) == [
        "support-bot-otel.jsonl", "web-chat.jsonl"]
    with pytest.raises(ValueError):
        DemoSpec(format_shares={"xml": 1.0})


# ------------------------------------------------------------------------------------
# Annotations
# ------------------------------------------------------------------------------------


def _annotation_labels(inbox: Path, day: str) -> tuple[list[tuple[str, str, str, int]], int]:
    """Return ((log_id, annotator, label, value 0/1), cancelled annotations) of a day."""
    out = []
    yes = {"1": 1, "true": 1, "yes": 1, "0": 0, "false": 0, "no": 0}
    with open(inbox / f"labels-{day}.csv", newline="") as f:
        reader = csv.DictReader(f)
        assert reader.fieldnames == ["log_id", "annotator", "label", "value", "comment", "created_at"]
        out += [(r["log_id"], r["annotator"], r["label"], yes[r["value"]]) for r in reader]
    cancelled = 0
    for task in json.loads((inbox / f"label-studio-{day}.json").read_text()):
        for ann in task["annotations"]:
            if ann["was_cancelled"]:
                cancelled += 1
                continue
            who = ann["completed_by"]["id"] if isinstance(ann["completed_by"], dict) else ann["completed_by"]
            for res in ann["result"]:
                choice = res["value"]["choices"][0]
                out.append((task["data"]["log_id"], f"ls-{who}", res["from_name"], int(choice in ("Yes", "Relevant"))))
    for line in (inbox / f"argilla-{day}.jsonl").read_text().splitlines():
        rec = json.loads(line)
        for label, responses in rec["responses"].items():
            for resp in responses:
                out.append((rec["id"], resp["user_id"], label, int(resp["value"] in ("yes", "relevant"))))
    with open(inbox / f"langfuse-scores-{day}.csv", newline="") as f:
        reader = csv.DictReader(f)
        assert tuple(reader.fieldnames) == demo._LANGFUSE_SCORE_COLUMNS
        for r in reader:
            assert r["source"] == "ANNOTATION"
            out.append((r["traceId"], json.loads(r["metadata"])["annotator"], r["name"], int(r["value"])))
    return out, cancelled


def test_annotations_reference_logs_and_agree_with_truth(large):
    home, summary = large
    inbox = home / "annotations" / "inbox"
    agree = total = 0
    for day_summary in summary.days:
        day = day_summary.day
        truth = {r["log_id"]: r for r in _truth(home, day)}
        labels, cancelled = _annotation_labels(inbox, day)
        assert cancelled == 1
        assert sorted(day_summary.annotation_files) == sorted(p.name for p in inbox.glob(f"*{day}*"))
        assert len(labels) == sum(day_summary.annotation_labels.values())
        assert all(n > 0 for n in day_summary.annotation_labels.values())
        assert {log_id for log_id, *_ in labels} <= set(truth)
        items = {log_id for log_id, *_ in labels}
        assert 0.05 * len(truth) < len(items) < 0.12 * len(truth)
        annotators = defaultdict(set)
        for log_id, who, label, value in labels:
            annotators[(log_id, label)].add(who)
            row = truth[log_id]
            expected = int(row["hallucinated"]) if label == "hallucination" else int(not row["off_topic"])
            agree += value == expected
            total += 1
        overlap = Counter(len(v) for v in annotators.values())
        assert overlap[2] > 0 and overlap[3] > 0
        assert set(overlap) <= {1, 2, 3}
    assert 0.85 < agree / total < 0.99  # some annotator noise, not much


# ------------------------------------------------------------------------------------
# Streaming and writing
# ------------------------------------------------------------------------------------


def _traced_peak(rows) -> int:
    """Return the peak of memory allocated while consuming ``rows`` (an iterator)."""
    tracemalloc.start()
    try:
        for _ in rows:
            pass
        return tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()


def test_iter_canonical_records_streams_in_bounded_memory():
    stream = iter_canonical_records(SMALL, 0, rows=50_000)
    assert inspect.isgenerator(stream)
    demo._hms_table()  # the once-built time table is not per-row memory
    # Tracing every row is slow, so trace two windows: the start would show a day that
    # is built before the first record is yielded, the end records that are kept.
    first = _traced_peak(islice(stream, 1000))
    middle = sum(1 for _ in islice(stream, 48_000))
    last = _traced_peak(stream)
    assert middle == 48_000
    assert max(first, last) < 512 * 1024, f"peak {max(first, last) / 1024:.0f} KiB: records are being held"
    # The check has teeth: a stream that holds the records of one window peaks at MiBs.
    def hoarding():
        yield from list(iter_canonical_records(SMALL, 0, rows=1000))

    assert _traced_peak(hoarding()) > 1 * 2**20


def test_iter_canonical_records_ids_unique_at_scale():
    ids = [r["log_id"] for r in iter_canonical_records(SMALL, 1, rows=20_000)]
    assert len(ids) == len(set(ids)) == 20_000


def test_write_canonical_jsonl(tmp_path):
    path = tmp_path / "out.jsonl"
    n = write_canonical_jsonl(path, iter_canonical_records(SMALL, 0, rows=3000))
    lines = path.read_text().splitlines()
    assert n == len(lines) == 3000
    assert all(set(REQUIRED) <= set(json.loads(line)) for line in lines)
    average = path.stat().st_size / n
    assert 700 < average < 1500, f"records average {average:.0f} bytes"
    gz_a, gz_b = tmp_path / "a.jsonl.gz", tmp_path / "b.jsonl.gz"
    write_canonical_jsonl(gz_a, ({"log_id": str(k), "n": k} for k in range(25_000)))
    write_canonical_jsonl(gz_b, ({"log_id": str(k), "n": k} for k in range(25_000)))
    assert gz_a.read_bytes() == gz_b.read_bytes()
    with gzip.open(gz_a, "rt") as f:
        assert [json.loads(line)["n"] for line in f] == list(range(25_000))


def test_progress_is_reported(tmp_path):
    messages: list[str] = []
    generate(tmp_path, DemoSpec(days=1, rows_per_day=50, start=START), progress=messages.append)
    assert any("web-chat" in m for m in messages) and any("labels" in m for m in messages)


def test_default_start_is_days_before_today():
    spec = DemoSpec(days=3)
    assert spec.first_day() == dt.datetime.now(dt.timezone.utc).date() - dt.timedelta(days=3)


# ------------------------------------------------------------------------------------
# Through the real loader
# ------------------------------------------------------------------------------------


def test_real_loader_ingests_the_demo_as_the_truth_says(tmp_path):
    """The truth is what ingestion sees: ids, prompt versions, feedback and users of
    every format, the bad records rejected and the duplicates counted."""
    from flywheel import store
    from flywheel.ingest.loader import ingest_day
    from flywheel.settings import load

    spec = DemoSpec(days=2, rows_per_day=400, start=START)
    home = tmp_path / "home"
    summary = generate(home, spec)
    settings = load({"FLYWHEEL_HOME": str(home)})
    seen_v13 = Counter()
    with store.connection(settings) as con:
        for day_summary in summary.days:  # in order: day 2's duplicates are day 1's rows
            day = day_summary.day
            report = ingest_day(con, settings, day)
            assert report.reconciles
            assert not report.unreadable
            assert report.total("rejected") == sum(day_summary.bad_records.values())
            assert report.total("duplicates") == day_summary.duplicates
            truth = {r["log_id"]: r for r in _truth(home, day)}
            assert report.total("accepted") == len(truth)
            rows = con.execute(
                "SELECT log_id, source, prompt_version, feedback, user_id FROM logs WHERE day = ?", [day]
            ).fetchall()
            logs = {log_id: (source, version, feedback, user) for log_id, source, version, feedback, user in rows}
            assert len(logs) == len(rows)
            assert set(truth) <= set(logs), sorted(set(truth) - set(logs))[:5]
            assert set(logs) == set(truth)
            for log_id, row in truth.items():
                source, version, feedback, user = logs[log_id]
                assert source == row["source"], log_id
                assert version == row["prompt_version"], (log_id, row["source"], version, row["prompt_version"])
                assert feedback == row["feedback"], (log_id, row["source"], feedback, row["feedback"])
                if row["user_id"] is not None:
                    assert user == row["user_id"], (log_id, row["source"])
                if version == "v13":
                    seen_v13[source] += 1
                assert ("prompt_version=v13" in row["planted"]) == (version == "v13")
            # Every format's feedback that the truth records is visible after ingestion.
            with_feedback = {row["source"] for row in truth.values() if row["feedback"] is not None}
            assert {"web-chat", "docs-assistant", "api", "partner", "intranet"} <= with_feedback
            assert {f for (_s, _v, f, _u) in logs.values() if f is not None} == {-1, 0, 1}
    # The planted v13 slice is visible in every source that names its prompt versions so.
    assert set(seen_v13) == {s.name for s in demo.SOURCES} - {"intranet"}
