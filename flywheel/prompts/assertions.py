"""Assertion checks on the answers a prompt produces, from ``prompts/assertions.toml``.

The file (``$FLYWHEEL_HOME/prompts/assertions.toml``, optional) has a ``[defaults]``
table that applies to every prompt name and one ``[prompt.<prompt_name>]`` table per
prompt name whose keys add to (lists) or replace (numbers) the defaults::

    [defaults]
    max_chars = 1200                       # the answer is at most this long
    min_chars = 1                          # ... and at least this long
    must_contain = []                      # substrings that must appear (case-insensitive)
    must_not_contain = ["as an ai language model"]   # substrings that must not appear
    regex_must_match = []                  # Python regular expressions that must match
    regex_must_not_match = ['sk-[A-Za-z0-9]{20,}']   # ... that must not match

    [prompt.acme-assistant]
    max_chars = 600

An answer passes when every check passes. Unknown keys, wrong types and regular
expressions that do not compile are reported (file, table and key) and left out; the
other checks still apply.
"""

from __future__ import annotations

import re
import tomllib
from dataclasses import dataclass, field
from pathlib import Path

from flywheel.settings import Settings

NUMBER_KEYS = ("max_chars", "min_chars")
LIST_KEYS = ("must_contain", "must_not_contain", "regex_must_match", "regex_must_not_match")


@dataclass
class Checks:
    """The checks of one prompt name."""

    max_chars: int | None = None
    min_chars: int | None = None
    must_contain: list[str] = field(default_factory=list)
    must_not_contain: list[str] = field(default_factory=list)
    regex_must_match: list[re.Pattern] = field(default_factory=list)
    regex_must_not_match: list[re.Pattern] = field(default_factory=list)

    @property
    def empty(self) -> bool:
        return self.max_chars is None and self.min_chars is None and not any(
            getattr(self, k) for k in LIST_KEYS)

    def failures(self, text: str) -> list[str]:
        """Return the checks ``text`` fails (empty when it passes them all)."""
        failed = []
        if self.max_chars is not None and len(text) > self.max_chars:
            failed.append(f"max_chars {self.max_chars}")
        if self.min_chars is not None and len(text) < self.min_chars:
            failed.append(f"min_chars {self.min_chars}")
        lower = text.lower()
        failed += [f"must_contain {s!r}" for s in self.must_contain if s.lower() not in lower]
        failed += [f"must_not_contain {s!r}" for s in self.must_not_contain if s.lower() in lower]
        failed += [f"regex_must_match {p.pattern!r}" for p in self.regex_must_match if not p.search(text)]
        failed += [f"regex_must_not_match {p.pattern!r}" for p in self.regex_must_not_match if p.search(text)]
        return failed


@dataclass
class AssertionFile:
    """The parsed assertions file: defaults, per-prompt tables, problems, and its path."""

    path: Path
    exists: bool = False
    defaults: dict = field(default_factory=dict)
    prompts: dict[str, dict] = field(default_factory=dict)
    problems: list[str] = field(default_factory=list)

    def checks(self, prompt_name: str) -> Checks:
        """Return the checks that apply to ``prompt_name``."""
        merged: dict = {k: list(v) if isinstance(v, list) else v for k, v in self.defaults.items()}
        for key, value in self.prompts.get(prompt_name, {}).items():
            if key in LIST_KEYS:
                merged[key] = merged.get(key, []) + list(value)
            else:
                merged[key] = value
        return Checks(**merged)


def assertions_path(settings: Settings) -> Path:
    """Return where the assertions file is: ``$FLYWHEEL_HOME/prompts/assertions.toml``."""
    return settings.prompts_dir / "assertions.toml"


def _table(path: Path, where: str, table: object, problems: list[str]) -> dict:
    if not isinstance(table, dict):
        problems.append(f"{path}: [{where}] must be a table")
        return {}
    out: dict = {}
    for key, value in table.items():
        if key in NUMBER_KEYS:
            if isinstance(value, bool) or not isinstance(value, int) or value < 0:
                problems.append(f"{path}: [{where}] {key} = {value!r} must be a whole number >= 0")
                continue
            out[key] = value
        elif key in LIST_KEYS:
            if not isinstance(value, list) or not all(isinstance(v, str) for v in value):
                problems.append(f"{path}: [{where}] {key} must be a list of strings")
                continue
            if key.startswith("regex"):
                compiled = []
                for pattern in value:
                    try:
                        compiled.append(re.compile(pattern))
                    except re.error as exc:
                        problems.append(f"{path}: [{where}] {key}: {pattern!r} is not a regular expression ({exc})")
                value = compiled
            out[key] = value
        else:
            problems.append(f"{path}: [{where}] unknown key {key!r} (known: {', '.join(NUMBER_KEYS + LIST_KEYS)})")
    return out


def load_assertions(settings: Settings) -> AssertionFile:
    """Read the assertions file; a missing file means no checks, a broken one is reported."""
    path = assertions_path(settings)
    result = AssertionFile(path=path)
    if not path.exists():
        return result
    result.exists = True
    try:
        data = tomllib.loads(path.read_text(encoding="utf-8"))
    except (tomllib.TOMLDecodeError, UnicodeDecodeError, OSError) as exc:
        result.problems.append(f"{path}: cannot be read as TOML ({exc}); no assertion checks apply")
        return result
    for key, value in data.items():
        if key == "defaults":
            result.defaults = _table(path, "defaults", value, result.problems)
        elif key == "prompt" and isinstance(value, dict):
            for name, table in value.items():
                result.prompts[name] = _table(path, f"prompt.{name}", table, result.problems)
        else:
            result.problems.append(f"{path}: unknown table [{key}] (known: [defaults], [prompt.<name>])")
    return result
