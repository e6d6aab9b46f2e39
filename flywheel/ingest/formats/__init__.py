"""Detect the format of a log file and read the JSON-based formats into RawRecords.

The loader asks :func:`detect_format` what a landing file is, then reads canonical CSV
and Parquet itself and hands every JSON-based format to :func:`iter_records`, which
yields one :class:`~flywheel.ingest.records.RawRecord` per log record, in file order,
with the record mapped to the canonical shape of DESIGN.md (not validated: values are
kept as found; the loader validates types and required fields for all formats alike).

Files may be gzip-compressed (``.gz`` or gzip magic bytes). A file that cannot be read
at all (unknown format, empty, truncated or corrupt gzip, not UTF-8, a JSON document
broken beyond the first line) raises :class:`~flywheel.ingest.records.UnreadableFile`,
from :func:`detect_format` or, when the damage is further in, during iteration.

One module per format family, each with its mapping in its docstring (unknown fields
always end up in ``record["metadata"]``):

- :mod:`.detection`: which format a file is (:func:`detect_format`, :data:`FORMATS`).
- :mod:`.jsonio`: opening (gzip, BOM) and the JSON layouts every JSON format accepts.
- :mod:`.common`: record-building helpers; :mod:`.messages`: chat messages and context.
- :mod:`.canonical`: canonical JSON lines.
- :mod:`.openai`: OpenAI request/response logs and Batch API files (chat completions
  and Responses).
- :mod:`.nvidia`: NVIDIA data-flywheel records (no id: one derived from the content).
- :mod:`.otel`: OpenTelemetry OTLP/JSON (and protobuf JSON) spans, joined with their
  GenAI log records (``otel_logs``, a companion format, see :data:`COMPANION_FORMATS`).
- :mod:`.langfuse`: Langfuse trace exports (API, UI export, single-trace download).
"""

from __future__ import annotations

from typing import Any, Callable, Iterator

from flywheel.ingest.records import RawRecord
from flywheel.ingest.formats.detection import FORMATS, detect_format
from flywheel.ingest.formats.jsonio import _unreadable_on_decode_errors, open_text
from flywheel.ingest.formats.canonical import _read_canonical
from flywheel.ingest.formats.batch_input import BATCH_INPUT, BatchRequests, day_batch_requests
from flywheel.ingest.formats.openai import _read_batch_output, _read_openai_chat, load_batch_requests
from flywheel.ingest.formats.otel import _read_otel, load_otel_logs, normalize_id
from flywheel.ingest.formats.langfuse import _read_langfuse


__all__ = [
    "BATCH_INPUT",
    "BatchRequests",
    "COMPANION_FORMATS",
    "FORMATS",
    "day_batch_requests",
    "detect_format",
    "iter_records",
    "load_batch_requests",
    "load_companion",
    "load_otel_logs",
    "normalize_id",
    "open_text",
]

COMPANION_FORMATS = frozenset({"openai_batch_input", "otel_logs"})
"""Formats whose files hold no log records of their own but complete another file's:
Batch API input lines (the requests of an output file) and OTel log records (the
message content of the spans in a spans file). The loader reads them first."""


def load_companion(path, fmt: str) -> dict:
    """Return what a companion file adds to the day, for ``iter_records(batch_requests=...)``.

    A Batch input file's requests (a :class:`.batch_input.BatchRequests`, in Arrow) are
    under the key ``(BATCH_INPUT, path)``, OTel log records under ``("otel_log", trace
    id, span id)``, so that one dict holds the day's companions and a plain update adds
    a file's (the Batch API readers put the input files back together).
    """
    if fmt == "openai_batch_input":
        return {(BATCH_INPUT, str(path)): load_batch_requests(path)}
    if fmt == "otel_logs":
        return load_otel_logs(path)
    raise ValueError(f"{fmt!r} is not a companion format ({', '.join(sorted(COMPANION_FORMATS))})")


def iter_records(
    path,
    fmt: str,
    *,
    batch_requests: dict | None = None,
    stats: dict | None = None,
) -> Iterator[RawRecord]:
    """Return an iterator of the RawRecords of a JSON-based log file, in file order.

    Args:
        path: the file (gzip or plain).
        fmt: ``canonical_jsonl``, ``openai_chat``, ``openai_batch_output``, ``otel`` or
            ``langfuse``.
        batch_requests: what the day's companion files add (:func:`load_companion`):
            for ``openai_batch_output`` the input files' requests by custom_id (output
            lines without an input line become error records; a
            :class:`BatchRequests` itself also does); for ``otel`` the log records by
            span.
        stats: when given, counters are added to it as the iterator runs (final once
            it is exhausted): ``stats["ignored_spans"]`` counts OTel spans that are not
            LLM calls (HTTP, retriever, chain, embedding, tool spans) and so are not
            log records. The key is created (0) for every format.

    Every log record of the file yields exactly one RawRecord: parsed (``record``) or
    broken (``error``). Raises ValueError for formats it does not read (CSV, Parquet,
    Batch API input); raises UnreadableFile during iteration when the file turns out
    to be unreadable (truncated gzip, not UTF-8, broken JSON document).
    """
    reader = _READERS.get(fmt)
    if reader is None:
        raise ValueError(
            f"iter_records cannot read format {fmt!r}; it reads {', '.join(_READERS)}"
        )
    if stats is not None:
        stats.setdefault("ignored_spans", 0)
    return _guarded(path, reader(path, batch_requests, stats))


def _guarded(path, records: Iterator[RawRecord]) -> Iterator[RawRecord]:
    """Yield ``records``, turning decode errors met mid-file into UnreadableFile."""
    with _unreadable_on_decode_errors(path):
        yield from records


# --------------------------------------------------------------------------- dispatch

_READERS: dict[str, Callable[[Any, dict | None, dict | None], Iterator[RawRecord]]] = {
    "canonical_jsonl": _read_canonical,
    "openai_chat": _read_openai_chat,
    "openai_batch_output": _read_batch_output,
    "otel": _read_otel,
    "langfuse": _read_langfuse,
}
