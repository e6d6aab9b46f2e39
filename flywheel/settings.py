"""Every setting of flywheel, read once from the environment.

Each setting is an environment variable with a documented default (see the README's
"Settings" table). :func:`load` reads them all and returns a frozen :class:`Settings`;
nothing else in the project reads the environment for configuration.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, fields
from pathlib import Path

PII_MODES = ("redact", "flag", "off")
STORAGE_MODES = ("duckdb",)


class SettingsError(ValueError):
    """A setting has a value that cannot be used; the message names the variable."""


@dataclass(frozen=True)
class Settings:
    """The configuration of one flywheel home.

    Attributes mirror the environment variables ``FLYWHEEL_<NAME>`` (upper case).
    """

    home: Path = Path("data")
    pii_mode: str = "redact"
    max_rejected_share: float = 0.05
    start_date: str = "2025-01-01"
    nightly_cron: str = "0 2 * * *"
    timezone: str = "UTC"
    storage: str = "duckdb"
    duckdb_threads: int = 0  # 0: DuckDB's default (all cores)
    duckdb_memory_limit: str = ""  # "": DuckDB's default (80% of RAM)

    # Derived locations inside the home.
    @property
    def landing_dir(self) -> Path:
        return self.home / "landing"

    @property
    def annotations_inbox(self) -> Path:
        return self.home / "annotations" / "inbox"

    @property
    def annotations_outbox(self) -> Path:
        return self.home / "annotations" / "outbox"

    @property
    def prompts_dir(self) -> Path:
        return self.home / "prompts"

    @property
    def models_dir(self) -> Path:
        return self.home / "models"

    @property
    def reports_dir(self) -> Path:
        return self.home / "reports"

    @property
    def database_path(self) -> Path:
        return self.home / "flywheel.duckdb"

    def source_name(self, path: Path) -> str:
        """Return how a file is named in the tables: relative to the home when inside it."""
        try:
            return path.resolve().relative_to(self.home.resolve()).as_posix()
        except ValueError:
            return str(path)

    def landing_for(self, day: str) -> Path:
        """Return the landing folder of one day (``YYYY-MM-DD``)."""
        return self.landing_dir / day

    def replace(self, **changes) -> "Settings":
        """Return a copy with some settings changed (values are validated)."""
        values = {f.name: getattr(self, f.name) for f in fields(self)}
        values.update(changes)
        return _validated(Settings(**values))


ENV_PREFIX = "FLYWHEEL_"


def _validated(settings: Settings) -> Settings:
    if settings.pii_mode not in PII_MODES:
        raise SettingsError(
            f"FLYWHEEL_PII_MODE={settings.pii_mode!r} is not one of {', '.join(PII_MODES)}"
        )
    if settings.storage not in STORAGE_MODES:
        raise SettingsError(
            f"FLYWHEEL_STORAGE={settings.storage!r} is not one of {', '.join(STORAGE_MODES)}"
        )
    if not 0.0 <= settings.max_rejected_share <= 1.0:
        raise SettingsError(
            f"FLYWHEEL_MAX_REJECTED_SHARE={settings.max_rejected_share} must be between 0 and 1"
        )
    return settings


def load(environ: dict[str, str] | None = None) -> Settings:
    """Return the settings read from ``environ`` (default: the process environment).

    ``FLYWHEEL_HOME`` is made absolute so that every process of a run (the Dagster
    webserver, daemon and run workers) resolves it to the same folder.
    """
    env = os.environ if environ is None else environ
    values: dict[str, object] = {}
    for f in fields(Settings):
        raw = env.get(ENV_PREFIX + f.name.upper())
        if raw is None or raw == "":
            continue
        kind = type(f.default)
        try:
            if f.name == "home":
                values[f.name] = Path(raw)
            elif isinstance(f.default, int):
                values[f.name] = int(raw)
            elif isinstance(f.default, float):
                values[f.name] = float(raw)
            else:
                values[f.name] = raw
        except ValueError as exc:
            raise SettingsError(
                f"{ENV_PREFIX}{f.name.upper()}={raw!r}: expected {kind.__name__} ({exc})"
            ) from None
    settings = Settings(**values)
    return settings.replace(home=settings.home.expanduser().resolve())
