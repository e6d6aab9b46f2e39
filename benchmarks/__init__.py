"""Benchmarks: `python -m benchmarks NAME [options]`; the last line printed is one JSON object."""
