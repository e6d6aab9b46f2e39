"""IP addresses (v4 and v6), validated by :mod:`ipaddress`.

Loopback, unspecified, multicast and reserved IPv4 addresses name no one and stay;
``version 1.2.3.4`` (after a word like "version" or "build") is no address.
"""

from __future__ import annotations

import ipaddress
import re
from collections.abc import Iterator

from flywheel.pii._common import Finding, near

TYPE = "ip"

# (The lookbehind follows the first digit and spans it: the same matches as
# ``(?<![\w.])(?:\d{1,3}\.){3}...``, but a pattern that starts with a digit is searched for
# with a fast scan, one that starts with a lookbehind is tried at every position.)
_IPV4 = re.compile(r"\d(?<![\w.]\d)\d{0,2}\.(?:\d{1,3}\.){2}\d{1,3}(?!\w|\.\d)", re.ASCII)
_IPV6 = re.compile(
    r"(?<![\w:.])(?:[0-9A-Fa-f]{0,4}:){2,7}(?:[0-9A-Fa-f]{1,4}|(?:\d{1,3}\.){3}\d{1,3})?(?:%[\w.]+)?(?![\w:]|\.\d)",
    re.ASCII,
)
# Every IPv6 match holds two colons with at most four hex digits between them: a text
# without such a pair is not searched (a fast scan from each colon).
_COLON_PAIR = re.compile(r":[0-9A-Fa-f]{0,4}:", re.ASCII)
_NOT_IP_WORDS = frozenset({"version", "versions", "v", "build", "release", "firmware", "section",
                           "chapter", "oid", "rule", "clause", "step", "item", "figure", "table",
                           "sdk", "api", "app", "ver", "rev", "revision", "patch", "update"})


def _personal(address: ipaddress.IPv4Address | ipaddress.IPv6Address) -> bool:
    # (IPv6 outside the ranges handed out so far is "reserved" too: still an address.)
    reserved = address.is_reserved and address.version == 4
    return not (address.is_loopback or address.is_unspecified or address.is_multicast or reserved)


def find(text: str) -> Iterator[Finding]:
    """Yield the IP addresses of ``text``."""
    if "." in text:
        for m in _IPV4.finditer(text):
            try:
                address = ipaddress.IPv4Address(m.group())
            except ValueError:
                continue
            if _personal(address) and not near(text, m.start(), m.end(), _NOT_IP_WORDS, before=2):
                yield Finding(TYPE, m.start(), m.end(), m.group())
    if ":" in text and _COLON_PAIR.search(text) is not None:
        for m in _IPV6.finditer(text):
            value = m.group()
            groups = [g for g in re.split(r"[:.%]", value) if g]
            if value.count(":") < 3 and "::" not in value:
                continue
            if len(groups) < 3 and max(map(len, groups), default=0) < 3:
                continue  # a::b in C++ is no address
            try:
                address = ipaddress.IPv6Address(value)
            except ValueError:
                continue
            if _personal(address):
                yield Finding(TYPE, m.start(), m.end(), value)


# RE2: four dotted numbers, or a colon-hex run with '::' or four groups.
PREFILTER = "|".join((
    r"[0-9]{1,3}\.[0-9]{1,3}\.[0-9]{1,3}\.[0-9]{1,3}",
    r"[0-9A-Fa-f]{0,4}::",
    r"[0-9A-Fa-f]{1,4}:[0-9A-Fa-f]{1,4}:[0-9A-Fa-f]{1,4}:",
))
