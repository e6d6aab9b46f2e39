"""The resource that hands assets the flywheel settings of this deployment."""

from __future__ import annotations

from pathlib import Path

import dagster as dg

from flywheel import settings as flywheel_settings

# Read once, when the code location loads.
SETTINGS = flywheel_settings.load()

# DuckDB allows one writing process per file: every asset that writes to it runs in
# this pool, whose limit is 1 (dagster.yaml), so parallel steps wait instead of failing.
DUCKDB_POOL = "flywheel_duckdb"


class FlywheelResource(dg.ConfigurableResource):
    """Where the flywheel home is and how it behaves; defaults come from the environment."""

    home: str = str(SETTINGS.home)
    pii_mode: str = SETTINGS.pii_mode
    max_rejected_share: float = SETTINGS.max_rejected_share

    def settings(self) -> flywheel_settings.Settings:
        """Return the :class:`flywheel.settings.Settings` this resource stands for."""
        return SETTINGS.replace(
            home=Path(self.home).expanduser().resolve(),
            pii_mode=self.pii_mode,
            max_rejected_share=self.max_rejected_share,
        )
