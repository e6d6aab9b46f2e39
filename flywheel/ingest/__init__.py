"""Ingestion of production logs: detect each file's format, normalize, validate, store."""
