"""Load one day of landing files into the `logs` table, losing nothing and doubling nothing.

:func:`ingest_day` is the whole of the `logs` asset's work. For each file of
``landing/YYYY-MM-DD/`` it detects the format, stages the records in Arrow batches,
scrubs PII (see :mod:`flywheel.pii`), validates and normalizes them in DuckDB
(:mod:`flywheel.ingest.normalize`) and writes accepted rows to `logs` and broken ones
to `rejected_logs`. Then log ids already present (in another partition, or earlier in
this one) are moved to `duplicate_logs`. Every record read ends up in exactly one of
the three, and the per-file counts are kept in `ingest_files`.

A canonical JSON-lines file goes in with one statement: a thread reads and splits
the file into Arrow batches (and flags, with one regular expression per line, the
lines that could hold PII), DuckDB pulls them and inserts every record that passes
one combined acceptance test (:func:`flywheel.ingest.normalize.fast_accepted_sql`).
The few records it leaves out (broken ones, PII candidates, unusual values) are found
by their line numbers and judged with the detailed checks, which give each rejected
line its reason and field. Other formats go batch by batch the same way.

The day is replaced in one transaction: re-running it gives the same tables, and a
crash half-way leaves the previous state. The same code writes to a DuckLake
(``FLYWHEEL_STORAGE=ducklake``): no statement needs ``INSERT ... RETURNING`` on a
stored table, and a COMMIT that loses a race with another writer raises the
conflict itself, for :func:`flywheel.store.retry_conflicts` to run the day again.
"""

from __future__ import annotations

import contextlib
import csv
import gzip
import json
import queue
import threading
import zlib
from collections import Counter
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from datetime import date
from pathlib import Path

import duckdb
import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.csv as pcsv
import pyarrow.parquet as pq

from flywheel import pii, store
from flywheel.ingest import formats
from flywheel.ingest.normalize import (
    accepted_sql,
    fast_accepted_sql,
    judged_accepted,
    judged_rejected,
    judged_sql,
)
from flywheel.ingest.records import RawRecord, UnreadableFile
from flywheel.settings import Settings
from flywheel.store import DAILY_TABLES

# `rid` numbers the rows of one batch; `line` is not unique (an OTLP/JSON line can hold
# several spans), so fix-ups are matched by `rid`.
BATCH_SCHEMA = pa.schema(
    [
        ("rid", pa.int64()),
        ("line", pa.int64()),
        ("text", pa.string()),
        ("raw", pa.binary()),
        ("doc", pa.string()),
        ("pre_error", pa.string()),
        ("pre_field", pa.string()),
        ("blank", pa.bool_()),
        # False: the record's text cannot hold PII (see pii.JSON_PREFILTER_PATTERN);
        # NULL: not known.
        ("maybe_pii", pa.bool_()),
    ]
)
FIX_SCHEMA = pa.schema(
    [
        ("rid", pa.int64()),
        ("input", pa.string()),
        ("output", pa.string()),
        ("context", pa.string()),
        ("messages", pa.string()),
        ("text", pa.string()),
        ("pii", pa.list_(pa.string())),
        ("session_id", pa.string()),
        ("user_id", pa.string()),
        ("tags", pa.list_(pa.string())),
        ("metadata", pa.string()),
    ]
)
LOG_COLUMNS = (
    "log_id", "ts", "day", "source", "input", "output", "context", "model", "prompt_name",
    "prompt_version", "feedback", "messages", "git_commit", "session_id", "user_id",
    "latency_ms", "prompt_tokens", "completion_tokens", "cost_usd", "tags", "metadata", "pii",
    "source_file", "source_format", "source_line", "ingested_at",
)
# Bytes per Arrow batch for line-oriented files: large enough to keep DuckDB busy,
# small enough to bound memory on multi-GB files (DuckDB pulls them one by one).
LINES_BLOCK_BYTES = 16 << 20
PARSED_BATCH_ROWS = 20_000
PARALLEL_CHUNK_ROWS = 8_192
# Rows that could hold PII kept aside while a JSON-lines file streams into DuckDB.
STASH_BYTES = 256 << 20
# A temporary table like `logs` for the records accepted on a second look.
LATE_LOGS = "late_logs"
# Formats where each record has a line (or CSV/Parquet row) of its own: their batches
# take the fast statement, and what it took is known from the lines now in `logs`.
ONE_RECORD_PER_LINE = ("canonical_jsonl", "canonical_csv", "canonical_parquet")


@dataclass
class FileReport:
    """What happened to one landing file."""

    source_file: str
    format: str | None = None
    read: int = 0
    accepted: int = 0
    rejected: int = 0
    duplicates: int = 0
    blank_lines: int = 0
    ignored: int = 0
    error: str | None = None

    @property
    def reconciles(self) -> bool:
        """Return whether every record read is accepted, rejected or a duplicate."""
        return self.read == self.accepted + self.rejected + self.duplicates


@dataclass
class IngestReport:
    """What one day's ingestion did; the `logs` asset shows it as metadata."""

    day: str
    files: list[FileReport] = field(default_factory=list)
    pii_counts: dict[str, int] = field(default_factory=dict)
    pii_mode: str = "redact"
    rejected_reasons: dict[str, int] = field(default_factory=dict)

    def total(self, name: str) -> int:
        return sum(getattr(f, name) for f in self.files)

    @property
    def unreadable(self) -> list[FileReport]:
        return [f for f in self.files if f.error]

    @property
    def reconciles(self) -> bool:
        return all(f.reconciles for f in self.files)


Progress = Callable[[str], None]


def ingest_day(
    con: duckdb.DuckDBPyConnection,
    settings: Settings,
    day: str,
    *,
    progress: Progress | None = None,
) -> IngestReport:
    """Replace the partition ``day`` (``YYYY-MM-DD``) with the records of its landing folder.

    Returns an :class:`IngestReport` with per-file counts that reconcile
    (read = accepted + rejected + duplicates). A missing landing folder is an empty day.
    """
    date.fromisoformat(day)  # a clear error for a malformed partition key
    say = progress or (lambda _msg: None)
    report = IngestReport(day=day, pii_mode=settings.pii_mode)
    folder = settings.landing_for(day)
    paths = sorted(p for p in folder.iterdir() if p.is_file() and not p.name.startswith(".")) if folder.is_dir() else []

    con.execute("BEGIN TRANSACTION")
    try:
        for table in DAILY_TABLES:
            con.execute(f"DELETE FROM {table} WHERE day = ?", [day])
        # Records accepted on a second look wait here and go to `logs` in one insert:
        # many small inserts after the large ones cost DuckDB far more per row.
        con.execute(f"CREATE OR REPLACE TEMP TABLE {LATE_LOGS} AS SELECT * FROM logs LIMIT 0")
        detected, batch_requests = _detect_all(paths, report, settings)
        for path, fmt, file_report in detected:
            say(f"{day}: reading {path.name} ({fmt})")
            try:
                _load_file(con, settings, day, path, fmt, file_report, report, batch_requests)
            except UnreadableFile as exc:
                _forget_file(con, day, file_report.source_file)
                file_report.error = exc.reason
                file_report.read = file_report.blank_lines = file_report.ignored = 0
                say(f"{day}: cannot read {path}: {exc.reason}")
        con.execute(f"INSERT INTO logs SELECT * FROM {LATE_LOGS}")
        con.execute(f"DROP TABLE {LATE_LOGS}")
        _move_duplicates(con, day)
        _count(con, day, report)
        _record_files(con, day, report)
        con.execute("COMMIT")
    except BaseException:
        # A failed COMMIT (a lost race in lake mode) has already ended the transaction:
        # a plain ROLLBACK would raise again and hide why.
        store.rollback(con)
        raise
    return report


def _detect_all(paths: list[Path], report: IngestReport, settings: Settings):
    """Return the (path, format, report) of each file to load, and the OpenAI batch
    requests by custom_id (batch input files hold no log records of their own)."""
    detected: list[tuple[Path, str, FileReport]] = []
    batch_requests: dict[str, dict] = {}
    for path in paths:
        file_report = FileReport(source_file=settings.source_name(path))
        report.files.append(file_report)
        try:
            fmt = formats.detect_format(path)
            file_report.format = fmt
            if fmt == "openai_batch_input":
                batch_requests.update(formats.load_batch_requests(path))
                continue
        except UnreadableFile as exc:
            file_report.error = exc.reason
            continue
        detected.append((path, fmt, file_report))
    return detected, batch_requests


def _load_file(con, settings, day, path, fmt, file_report, report, batch_requests) -> None:
    """Stage, scrub, validate and store one file's records."""
    if fmt == "canonical_jsonl" and fmt in ONE_RECORD_PER_LINE:
        _load_lines(con, day, path, file_report, settings.pii_mode, report)
        return
    batches = _batches(con, path, fmt, file_report, batch_requests, pii_gate=settings.pii_mode != "off")
    for batch in batches:
        if batch.num_rows == 0:
            continue
        blank = pc.sum(batch.column("blank").cast(pa.int64())).as_py() or 0
        file_report.blank_lines += blank
        file_report.read += batch.num_rows - blank
        _store_batch(con, day, file_report.source_file, fmt, batch, settings.pii_mode, report)


def _load_lines(con, day: str, path: Path, file_report: FileReport, mode: str, report: IngestReport) -> None:
    """Load a JSON-lines file with one statement: DuckDB pulls the file's batches (read
    and split by a thread ahead of it) and inserts the records that pass the combined
    test, writing them out as it goes. The records it left out are found by their
    lines afterwards and judged in detail (see :func:`_second_look`)."""
    source_file = file_report.source_file
    hold_back = None if mode == "off" else pii.PREFILTER_PATTERN
    source = _LineSource(path, pii_gate=hold_back is not None)
    first = source.first()
    if first is not None:
        accepted = fast_accepted_sql("stage_lines", pii_gate=hold_back, key_lists=_key_lists(first))
        con.register("stage_lines", pa.RecordBatchReader.from_batches(BATCH_SCHEMA, source.record_batches()))
        try:
            with _fast_insert_settings(con, whole_file=True):
                taken = _insert_accepted(con, day, source_file, "canonical_jsonl", accepted)
        finally:
            con.unregister("stage_lines")
            source.close()
    if source.error is not None:
        raise UnreadableFile(path, source.error)
    file_report.read += source.records
    file_report.blank_lines += source.blank
    if first is None or taken == source.records:
        return
    taken_lines = con.execute(
        "SELECT source_line FROM logs WHERE day = ? AND source_file = ?", [day, source_file]
    ).fetch_arrow_table().column(0).to_numpy()
    # The lines left out: neither blank nor taken (a mask, linear in the lines; numpy's
    # set operations hash or sort).
    left = np.ones(source.lines + 1, dtype=bool)
    left[0] = False
    left[np.asarray(source.blank_lines, dtype=np.int64)] = False
    left[taken_lines] = False
    left_out = pa.array(np.flatnonzero(left))
    second = source.rows(left_out)
    second = second.set_column(0, "rid", pa.array(np.arange(second.num_rows), pa.int64()))
    _second_look(con, day, source_file, "canonical_jsonl", second, fast=True, mode=mode, report=report)


class _LineSource:
    """The batches of a JSON-lines file for DuckDB to pull, read ahead by a thread.

    It counts records and blank lines as they go by and keeps the rows that could hold
    PII (up to :data:`STASH_BYTES`): most records the combined test leaves out are
    those, and the others are read again from the file. A read error ends the batches
    (DuckDB sees a short file, not an error that would abort the day's transaction)
    and is kept in ``error``.
    """

    def __init__(self, path: Path, *, pii_gate: bool):
        self.path = path
        self.error: str | None = None
        self.records = self.blank = self.lines = 0
        self.blank_lines: list[int] = []
        self._stash: list[pa.Table] | None = [] if pii_gate else None
        self._stash_bytes = 0
        self._tables = _read_ahead(_line_batches(path, pii_gate=pii_gate))
        self._first: pa.Table | None = None

    def first(self) -> pa.Table | None:
        """Return the first batch (None for an empty or unreadable file)."""
        try:
            self._first = next(self._tables, None)
        except UnreadableFile as exc:
            self.error = exc.reason
        return self._first

    def record_batches(self) -> Iterator[pa.RecordBatch]:
        """Yield the record batches of the whole file, counting as they go."""
        try:
            table = self._first
            while table is not None:
                self._count(table)
                yield from table.to_batches()
                table = next(self._tables, None)
        except UnreadableFile as exc:
            self.error = exc.reason

    def close(self) -> None:
        """Stop the reading thread (when DuckDB did not read to the end)."""
        self._tables.close()

    def _count(self, table: pa.Table) -> None:
        blank = table.column("blank")
        n_blank = pc.sum(blank.cast(pa.int64())).as_py() or 0
        if n_blank:
            self.blank_lines.extend(pc.filter(table.column("line"), blank).to_pylist())
        self.blank += n_blank
        self.records += table.num_rows - n_blank
        self.lines += table.num_rows
        if self._stash is not None:
            kept = table.filter(pc.fill_null(table.column("maybe_pii"), True))
            self._stash_bytes += kept.nbytes
            if self._stash_bytes > STASH_BYTES:
                self._stash = None  # too many: read them again instead
            else:
                self._stash.append(kept)

    def rows(self, lines: pa.Array) -> pa.Table:
        """Return the rows of the given lines, from the stash or read again."""
        parts = []
        wanted = lines
        if self._stash:
            stash = pa.concat_tables(self._stash)
            parts.append(stash.filter(pc.is_in(stash.column("line"), wanted)))
            wanted = pa.array(np.setdiff1d(wanted.to_numpy(), parts[0].column("line").to_numpy(),
                                           assume_unique=True))  # line numbers: unique
        if len(wanted):  # (no PII flags needed: the detailed checks test the fields)
            for table in _line_batches(self.path):
                parts.append(table.filter(pc.is_in(table.column("line"), wanted)))
        return pa.concat_tables(parts) if parts else BATCH_SCHEMA.empty_table()


def _batches(con, path: Path, fmt: str, file_report: FileReport, batch_requests, *,
             pii_gate: bool) -> Iterator[pa.Table]:
    if fmt == "canonical_jsonl":
        yield from _line_batches(path, pii_gate=pii_gate)
    elif fmt in ("canonical_csv", "canonical_parquet"):
        yield from _tabular_batches(con, path, fmt, pii_gate=pii_gate)
    else:
        stats = {"ignored_spans": 0}
        records = formats.iter_records(path, fmt, batch_requests=batch_requests, stats=stats)
        yield from _parsed_batches(records)
        file_report.ignored = stats["ignored_spans"]


def _read_ahead(batches: Iterator[pa.Table]) -> Iterator[pa.Table]:
    """Yield ``batches`` while a thread reads and splits the next one.

    Reading a block and finding its lines runs while DuckDB validates and writes the
    previous one (both release the GIL); at most one block waits, so memory stays bounded.
    """
    handoff: queue.Queue = queue.Queue(maxsize=1)
    stop = threading.Event()
    done = object()

    def produce() -> None:
        try:
            for batch in batches:
                if stop.is_set():
                    return
                handoff.put(batch)
            handoff.put(done)
        except BaseException as exc:  # handed to the consumer, raised there
            handoff.put(exc)

    thread = threading.Thread(target=produce, name="flywheel-read-ahead", daemon=True)
    thread.start()
    try:
        while True:
            item = handoff.get()
            if item is done:
                return
            if isinstance(item, BaseException):
                raise item
            yield item
    finally:
        # The consumer may stop early (an error): free the producer and let it end.
        stop.set()
        while thread.is_alive():
            try:
                handoff.get_nowait()
            except queue.Empty:
                thread.join(0.05)


def _line_batches(path: Path, *, pii_gate: bool = False) -> Iterator[pa.Table]:
    """Yield the lines of a JSON-lines file (gzipped or not) with 1-based line numbers.

    Blocks of the file are split at newlines with numpy and handed to Arrow without
    copying; every line is one value, blank lines included, so line numbers stay exact.
    With ``pii_gate``, ``maybe_pii`` tells which lines could hold PII.
    """
    start = 1
    try:
        with (gzip.open(path, "rb") if path.name.endswith(".gz") else open(path, "rb")) as stream:
            for raw, offsets in _split_lines(stream):
                n = len(raw)
                text, undecodable = _as_text(raw)
                yield _parallel(pa.table(
                    {
                        "rid": pa.array(np.arange(n, dtype=np.int64)),
                        "line": pa.array(np.arange(start, start + n, dtype=np.int64)),
                        "text": text,
                        "raw": undecodable,
                        "doc": pa.nulls(n, pa.string()),
                        "pre_error": pa.nulls(n, pa.string()),
                        "pre_field": pa.nulls(n, pa.string()),
                        "blank": _blank_mask(raw, offsets),
                        "maybe_pii": _maybe_pii(text) if pii_gate else pa.nulls(n, pa.bool_()),
                    },
                    schema=BATCH_SCHEMA,
                ))
                start += n
    except (OSError, EOFError, zlib.error) as exc:
        raise UnreadableFile(path, _read_error(exc)) from None


def _split_lines(stream) -> Iterator[tuple[pa.Array, np.ndarray]]:
    """Yield Arrow binary arrays of whole lines (each with its newline) read from
    ``stream``, with their offsets. Each block is read straight into a fresh buffer
    that the array then owns (no copy)."""
    carry = b""
    while True:
        # Not zero-filled: every byte used is read into it first.
        buffer = np.empty(len(carry) + LINES_BLOCK_BYTES, dtype=np.uint8)
        buffer[: len(carry)] = np.frombuffer(carry, dtype=np.uint8)
        filled = len(carry) + _read_into(stream, memoryview(buffer)[len(carry):])
        if filled == len(carry):
            break
        data = memoryview(buffer)[:filled]
        cut = _last_newline(buffer, filled) + 1
        if cut == 0:  # a line longer than a block: read on
            carry = bytes(data)
            continue
        carry = bytes(data[cut:])
        yield _lines_array(data[:cut])
    if carry:
        yield _lines_array(memoryview(carry + b"\n"))


def _last_newline(buffer: np.ndarray, end: int) -> int:
    """Return the index of the last newline in ``buffer[:end]`` (-1 when none)."""
    step = 1 << 16
    for stop in range(end, 0, -step):
        found = np.flatnonzero(buffer[max(0, stop - step):stop] == 10)
        if len(found):
            return max(0, stop - step) + int(found[-1])
    return -1


def _read_into(stream, view: memoryview) -> int:
    """Fill ``view`` from the stream (less only at its end); return the bytes read."""
    total = 0
    while total < len(view):
        n = stream.readinto(view[total:])
        if not n:
            break
        total += n
    return total


def _lines_array(body: memoryview) -> tuple[pa.Array, np.ndarray]:
    """Return the newline-terminated lines of ``body`` as an Arrow binary array (no
    copy), and its offsets."""
    data = np.frombuffer(body, dtype=np.uint8)
    step = 1 << 20  # in slices: no temporary the size of the block
    ends = np.concatenate(
        [np.flatnonzero(data[i : i + step] == 10) + i for i in range(0, len(data), step)] or [np.empty(0, np.int64)]
    )
    offsets = np.empty(len(ends) + 1, dtype=np.int32)
    offsets[0] = 0
    offsets[1:] = ends + 1
    array = pa.Array.from_buffers(pa.binary(), len(ends), [None, pa.py_buffer(offsets), pa.py_buffer(body)])
    return array, offsets


def _maybe_pii(text: pa.Array) -> pa.Array:
    """Return False where a JSON text cannot hold PII in any of its strings (one RE2
    scan of the whole line in Arrow, which releases the GIL), True where it may."""
    return pc.match_substring_regex(text, pii.JSON_PREFILTER_PATTERN)


def _as_text(raw: pa.Array) -> tuple[pa.Array, pa.Array]:
    """Return the lines as text, and the bytes of the lines that are not valid UTF-8.

    The cast validates UTF-8 in C++ for the whole block; only a block with a bad line
    is looked at line by line.
    """
    try:
        return raw.cast(pa.string()), pa.nulls(len(raw), pa.binary())
    except pa.ArrowInvalid:
        texts, bad = [], []
        for value in raw.to_pylist():
            try:
                texts.append(value.decode("utf-8"))
                bad.append(None)
            except UnicodeDecodeError:
                texts.append(None)
                bad.append(value)
        return pa.array(texts, pa.string()), pa.array(bad, pa.binary())


def _parallel(table: pa.Table) -> pa.Table:
    """Return the table cut into record batches of a few thousand rows (zero-copy).

    DuckDB scans an Arrow table one record batch per thread: a single large batch would
    keep the whole validation on one core.
    """
    return pa.Table.from_batches(table.to_batches(max_chunksize=PARALLEL_CHUNK_ROWS), table.schema)


def _blank_mask(raw: pa.Array, offsets: np.ndarray) -> pa.Array:
    """Return True where a line holds only whitespace (no record there); only short
    lines are looked at."""
    mask = np.diff(offsets) <= 8
    for i in mask.nonzero()[0]:
        mask[i] = not raw[int(i)].as_py().strip()
    return pa.array(mask, pa.bool_())


def _read_error(exc: BaseException) -> str:
    text = str(exc).strip() or type(exc).__name__
    if "gzip" in text.lower() or isinstance(exc, EOFError):
        return f"truncated or corrupt gzip stream ({text})"
    return text


def _tabular_batches(con, path: Path, fmt: str, *, pii_gate: bool = False) -> Iterator[pa.Table]:
    """Yield CSV rows or Parquet rows as JSON documents, numbered as in the file.

    Arrow reads the file in order and the numbers are attached before DuckDB sees a
    row, so they stay right however DuckDB schedules its work. CSV cells are read as
    text (types are checked later, like every format's); a CSV row's line number is its
    row number plus one for the header (a quoted cell spanning lines shifts it).
    """
    first_line = 2 if fmt == "canonical_csv" else 1
    try:
        for batch in _arrow_rows(path, fmt):
            n = batch.num_rows
            rows = pa.StructArray.from_arrays(batch.columns, names=batch.schema.names)
            con.register("stage_rows", pa.table({"row": rows}))
            try:
                text = con.execute("SELECT to_json(row)::VARCHAR FROM stage_rows").fetch_arrow_table().column(0)
            finally:
                con.unregister("stage_rows")
            yield _parallel(pa.table(
                {
                    "rid": pa.array(range(n), pa.int64()),
                    "line": pa.array(range(first_line, first_line + n), pa.int64()),
                    "text": text,
                    "raw": pa.nulls(n, pa.binary()),
                    "doc": pa.nulls(n, pa.string()),
                    "pre_error": pa.nulls(n, pa.string()),
                    "pre_field": pa.nulls(n, pa.string()),
                    "blank": pa.array([False] * n, pa.bool_()),
                    "maybe_pii": _maybe_pii(text) if pii_gate else pa.nulls(n, pa.bool_()),
                },
                schema=BATCH_SCHEMA,
            ))
            first_line += n
    except (pa.ArrowInvalid, OSError, EOFError, zlib.error, duckdb.Error) as exc:
        raise UnreadableFile(path, f"cannot read as {fmt.split('_')[1].upper()}: {exc}") from None


def _arrow_rows(path: Path, fmt: str) -> Iterator[pa.RecordBatch]:
    """Yield the rows of a CSV (all cells as text) or Parquet file in Arrow batches."""
    if fmt == "canonical_parquet":
        yield from pq.ParquetFile(path).iter_batches(batch_size=PARSED_BATCH_ROWS)
        return
    compression = "gzip" if path.name.endswith(".gz") else None
    with (gzip.open(path, "rt", encoding="utf-8-sig", newline="") if compression
          else open(path, encoding="utf-8-sig", newline="")) as text:
        header = next(csv.reader(text), [])
    with pa.input_stream(str(path), compression=compression) as stream:
        reader = pcsv.open_csv(
            stream,
            read_options=pcsv.ReadOptions(encoding="utf8"),
            parse_options=pcsv.ParseOptions(newlines_in_values=True),
            # An empty cell is a missing value, as in the canonical JSON.
            convert_options=pcsv.ConvertOptions(
                column_types={name: pa.string() for name in header}, strings_can_be_null=True
            ),
        )
        yield from reader


def _parsed_batches(records: Iterator[RawRecord]) -> Iterator[pa.Table]:
    """Yield parser records in Arrow batches (canonical dicts serialized to JSON)."""
    columns: dict[str, list] = {name: [] for name in BATCH_SCHEMA.names}

    def flush() -> pa.Table:
        table = _parallel(pa.table(columns, schema=BATCH_SCHEMA))
        for values in columns.values():
            values.clear()
        return table

    for rec in records:
        columns["rid"].append(len(columns["line"]))
        columns["line"].append(rec.line)
        columns["text"].append(rec.raw)
        columns["raw"].append(None)
        columns["doc"].append(None if rec.record is None else json.dumps(rec.record, default=str, ensure_ascii=False))
        columns["pre_error"].append(rec.error if rec.record is None else None)
        columns["pre_field"].append(rec.field if rec.record is None else None)
        columns["blank"].append(False)
        columns["maybe_pii"].append(None)
        if len(columns["line"]) >= PARSED_BATCH_ROWS:
            yield flush()
    if columns["line"]:
        yield flush()


# Identifier fields scanned like the texts (an e-mail address as user_id).
_ID_FIELDS = ("session_id", "user_id")


def _pii_fixes(docs: list[tuple], mode: str, report: IngestReport) -> pa.Table:
    """Return the PII fix-ups of records held back by the prefilter: per row (``rid``),
    the scrubbed input, output, context, session and user id, messages, tags and
    metadata (with the unknown fields; redact mode) and the types found.

    ``docs`` holds ``(rid, input, output, context, session_id, user_id, messages, tags,
    metadata)`` of each record as stored (``messages`` and ``metadata`` JSON text), a
    text field None where it cannot hold PII.
    """
    rows: dict[str, list] = {name: [] for name in FIX_SCHEMA.names}
    redact = mode == "redact"
    texts_names = ("input", "output", "context", *_ID_FIELDS)
    for rid, *texts, messages_json, tags, metadata_json in docs:
        found: set[str] = set()
        values: dict[str, object] = {}
        for name, text in zip(texts_names, texts):
            if text is not None:
                values[name], kinds = pii.scan(text)
                found |= kinds
        if messages_json is not None:
            messages, kinds = _scan_messages(json.loads(messages_json))
            found |= kinds
            values["messages"] = json.dumps(messages, ensure_ascii=False)
        for name, value in (("tags", tags), ("metadata", None if metadata_json is None else json.loads(metadata_json))):
            if value is not None:
                cleaned, kinds = pii.scan_value(value)
                found |= kinds
                values[name] = cleaned if name == "tags" else json.dumps(cleaned, ensure_ascii=False)
        for kind in found:
            report.pii_counts[kind] = report.pii_counts.get(kind, 0) + 1
        rows["rid"].append(rid)
        for name in (*texts_names, "messages", "tags", "metadata"):
            rows[name].append(values.get(name) if redact and found else None)
        rows["text"].append(None)
        rows["pii"].append(sorted(found) or None)
    return pa.table(rows, schema=FIX_SCHEMA)


def _scan_messages(messages: list) -> tuple[list, set[str]]:
    found: set[str] = set()
    cleaned = []
    for message in messages:
        if isinstance(message, dict) and isinstance(message.get("content"), str):
            content, kinds = pii.scan(message["content"])
            found |= kinds
            message = {**message, "content": content}
        cleaned.append(message)
    return cleaned, found


def _store_batch(con, day: str, source_file: str, fmt: str, batch: pa.Table, mode: str,
                 report: IngestReport) -> None:
    """Write a staged batch: accepted records to `logs`, broken ones to `rejected_logs`.

    One statement validates the batch and inserts the records that pass and hold no
    possible PII (a regular expression that matches a superset of what the detectors
    find: over each whole line in Arrow first, ``maybe_pii``, then over the fields of
    the lines it flags in DuckDB). Only the few records it left out are looked at again, with
    the detailed checks: broken ones get their reason, good ones are inserted, and the
    PII candidates are scrubbed in Python, then inserted.

    Formats with one record per line take the fast statement (one combined test,
    see :func:`flywheel.ingest.normalize.fast_accepted_sql`); the lines it took are
    read back from `logs`. Other formats take the detailed statement, which writes to
    the temporary table of late records and returns the lines it took.
    """
    con.register("stage_batch", batch)
    con.register("stage_fix", FIX_SCHEMA.empty_table())
    try:
        hold_back = None if mode == "off" else pii.PREFILTER_PATTERN
        fast = fmt in ONE_RECORD_PER_LINE
        left_out = (_fast_pass(con, day, source_file, fmt, batch, hold_back) if fast
                    else _detailed_pass(con, day, source_file, fmt, batch, hold_back))
        if left_out is None:
            return
        # The few records left out, copied out of the batch, so that the statements
        # below do not scan the whole batch again.
        second = batch.filter(pc.is_in(batch.column("line"), left_out.column(0)))
        _second_look(con, day, source_file, fmt, second, fast=fast, mode=mode, report=report)
    finally:
        for name in ("stage_batch", "stage_fix"):
            con.unregister(name)


def _second_look(con, day: str, source_file: str, fmt: str, second: pa.Table, *, fast: bool,
                 mode: str, report: IngestReport) -> None:
    """Judge in detail the records (rows of a batch) the first statement left out:
    store the broken ones with their reason, and the good ones (with ``fast``, those the
    combined test did not settle; always, the PII candidates, scrubbed in Python)."""
    hold_back = None if mode == "off" else pii.PREFILTER_PATTERN
    con.register("stage_second", second)
    con.register("stage_fix", FIX_SCHEMA.empty_table())
    try:
        # Judged once, then read three ways: rejected, accepted, held back for PII.
        con.execute(f"CREATE OR REPLACE TEMP TABLE stage_judged AS {judged_sql('stage_second', 'stage_fix')}")
        rejected = con.execute(judged_rejected("stage_judged")).fetchall()
        _insert_rejected(con, day, source_file, rejected, mode, report)
        if fast:
            _insert_accepted(con, day, source_file, fmt, judged_accepted("stage_judged", hold_back=hold_back),
                             table=LATE_LOGS)
        # The held records' text fields, each with whether the prefilter matches it:
        # only those are scanned in Python (the detectors find nothing elsewhere).
        pattern = "'" + hold_back.replace("'", "''") + "'" if hold_back is not None else ""
        json_pattern = "'" + pii.JSON_PREFILTER_PATTERN.replace("'", "''") + "'"
        docs = [] if hold_back is None else con.execute(
            f"""SELECT rid, {", ".join(f"CASE WHEN regexp_matches({name}, {pattern}) THEN {name} END"
                                       for name in ("input", "output", "context", *_ID_FIELDS))},
                       messages::VARCHAR,
                       CASE WHEN regexp_matches(tags::VARCHAR, {json_pattern}) THEN tags END,
                       CASE WHEN regexp_matches(metadata::VARCHAR, {json_pattern}) THEN metadata::VARCHAR END
                FROM ({judged_accepted('stage_judged', hold_back=hold_back, held=True)})"""
        ).fetchall()
        if docs:
            # The scrubbed values replace the record's own (acceptance does not change:
            # a placeholder is never blank).
            con.register("stage_fix", _pii_fixes(docs, mode, report))
            _insert_accepted(con, day, source_file, fmt, judged_accepted("stage_judged", fix="stage_fix"),
                             table=LATE_LOGS)
        con.execute("DROP TABLE stage_judged")
    finally:
        for name in ("stage_second", "stage_fix"):
            con.unregister(name)


def _fast_pass(con, day, source_file, fmt, batch: pa.Table, hold_back: str | None) -> pa.Table | None:
    """Insert the records of the batch that pass the combined test; return the lines left
    for a second look (None when every record was taken).

    Each record has a line of its own, and the batches of a file cover distinct lines:
    the lines taken are those of this file, in this batch's range, now in `logs`.
    """
    records = pc.filter(batch.column("line"), pc.invert(batch.column("blank")))
    if len(records) == 0:
        return None
    accepted = fast_accepted_sql("stage_batch", pii_gate=hold_back, key_lists=_key_lists(batch))
    with _fast_insert_settings(con):
        taken = _insert_accepted(con, day, source_file, fmt, accepted)
    if taken == len(records):
        return None
    bounds = pc.min_max(records)
    return con.execute(
        """SELECT line FROM stage_batch WHERE NOT blank
           EXCEPT
           SELECT source_line FROM logs WHERE day = ? AND source_file = ? AND source_line BETWEEN ? AND ?""",
        [day, source_file, bounds["min"].as_py(), bounds["max"].as_py()],
    ).fetch_arrow_table()


@contextlib.contextmanager
def _fast_insert_settings(con, *, whole_file: bool = False) -> Iterator[None]:
    """Set DuckDB up for the fast statement, and back as it was afterwards.

    - DuckDB would push the filter of the combined test down through the projections
      that parse each record, repeating the parse for each field it names.
    - ``whole_file`` (one statement for a whole file): an insert that keeps the order
      of its input (batch insert) compresses and writes its rows to the database file
      as it goes, on all threads, where the unordered insert leaves rows short of a
      full row group per thread for the COMMIT to write, on one. (Several ordered
      inserts into one table in one transaction are worse: the checkpoint rewrites
      their row groups.)
    """
    settings = {"disabled_optimizers": "filter_pushdown"}
    if whole_file:
        settings["preserve_insertion_order"] = "true"
    previous = {
        name: con.execute(f"SELECT current_setting('{name}')").fetchone()[0] for name in settings
    }
    for name, value in settings.items():
        con.execute(f"SET {name} = '{value}'")
    try:
        yield
    finally:
        for name, value in previous.items():
            con.execute(f"SET {name} = '{value}'")


def _key_lists(batch: pa.Table, *, sample: int = 200, most: int = 4) -> tuple[tuple[str, ...], ...]:
    """Return the key lists (in order) of the first records of the batch, most common
    first: records written by one program mostly share one or a few."""
    texts = batch.column("text").slice(0, sample).to_pylist()
    seen: Counter = Counter()
    for text in texts:
        try:
            doc = json.loads(text) if text else None
        except ValueError:
            continue
        if isinstance(doc, dict):
            seen[tuple(doc)] += 1
    return tuple(keys for keys, _ in seen.most_common(most))


def _detailed_pass(con, day, source_file, fmt, batch: pa.Table, hold_back: str | None) -> pa.Table | None:
    """Insert the accepted records of the batch, judged in detail; return the lines left
    for a second look (None when every record was taken).

    They go to the temporary table of late records (moved to `logs` at the end of the
    day), which can say which lines it took (``RETURNING``: a DuckLake table cannot)."""
    taken = con.execute(
        f"""{_insert_sql(accepted_sql('stage_batch', 'stage_fix', hold_back=hold_back), table=LATE_LOGS)}
            RETURNING source_line""",
        [day, source_file, fmt],
    ).fetch_arrow_table().column(0)
    records = pc.filter(batch.column("line"), pc.invert(batch.column("blank")))
    if len(taken) == len(records):
        return None
    # Lines with fewer rows taken than records (a line may hold several records).
    wanted = Counter(records.to_pylist())
    wanted.subtract(Counter(taken.to_pylist()))
    return pa.table({"line": pa.array([line for line, missing in wanted.items() if missing > 0], pa.int64())})


def _insert_sql(accepted: str, *, table: str = "logs") -> str:
    """Return the INSERT into `logs` (or ``table``) of the records an
    :func:`accepted_sql` SELECT gives (parameters: day, source file, format)."""
    return f"""INSERT INTO {table} ({", ".join(LOG_COLUMNS)})
        SELECT log_id, ts, ?::DATE, source, input, output, context, model, prompt_name,
               prompt_version, feedback, messages, git_commit, session_id, user_id,
               latency_ms, prompt_tokens, completion_tokens, cost_usd, tags, metadata, pii,
               ?, ?, line, now()
        FROM ({accepted})"""


def _insert_accepted(con, day, source_file, fmt, accepted: str, *, table: str = "logs") -> int:
    """Insert the records of an accepted-records SELECT into `logs` (or ``table``, of
    the same columns); return how many."""
    return con.execute(_insert_sql(accepted, table=table), [day, source_file, fmt]).fetchone()[0]


def _insert_rejected(con, day: str, source_file: str, rejected: list[tuple], mode: str,
                     report: IngestReport) -> None:
    """Insert rejected records; in redact mode their raw text is scrubbed of PII first."""
    if not rejected:
        return
    rows = []
    for _rid, line, reason, field, raw_text, raw in rejected:
        if raw is not None:
            # Not UTF-8: the bad bytes as \xNN, the rest (quotes too) as written, so that
            # the detectors see the text.
            raw_text = raw.decode("utf-8", "backslashreplace").rstrip("\r\n")
        if mode != "off" and raw_text is not None:
            scrubbed, kinds = pii.scan(raw_text)
            for kind in kinds:
                report.pii_counts[kind] = report.pii_counts.get(kind, 0) + 1
            if mode == "redact":
                raw_text = scrubbed
        rows.append((day, source_file, line, reason, field, raw_text))
    con.executemany(
        """INSERT INTO rejected_logs (day, source_file, line, reason, field, raw, rejected_at)
           VALUES (?::DATE, ?, ?, ?, ?, ?, now())""",
        rows,
    )


def _forget_file(con, day: str, source_file: str) -> None:
    """Remove what a file that turned out unreadable half-way had already stored."""
    for table in ("logs", LATE_LOGS, "rejected_logs"):
        con.execute(f"DELETE FROM {table} WHERE day = ? AND source_file = ?", [day, source_file])


def _move_duplicates(con, day: str) -> None:
    """Move rows whose log_id was already stored to `duplicate_logs`.

    A log id is a duplicate when another partition holds it, or when it occurs earlier
    in this one (files in name order, then line order): the first occurrence stays.
    """
    con.execute(
        """CREATE OR REPLACE TEMP TABLE day_duplicates AS
        WITH today AS (
            SELECT rowid AS rid, log_id, source_file, source_line FROM logs WHERE day = $day
        ),
        repeated AS (
            SELECT log_id FROM today GROUP BY log_id HAVING count(*) > 1
        ),
        ranked AS (
            SELECT t.*, row_number() OVER (PARTITION BY t.log_id ORDER BY t.source_file, t.source_line) AS n,
                   first_value(t.source_file) OVER (PARTITION BY t.log_id ORDER BY t.source_file, t.source_line) AS first_file,
                   first_value(t.source_line) OVER (PARTITION BY t.log_id ORDER BY t.source_file, t.source_line) AS first_line
            FROM today t SEMI JOIN repeated USING (log_id)
        ),
        elsewhere AS (
            SELECT l.log_id, min({'day': l.day, 'file': l.source_file, 'line': l.source_line}) AS first
            FROM logs l SEMI JOIN today USING (log_id)
            WHERE l.day <> $day
            GROUP BY l.log_id
        )
        SELECT t.rid, t.log_id, t.source_file, t.source_line,
               e.first.day AS first_day, e.first.file AS first_file, e.first.line AS first_line
        FROM today t JOIN elsewhere e USING (log_id)
        UNION ALL
        SELECT r.rid, r.log_id, r.source_file, r.source_line, $day::DATE, r.first_file, r.first_line
        FROM ranked r ANTI JOIN elsewhere USING (log_id)
        WHERE r.n > 1""",
        {"day": day},
    )
    con.execute(
        """INSERT INTO duplicate_logs (day, log_id, source_file, line, first_day, first_file, first_line)
           SELECT ?::DATE, log_id, source_file, source_line, first_day, first_file, first_line
           FROM day_duplicates""",
        [day],
    )
    con.execute("DELETE FROM logs WHERE rowid IN (SELECT rid FROM day_duplicates)")
    con.execute("DROP TABLE day_duplicates")


def _count(con, day: str, report: IngestReport) -> None:
    """Fill the accepted, rejected and duplicate counts of each file from the tables."""
    counts = {f.source_file: f for f in report.files}
    for table, attr, column in (
        ("logs", "accepted", "source_file"),
        ("rejected_logs", "rejected", "source_file"),
        ("duplicate_logs", "duplicates", "source_file"),
    ):
        for source_file, n in con.execute(
            f"SELECT {column}, count(*) FROM {table} WHERE day = ? GROUP BY ALL", [day]
        ).fetchall():
            setattr(counts[source_file], attr, n)
    report.rejected_reasons = dict(
        con.execute(
            "SELECT reason, count(*) FROM rejected_logs WHERE day = ? GROUP BY ALL ORDER BY 2 DESC",
            [day],
        ).fetchall()
    )


def _record_files(con, day: str, report: IngestReport) -> None:
    rows = [
        (day, f.source_file, f.format, f.read, f.accepted, f.rejected, f.duplicates, f.error)
        for f in report.files
    ]
    if rows:
        con.executemany(
            """INSERT INTO ingest_files (day, source_file, format, read, accepted, rejected,
                                         duplicates, error, ingested_at)
               VALUES (?::DATE, ?, ?, ?, ?, ?, ?, ?, now())""",
            rows,
        )


def report_markdown(report: IngestReport) -> str:
    """Return a markdown table of the per-file counts (the reconciliation)."""
    lines = [
        "| file | format | read | accepted | rejected | duplicates | reconciles | error |",
        "|---|---|---:|---:|---:|---:|---|---|",
    ]
    for f in report.files:
        name = Path(f.source_file).name
        ok = "yes" if f.reconciles else "**NO**"
        error = (f.error or "").replace("|", "\\|")
        lines.append(
            f"| {name} | {f.format or '?'} | {f.read} | {f.accepted} | {f.rejected} "
            f"| {f.duplicates} | {ok} | {error} |"
        )
    return "\n".join(lines)


def report_summary(report: IngestReport) -> dict[str, object]:
    """Return the headline numbers of a day's ingestion as plain values."""
    return {
        "file_count": len(report.files),
        "unreadable_files": [Path(f.source_file).name for f in report.unreadable],
        "read": report.total("read"),
        "accepted": report.total("accepted"),
        "rejected": report.total("rejected"),
        "duplicates": report.total("duplicates"),
        "blank_lines": report.total("blank_lines"),
        "ignored_non_llm_spans": report.total("ignored"),
        "reconciles": report.reconciles,
        "rejected_reasons": dict(report.rejected_reasons),
        "pii_mode": report.pii_mode,
        "pii_rows_by_type": dict(sorted(report.pii_counts.items())),
    }
