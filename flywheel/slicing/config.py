"""The slicing file: ``$FLYWHEEL_HOME/slices.toml``, or the default shipped with flywheel.

It holds the keyword rules (:mod:`flywheel.slicing.rules`) and the knobs of topics,
mined keywords and the ranking, each with a default (see ``default_slices.toml``, which
documents every key). Problems with the file are collected as messages, never raised:
a slicing run with a broken rule still slices by everything else.
"""

from __future__ import annotations

import tomllib
from dataclasses import dataclass, field, fields, replace
from pathlib import Path
from typing import Any

import duckdb

from flywheel.settings import Settings
from flywheel.slicing.rules import RuleError, RuleSet, parse_rules

DEFAULT_FILE = Path(__file__).with_name("default_slices.toml")
FILE_NAME = "slices.toml"
TEXT_FIELDS = ("input", "output", "both")


@dataclass(frozen=True)
class TopicConfig:
    method: str = "kmeans"
    n_topics: int | str = "auto"
    min_topics: int = 4
    max_topics: int = 24
    sample_size: int = 20_000
    history_days: int = 14
    refit_every_days: int = 7
    field: str = "input"
    max_features: int = 5_000
    match_threshold: float = 0.3


@dataclass(frozen=True)
class MiningConfig:
    fields: tuple[str, ...] = ("input",)
    min_support: int = 30
    min_lift: float = 1.5
    alpha: float = 0.05
    max_candidates: int = 50


@dataclass(frozen=True)
class RankingConfig:
    min_n: int = 30
    alpha: float = 0.05
    top: int = 15


@dataclass
class SlicingConfig:
    """Everything the slicing file says; ``problems`` lists what was ignored and why."""

    rules: RuleSet = field(default_factory=RuleSet)
    topics: TopicConfig = field(default_factory=TopicConfig)
    mining: MiningConfig = field(default_factory=MiningConfig)
    ranking: RankingConfig = field(default_factory=RankingConfig)
    source: str = ""
    problems: list[str] = field(default_factory=list)

    @property
    def rule_errors(self) -> list[RuleError]:
        return self.rules.errors


def config_path(settings: Settings) -> Path:
    """Return the slicing file in use: the home's ``slices.toml``, else the default."""
    path = settings.home / FILE_NAME
    return path if path.exists() else DEFAULT_FILE


def load_config(settings: Settings, con: duckdb.DuckDBPyConnection | None = None,
                *, path: Path | None = None) -> SlicingConfig:
    """Read the slicing file (see :func:`config_path`) into a :class:`SlicingConfig`."""
    path = path or config_path(settings)
    try:
        data = tomllib.loads(path.read_text(encoding="utf-8"))
    except (OSError, tomllib.TOMLDecodeError) as exc:
        config = SlicingConfig(source=str(path))
        config.problems.append(f"{path}: cannot read the slicing file ({exc}); no keyword rules apply")
        return config
    return config_from_dict(data, con=con, source=str(path))


def config_from_dict(data: dict[str, Any], *, con: duckdb.DuckDBPyConnection | None = None,
                     source: str = "") -> SlicingConfig:
    """Return the configuration of a parsed slicing file."""
    config = SlicingConfig(source=source)
    known = {"rules", "topics", "mining", "ranking"}
    for key in sorted(set(data) - known):
        config.problems.append(f"unknown section [{key}] ignored (known: {', '.join(sorted(known))})")
    rules = data.get("rules", {})
    if not isinstance(rules, dict):
        config.problems.append("[rules] must be a table of [rules.NAME] tables; no keyword rules apply")
        rules = {}
    config.rules = parse_rules(rules, con=con, source=source)
    config.topics = _section(data, "topics", TopicConfig(), config.problems)
    config.mining = _section(data, "mining", MiningConfig(), config.problems)
    config.ranking = _section(data, "ranking", RankingConfig(), config.problems)
    _check(config)
    return config


def _section(data: dict, name: str, default, problems: list[str]):
    """Return ``default`` updated by the keys of section ``name`` that have the right type."""
    table = data.get(name, {})
    if not isinstance(table, dict):
        problems.append(f"[{name}] must be a table; defaults used")
        return default
    changes: dict[str, Any] = {}
    by_name = {f.name: f for f in fields(default)}
    for key, value in table.items():
        if key not in by_name:
            problems.append(f"[{name}] unknown key {key!r} ignored")
            continue
        current = getattr(default, key)
        if isinstance(current, tuple):
            value = (value,) if isinstance(value, str) else value
            if not isinstance(value, list | tuple) or not all(isinstance(v, str) for v in value):
                problems.append(f"[{name}] {key} must be a list of strings; default {list(current)} used")
                continue
            value = tuple(value)
        elif key == "n_topics":
            if not (value == "auto" or (isinstance(value, int) and not isinstance(value, bool) and value >= 2)):
                problems.append(f"[{name}] n_topics must be \"auto\" or a number >= 2; \"auto\" used")
                continue
        elif not _same_kind(value, current):
            problems.append(f"[{name}] {key} must be a {type(current).__name__}; default {current!r} used")
            continue
        changes[key] = value
    return replace(default, **changes)


def _same_kind(value: Any, default: Any) -> bool:
    """Return whether a TOML value fits a setting's default (an int is a float too)."""
    if isinstance(value, bool) or isinstance(default, bool):
        return isinstance(value, bool) and isinstance(default, bool)
    if isinstance(default, float):
        return isinstance(value, int | float)
    return isinstance(value, type(default))


def _check(config: SlicingConfig) -> None:
    """Replace values that are out of range by their defaults (with a problem message)."""
    topics, mining = config.topics, config.mining
    if topics.method not in ("kmeans", "nmf"):
        config.problems.append(f"[topics] method {topics.method!r} unknown (kmeans, nmf); \"kmeans\" used")
        config.topics = topics = replace(topics, method="kmeans")
    if topics.field not in TEXT_FIELDS:
        config.problems.append(f"[topics] field {topics.field!r} unknown; \"input\" used")
        config.topics = topics = replace(topics, field="input")
    bad = [f for f in mining.fields if f not in ("input", "output")]
    if bad:
        config.problems.append(f"[mining] fields {bad} unknown (input, output); ignored")
        config.mining = replace(mining, fields=tuple(f for f in mining.fields if f in ("input", "output")))
    if topics.min_topics < 2 or topics.max_topics < topics.min_topics:
        config.problems.append("[topics] needs 2 <= min_topics <= max_topics; defaults used")
        config.topics = replace(topics, min_topics=TopicConfig.min_topics, max_topics=TopicConfig.max_topics)
