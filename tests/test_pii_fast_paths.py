"""The PII detectors' fast paths find what their plain forms find.

Each rewritten regex (a lookbehind moved after the first character so that ``re`` can
scan for that character) is compared with the regex it replaced, match for match; each
fast test with the pattern it stands for; each shortcut with the plain computation. The
texts: a draw of the PII benchmark's sentences, random pieces of numbers, separators and
context words, mutated sentences, and tokens in every key format.
(``python -m benchmarks pii_compare --check`` compares whole findings with main's code.)
"""

from __future__ import annotations

import itertools
import random
import re

import pytest

from benchmarks.pii import generate
from benchmarks.pii_compare import key_format_texts, mutated_texts, random_piece_texts
from flywheel import pii
from flywheel.pii import _common, emails, network, numbers, phones, secrets


@pytest.fixture(scope="module")
def texts() -> list[str]:
    sentences = [s.text for s in generate(seed=5, per_type=120, ordinary=300)]
    keys = key_format_texts(1500)
    return (sentences + keys + random_piece_texts(3000) + mutated_texts(sentences + keys, 4000)
            + ["", "İ", "ſ", "4111 1111 1111 1111", "+1 (415) 555-0132", "::1", "AB12 3456"])


def _spans(regex: re.Pattern[str], text: str) -> list[tuple]:
    return [(m.span(), m.groups()) for m in regex.finditer(text)]


# (the regex now, the plain form it replaced, that form's flags)
REWRITTEN = [
    (numbers._DIGIT_RUN, r"(?<![\w.,+/-])\d+(?:[ .-]\d+)*(?!\w|[.,]\d)", re.ASCII),
    (numbers._IBAN, r"(?<![A-Za-z0-9])[A-Z]{2}\d{2}(?:[ ]?[A-Z0-9]){11,30}(?![A-Za-z0-9])", 0),
    (numbers._SSN, r"(?<![\w+./-])(?!000|666|9\d\d)\d{3}([- ])(?!00)\d{2}\1(?!0000)\d{4}(?![\w-]|[.,]\d)", re.ASCII),
    (numbers._SSN_BARE, r"(?<![\w+./-])(?!000|666|9\d\d)\d{3}(?!00)\d{2}(?!0000)\d{4}(?![\w-]|[.,]\d)", re.ASCII),
    (network._IPV4, r"(?<![\w.])(?:\d{1,3}\.){3}\d{1,3}(?!\w|\.\d)", re.ASCII),
    (phones._CANDIDATE, r"(?<![\w+./-])(?:\+|\(\+|\()?\d[\d ().\-/]{5,24}\d\)?(?![\w]|[.,:/-]?\d)", re.ASCII),
    (secrets._OWN_PATTERNS[0].regex, r"(?<![A-Za-z0-9_-])sk-[A-Za-z0-9_-]{20,}", 0),
    (secrets._OWN_PATTERNS[1].regex, r"(?<![A-Za-z0-9_])github_pat_[A-Za-z0-9_]{22,}", 0),
    (secrets._OWN_PATTERNS[2].regex, r"(?<![A-Za-z0-9_-])AIza[0-9A-Za-z_-]{35}", 0),
    (secrets._OWN_PATTERNS[3].regex, r"(?<![A-Za-z0-9_])hf_[A-Za-z0-9]{30,}", 0),
    (secrets._OWN_PATTERNS[4].regex, r"(?<![A-Za-z0-9_])npm_[A-Za-z0-9]{36}", 0),
]


@pytest.mark.parametrize("regex, plain, flags", REWRITTEN, ids=[p for _, p, _ in REWRITTEN])
def test_rewritten_regexes_match_as_the_plain_forms(texts, regex, plain, flags):
    reference = re.compile(plain, flags)
    matched = [t for t in texts if reference.search(t)]
    assert len(matched) >= 20, "the comparison below is not vacuous"
    assert [t for t in texts if _spans(regex, t) != _spans(reference, t)] == []


def test_fast_tests_match_where_their_patterns_do(texts):
    for fast, plain in pii._FAST_TESTS:
        reference = re.compile(plain, re.ASCII)
        assert sum(1 for t in texts if reference.search(t)) >= 100
        assert [t for t in texts if (fast.search(t) is None) != (reference.search(t) is None)] == [], plain


def test_library_gates_match_wherever_their_regex_does(texts):
    gated = [p for p in secrets._library_patterns() if p.gate is not None]
    assert len(gated) == 3  # Telegram, Mailchimp, Discord (of detect-secrets' current regexes)
    for pattern in gated:
        matched = [t for t in texts if pattern.regex.search(t)]
        assert len(matched) >= 20, pattern.regex.pattern
        assert [t for t in matched if not pattern.gate.search(t)] == []


def test_assignment_starts_in_ascii_text_give_the_matches_of_a_full_search(texts):
    """In ASCII text the positions tried are every position a name can start at: the
    matches are those of ``finditer`` (which tries every position)."""
    ascii_texts = [t for t in texts if t.isascii()]
    found = 0
    for regex, starts, back in ((secrets._ASSIGNMENT, secrets._ASSIGNMENT_STARTS, 6),
                                (secrets._PHRASE, secrets._PHRASE_STARTS, 4)):
        for text in ascii_texts:
            lowered = text.lower()
            stems = secrets._stem_positions(lowered)
            ours = [m.span() for m in secrets._matches_at_stems(regex, text, lowered, stems, back=back,
                                                                 starts_of_names=starts)]
            assert ours == [m.span() for m in regex.finditer(text)], text
            found += len(ours)
    assert found >= 200


def test_assignments_after_characters_lower_moves_are_still_found():
    # "İ" lowers to two characters: the stems' positions in text.lower() move by one each
    text = "İİ password=Secr3t!x9 and İ api key: Zq81MnPa72LkQw93Xe"
    values = [f.value for f in secrets.find(text)]
    assert values == ["Secr3t!x9", "Zq81MnPa72LkQw93Xe"]


def _luhn_reference(digits: str) -> bool:
    total = 0
    for i, ch in enumerate(reversed(digits)):
        d = ord(ch) - 48
        if i % 2:
            d = d * 2 - 9 if d > 4 else d * 2
        total += d
    return total % 10 == 0


def test_luhn_fast_path_sums_as_the_loop():
    rng = random.Random(3)
    cases = ["".join(p) for n in range(6) for p in itertools.product("0123456789", repeat=n)]
    cases += ["".join(rng.choice("0123456789") for _ in range(rng.randint(6, 25))) for _ in range(20000)]
    cases += ["12a4", "١٢٣٤", "4111 1111"]  # (not ASCII digits: the loop)
    assert [c for c in cases if pii.luhn_ok(c) != _luhn_reference(c)] == []


def test_email_searches_from_the_last_space_give_the_matches_of_finditer(texts):
    with_at = [t for t in texts if "@" in t] + ["a@b.co x@y.org", "x @ a@b.com", "mail:a@b.de,c@d.fr", "@@a@b.io"]
    assert len(with_at) >= 200
    for text in with_at:
        expected = [(m.start(), m.end()) for m in emails._EMAIL.finditer(text)
                    if m.group().rsplit(".", 1)[1].lower() not in emails._FILE_SUFFIXES]
        assert [(f.start, f.end) for f in emails.find(text)] == expected, text


def test_ascii_words_are_the_unicode_words(texts):
    windows = [t[i : i + 40] for t in texts for i in range(0, len(t), 17) if t[i : i + 40].isascii()]
    assert [w for w in windows if _common._ASCII_WORD.findall(w) != _common._WORD.findall(w)] == []
