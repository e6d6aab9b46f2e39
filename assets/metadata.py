"""Turning the plain report values of flywheel into Dagster metadata."""

import dagster as dg


def as_metadata(values: dict) -> dict:
    """Return ``values`` with dicts and lists wrapped as JSON metadata (the rest as is)."""
    return {
        key: dg.MetadataValue.json(value) if isinstance(value, (dict, list)) else value
        for key, value in values.items()
        if value is not None
    }
