"""The PII guardrail: detectors, redaction, and the RE2 prefilter run inside DuckDB."""

from __future__ import annotations

import json
import random
import re

import duckdb
import pyarrow as pa
import pyarrow.compute  # noqa: F401  (pa.compute)
import pytest

from flywheel import pii

# (text, type, the exact value that must be found)
POSITIVES = [
    ("Write to jane.roe@example.org for the refund", "email", "jane.roe@example.org"),
    ("cc: Ops-Team+alerts@mail.corp.example.co.uk.", "email", "Ops-Team+alerts@mail.corp.example.co.uk"),
    ("Call me at +1 (415) 555-0132 tomorrow", "phone", "+1 (415) 555-0132"),
    ("my cell is 415-555-0132.", "phone", "415-555-0132"),
    ("office (415) 555-0132 ext", "phone", "(415) 555-0132"),
    ("dial 415.555.0132", "phone", "415.555.0132"),
    ("toll free 1-800-555-0199", "phone", "1-800-555-0199"),
    ("London office +44 20 7946 0958", "phone", "+44 20 7946 0958"),
    ("Berlin: 0049 30 1234567", "phone", "0049 30 1234567"),
    ("Berlin +49 (0)30 1234567", "phone", "+49 (0)30 1234567"),
    ("Paris +33 1 23 45 67 89", "phone", "+33 1 23 45 67 89"),
    ("E.164 +14155550132", "phone", "+14155550132"),
    ("UK national 020 7946 0958", "phone", "020 7946 0958"),
    ("Tel. 030/1234567", "phone", "030/1234567"),
    ("mobile 06 12 34 56 78", "phone", "06 12 34 56 78"),
    ("my card is 4111 1111 1111 1111 exp 12/27", "card", "4111 1111 1111 1111"),
    ("pay with 4242424242424242 please", "card", "4242424242424242"),
    ("mastercard 5555-5555-5555-4444", "card", "5555-5555-5555-4444"),
    ("amex 3782 822463 10005 ok", "card", "3782 822463 10005"),
    ("discover 6011111111111117", "card", "6011111111111117"),
    ("key sk-proj-abc123DEF456ghi789JKL012mno", "secret", "sk-proj-abc123DEF456ghi789JKL012mno"),
    ("OPENAI_API_KEY=sk-AbCdEf1234567890GhIjKl", "secret", "sk-AbCdEf1234567890GhIjKl"),
    ("aws AKIAIOSFODNN7EXAMPLE in the config", "secret", "AKIAIOSFODNN7EXAMPLE"),
    ("token ghp_abcdefghijklmnopqrstuvwxyz0123456789", "secret", "ghp_abcdefghijklmnopqrstuvwxyz0123456789"),
    (
        "github_pat_11ABCDEFG0123456789_abcdefghijklmnopqrstuvwxyz",
        "secret",
        "github_pat_11ABCDEFG0123456789_abcdefghijklmnopqrstuvwxyz",
    ),
    ("slack xoxb-1234567890-0987654321-AbCdEfGh", "secret", "xoxb-1234567890-0987654321-AbCdEfGh"),
    ("maps AIzaSyA-1234567890abcdefghijklmnopqrstu", "secret", "AIzaSyA-1234567890abcdefghijklmnopqrstu"),
    (
        "Authorization: Bearer eyJhbGciOiJIUzI1NiJ9.eyJzdWIiOjF9.abc123",
        "secret",
        "eyJhbGciOiJIUzI1NiJ9.eyJzdWIiOjF9.abc123",
    ),
    ('{"api_key": "abcd1234efgh5678ijkl"}', "secret", "abcd1234efgh5678ijkl"),
    ("DB_PASSWORD=s3cr3tP4ssw0rd!xyz", "secret", "s3cr3tP4ssw0rd!xyz"),
    ("client secret: 9f8e7d6c5b4a39281706f5e4", "secret", "9f8e7d6c5b4a39281706f5e4"),
    # the cases of issue 16
    ("écrivez à josé.garcía@correo.españa.es svp", "email", "josé.garcía@correo.españa.es"),
    ("mail müller@bücher.example now", "email", "müller@bücher.example"),
    ("call me at 4155550132 tonight", "phone", "4155550132"),
    ("mera number 98765 43210 hai", "phone", "98765 43210"),
    ("diners 3056 930902 5904 ok", "card", "3056 930902 5904"),
    ("visa 4111.1111.1111.1111 exp", "card", "4111.1111.1111.1111"),
    ("stripe sk_live_4eC39HqLyjWDarjtT1zdp7dc in prod", "secret", "sk_live_4eC39HqLyjWDarjtT1zdp7dc"),
    ("restricted rk_live_51H8xQ2eZvKYlo2C0aBcDeFgHi", "secret", "rk_live_51H8xQ2eZvKYlo2C0aBcDeFgHi"),
    (
        "jwt eyJhbGciOiJIUzI1NiIsInR5cCI6IkpXVCJ9.eyJzdWIiOiIxMjM0NTY3ODkwIn0.dozjgNryP4J3jVmNHl0w5N_XgL0n3I9PlFUP0THsR8U here",
        "secret",
        "eyJhbGciOiJIUzI1NiIsInR5cCI6IkpXVCJ9.eyJzdWIiOiIxMjM0NTY3ODkwIn0.dozjgNryP4J3jVmNHl0w5N_XgL0n3I9PlFUP0THsR8U",
    ),
    ("HF hf_abcdefghijklmnopqrstuvwxyzABCDEFGH ok", "secret", "hf_abcdefghijklmnopqrstuvwxyzABCDEFGH"),
    ("gitlab glpat-xYz12AbC34dEf56GhI78j ok", "secret", "glpat-xYz12AbC34dEf56GhI78j"),
    (
        "SG.abcdefghijklmnopqrstuv.abcdefghijklmnopqrstuvwxyz0123456789ABCDEFG sent",
        "secret",
        "SG.abcdefghijklmnopqrstuv.abcdefghijklmnopqrstuvwxyz0123456789ABCDEFG",
    ),
    ("npm npm_abcdefghijklmnopqrstuvwxyz0123456789 ok", "secret", "npm_abcdefghijklmnopqrstuvwxyz0123456789"),
    (
        "post to https://hooks.slack.com/services/T00000000/B00000000/XXXXXXXXXXXXXXXXXXXXXXXX now",
        "secret",
        "https://hooks.slack.com/services/T00000000/B00000000/XXXXXXXXXXXXXXXXXXXXXXXX",
    ),
    ("DATABASE_URL=postgres://admin:Sup3rS3cret@db.example.com:5432/app", "secret", "Sup3rS3cret"),
    ("password = \"correct horse battery staple\"", "secret", "correct horse battery staple"),
    ("fyi my password is Tr0ub4dor&3 now", "secret", "Tr0ub4dor&3"),
    ("IBAN DE89 3704 0044 0532 0130 00 please", "iban", "DE89 3704 0044 0532 0130 00"),
    ("pay GB82WEST12345698765432 today", "iban", "GB82WEST12345698765432"),
    ("host 192.168.1.100 port 8080", "ip", "192.168.1.100"),
    ("from 2001:db8:85a3::8a2e:370:7334 again", "ip", "2001:db8:85a3::8a2e:370:7334"),
    ("SSN 123-45-6789 on file", "ssn", "123-45-6789"),
]

# Texts that look numeric or key-like but hold no PII.
NEGATIVES = [
    "Your order A-100234 ships tomorrow",
    "order ORD-2026-000123 and 100234567",
    "delivered on 2026-11-20 at 14:05",
    "dates 01/02/2026, 01.02.2026 and 01-02-2026",
    "It costs $1,299.00 (or €1.299,00), 1,299,000 units sold",
    "ISBN 978-0-306-40615-7, ISBN 9780306406157, ISBN 0-306-40615-2",
    "upgrade to version 1.13.2 or v2.10.13-rc1",
    "request 123e4567-e89b-12d3-a456-426614174000 failed",
    "timestamp 2026-11-20T10:15:00Z, epoch 1763630100, ms 1763630100123",
    "2026-11-20 10:15:00.123456+00:00",
    "primary key: customer_id_2024",
    "Reference 00 11 22 33 44",
    "localhost 127.0.0.1 and std::vector or a::b at 10:15:30",
    "the password is incorrect, api_key: YOUR_API_KEY",
    "pi is 3.14159265358979",
    "sha 3f786850e387550fdab836ed7e6dc881de23001b",
    "tracking 1Z999AA10123456784",
    "growth of +5.3% to 1 234 567 users",
    "meeting 09 00 - 12 00, page 12 of 300",
    "the task-management-system-overview-doc",
    "bearer tokens are sent in a header",
    "The primary key: customer identifier",
    "max_tokens: 2048, temperature: 0.7",
    "retina image logo@2x.png",
    "@alice said hi",
]


def _types(text: str) -> frozenset[str]:
    return pii.scan(text)[1]


@pytest.mark.parametrize(("text", "kind", "value"), POSITIVES)
def test_detects_and_redacts_each_kind(text, kind, value):
    findings = pii.find(text)
    assert [(f.type, f.value) for f in findings] == [(kind, value)]
    redacted, types = pii.scan(text)
    assert types == frozenset({kind})
    assert redacted == text.replace(value, pii.PLACEHOLDERS[kind])


@pytest.mark.parametrize("text", NEGATIVES)
def test_lookalikes_are_not_flagged(text):
    assert pii.find(text) == []
    assert pii.scan(text) == (text, frozenset())


def test_luhn_invalid_number_is_not_a_card():
    assert pii.luhn_ok("4111111111111111")
    assert not pii.luhn_ok("4111111111111112")
    assert _types("card 4111 1111 1111 1112 on file") == frozenset()
    assert _types("random 8273645190283746 digits") == frozenset()


def test_long_runs_of_digits_are_not_cards_or_phones():
    # 30 digits with a valid Luhn sum somewhere inside: not written like a card.
    assert _types("id 411111111111111141111111111111") == frozenset()


def test_none_and_empty():
    assert pii.scan(None) == (None, frozenset())
    assert pii.scan("") == ("", frozenset())
    assert pii.find(None) == []


def test_several_findings_in_order():
    text = "Mail a.b@example.com or call +44 20 7946 0958, card 4111-1111-1111-1111."
    findings = pii.find(text)
    assert [f.type for f in findings] == ["email", "phone", "card"]
    assert all(text[f.start : f.end] == f.value for f in findings)
    assert pii.scan(text) == (
        "Mail [EMAIL] or call [PHONE], card [CARD].",
        frozenset({"email", "phone", "card"}),
    )


def test_secret_wins_over_card_and_phone_inside_it():
    # The value of the assignment is all digits and passes Luhn: a secret, not a card.
    text = "api_key=4111111111111111abc9"
    assert [(f.type, f.value) for f in pii.find(text)] == [("secret", "4111111111111111abc9")]
    text = "token: 415-555-0132-xyz-9876543"
    assert _types(text) == frozenset({"secret"})


def test_findings_never_overlap():
    text = "contact +1 415 555 0132 or 4111 1111 1111 1111 / bob@example.com sk-abcdefghij0123456789XYZ"
    findings = pii.find(text)
    assert findings == sorted(findings, key=lambda f: f.start)
    assert all(a.end <= b.start for a, b in zip(findings, findings[1:]))


def test_redact_text_uses_typed_placeholders():
    text = "x 415-555-0132 y"
    findings = [pii.Finding("phone", 2, 14, "415-555-0132")]
    assert pii.redact_text(text, findings) == "x [PHONE] y"
    assert set(pii.PLACEHOLDERS) == set(pii.PII_TYPES)


# --- the prefilter --------------------------------------------------------------------


def _duckdb_matches(texts: list[str]) -> list[bool]:
    """Run PREFILTER_PATTERN through DuckDB's RE2 on each text (order kept)."""
    con = duckdb.connect()
    rows = con.execute(
        "SELECT regexp_matches(t, ?) FROM unnest(?::VARCHAR[]) WITH ORDINALITY AS u(t, i) ORDER BY i",
        [pii.PREFILTER_PATTERN, texts],
    ).fetchall()
    return [r[0] for r in rows]


def test_prefilter_is_valid_re2_and_matches_every_positive():
    texts = [t for t, _, _ in POSITIVES]
    assert all(_duckdb_matches(texts))
    assert all(re.search(pii.PREFILTER_PATTERN, t, re.ASCII) for t in texts)


def test_prefilter_skips_plain_prose():
    prose = [
        "The assistant explained the refund policy and the user thanked it.",
        "Summarize the attached meeting notes in three bullet points.",
        "Delivered on 2026-11-20 for $1,299.00, order A-100234, version 1.13.2.",
    ]
    assert _duckdb_matches(prose) == [False, False, False]


def _random_text(rng: random.Random) -> str:
    """A text made of digits, separators and pieces of PII, where detectors and the
    prefilter are most likely to disagree."""
    pieces = [t for t, _, _ in POSITIVES] + NEGATIVES
    alphabet = "0123456789" * 4 + " -.()+/:,@_=\"'abkeyAKIA"
    parts = []
    for _ in range(rng.randint(1, 4)):
        if rng.random() < 0.4:
            parts.append(rng.choice(pieces))
        else:
            parts.append("".join(rng.choice(alphabet) for _ in range(rng.randint(5, 40))))
    return rng.choice(["", " ", "x"]).join(parts)


def test_prefilter_is_a_superset_of_the_detectors():
    rng = random.Random(7)
    texts = [_random_text(rng) for _ in range(4000)]
    flagged = [t for t in texts if pii.find(t)]
    assert len(flagged) > 1000  # the check below is not vacuous
    misses = [t for t, hit in zip(flagged, _duckdb_matches(flagged)) if not hit]
    assert misses == []


def _json_forms(text: str) -> list[str]:
    """The text as a string value in JSON lines written in different ways."""
    plain = json.dumps({"log_id": "r-1", "input": text}, ensure_ascii=False)
    ascii_only = json.dumps({"input": text, "tags": ["x"]})
    slashes = json.dumps({"output": text}).replace("/", "\\/")
    nested = json.dumps({"messages": [{"role": "user", "content": "é" + text}]})
    return [plain, ascii_only, slashes, nested]


def test_json_prefilter_matches_every_line_whose_strings_the_prefilter_matches():
    rng = random.Random(11)
    texts = [_random_text(rng) for _ in range(3000)]
    texts += [t for t, _, _ in POSITIVES]
    texts += ["x\n4111 1111 1111 1111", "é4111111111111111", "key\t: abcdefghijklmnop123456",
              'api_key": "abcdefghijklmnop123456', "030/1234567", "tab\t+1 415 555 0132"]
    flagged = [t for t in texts if re.search(pii.PREFILTER_PATTERN, t, re.ASCII)]
    assert len(flagged) > 1000
    lines = [line for t in flagged for line in _json_forms(t)]
    hits = pa.compute.match_substring_regex(pa.array(lines), pii.JSON_PREFILTER_PATTERN).to_pylist()
    assert [line for line, hit in zip(lines, hits) if not hit] == []
    assert all(re.search(pii.JSON_PREFILTER_PATTERN, line, re.ASCII) for line in lines)


def test_json_prefilter_passes_ordinary_log_lines():
    line = json.dumps({
        "log_id": "web-chat-20261120-000123", "ts": "2026-11-20T09:14:03Z", "session_id": "s-e9d79a2386a8",
        "input": "How do I change my billing email?", "prompt_tokens": 118, "completion_tokens": 49,
        "output": "Go to Settings > Billing.\nThe Starter plan allows 10,000 requests per day.",
        "metadata": {"locale": "en-US", "turn": 1}, "cost_usd": 4.7e-05,
    })
    assert not re.search(pii.JSON_PREFILTER_PATTERN, line, re.ASCII)


def test_pem_private_key_is_redacted_whole():
    body = "MIIEpAIBAAKCAQEA7bq98qgZ1+abc/def==\nQWERTYuiop1234567890asdfghjklZXCVBNM"
    text = f"key:\n-----BEGIN RSA PRIVATE KEY-----\n{body}\n-----END RSA PRIVATE KEY-----\nthanks"
    assert pii.scan(text) == ("key:\n[SECRET]\nthanks", frozenset({"secret"}))


def test_scan_value_redacts_every_string_of_a_json_value():
    value = {"owner": "bob@example.com", "ids": [1, "415-555-0132"], "nested": {"ok": "fine"}}
    assert pii.scan_value(value) == (
        {"owner": "[EMAIL]", "ids": [1, "[PHONE]"], "nested": {"ok": "fine"}},
        frozenset({"email", "phone"}),
    )


def test_mask_secrets_and_strip_url_credentials():
    text = "401: bad key sk-proj-abc123DEF456ghi789JKL012mno for bob@example.com"
    assert pii.mask_secrets(text) == "401: bad key [SECRET] for bob@example.com"
    assert pii.strip_url_credentials("https://user:pa55@llm.example.com:8443/v1") == "https://llm.example.com:8443/v1"
    assert pii.strip_url_credentials("http://127.0.0.1:8000/v1") == "http://127.0.0.1:8000/v1"


def test_benchmark_set_reaches_its_targets_and_the_prefilters_cover_it():
    """A small draw of the benchmark's labelled set (another seed than the benchmark's):
    every type found whole in at least 97% of its sentences, ordinary sentences nearly
    never flagged, and both prefilters match every sentence the detectors flag."""
    from benchmarks.pii import evaluate, generate

    samples = generate(seed=3, per_type=150, ordinary=400)
    metrics, _ = evaluate(samples)
    assert metrics["min_recall"] >= 0.97, metrics
    assert metrics["false_positive_rate"] <= 0.01, metrics
    flagged = [s.text for s in samples if pii.find(s.text)]
    assert len(flagged) > 1000
    assert all(_duckdb_matches(flagged))
    lines = [line for t in flagged for line in _json_forms(t)]
    hits = pa.compute.match_substring_regex(pa.array(lines), pii.JSON_PREFILTER_PATTERN).to_pylist()
    assert [line for line, hit in zip(lines, hits) if not hit] == []


# --- every table and file we write ---------------------------------------------------

LEAKY = "mail jane.doe@example.com or call +44 20 7946 0958"


def _ingest_one(settings, content: str | bytes, name: str = "a.jsonl"):
    from flywheel import store
    from flywheel.ingest.loader import ingest_day
    from tests.conftest import land

    land(settings, "2026-11-20", name, content)
    with store.connection(settings) as con:
        return ingest_day(con, settings, "2026-11-20")


def _record(log_id: str, **fields) -> dict:
    return {"log_id": log_id, "ts": "2026-11-20T09:14:03Z", "input": "hi", "output": "hello", **fields}


@pytest.mark.parametrize("mode", ["redact", "flag"])
def test_ingest_scans_ids_tags_metadata_and_unknown_fields(settings, mode):
    from tests.conftest import rows

    settings = settings.replace(pii_mode=mode)
    record = _record("r1", user_id="jane.doe@example.com", session_id="call 415-555-0132",
                     tags=["vip", "owner bob@example.com"], metadata={"ip": "203.0.113.7", "n": 3},
                     customer_iban="DE89 3704 0044 0532 0130 00")
    report = _ingest_one(settings, json.dumps(record) + "\n" + json.dumps(_record("r2")) + "\n")
    (user, session, tags, metadata, found), = rows(
        settings, "SELECT user_id, session_id, tags, metadata, pii FROM logs WHERE log_id = 'r1'")
    assert sorted(found) == ["email", "iban", "ip", "phone"]
    assert report.pii_counts == {"email": 1, "iban": 1, "ip": 1, "phone": 1}
    assert rows(settings, "SELECT pii FROM logs WHERE log_id = 'r2'") == [(None,)]
    if mode == "redact":
        assert (user, session, tags) == ("[EMAIL]", "call [PHONE]", ["vip", "owner [EMAIL]"])
        assert json.loads(metadata) == {"ip": "[IP]", "n": 3, "customer_iban": "[IBAN]"}
    else:
        assert user == "jane.doe@example.com" and json.loads(metadata)["customer_iban"].startswith("DE89")


def test_rejected_non_utf8_and_duplicate_records_hold_no_pii(settings):
    from tests.conftest import rows

    bad = ('{"log_id": "x1", "input": "caf\xe9 4111 1111 1111 1111 and later my phone +44 20 7946 0958", "output": 3}'
           ).encode("latin-1")
    first = json.dumps(_record("d1", input=LEAKY)).encode()
    # (format detection reads the file's start: the bad line comes after it)
    filler = [json.dumps(_record(f"f{i}", output="x" * 200)).encode() for i in range(400)]
    _ingest_one(settings, b"\n".join([first, *filler, bad, first]) + b"\n")
    (raw,), = rows(settings, "SELECT raw FROM rejected_logs")
    assert "4111" not in raw and "7946" not in raw and "[CARD]" in raw and "[PHONE]" in raw
    assert '"log_id": "x1"' in raw and "\\xe9" in raw  # quotes as written, the bad byte escaped
    assert rows(settings, "SELECT count(*) FROM duplicate_logs") == [(1,)]
    assert rows(settings, "SELECT input FROM logs WHERE log_id = 'd1'") == [("mail [EMAIL] or call [PHONE]",)]


def test_annotation_comments_and_rejected_raw_are_redacted(settings):
    from flywheel import store
    from flywheel.annotations.importer import import_file
    from tests.conftest import rows

    _ingest_one(settings, json.dumps(_record("a1")) + "\n")
    path = settings.home / "labels.csv"
    path.write_text(
        "log_id,annotator,label,value,comment\n"
        f"a1,ann,hallucination,1,\"{LEAKY}\"\n"
        "a1,ann,hallucination,maybe,reach me at bob@example.com\n",
        encoding="utf-8",
    )
    with store.connection(settings) as con:
        import_file(con, settings, path, archive=False)
    assert rows(settings, "SELECT comment FROM annotations") == [("mail [EMAIL] or call [PHONE]",)]
    (raw, detail), = rows(settings, "SELECT raw, detail FROM rejected_annotations")
    assert "bob@example.com" not in raw and "[EMAIL]" in raw and "bob@" not in (detail or "")


def test_queue_csv_cells_cannot_start_a_formula_and_come_back_as_written(tmp_path):
    import csv
    import io

    from flywheel.annotations.export import neutralize_cell, queue_csv, queue_csv_to_canonical

    item = {"log_id": "-7", "input": "=HYPERLINK(\"http://evil\",\"x\")", "output": "+1 is fine",
            "context": "@SUM(A1)", "strategy": "uncertain", "reason": "\tx"}
    text = queue_csv([item])
    row = next(csv.DictReader(io.StringIO(text)))
    assert [row[k] for k in ("log_id", "input", "output", "context", "reason")] == [
        "'-7", "'=HYPERLINK(\"http://evil\",\"x\")", "'+1 is fine", "'@SUM(A1)", "'\tx"]
    assert neutralize_cell("plain text") == "plain text" and neutralize_cell(None) == ""
    filled = text.replace("uncertain,'\tx,,,,", "uncertain,'\tx,ann,1,,'=not a formula")
    source = tmp_path / "queue.csv"
    source.write_text(filled, encoding="utf-8")
    assert queue_csv_to_canonical(source, tmp_path / "out.csv") == 1
    out = list(csv.reader(io.StringIO((tmp_path / "out.csv").read_text(encoding="utf-8"))))
    assert out[1] == ["-7", "ann", "hallucination", "1", "=not a formula"]


def test_llm_calls_ledger_masks_the_key_and_drops_url_credentials(settings, httpserver):
    from werkzeug.wrappers import Response

    from flywheel import store
    from flywheel.llm import LLMClient
    from flywheel.settings import load
    from tests.conftest import rows

    def echo_headers(request):  # an endpoint that echoes what it was sent
        body = {"error": {"message": f"bad credentials: {request.headers.get('Authorization')} "
                                     f"token=abcd1234efgh5678ijkl9", "type": "auth"}}
        return Response(json.dumps(body), status=401, content_type="application/json")

    httpserver.expect_request("/v1/chat/completions").respond_with_handler(echo_headers)
    url = httpserver.url_for("/v1").replace("http://", "http://admin:hunter2pw@")
    key = "plain-test-key-42"
    s = load({"FLYWHEEL_HOME": str(settings.home), "OPENAI_BASE_URL": url, "OPENAI_API_KEY": key,
              "FLYWHEEL_LLM_MODEL": "m", "FLYWHEEL_LLM_MAX_RETRIES": "0"})
    with store.connection(s) as con:
        result = LLMClient.from_settings(s, con).chat([{"role": "user", "content": "hi"}], purpose="test")
    assert result.status == "error" and "401" in result.error
    (error, base_url), = rows(s, "SELECT error, base_url FROM llm_calls")
    assert key not in error and "abcd1234efgh5678ijkl9" not in error and "[SECRET]" in error
    assert "hunter2pw" not in error
    assert base_url == httpserver.url_for("/v1") and "admin" not in base_url


def test_reports_carry_no_pii_even_in_flag_mode(settings):
    """Slice names come from the data (here `source`, which ingest does not scan): the
    slicing reports and the HTML report redact them when they are written."""
    from flywheel import store
    from flywheel.report import write_report
    from flywheel.slicing.run import slice_day

    settings = settings.replace(pii_mode="flag")
    records = [_record(f"s{i}", source="desk bob@example.com" if i % 2 else "web", feedback=-1 if i % 2 else 1,
                       input=f"question {i} about refunds") for i in range(80)]
    _ingest_one(settings, "".join(json.dumps(r) + "\n" for r in records))
    with store.connection(settings) as con:
        report = slice_day(con, settings, "2026-11-20")
        page = write_report(con, settings, "2026-11-20")
    assert "bob@example.com" in report.markdown  # the slice is there, by its name
    written = [report.markdown_path.read_text(encoding="utf-8"), page.path.read_text(encoding="utf-8")]
    written += [p.read_text(encoding="utf-8") for p in settings.reports_dir.glob("worst-slices-*.md")]
    assert all("bob@example.com" not in text for text in written)
    assert "desk [EMAIL]" in written[0]


def test_exported_queue_files_are_redacted_in_flag_mode(settings):
    """In flag mode the logs keep their PII; the outbox files for annotators never do."""
    from flywheel import store
    from flywheel.annotations.export import export_queue
    from flywheel.annotations.queue import build_queue
    from tests.conftest import rows

    settings = settings.replace(pii_mode="flag")
    records = [_record(f"q{i}", input=f"{LEAKY} ({i})", feedback=-1 if i % 3 else 1) for i in range(30)]
    _ingest_one(settings, "".join(json.dumps(r) + "\n" for r in records))
    assert all("jane.doe@example.com" in text for (text,) in rows(settings, "SELECT input FROM logs"))
    with store.connection(settings) as con:
        build_queue(con, settings, "2026-11-20", size=5)
        paths = export_queue(con, settings, "2026-11-20")
    texts = [p.read_text(encoding="utf-8") for p in paths]
    assert texts[3].count("mail [EMAIL] or call [PHONE]") == 5  # the CSV, five items
    assert all("jane.doe" not in text and "7946" not in text for text in texts)
