"""The PII guardrail: find e-mail addresses, phone numbers, payment cards, IBANs, US
social security numbers, IP addresses and secrets in a text and replace each with a
typed placeholder.

Each type has a module: :mod:`.emails`, :mod:`.phones` (``phonenumbers``),
:mod:`.numbers` (cards with the Luhn check, IBANs with ``python-stdnum``, SSNs),
:mod:`.network` (``ipaddress``) and :mod:`.secrets` (the key formats of
``detect-secrets``' plugins, and assignments). Context words keep look-alikes out
(``Reference 00 11 22 33 44`` is no phone, ``primary key: customer_id_2024`` no secret).

:data:`PREFILTER_PATTERN` is one regular expression, valid both in Python ``re`` and in
RE2 (DuckDB's ``regexp_matches``), that matches every text in which any detector could
fire; :data:`JSON_PREFILTER_PATTERN` the same for a whole JSON document. The loader runs
them in Arrow and DuckDB so that only the few matching rows are scanned in Python. Each
module's ``PREFILTER`` sits next to its detectors: change them together
(tests/test_pii.py checks the superset property on the benchmark's sentences).

Besides texts: :func:`scan_value` scans the strings of a JSON value (tags, metadata),
:func:`mask_secrets` masks secrets only (error texts), :func:`strip_url_credentials`
removes ``user:password@`` from a URL.
"""

from __future__ import annotations

import re
from collections.abc import Iterable
from urllib.parse import urlsplit, urlunsplit

from flywheel.pii import emails, network, numbers, phones, secrets
from flywheel.pii._common import Finding
from flywheel.pii.numbers import luhn_ok

__all__ = [
    "Finding", "JSON_PREFILTER_PATTERN", "PII_TYPES", "PLACEHOLDERS", "PREFILTER_PATTERN",
    "find", "luhn_ok", "mask_secrets", "redact_text", "scan", "scan_value", "strip_url_credentials",
]

PII_TYPES = ("email", "phone", "card", "iban", "ssn", "ip", "secret")
PLACEHOLDERS = {
    "email": "[EMAIL]", "phone": "[PHONE]", "card": "[CARD]", "iban": "[IBAN]", "ssn": "[SSN]",
    "ip": "[IP]", "secret": "[SECRET]",
}

# Lower wins when two findings overlap: a key that happens to contain digits is a secret,
# not a card or a phone; an IBAN holds no card, a card number is not a phone.
_PRECEDENCE = {"secret": 0, "iban": 1, "card": 2, "ssn": 3, "email": 4, "ip": 5, "phone": 6}

# An IBAN's country code and check digits, ``[A-Z]{2}\d\d``, written to start with a digit
# (a fast scan; text has fewer digits than capitals).
_IBAN_HINT = re.compile(r"\d(?<=[A-Z]{2}\d)\d", re.ASCII)


def _gate_pattern(before: str, pattern: str) -> str:
    """A finder's own prefilter branch: ``pattern`` at the start or after ``before``."""
    return f"(?:^|{before})(?:{pattern})"


# The finders' prefilter branches (:func:`_gate_pattern`) written to start with their first
# character, the "after ``before``" test a lookbehind spanning it: a pattern that starts
# with a character class is searched for with a fast scan, one that starts with ``^|`` or
# a lookbehind is tried at every position. Each matches a text exactly where its branch
# does (tests/test_pii.py compares them); change them with the modules' prefilters.
_CARD_GATE = re.compile(r"[0-9](?<![\w.,+/-][0-9])(?:[ .-]?[0-9]){11}", re.ASCII)  # numbers.CARD_PREFILTER
_SSN_GATE = re.compile(r"[0-9](?<![\w+./-][0-9])[0-9]{2}[- ]?[0-9]{2}[- ]?[0-9]{4}", re.ASCII)  # numbers.SSN_PREFILTER
# phones.PREFILTER: the lookbehinds after the first character say which branch it began.
_PHONE_GATE = re.compile(
    r"[+0-9](?<![\w+./-][+0-9])(?:"
    r"(?<=\+)[1-9][0-9 ().\/\\-]{7}|(?<=0)0[1-9][0-9 ().\/\\-]{7}"  # (?:\+|00)[1-9][0-9 ().\/\\-]{7}
    r"|(?<=[0-9])(?:[ ().\/\\-]{1,3}[0-9]|[0-9]){8}"  # [0-9](?:[ ().\/\\-]{1,3}[0-9]|[0-9]){8}
    r"|(?<=[0-9])[0-9]{6})",  # [0-9]{7}
    re.ASCII,
)
# Each fast test with the pattern it stands for (for the tests).
_FAST_TESTS = (
    (_CARD_GATE, _gate_pattern(r"[^\w.,+/-]", numbers.CARD_PREFILTER)),
    (_SSN_GATE, _gate_pattern(r"[^\w+./-]", numbers.SSN_PREFILTER)),
    (_PHONE_GATE, _gate_pattern(phones.BOUNDARY, phones.PREFILTER)),
    (_IBAN_HINT, r"[A-Z]{2}\d\d"),
)


def _resolve_overlaps(findings: list[Finding]) -> list[Finding]:
    """Return non-overlapping findings in text order: on overlap the higher-precedence
    type wins, then the longer, then the earlier finding."""
    ranked = sorted(findings, key=lambda f: (_PRECEDENCE[f.type], f.start - f.end, f.start))
    kept: list[Finding] = []
    for f in ranked:
        if all(f.end <= k.start or f.start >= k.end for k in kept):
            kept.append(f)
    return sorted(kept, key=lambda f: f.start)


# Cards, SSNs and phones all have 7 digits or more with short separators: a pattern that
# starts with a digit is found fast, the finders' own tests only then.
_SEVEN_DIGITS = re.compile(r"\d(?:[ ().\/-]{0,3}\d){6}", re.ASCII)


def find(text: str | None) -> list[Finding]:
    """Return the PII findings of a text, in text order and non-overlapping (an empty
    list for None or empty text)."""
    if not text:
        return []
    # Each finder behind a cheap test that is False only where it cannot match.
    found = list(secrets.find(text))  # (each pattern has its own substring hint)
    digits = _SEVEN_DIGITS.search(text) is not None
    if digits and _CARD_GATE.search(text) is not None:
        found += numbers.find_cards(text)
    if _IBAN_HINT.search(text) is not None:
        found += numbers.find_ibans(text)
    if digits and _SSN_GATE.search(text) is not None:
        found += numbers.find_ssns(text)
    if "@" in text:
        found += emails.find(text)
    if "." in text or ":" in text:
        found += network.find(text)
    if digits and _PHONE_GATE.search(text) is not None:
        found += phones.find(text)
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


def scan_value(value: object, *, scan_text=None) -> tuple[object, frozenset[str]]:
    """Return ``(value with every string redacted, set of PII types found)`` for a JSON
    value (strings, lists, objects; object keys are kept, their values scanned).
    ``scan_text`` scans one string (default :func:`scan`; the loader passes one that skips
    strings its prefilter clears)."""
    scan_text = scan_text or scan
    found: set[str] = set()

    def walk(node: object) -> object:
        if isinstance(node, str):
            redacted, kinds = scan_text(node)
            found.update(kinds)
            return redacted
        if isinstance(node, list):
            return [walk(item) for item in node]
        if isinstance(node, dict):
            return {key: walk(item) for key, item in node.items()}
        return node

    return walk(value), frozenset(found)


def mask_secrets(text: str | None) -> str | None:
    """Return the text with its secrets replaced by ``[SECRET]`` (and passwords in URLs),
    other personal data kept: for error messages, where a number may matter."""
    if not text:
        return text
    found = _resolve_overlaps(list(secrets.find(text)))
    return redact_text(text, found) if found else text


def strip_url_credentials(url: str | None) -> str | None:
    """Return the URL without a ``user:password@`` part (unchanged when it has none)."""
    if not url or "@" not in url:
        return url
    parts = urlsplit(url)
    if parts.username is None and parts.password is None:
        return url
    host = parts.hostname or ""
    if ":" in host:
        host = f"[{host}]"
    netloc = host + (f":{parts.port}" if parts.port is not None else "")
    return urlunsplit((parts.scheme, netloc, parts.path, parts.query, parts.fragment))


# ---------------------------------------------------------------------------------------
# The prefilters
# ---------------------------------------------------------------------------------------

_ASCII_ESCAPE = r"\\u00[0-7][0-9A-Fa-f]"


def _prefilter(boundary_extra: str) -> str:
    """The union of every module's prefilter; ``boundary_extra`` adds what may stand
    before a number in the text (JSON escapes such as ``\\n`` or ``\\u00e9``)."""

    def bounded(before: str, pattern: str) -> str:
        return f"(?:^|{before}{boundary_extra})(?:{pattern})"

    return "|".join((
        secrets.PREFILTER,
        # (cards and SSNs: 9+ digits with short separators, within the phone branch)
        bounded(r"[^A-Za-z0-9]", numbers.IBAN_PREFILTER),
        emails.PREFILTER,
        network.PREFILTER,
        bounded(phones.BOUNDARY, phones.PREFILTER),
    ))


PREFILTER_PATTERN: str = _prefilter("")

# The prefilter for a whole JSON document (a JSON line) instead of one decoded text: it
# matches wherever PREFILTER_PATTERN matches the decoded value of any string in it. A
# character before a number may be escaped (``\n``, ``\u00e9``); any other escaped ASCII
# character (``\u0040`` ...) makes the line a candidate by itself.
JSON_PREFILTER_PATTERN: str = _prefilter(r"|\\[bfnrt]|\\u[0-9A-Fa-f]{4}") + "|" + _ASCII_ESCAPE

