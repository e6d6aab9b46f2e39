"""Shared test helpers: a fresh flywheel home per test, landing files, real data paths."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from flywheel import store
from flywheel.settings import Settings, load

ROOT = Path(__file__).resolve().parents[1]
FIXTURES = ROOT / "tests" / "fixtures"
SHARED_DATA = (ROOT / ".." / "shared" / "data").resolve()


def shared_data(relative: str) -> Path:
    """Return a path under ../shared/data, or skip (fail under CI) when it is absent."""
    path = SHARED_DATA / relative
    if not path.exists():
        if os.environ.get("CI", "").lower() == "true":
            pytest.fail(f"{path} is missing: CI always has ../shared/data")
        pytest.skip(f"{path} is absent (a fresh clone without ../shared/data)")
    return path


@pytest.fixture
def settings(tmp_path: Path) -> Settings:
    """Settings for a fresh, empty flywheel home in a temporary folder."""
    return load({"FLYWHEEL_HOME": str(tmp_path / "home")})


def land(settings: Settings, day: str, name: str, content: str | bytes) -> Path:
    """Write one landing file of ``day`` and return its path."""
    folder = settings.landing_for(day)
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / name
    if isinstance(content, bytes):
        path.write_bytes(content)
    else:
        path.write_text(content, encoding="utf-8")
    return path


def rows(settings: Settings, sql: str, params=None) -> list[tuple]:
    """Run a query on the home's DuckDB file and return all rows."""
    with store.connection(settings) as con:
        return con.execute(sql, params or []).fetchall()
