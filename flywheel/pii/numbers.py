"""Payment cards (Luhn), IBANs (ISO 13616 checksum, via python-stdnum) and US social
security numbers."""

from __future__ import annotations

import re
from collections.abc import Iterator

from flywheel.pii._common import Finding, near

# ---------------------------------------------------------------------------------------
# Payment cards
# ---------------------------------------------------------------------------------------

# A run of digit groups joined by single spaces, dashes or dots, not glued to a word, a
# decimal point or a thousands separator. Card numbers are looked for inside the run.
# (The "not glued" lookbehind follows the first digit and spans it: the same matches as
# ``(?<![\w.,+/-])\d+...``, but a pattern that starts with a digit is searched for with a
# fast scan, one that starts with a lookbehind is tried at every position.)
_DIGIT_RUN = re.compile(r"\d(?<![\w.,+/-]\d)\d*(?:[ .-]\d+)*(?!\w|[.,]\d)", re.ASCII)
_DIGIT_GROUP = re.compile(r"\d+")
_MAX_CARD_GROUPS = 6  # 4-4-4-4-3 is the longest common grouping
# (A card is 12+ digits with single separators after a character not in [\w.,+/-]: the
# phone branch of the prefilter covers it.)
CARD_PREFILTER = r"[0-9](?:[ .-]?[0-9]){11}"


# An ASCII digit's value, and its value doubled with 9 taken off above 9 (the Luhn step).
_VALUE = bytes.maketrans(b"0123456789", bytes([0, 1, 2, 3, 4, 5, 6, 7, 8, 9]))
_DOUBLED = bytes.maketrans(b"0123456789", bytes([0, 2, 4, 6, 8, 1, 3, 5, 7, 9]))


def luhn_ok(digits: str) -> bool:
    """Return whether a string of digits passes the Luhn checksum."""
    if digits.isascii() and digits.isdigit():
        # (the fast path, the same sum: every second digit from the right doubled by a
        # table, the sums taken over bytes in C)
        backwards = digits.encode("ascii")[::-1]
        total = sum(backwards[0::2].translate(_VALUE)) + sum(backwards[1::2].translate(_DOUBLED))
        return total % 10 == 0
    total = 0
    for i, ch in enumerate(reversed(digits)):
        d = ord(ch) - 48
        if i % 2:
            d = d * 2 - 9 if d > 4 else d * 2
        total += d
    return total % 10 == 0


# Maestro numbers may have 12 digits; only these issuer prefixes are taken that short.
_MAESTRO_PREFIXES = ("5018", "5020", "5038", "5893", "6304", "6759", "6761", "6762", "6763", "0604",
                     "6390", "56", "57", "58")


def _is_card_number(digits: str) -> bool:
    """Return whether digits are a plausible card number: 13-19 digits (12 for Maestro),
    an issuer digit 2-6 (which also rules out epoch-millisecond timestamps), and a valid
    Luhn sum."""
    n = len(digits)
    if n == 12:
        return digits.startswith(_MAESTRO_PREFIXES) and luhn_ok(digits)
    if not 13 <= n <= 19 or digits[0] not in "23456":
        return False
    if n == 13 and digits[0] != "4":  # only old Visa numbers have 13 digits
        return False
    return luhn_ok(digits)


def _is_card_shape(sizes: list[int], separators: list[str]) -> bool:
    """Return whether digit groups (their ``sizes``, the ``separators`` between them) are
    written like a card number: one block, or blocks joined by one kind of separator
    that start with a block of 4 (4-4-4-4, 4-6-5, 4-6-4 Diners, 4-4-4-2, 4-4-4-4-3)."""
    if len(sizes) == 1:
        return True
    if len(set(separators)) != 1:
        return False
    return sizes[0] == 4 and all(3 <= s <= 6 for s in sizes[1:-1]) and 1 <= sizes[-1] <= 6


_IBAN_START = re.compile(r"[A-Z]{2}\d{2} ?$", re.ASCII)
# A 12-digit number with a short Maestro prefix is a card only after one of these.
_CARD_WORDS = frozenset({"card", "cc", "maestro", "pay", "paid", "charged", "credit", "debit", "karte",
                         "kartennummer", "carte", "tarjeta", "carta", "cartão", "karty", "kort", "with"})


def find_cards(text: str) -> Iterator[Finding]:
    """Yield card numbers: in each digit run, left to right, the longest window of
    groups that is a card (so a card next to an expiry "12 27" or a date is found)."""
    for run in _DIGIT_RUN.finditer(text):
        if run.end() - run.start() < 12:
            continue  # fewer than 12 digits: no window of it is a card (the fast path)
        if _IBAN_START.search(text, max(0, run.start() - 6), run.start()):
            continue  # the digits of an IBAN (valid or not) are no card
        groups = list(_DIGIT_GROUP.finditer(text, run.start(), run.end()))
        values = [g.group() for g in groups]
        sizes = [len(v) for v in values]
        separators = [text[a.end()] for a in groups[:-1]]  # (one character each)
        # Digits of groups[:k], to skip windows of fewer than 12 or more than 19 digits
        # (no card number has those: the same windows are found).
        ends = [0]
        for size in sizes:
            ends.append(ends[-1] + size)
        i = 0
        while i < len(groups):
            for j in range(min(len(groups), i + _MAX_CARD_GROUPS) - 1, i - 1, -1):
                count = ends[j + 1] - ends[i]
                if count < 12:
                    break  # shorter windows have fewer digits still
                if count > 19:
                    continue
                digits = "".join(values[i : j + 1])
                if (_is_card_shape(sizes[i : j + 1], separators[i:j]) and _is_card_number(digits)
                        and (len(digits) > 12 or j - i == 2 or digits.startswith(_MAESTRO_PREFIXES[:11])
                             or near(text, groups[i].start(), 0, _CARD_WORDS))):
                    start, end = groups[i].start(), groups[j].end()
                    yield Finding("card", start, end, text[start:end])
                    i = j
                    break
            i += 1


# ---------------------------------------------------------------------------------------
# IBAN
# ---------------------------------------------------------------------------------------

# Country code, check digits, then the BBAN in groups of four (or in one block).
# (the lookbehind after the first letter, spanning it: see _DIGIT_RUN)
_IBAN = re.compile(r"[A-Z](?<![A-Za-z0-9][A-Z])[A-Z]\d{2}(?:[ ]?[A-Z0-9]){11,30}(?![A-Za-z0-9])")
IBAN_PREFILTER = r"[A-Z]{2}[0-9]{2}(?:[ ]?[A-Z0-9]){11}"  # after a character not in [A-Za-z0-9]


def find_ibans(text: str) -> Iterator[Finding]:
    """Yield IBANs whose country length and mod-97 checksum are valid (the match is
    shortened group by group: a following word in capitals is not part of it)."""
    from stdnum import iban

    for m in _IBAN.finditer(text):
        value = m.group()
        while len(value) >= 15:
            if value[2:4] not in ("00", "01", "99") and iban.is_valid(value):
                yield Finding("iban", m.start(), m.start() + len(value), value)
                break
            cut = value.rfind(" ")
            if cut < 0:
                break
            value = value[:cut]


# ---------------------------------------------------------------------------------------
# US social security numbers
# ---------------------------------------------------------------------------------------

# AAA-GG-SSSS (or spaced); no area 000, 666 or 9xx, no group 00, no serial 0000.
# Written to start with a digit (a fast scan, see _DIGIT_RUN): the first digit is no 9
# (``(?!9\d\d)\d{3}`` says just that), the lookbehind spans it, and "not 000 or 666"
# looks back at it from the second digit; the same matches as
# ``(?<![\w+./-])(?!000|666|9\d\d)\d{3}...``.
_AREA = r"[0-8](?<![\w+./-][0-8])(?!(?<=0)00|(?<=6)66)\d{2}"
_SSN = re.compile(_AREA + r"([- ])(?!00)\d{2}\1(?!0000)\d{4}(?![\w-]|[.,]\d)", re.ASCII)
_SSN_BARE = re.compile(_AREA + r"(?!00)\d{2}(?!0000)\d{4}(?![\w-]|[.,]\d)", re.ASCII)
_SSN_WORDS = frozenset({"ssn", "social", "security", "ss", "ssa", "taxpayer", "tin"})
_NOT_SSN_WORDS = frozenset({"order", "part", "pn", "invoice", "ref", "reference", "ticket", "case",
                            "serial", "sku", "tracking", "zip", "route", "routing", "model", "item"})
# (after a character not in [\w+./-]: the phone branch of the prefilter covers it)
SSN_PREFILTER = r"[0-9]{3}[- ]?[0-9]{2}[- ]?[0-9]{4}"


def find_ssns(text: str) -> Iterator[Finding]:
    """Yield US SSNs: written 3-2-4 (not after a word like "order" or "part"), or as nine
    bare digits after "SSN" / "social security"."""
    for m in _SSN.finditer(text):
        if not near(text, m.start(), m.end(), _NOT_SSN_WORDS):
            yield Finding("ssn", m.start(), m.end(), m.group())
    for m in _SSN_BARE.finditer(text):
        if near(text, m.start(), m.end(), _SSN_WORDS, before=4):
            yield Finding("ssn", m.start(), m.end(), m.group())
