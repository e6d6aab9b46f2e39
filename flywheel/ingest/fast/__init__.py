"""Fast paths for the log formats real applications write: whole batches mapped in SQL.

The per-record Python mappers of :mod:`flywheel.ingest.formats` turn each record into
the canonical shape one by one. Here a JSON-lines file of one of those formats is cut
into Arrow batches of lines (the canonical path's reader), and one DuckDB statement per
batch maps every record of a shape it fully understands to the canonical JSON document
the mapper would have made (same fields, same values, metadata in the same order). Every
other line (broken, unusual, or a shape the statement does not know) goes through the
Python mapper, so the result is the same as the Python path's, record for record; the
batches then take the loader's fast statement like canonical lines (one record per line;
an OTLP/JSON line holds several spans: its records share the line, see
:mod:`flywheel.ingest.fast.otel_lines`; the OTel statement goes one step further and
gives the `logs` rows of the spans it accepts, with no document to parse again).

A file these paths cannot number the way the Python reader does (not JSON lines, a byte
order mark, bad UTF-8, a lone carriage return, gzip by magic bytes only, a damaged gzip
stream) raises :class:`NotFast`, and the loader reads it the Python way instead.
"""

from __future__ import annotations

from flywheel.ingest.fast.lines import NotFast, fast_batches, handles

__all__ = ["NotFast", "fast_batches", "handles"]
