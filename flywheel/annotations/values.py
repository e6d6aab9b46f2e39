"""From the words annotation tools write to our label schema: label names and 0/1 values.

People label with the words of their tool: ``Yes``/``No`` choices in Label Studio,
``relevant``/``unrelated`` in Argilla, ``True``/``False`` or ``1``/``0`` in a CSV. This
module maps each (tool, label name, value) to a label of :data:`LABELS` and a value 1
(hallucinated; relevant) or 0.

Defaults (words are compared case-insensitively, with ``_`` and ``-`` read as spaces):

- label names: see :data:`DEFAULT_LABEL_ALIASES` (``hallucination``, ``hallucinated``,
  ``is_hallucination``, ``hallucination_spans``, ... -> ``hallucination``; ``relevance``,
  ``relevant``, ``is_relevant``, ``relevancy`` ... -> ``relevance``).
- values of every label (:data:`COMMON_VALUES`): ``1 yes y true t`` -> 1,
  ``0 no n false f`` -> 0; numbers and booleans equal to 1 or 0 likewise.
- ``hallucination`` (:data:`DEFAULT_VALUES`): ``hallucinated``, ``hallucination``,
  ``unsupported``, ``unfaithful`` -> 1; ``not hallucinated``, ``no hallucination``,
  ``faithful``, ``grounded``, ``supported`` -> 0.
- ``relevance``: ``relevant``, ``on topic``, ``related`` -> 1; ``irrelevant``,
  ``not relevant``, ``unrelated``, ``off topic`` -> 0.

Anything else is an unmappable value (the record is rejected with that reason), unless
the optional file ``$FLYWHEEL_HOME/annotations/mapping.toml`` says otherwise. Every
table in it is optional; a ``[sources.<tool>]`` table applies to one tool only and
takes precedence (tools: ``canonical``, ``label_studio``, ``argilla``, ``langfuse``)::

    [labels]                          # label names as written -> label schema, every tool
    "is_hallucinated" = "hallucination"

    [values.any]                      # value words for every label, every tool
    "hallu" = 1
    [values.relevance]                # value words for one label
    "partly relevant" = 1

    [annotators]                      # annotator ids as read -> one name
    "label-studio:10" = "maria.k"

    [sources.label_studio.labels]     # the same tables for one tool only
    "sentiment" = "relevance"
    [sources.label_studio.values.relevance]
    "Positive" = 1
    "Negative" = 0
"""

from __future__ import annotations

import math
import re
import tomllib
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from flywheel.settings import Settings

LABELS: tuple[str, ...] = ("hallucination", "relevance")
"""The label schema: every accepted annotation has one of these labels, value 0 or 1."""

TOOLS: tuple[str, ...] = ("canonical", "label_studio", "argilla", "langfuse")
"""The annotation tools (sources) a mapping can be specific to."""

MAPPING_FILE = Path("annotations") / "mapping.toml"

DEFAULT_LABEL_ALIASES: dict[str, str] = {
    "hallucination": "hallucination",
    "hallucinated": "hallucination",
    "hallucinations": "hallucination",
    "is hallucination": "hallucination",
    "is hallucinated": "hallucination",
    "hallucination spans": "hallucination",
    "hallucination span": "hallucination",
    "relevance": "relevance",
    "relevant": "relevance",
    "relevancy": "relevance",
    "is relevant": "relevance",
}

COMMON_VALUES: dict[str, int] = {
    "1": 1, "yes": 1, "y": 1, "true": 1, "t": 1,
    "0": 0, "no": 0, "n": 0, "false": 0, "f": 0,
}

DEFAULT_VALUES: dict[str, dict[str, int]] = {
    "hallucination": {
        "hallucinated": 1, "hallucination": 1, "unsupported": 1, "unfaithful": 1,
        "not hallucinated": 0, "no hallucination": 0, "faithful": 0, "grounded": 0,
        "supported": 0,
    },
    "relevance": {
        "relevant": 1, "on topic": 1, "related": 1,
        "irrelevant": 0, "not relevant": 0, "unrelated": 0, "off topic": 0,
    },
}


class MappingError(ValueError):
    """The mapping file (or dict) cannot be used; the message says where and why."""


_SEPARATORS = re.compile(r"[\s_\-]+")


def normalize_word(word: Any) -> str:
    """Return a word as mappings compare it: case-folded, ``_``/``-``/spaces collapsed."""
    return _SEPARATORS.sub(" ", str(word)).strip().casefold()


def _number_value(raw: Any) -> int | None:
    """Return 1 or 0 for a boolean or a number equal to 1 or 0, else None."""
    if isinstance(raw, bool):
        return int(raw)
    if isinstance(raw, (int, float)):
        if isinstance(raw, float) and math.isnan(raw):
            return None
        return int(raw) if raw in (0, 1) else None
    if isinstance(raw, str):
        try:
            number = float(raw.strip())
        except ValueError:
            return None
        return int(number) if number in (0.0, 1.0) else None
    return None


@dataclass(frozen=True)
class _Table:
    labels: dict[str, str] = field(default_factory=dict)
    values: dict[str, dict[str, int]] = field(default_factory=dict)  # label or "any" -> word -> 0/1


@dataclass(frozen=True)
class ValueMapping:
    """Label-name, value and annotator mappings: the defaults plus the user's overrides.

    Build it with :meth:`load` (reads the home's mapping file when present) or
    :meth:`from_dict` (the same structure as the TOML file).
    """

    common: _Table = field(default_factory=_Table)
    per_tool: dict[str, _Table] = field(default_factory=dict)
    annotators: dict[str, str] = field(default_factory=dict)
    origin: str = "defaults"

    @classmethod
    def load(cls, settings: Settings) -> "ValueMapping":
        """Return the mapping of a home: defaults plus ``annotations/mapping.toml`` if present."""
        path = settings.home / MAPPING_FILE
        if not path.is_file():
            return cls()
        try:
            config = tomllib.loads(path.read_text(encoding="utf-8"))
        except (tomllib.TOMLDecodeError, UnicodeDecodeError) as exc:
            raise MappingError(f"{path}: not valid TOML ({exc})") from None
        return cls.from_dict(config, origin=str(path))

    @classmethod
    def from_dict(cls, config: Mapping[str, Any], *, origin: str = "dict") -> "ValueMapping":
        """Return a mapping from a dict shaped like the TOML file (see the module docstring).

        Raises :class:`MappingError` for unknown tables, tools or labels and for values
        other than 0 and 1.
        """
        unknown = set(config) - {"labels", "values", "annotators", "sources"}
        if unknown:
            raise MappingError(f"{origin}: unknown tables {sorted(unknown)}; "
                               "known: labels, values, annotators, sources")
        per_tool: dict[str, _Table] = {}
        for tool, table in dict(config.get("sources") or {}).items():
            if tool not in TOOLS:
                raise MappingError(f"{origin}: [sources.{tool}]: unknown tool; known: {', '.join(TOOLS)}")
            extra = set(table) - {"labels", "values"}
            if extra:
                raise MappingError(f"{origin}: [sources.{tool}]: unknown tables {sorted(extra)}")
            per_tool[tool] = _table(table, f"{origin}: [sources.{tool}]")
        annotators = {}
        for name, alias in dict(config.get("annotators") or {}).items():
            if not isinstance(alias, str) or not alias.strip():
                raise MappingError(f"{origin}: [annotators] {name!r} must map to a non-empty name")
            annotators[str(name)] = alias.strip()
        return cls(common=_table(config, origin), per_tool=per_tool, annotators=annotators, origin=origin)

    def label_for(self, tool: str, name: Any) -> str | None:
        """Return the label of :data:`LABELS` that ``name`` (as a tool wrote it) means, or None."""
        if name is None:
            return None
        word = normalize_word(name)
        if not word:
            return None
        for table in self._tables(tool):
            if word in table.labels:
                return table.labels[word]
        return DEFAULT_LABEL_ALIASES.get(word)

    def value_for(self, tool: str, label: str, raw: Any) -> int | None:
        """Return 1 or 0 for a raw value of ``label`` as ``tool`` wrote it, or None if unmappable."""
        if raw is None or isinstance(raw, (dict, list)):
            return None
        word = normalize_word(raw)
        for table in self._tables(tool):
            for key in (label, "any"):
                if word in table.values.get(key, {}):
                    return table.values[key][word]
        if word in DEFAULT_VALUES.get(label, {}):
            return DEFAULT_VALUES[label][word]
        if word in COMMON_VALUES:
            return COMMON_VALUES[word]
        return _number_value(raw)

    def annotator_for(self, name: str) -> str:
        """Return the annotator's name after the ``[annotators]`` aliases."""
        return self.annotators.get(name, name)

    def _tables(self, tool: str) -> list[_Table]:
        specific = self.per_tool.get(tool)
        return [specific, self.common] if specific else [self.common]


def _table(config: Mapping[str, Any], where: str) -> _Table:
    labels: dict[str, str] = {}
    for name, label in dict(config.get("labels") or {}).items():
        if label not in LABELS:
            raise MappingError(f"{where} [labels] {name!r} = {label!r}: not one of {', '.join(LABELS)}")
        labels[normalize_word(name)] = label
    values: dict[str, dict[str, int]] = {}
    for key, words in dict(config.get("values") or {}).items():
        if key != "any" and key not in LABELS:
            raise MappingError(f"{where} [values.{key}]: not 'any' or one of {', '.join(LABELS)}")
        if not isinstance(words, Mapping):
            raise MappingError(f"{where} [values.{key}] must be a table of word = 0 or 1")
        table = {}
        for word, value in words.items():
            if isinstance(value, bool):
                value = int(value)
            if not isinstance(value, int) or value not in (0, 1):
                raise MappingError(f"{where} [values.{key}] {word!r} = {value!r}: values are 0 or 1 (or true/false)")
            table[normalize_word(word)] = int(value)
        values[key] = table
    return _Table(labels=labels, values=values)
