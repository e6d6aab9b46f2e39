"""Phone numbers of any region, validated by ``phonenumbers`` (Google's libphonenumber).

A candidate is a run of digits and separators. With a ``+`` or ``00`` prefix it is
parsed as an international number; otherwise it must be a valid national number of one
of :data:`REGIONS`, and the words before it decide doubtful cases: "call", "mobile",
"tel" make a bare ``4155550132`` a phone; "order", "reference", "invoice" make
``Reference 00 11 22 33 44`` none. Dates, amounts with thousands separators and numbers
of fewer than 9 digits need a phone word before them.
"""

from __future__ import annotations

import functools
import re
from collections.abc import Iterator

from flywheel.pii._common import Finding, words_before

TYPE = "phone"

# Regions whose national numbers are recognised without a country code (the most
# populous and the most common in logs of European/American apps). A number of any
# region is recognised in international form.
REGIONS = (
    "US", "IN", "GB", "DE", "FR", "ES", "IT", "NL", "BE", "CH", "AT", "PT", "IE", "PL", "SE",
    "CZ", "RO", "HU", "GR", "FI", "TR", "RU", "UA", "BR", "MX", "AR", "CO", "CL", "PE",
    "CN", "JP", "KR", "TW", "ID", "PH", "VN", "TH", "MY", "PK", "BD", "AU", "NZ", "ZA",
    "NG", "KE", "EG", "MA", "SA", "AE", "IL",
)

# A candidate: an optional "+", "(+" or "(", digits and separators, not glued to a word
# or a number. Written to start with its first character, "+", "(" or a digit (a pattern
# that starts with a character class is searched for with a fast scan, one that starts
# with a lookbehind is tried at every position): the "not glued" lookbehind spans that
# character, and the lookbehinds after it say which prefix it began, so the matches are
# those of ``(?<![\w+./-])(?:\+|\(\+|\()?\d[\d ().\-/]{5,24}\d\)?(?!...)``.
_CANDIDATE = re.compile(
    r"[+(\d](?<![\w+./-][+(\d])(?:(?<=\+)\d|(?<=\()\+?\d|(?<=\d))"
    r"[\d ().\-/]{5,24}\d\)?(?![\w]|[.,:/-]?\d)",
    re.ASCII,
)
_BAD_SEPARATORS = re.compile(r"[ .\-/]{2,}|[./].*[ \-]|[ \-].*[./]|\)\)|\(\(", re.ASCII)
_DATE = re.compile(r"\d{4}[-/.]\d{1,2}[-/.]\d{1,2}|\d{1,2}[-/.]\d{1,2}[-/.]\d{2,4}", re.ASCII)
_DECIMAL = re.compile(r"\d+\.\d+", re.ASCII)
_THOUSANDS = re.compile(r"\d{1,2}(?:[ ,.]\d{3})+|\d{3}(?:[,.]\d{3})+", re.ASCII)

_PHONE_WORDS = frozenset({
    "call", "calls", "called", "calling", "phone", "phones", "tel", "telephone", "mobile",
    "cell", "cellphone", "fax", "whatsapp", "sms", "text", "texting", "number", "numbers",
    "no", "nr", "ring", "reach", "contact", "dial", "landline", "hotline", "helpline", "ph",
    "mob", "telefon", "telefono", "teléfono", "téléphone", "telefone", "handy",
    "numero", "número", "nummer", "celular", "móvil", "movil", "portable", "cellulare",
    "tél", "tlf", "rufnummer", "mobil", "signal", "telegram", "viber", "line",
})
_NOT_PHONE_WORDS = frozenset({
    "order", "orders", "invoice", "ref", "reference", "id", "account", "acct", "tracking",
    "ticket", "case", "serial", "sku", "isbn", "issn", "transaction", "txn", "confirmation",
    "booking", "receipt", "policy", "claim", "po", "code", "batch", "lot", "version",
    "build", "item", "product", "part", "iban", "bic", "swift", "routing", "sort", "ean",
    "upc", "gtin", "vin", "imei", "ssn", "passport", "license", "licence", "member",
    "membership", "customer", "client", "parcel", "shipment", "container", "voucher",
    "coupon", "pnr", "record", "doi", "pmid", "arxiv", "patent", "vat", "tax", "ein",
    "registration", "reg", "bank", "card", "cvv", "amount", "total", "price", "cost",
    "usd", "eur", "population", "rows", "records", "users", "bytes", "size", "epoch",
    "timestamp", "unix", "coordinates", "latitude", "longitude", "lat", "lon", "lng", "ms", "ts", "seconds", "nanoseconds", "hash", "checksum", "crc",
})


def _context(text: str, start: int) -> bool | None:
    """False after a word of another kind of number among the last three ("reference
    number" is no phone), True after a phone word, None otherwise."""
    before = words_before(text, start, count=3)
    if not _NOT_PHONE_WORDS.isdisjoint(before):
        return False
    return True if not _PHONE_WORDS.isdisjoint(before) else None


def _valid(candidate: str, *, international: bool, regions: tuple[str, ...]) -> bool:
    """Whether ``phonenumbers`` takes the candidate for a valid number (international, or
    national in one of ``regions``)."""
    return _valid_cached(candidate, international, regions)


# (positional arguments: a cache key with keywords costs more to build)
@functools.lru_cache(maxsize=8192)
def _valid_cached(candidate: str, international: bool, regions: tuple[str, ...]) -> bool:
    """:func:`_valid`, cached: the same numbers come back often in logs."""
    import phonenumbers

    if international:
        number = "+" + candidate.lstrip("(+0 ") if candidate.lstrip("(").startswith("00") else candidate
        try:
            return phonenumbers.is_valid_number(phonenumbers.parse(number, None))
        except phonenumbers.NumberParseException:
            return False
    for region in regions:
        try:
            parsed = phonenumbers.parse(candidate, region)
        except phonenumbers.NumberParseException:
            continue
        if phonenumbers.is_valid_number(parsed):
            return True
    return False


def _is_phone(text: str, start: int, candidate: str) -> bool:
    digits = sum(map(str.isdigit, candidate))
    if not 7 <= digits <= 15 or candidate.count("(") != candidate.count(")"):
        return False
    if _BAD_SEPARATORS.search(candidate.replace(") ", ")").replace(" (", "(").replace(")-", ")")):
        return False
    bare = candidate.strip("()+").isdigit()
    stripped = candidate.lstrip("(")
    international = stripped.startswith("+") or (stripped.startswith("00") and not stripped.startswith("000"))
    context = _context(text, start)
    if context is False:
        return False
    if international and digits - (2 if stripped.startswith("00") else 0) < 8:
        return False
    if not international:
        # (no national number has more than 13 digits: longer runs are cards or ids)
        if digits < (7 if bare else 9) or digits > 13:
            return False
        if _DECIMAL.fullmatch(candidate):
            return False
        trunk = bare and stripped.startswith("0") and digits in (10, 11)
        doubtful = (digits < 9 or bool(_DATE.fullmatch(candidate)) or bool(_THOUSANDS.fullmatch(candidate))
                    or (bare and digits != 10 and not trunk))
        if doubtful and context is not True:
            return False
    # Ten bare digits with no word before them: only the American and Indian way.
    regions = ("US", "IN") if bare and not international and context is None and not trunk else REGIONS
    return _valid_cached(candidate, international, regions)


def find(text: str) -> Iterator[Finding]:
    """Yield the phone numbers of ``text``; a candidate that is no phone as a whole is
    tried shorter, cut at a separator (``415-555-0132 12 items``)."""
    for m in _CANDIDATE.finditer(text):
        candidate = m.group()
        while True:
            if _is_phone(text, m.start(), candidate):
                yield Finding(TYPE, m.start(), m.start() + len(candidate), candidate)
                break
            cut = max(candidate.rfind(" "), candidate.rfind("/"))
            # Only where the kept part is written otherwise ("415-555-0132 12"), is
            # international, or what is cut off is in brackets: four groups of four of
            # a non-card are no phone of three.
            if cut <= 0:
                break
            kept, rest = candidate[:cut], candidate[cut + 1 :]
            if (candidate[cut] == " " and " " in kept.strip() and not kept.lstrip("(").startswith(("+", "00"))
                    and not rest.startswith("(")):
                break
            candidate = candidate[:cut].rstrip(" -./(")
            if not candidate or not candidate[-1].isdigit() and candidate[-1] != ")":
                break


# RE2, a superset of the candidates that can be accepted: international (8+ digits after
# the prefix), or 9+ digits with short separators, or 7+ bare digits.
PREFILTER = "|".join((
    r"(?:\+|00)[1-9][0-9 ().\/\\-]{7}",
    r"[0-9](?:[ ().\/\\-]{1,3}[0-9]|[0-9]){8}",
    r"[0-9]{7}",
))
BOUNDARY = r"[^\w+./-]"
