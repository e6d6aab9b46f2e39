"""E-mail addresses, Unicode (``josé.garcía@exämple.de``) and punycode domains included."""

from __future__ import annotations

import re
from collections.abc import Iterator

from flywheel.pii._common import Finding

TYPE = "email"

# Letters of any script; a domain label neither starts nor ends with '-'; the top-level
# domain is letters (or punycode ``xn--``).
_LOCAL = r"[\w\u0300-\u036f!#$%&*+=?^`{|}~-]+(?:\.[\w\u0300-\u036f!#$%&*+=?^`{|}~-]+)*"
_LABEL = r"[^\W_](?:[\w\u0300-\u036f-]*[^\W_])?"
_EMAIL = re.compile(
    r"(?<![\w\u0300-\u036f.!#$%&*+=?^`{|}~-])" + _LOCAL + r"@" + _LABEL + r"(?:\." + _LABEL + r")*"
    r"\.(?:[^\W\d_]{2,}|xn--[a-z0-9-]+)(?![\w-]|\.[^\W\d_])"
)
# "icon@2x.png" is an asset name, not an address.
_FILE_SUFFIXES = frozenset({"png", "jpg", "jpeg", "gif", "svg", "webp", "ico", "bmp", "tif", "tiff"})


def find(text: str) -> Iterator[Finding]:
    """Yield the e-mail addresses of ``text``."""
    # The matches of _EMAIL.finditer(text), but each search starts at the last space
    # before the next "@" instead of scanning the whole text: a match holds exactly one
    # "@" and no space before it, so none starts earlier (the lookbehind still sees the
    # character before the start).
    end = 0
    at = text.find("@")
    while at >= 0:
        m = _EMAIL.search(text, max(end, text.rfind(" ", 0, at) + 1))
        if m is None:
            return
        value = m.group()
        if value.rsplit(".", 1)[1].lower() not in _FILE_SUFFIXES:
            yield Finding(TYPE, m.start(), m.end(), value)
        end = m.end()
        at = text.find("@", end)


# RE2 and Python alike: a character of the local part, '@', a letter or digit (any
# non-ASCII character counts as one; in JSON text the domain may start with \u00e9).
PREFILTER = r"(?:[A-Za-z0-9_.!#$%&*+=?^`{|}~-]|[^\x00-\x7f])@(?:[A-Za-z0-9]|[^\x00-\x7f]|\\u)"
