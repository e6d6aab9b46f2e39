"""Turning the plain report values of flywheel into Dagster metadata."""

import dagster as dg

from flywheel import store


def table_schema(table: str) -> dg.TableSchema:
    """Return the column schema of a DuckDB table, as the store declares it, for the UI."""
    return dg.TableSchema(columns=[dg.TableColumn(name, sql_type) for name, sql_type in store.schema_columns(table)])


def as_metadata(values: dict) -> dict:
    """Return ``values`` with dicts and lists wrapped as JSON metadata (the rest as is)."""
    return {
        key: dg.MetadataValue.json(value) if isinstance(value, (dict, list)) else value
        for key, value in values.items()
        if value is not None
    }
