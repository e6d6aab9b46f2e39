"""Dagster assets, asset checks and resources: thin adapters over :mod:`flywheel`."""
