"""What every detector shares: the finding, and the context words around a match."""

from __future__ import annotations

import re
from typing import NamedTuple


class Finding(NamedTuple):
    """One piece of PII: its type, its span ``text[start:end]`` and that text."""

    type: str
    start: int
    end: int
    value: str


_WORD = re.compile(r"[^\W\d_]+")
# The same words in ASCII text, where a letter is [A-Za-z] (a faster class to test).
_ASCII_WORD = re.compile(r"[A-Za-z]+")


def _words(window: str) -> list[str]:
    return (_ASCII_WORD if window.isascii() else _WORD).findall(window)


def words_before(text: str, start: int, *, width: int = 40, count: int = 3) -> list[str]:
    """Return the last ``count`` words (lower case, letters only) before ``start``."""
    # (only the words kept are lowered: the same list)
    return [w.lower() for w in _words(text[max(0, start - width) : start])[-count:]]


def words_after(text: str, end: int, *, width: int = 30, count: int = 2) -> list[str]:
    """Return the first ``count`` words (lower case, letters only) after ``end``."""
    return [w.lower() for w in _words(text[end : end + width])[:count]]


def near(text: str, start: int, end: int, words: frozenset[str], *, before: int = 3,
         after: int = 0) -> bool:
    """Return whether one of ``words`` is among the words just before (or after) a span."""
    found = words_before(text, start, count=before)
    if after:
        found += words_after(text, end, count=after)
    return not words.isdisjoint(found)
