"""Keyword slice rules: ``[rules.NAME]`` tables of the slicing file ``slices.toml``.

A rule names a slice and says which logs are in it::

    [rules.refund]
    keywords = ["refund", "money back"]    # literal phrases
    regex = ['charge ?back']               # regular expressions (RE2 syntax, as DuckDB runs them)
    field = "input"                        # input | output | both (default: input)
    description = "Customers asking for their money back"

Matching is case-insensitive. A keyword matches where it starts at a word boundary and
may run on into a longer word ("refund" matches "refunds" and "refundable", but not
"nonrefund"); a space in a keyword matches any run of whitespace. For an exact word,
write a regex with ``\\b`` on both sides. A log is in the slice when any keyword or
regex matches the chosen field(s).

A rule that cannot be used (a regex DuckDB cannot compile, an unknown field, an unknown
key, no keywords at all) is reported by name with the reason, and the other rules
still apply.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from typing import Any

import duckdb

FIELDS = ("input", "output", "both")
RULE_KEYS = ("keywords", "regex", "field", "description")
_SPECIAL = set("\\.^$|?*+()[]{}")


@dataclass(frozen=True)
class Rule:
    """One keyword slice: its name, the field(s) it looks at, and what it matches."""

    name: str
    field: str = "input"
    keywords: tuple[str, ...] = ()
    regexes: tuple[str, ...] = ()
    description: str = ""

    @property
    def body(self) -> str:
        """Return the alternatives of the rule as one regular expression, without flags."""
        parts = [keyword_pattern(k) for k in self.keywords] + [f"(?:{r})" for r in self.regexes]
        return "(?:" + "|".join(parts) + ")"

    @property
    def pattern(self) -> str:
        """Return the rule as one case-insensitive regular expression (RE2 and Python)."""
        return "(?i)" + self.body

    @property
    def columns(self) -> tuple[str, ...]:
        """Return the log columns the rule looks at."""
        return ("input", "output") if self.field == "both" else (self.field,)


@dataclass(frozen=True)
class RuleError:
    """A rule that was left out, with the reason."""

    name: str
    message: str

    def __str__(self) -> str:
        return f"rule {self.name!r}: {self.message}"


@dataclass
class RuleSet:
    """The usable rules of a slicing file, and the ones that were not usable."""

    rules: list[Rule] = field(default_factory=list)
    errors: list[RuleError] = field(default_factory=list)
    source: str = ""

    @property
    def names(self) -> list[str]:
        return [r.name for r in self.rules]


def keyword_pattern(keyword: str) -> str:
    """Return the regex of one keyword: escaped, whitespace-tolerant, anchored at a word start."""
    escaped = "".join("\\" + ch if ch in _SPECIAL else ch for ch in keyword.strip())
    escaped = re.sub(r"\s+", r"\\s+", escaped)
    starts_with_word = bool(re.match(r"\w", keyword.strip()))
    return (r"\b" if starts_with_word else "") + escaped


def parse_rules(
    table: dict[str, Any] | None,
    *,
    con: duckdb.DuckDBPyConnection | None = None,
    source: str = "",
) -> RuleSet:
    """Return the rules of a ``[rules]`` table; broken rules go to ``errors`` by name.

    With a DuckDB connection, every regex is compiled by DuckDB's engine (RE2), the one
    that evaluates it; without one, Python's ``re`` checks it.
    """
    result = RuleSet(source=source)
    for name, spec in (table or {}).items():
        try:
            result.rules.append(_parse_rule(str(name), spec, con))
        except ValueError as exc:
            result.errors.append(RuleError(str(name), str(exc)))
    return result


def _parse_rule(name: str, spec: Any, con: duckdb.DuckDBPyConnection | None) -> Rule:
    if not name.strip():
        raise ValueError("empty rule name")
    if not isinstance(spec, dict):
        raise ValueError("must be a table with keywords and/or regex")
    unknown = sorted(set(spec) - set(RULE_KEYS))
    if unknown:
        raise ValueError(f"unknown key(s) {', '.join(unknown)} (known: {', '.join(RULE_KEYS)})")
    fld = spec.get("field", "input")
    if fld not in FIELDS:
        raise ValueError(f"unknown field {fld!r} (expected one of {', '.join(FIELDS)})")
    keywords = _strings(spec.get("keywords", []), "keywords")
    regexes = _strings(spec.get("regex", []), "regex")
    if not keywords and not regexes:
        raise ValueError("has no keywords and no regex")
    for regex in regexes:
        _check_regex(regex, con)
    rule = Rule(name=name, field=fld, keywords=tuple(keywords), regexes=tuple(regexes),
                description=str(spec.get("description", "")))
    _check_regex(rule.pattern, con)
    return rule


def _strings(value: Any, key: str) -> list[str]:
    if isinstance(value, str):
        value = [value]
    if not isinstance(value, list) or not all(isinstance(v, str) for v in value):
        raise ValueError(f"{key} must be a string or a list of strings")
    if any(not v.strip() for v in value):
        raise ValueError(f"{key} holds an empty string")
    return value


def _check_regex(regex: str, con: duckdb.DuckDBPyConnection | None) -> None:
    if con is None:
        try:
            re.compile(regex)
        except re.error as exc:
            raise ValueError(f"invalid regex {regex!r}: {exc}") from None
        return
    try:
        con.execute("SELECT regexp_matches('', ?)", [regex]).fetchone()
    except duckdb.Error as exc:
        message = str(exc).split("\n")[0]
        raise ValueError(f"invalid regex {regex!r}: {message}") from None


def matching_rule(rules: RuleSet, text: str) -> str | None:
    """Return the name of the first rule whose pattern matches ``text`` (Python ``re``)."""
    for rule in rules.rules:
        try:
            if re.search(rule.pattern, text):
                return rule.name
        except re.error:  # RE2-only syntax: not checkable here
            continue
    return None
