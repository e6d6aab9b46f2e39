"""The PII guardrail of ingest: find e-mail addresses, phone numbers, payment cards and
secrets in a text and replace each with a typed placeholder.

Detection is regular expressions plus a validation step where a pattern alone would
flag too much: the Luhn check and issuer digit for cards, digit counts for phones,
"does the value look random" for tokens and ``name = value`` assignments.

:data:`PREFILTER_PATTERN` is one regular expression, valid both in Python ``re`` and in
RE2 (DuckDB's ``regexp_matches``), that matches every text in which any detector could
fire. The loader runs it inside DuckDB so that only the few matching rows are scanned in
Python. Each detector sits next to the prefilter branch that covers it: change them
together (tests/test_pii.py checks the superset property on many examples).

All patterns are ASCII (``re.ASCII``) so that ``\\d``, ``\\w`` and ``\\s`` mean the same
in Python and in RE2.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass
from typing import NamedTuple

PII_TYPES = ("email", "phone", "card", "secret")
PLACEHOLDERS = {"email": "[EMAIL]", "phone": "[PHONE]", "card": "[CARD]", "secret": "[SECRET]"}

# Lower wins when two findings overlap: a key that happens to contain digits is a secret,
# not a card or a phone.
_PRECEDENCE = {"secret": 0, "card": 1, "email": 2, "phone": 3}


class Finding(NamedTuple):
    """One piece of PII: its type, its span ``text[start:end]`` and that text."""

    type: str
    start: int
    end: int
    value: str


@dataclass(frozen=True)
class _Detector:
    """A regular expression for one PII type.

    ``gate`` is a cheap test that is False only when ``regex`` cannot match (Python's
    backtracking engine is slow on patterns that start with a lookbehind, so most texts
    should not reach them). ``accept`` validates the matched value. Group ``v``, when the
    regex has one, is the span to redact (keeps "Bearer" or the variable name readable).
    """

    type: str
    regex: re.Pattern[str]
    gate: Callable[[str], bool]
    accept: Callable[[str], bool] | None = None

    def find(self, text: str) -> Iterator[Finding]:
        """Yield the accepted matches in ``text``."""
        if not self.gate(text):
            return
        group = "v" if "v" in self.regex.groupindex else 0
        for m in self.regex.finditer(text):
            value = m.group(group)
            if self.accept is None or self.accept(value):
                yield Finding(self.type, m.start(group), m.end(group), value)


def _compile(pattern: str) -> re.Pattern[str]:
    return re.compile(pattern, re.ASCII)


def _contains_any(*needles: str) -> Callable[[str], bool]:
    """Return a gate that is True when the text contains one of the substrings."""
    return lambda text: any(n in text for n in needles)


def _searches(pattern: str) -> Callable[[str], bool]:
    """Return a gate that is True when the pattern occurs in the text."""
    regex = _compile(pattern)
    return lambda text: regex.search(text) is not None


# ---------------------------------------------------------------------------------------
# Secrets
# ---------------------------------------------------------------------------------------

# Names in `name = value` assignments. A longer name (OPENAI_API_KEY, db_password)
# matches through its suffix.
_SECRET_NAMES = ("key", "secret", "token", "passwd", "password", "pwd")
_SECRET_NAME = "(?:" + "|".join(_SECRET_NAMES) + ")"
_QUOTE = "[\"']?"
_ASSIGNMENT = r"(?i:" + _SECRET_NAME + ")" + _QUOTE + r"[ \t]*[:=]"
# The same read backwards, so that the gate's search starts at the rare ':' or '='.
_ASSIGNMENT_REVERSED = (
    r"[:=][ \t]*" + _QUOTE + "(?:" + "|".join(n[::-1] for n in _SECRET_NAMES) + ")"
)


def _looks_random(value: str) -> bool:
    """Return whether a value looks like a key rather than words: letters mixed with
    digits, or very long."""
    has_digit = any(c.isdigit() for c in value)
    has_alpha = any(c.isalpha() for c in value)
    return (has_digit and has_alpha) or len(value) >= 32


_ASSIGNMENT_REVERSED_RE = re.compile(_ASSIGNMENT_REVERSED, re.ASCII | re.IGNORECASE)


def _has_assignment(text: str) -> bool:
    return _ASSIGNMENT_REVERSED_RE.search(text[::-1]) is not None
_BEARER = "(?:Bearer|bearer|BEARER)"

_SECRET_DETECTORS = (
    # OpenAI sk-..., sk-proj-..., sk-svcacct-...
    _Detector(
        "secret",
        _compile(r"(?<![A-Za-z0-9_-])sk-[A-Za-z0-9_-]{20,}"),
        _contains_any("sk-"),
        _looks_random,
    ),
    # AWS access key ids (long-lived AKIA, temporary ASIA)
    _Detector(
        "secret",
        _compile(r"(?<![A-Za-z0-9])(?:AKIA|ASIA)[0-9A-Z]{16}(?![A-Za-z0-9])"),
        _contains_any("AKIA", "ASIA"),
    ),
    # GitHub classic (ghp_, gho_, ghu_, ghs_, ghr_) and fine-grained tokens
    _Detector(
        "secret",
        _compile(r"(?<![A-Za-z0-9_])(?:gh[pousr]_[A-Za-z0-9]{30,}|github_pat_[A-Za-z0-9_]{22,})"),
        _contains_any("ghp_", "gho_", "ghu_", "ghs_", "ghr_", "github_pat_"),
    ),
    # Slack bot, user, app, refresh and legacy tokens
    _Detector(
        "secret",
        _compile(r"(?<![A-Za-z0-9_-])xox[abprs]-[A-Za-z0-9-]{10,}"),
        _contains_any("xoxa-", "xoxb-", "xoxp-", "xoxr-", "xoxs-"),
    ),
    # Google API keys
    _Detector(
        "secret",
        _compile(r"(?<![A-Za-z0-9_-])AIza[0-9A-Za-z_-]{35}"),
        _contains_any("AIza"),
    ),
    # Authorization: Bearer <token>
    _Detector(
        "secret",
        _compile(_BEARER + r"[ \t]+(?P<v>[A-Za-z0-9._~+/=-]{20,})"),
        _contains_any("Bearer", "bearer", "BEARER"),
        _looks_random,
    ),
    # api_key=..., "secret": "...", DB_PASSWORD: ...
    _Detector(
        "secret",
        _compile(_ASSIGNMENT + "[ \t]*" + _QUOTE + r"(?P<v>[A-Za-z0-9_./+=~!@#$%^&*-]{16,})"),
        _has_assignment,
        _looks_random,
    ),
)

# Literal prefixes of well-known API key formats (OpenAI, AWS, GitHub, Slack, Google).
_KEY_PREFIXES = (
        r"sk-[A-Za-z0-9_-]{20}",
        r"(?:AKIA|ASIA)[0-9A-Z]{16}",
        r"gh[pousr]_[A-Za-z0-9]{30}",
        r"github_pat_",
        r"xox[abprs]-",
        r"AIza[0-9A-Za-z_-]{35}",
)

_SECRET_PREFILTER = "|".join(
    (
        *_KEY_PREFIXES,
        _BEARER + r"[ \t]",
        _ASSIGNMENT,
    )
)


# ---------------------------------------------------------------------------------------
# Payment cards
# ---------------------------------------------------------------------------------------

# A run of digit groups joined by single spaces or dashes, not glued to a word, a
# decimal point or a thousands separator. Card numbers are looked for inside the run.
_DIGIT_RUN = _compile(r"(?<![\w.,-])\d+(?:[ -]\d+)*(?![\w]|[.,]\d)")
_DIGIT_GROUP = _compile(r"\d+")
_CARD_GATE = _searches(r"[0-9][0-9 -]{12}")
# 13 digits with at most one separator between them, from the start of a digit run
# (a card window later in a run is reached from the run's start, so that is enough).
# RE2 has no lookbehind: "(?:^|[^...])" stands in for it (a superset).
_CARD_BEFORE = r"[^\w.,-]"
_CARD_PREFILTER = r"(?:^|" + _CARD_BEFORE + r")\d(?:[ -]?\d){12}"
_MAX_CARD_GROUPS = 6  # 4-4-4-4-3 is the longest common grouping


def luhn_ok(digits: str) -> bool:
    """Return whether a string of digits passes the Luhn checksum."""
    total = 0
    for i, ch in enumerate(reversed(digits)):
        d = ord(ch) - 48
        if i % 2:
            d = d * 2 - 9 if d > 4 else d * 2
        total += d
    return total % 10 == 0


def _is_card_number(digits: str) -> bool:
    """Return whether digits are a plausible card number: 13-19 digits, an issuer digit
    2-6 (which also rules out epoch-millisecond timestamps), and a valid Luhn sum."""
    n = len(digits)
    if not 13 <= n <= 19 or digits[0] not in "23456":
        return False
    if n == 13 and digits[0] != "4":  # only old Visa numbers have 13 digits
        return False
    return luhn_ok(digits)


def _is_card_shape(groups: list[re.Match[str]]) -> bool:
    """Return whether digit groups are written like a card number: one block, or blocks
    of 3-6 digits that start with a block of 4 (4-4-4-4, 4-6-5, 4-4-4-4-3)."""
    if len(groups) == 1:
        return True
    return len(groups[0].group()) == 4 and all(3 <= len(g.group()) <= 6 for g in groups)


def _find_cards(text: str) -> Iterator[Finding]:
    """Yield card numbers: in each digit run, left to right, the longest window of
    groups that is a card (so a card next to an expiry "12 27" or a date is found)."""
    if not _CARD_GATE(text):
        return
    for run in _DIGIT_RUN.finditer(text):
        groups = list(_DIGIT_GROUP.finditer(text, run.start(), run.end()))
        i = 0
        while i < len(groups):
            for j in range(min(len(groups), i + _MAX_CARD_GROUPS) - 1, i - 1, -1):
                window = groups[i : j + 1]
                digits = "".join(g.group() for g in window)
                if _is_card_shape(window) and _is_card_number(digits):
                    start, end = window[0].start(), window[-1].end()
                    yield Finding("card", start, end, text[start:end])
                    i = j
                    break
            i += 1


# ---------------------------------------------------------------------------------------
# Phones
# ---------------------------------------------------------------------------------------

# Not glued to a word, a sign, or a number written with . / - (versions, dates, ISBNs,
# order numbers like A-100234); not followed by more of a number (times, decimals).
_PHONE_BEFORE = r"(?<![\w+./-])"
_PHONE_AFTER = r"(?![\w]|[.,:/-]?\d)"


def _digit_count(s: str) -> int:
    return sum(c.isdigit() for c in s)


def _intl_phone_ok(value: str) -> bool:
    """8-15 digits after the + or 00 prefix, balanced parentheses."""
    digits = _digit_count(value) - (2 if value.startswith("00") else 0)
    return 8 <= digits <= 15 and value.count("(") == value.count(")")


def _national_phone_ok(value: str) -> bool:
    """9-12 digits including the trunk 0 (05-11-2026 has 8)."""
    return 9 <= _digit_count(value) <= 12


_PHONE_DETECTORS = (
    # +CC or 00CC then groups: +1 (415) 555-0132, +44 20 7946 0958, 0049 30 1234567
    _Detector(
        "phone",
        _compile(
            _PHONE_BEFORE
            + r"(?:\+|00)[1-9]\d{0,3}(?:[ .-]?\(\d{1,4}\)|[ .-]?\d{1,8}){1,6}"
            + _PHONE_AFTER
        ),
        _contains_any("+", "00"),
        _intl_phone_ok,
    ),
    # North American: (415) 555-0132, 415-555-0132, 415.555.0132, 1-800-555-0199
    _Detector(
        "phone",
        _compile(
            _PHONE_BEFORE
            + r"(?:1[ .-])?(?:\([2-9]\d{2}\)[ .-]?|[2-9]\d{2}[ .-])\d{3}[ .-]\d{4}"
            + _PHONE_AFTER
        ),
        _searches(r"[0-9]{3}[ .-][0-9]{4}"),
    ),
    # National with a trunk 0: 020 7946 0958, 030/1234567, (030) 1234567, 06 12 34 56 78
    _Detector(
        "phone",
        _compile(
            _PHONE_BEFORE
            + r"(?:\(0\d{1,4}\)|0\d{1,4})[ /-]\d{2,8}(?:[ -]\d{2,8}){0,3}"
            + _PHONE_AFTER
        ),
        _searches(r"0[0-9][0-9 ()/-]{7}"),
        _national_phone_ok,
    ),
)

_NA_PHONE_PREFILTER = r"(?:\)[ .-]?|\d[ .-])\d{3}[ .-]\d{4}(?:$|\W)"
_PHONE_PREFILTER = "|".join(
    (
        r"(?:^|[^\w+./-])(?:\+|00)[1-9][0-9 ().-]{7}",  # intl: 8+ digits after the prefix
        _NA_PHONE_PREFILTER,  # every North American form ends like this
        r"(?:^|[^\w+./-])\(?0\d[0-9 ()/-]{7}",  # national: 9+ digits from the trunk 0
    )
)


# ---------------------------------------------------------------------------------------
# E-mail addresses
# ---------------------------------------------------------------------------------------

_LABEL = r"[A-Za-z0-9](?:[A-Za-z0-9-]*[A-Za-z0-9])?"
# "icon@2x.png" is an asset name, not an address.
_FILE_SUFFIXES = frozenset({"png", "jpg", "jpeg", "gif", "svg", "webp", "ico", "bmp", "tif", "tiff"})


def _email_ok(value: str) -> bool:
    return value.rsplit(".", 1)[1].lower() not in _FILE_SUFFIXES


_EMAIL_DETECTOR = _Detector(
    "email",
    _compile(
        r"(?<![A-Za-z0-9._%+-])[A-Za-z0-9._%+-]+@"
        + _LABEL
        + r"(?:\."
        + _LABEL
        + r")*\.[A-Za-z]{2,}(?![A-Za-z0-9-])"
    ),
    _contains_any("@"),
    _email_ok,
)
_EMAIL_PREFILTER = r"[A-Za-z0-9._%+-]@[A-Za-z0-9-]+\.[A-Za-z0-9]"


# ---------------------------------------------------------------------------------------
# Public API
# ---------------------------------------------------------------------------------------

PREFILTER_PATTERN: str = "|".join(
    (_SECRET_PREFILTER, _CARD_PREFILTER, _EMAIL_PREFILTER, _PHONE_PREFILTER)
)

# The prefilter for a whole JSON document (a JSON line) instead of one decoded text.
# Running it once over each raw line is much cheaper than over each field. It matches
# wherever PREFILTER_PATTERN matches the decoded value of any string in the document
# (and, harmlessly, more often): each branch is the decoded one with room for JSON
# escapes. A character before a number may be escaped (``\n``, ``\u00e9``); a tab,
# quote or slash inside a match may be written ``\t``, ``\"``, ``\/``; and any other
# escaped ASCII character (``\u0040`` ...) makes the line a candidate by itself.
_JSON_ESCAPED = r"|\\[bfnrt]|\\u[0-9A-Fa-f]{4})"
_JSON_BOUNDARY = r"(?:^|" + _CARD_BEFORE + _JSON_ESCAPED
_JSON_PHONE_BOUNDARY = r"(?:^|[^\w+./-]" + _JSON_ESCAPED
_JSON_BLANK = r"(?:[ \t]|\\t)"
JSON_PREFILTER_PATTERN: str = "|".join(
    (
        *_KEY_PREFIXES,
        _BEARER + _JSON_BLANK,
        r"(?i:" + _SECRET_NAME + r")(?:\\?[\"'])?" + _JSON_BLANK + "*[:=]",
        _JSON_BOUNDARY + r"\d(?:[ -]?\d){12}",
        _EMAIL_PREFILTER,
        _JSON_PHONE_BOUNDARY + r"(?:\+|00)[1-9][0-9 ().-]{7}",
        _NA_PHONE_PREFILTER,
        _JSON_PHONE_BOUNDARY + r"\(?0\d(?:[0-9 ()/-]|\\/){7}",
        r"\\u00[0-7][0-9A-Fa-f]",
    )
)

# Detectors in families behind one cheap test each, so that a clean text costs a few
# substring checks and two short regex scans. Each test is a superset of its family's
# detectors: 8 characters of digits and separators start every card and phone number.


def _secret_hint(text: str) -> bool:
    """True when a secret detector could match (substring tests are the cheapest)."""
    return (
        "sk-" in text
        or "AKIA" in text
        or "ASIA" in text
        or "xox" in text
        or "AIza" in text
        or "earer" in text  # Bearer, bearer
        or "EARER" in text
        or ("gh" in text and "_" in text)  # ghp_..., github_pat_...
        or _has_assignment(text)
    )


_DIGITS_HINT = _compile(r"[0-9][0-9 ().+/-]{7}")
_FAMILIES: tuple[tuple[Callable[[str], bool], tuple[Callable[[str], Iterable[Finding]], ...]], ...] = (
    (
        _secret_hint,
        tuple(d.find for d in _SECRET_DETECTORS),
    ),
    (
        lambda text: _DIGITS_HINT.search(text) is not None,
        (_find_cards, *(d.find for d in _PHONE_DETECTORS)),
    ),
    (lambda text: "@" in text, (_EMAIL_DETECTOR.find,)),
)


def _resolve_overlaps(findings: list[Finding]) -> list[Finding]:
    """Return non-overlapping findings in text order: on overlap the higher-precedence
    type wins, then the earlier, then the longer finding."""
    ranked = sorted(findings, key=lambda f: (_PRECEDENCE[f.type], f.start, f.start - f.end))
    kept: list[Finding] = []
    for f in ranked:
        if all(f.end <= k.start or f.start >= k.end for k in kept):
            kept.append(f)
    return sorted(kept, key=lambda f: f.start)


def find(text: str | None) -> list[Finding]:
    """Return the PII findings of a text, in text order and non-overlapping (an empty
    list for None or empty text)."""
    if not text:
        return []
    found = [
        finding
        for hint, finders in _FAMILIES
        if hint(text)
        for finder in finders
        for finding in finder(text)
    ]
    return _resolve_overlaps(found) if len(found) > 1 else found


def redact_text(text: str, findings: Iterable[Finding]) -> str:
    """Return the text with each finding's span replaced by its type's placeholder.

    ``findings`` must not overlap (as :func:`find` returns them).
    """
    parts: list[str] = []
    pos = 0
    for f in sorted(findings, key=lambda f: f.start):
        parts.append(text[pos : f.start])
        parts.append(PLACEHOLDERS[f.type])
        pos = f.end
    parts.append(text[pos:])
    return "".join(parts)


def scan(text: str | None) -> tuple[str | None, frozenset[str]]:
    """Return ``(redacted text, set of PII types found)``; the text unchanged and an
    empty set when nothing is found (None stays None)."""
    findings = find(text)
    if not findings:
        return text, frozenset()
    return redact_text(text, findings), frozenset(f.type for f in findings)
