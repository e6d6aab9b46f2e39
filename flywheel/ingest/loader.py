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
line its reason and field. In redact mode the reading thread scrubs the text fields of
the lines the prefilter flags as it goes (:mod:`flywheel.ingest.pii_ahead`): the
statement takes those records scrubbed, where its own parse agrees. Other formats go
batch by batch the same way.

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
import io
import json
import math
import queue
import re
import sys
import threading
import time
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
from flywheel.crashpoints import crash_point
from flywheel.ingest import fast, formats, pii_ahead
from flywheel.ingest.normalize import (
    REASONS,
    SCRUBBED_FIELDS,
    TsWindow,
    accepted_sql,
    fast_accepted_sql,
    judged_accepted,
    judged_rejected,
    judged_sql,
    ts_window,
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
# The lines of a canonical file in redact mode: with the PII fix-ups worked out as they
# are read (see flywheel.ingest.pii_ahead).
FIX_UPS_SCHEMA = pa.schema([*BATCH_SCHEMA, *pii_ahead.FIELDS])

# Staged records a fast path knows the combined test would not take (PII candidates,
# values it does not settle): they go straight to the detailed checks (the second look).
SECOND_LOOK_SCHEMA = BATCH_SCHEMA.with_metadata({"flywheel.ingest": "second look"})
# Rows a fast path yields already accepted (see :func:`_load_fast`): the `logs` values of
# each record and its line, inserted as they are (no document to parse and judge).
ACCEPTED_SCHEMA = pa.schema(
    [
        ("line", pa.int64()),
        ("log_id", pa.string()),
        ("ts", pa.timestamp("us", tz="UTC")),
        ("source", pa.string()),
        ("input", pa.string()),
        ("output", pa.string()),
        ("context", pa.string()),
        ("model", pa.string()),
        ("prompt_name", pa.string()),
        ("prompt_version", pa.string()),
        ("feedback", pa.int8()),
        ("messages", pa.string()),  # JSON text
        ("git_commit", pa.string()),
        ("session_id", pa.string()),
        ("user_id", pa.string()),
        ("latency_ms", pa.float64()),
        ("prompt_tokens", pa.int64()),
        ("completion_tokens", pa.int64()),
        ("cost_usd", pa.float64()),
        ("tags", pa.list_(pa.string())),
        ("metadata", pa.string()),  # JSON text
        ("pii", pa.list_(pa.string())),
    ]
)
# Rows a fast path would accept, held for the PII test: tested and scrubbed as the second
# look does it (:func:`_scrubbed_candidates`), then inserted.
PII_CANDIDATES_SCHEMA = ACCEPTED_SCHEMA.with_metadata({"flywheel.ingest": "pii candidates"})
LOG_COLUMNS = (
    "log_id", "ts", "day", "source", "input", "output", "context", "model", "prompt_name",
    "prompt_version", "feedback", "messages", "git_commit", "session_id", "user_id",
    "latency_ms", "prompt_tokens", "completion_tokens", "cost_usd", "tags", "metadata", "pii",
    "source_file", "source_format", "source_line", "ingested_at",
)
# Bytes per Arrow batch for line-oriented files: large enough to keep DuckDB busy,
# small enough to bound memory on multi-GB files (DuckDB pulls them one by one).
LINES_BLOCK_BYTES = 16 << 20
# The first block is small: the statement starts on it while the thread reads on (a
# whole first block kept DuckDB waiting about 0.15 s).
FIRST_BLOCK_BYTES = 1 << 20
PARSED_BATCH_ROWS = 20_000
PARALLEL_CHUNK_ROWS = 8_192
# The few records of a second look cost many times more each (the detailed checks,
# the PII tests): in batches this small, every thread gets a share.
SECOND_LOOK_CHUNK_ROWS = 1_024
# Blocks a canonical JSON-lines file is read ahead of DuckDB at most (its memory, and
# the buffers used again; see _Buffers).
AHEAD_BLOCKS = 6
# Rows that could hold PII kept aside while a JSON-lines file streams into DuckDB.
STASH_BYTES = 256 << 20
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
    # The file broke off (a truncated gzip stream): the records before the cut are kept,
    # ``error`` says where it broke.
    partial: bool = False

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
        return [f for f in self.files if f.error and not f.partial]

    @property
    def partly_read(self) -> list[FileReport]:
        return [f for f in self.files if f.partial]

    @property
    def reconciles(self) -> bool:
        return all(f.reconciles for f in self.files)


Progress = Callable[[str], None]


class EmptyLandingFolder(Exception):
    """The day's landing folder is missing or holds no files, and an empty day was not
    asked for: ingesting it would replace what the day holds with nothing."""


def landing_files(settings: Settings, day: str) -> list[Path]:
    """Return the files of the day's landing folder that are read, in name order
    (hidden files, such as a copy still being written, are left alone)."""
    folder = settings.landing_for(day)
    if not folder.is_dir():
        return []
    return sorted(p for p in folder.iterdir() if p.is_file() and not p.name.startswith("."))


def _refuse_empty(con, settings: Settings, day: str) -> None:
    """Raise :class:`EmptyLandingFolder`, saying what the day holds that would be lost."""
    folder = settings.landing_for(day)
    where = settings.source_name(folder)
    state = "is missing" if not folder.is_dir() else "holds no files"
    held = con.execute(
        "SELECT (SELECT count(*) FROM logs WHERE day = $day), (SELECT count(*) FROM rejected_logs WHERE day = $day), "
        "(SELECT count(*) FROM duplicate_logs WHERE day = $day)",
        {"day": day},
    ).fetchone()
    stored = (f"the {held[0]:,} logs, {held[1]:,} rejected and {held[2]:,} duplicate records stored for {day}"
              if any(held) else f"day {day}")
    raise EmptyLandingFolder(
        f"landing folder {where} {state}: refusing to replace {stored} with nothing "
        "(run with --allow-empty, or asset config allow_empty: true, to store an empty day)"
    )


def ingest_day(
    con: duckdb.DuckDBPyConnection,
    settings: Settings,
    day: str,
    *,
    progress: Progress | None = None,
    allow_empty: bool = False,
    fast_formats: bool = True,
) -> IngestReport:
    """Replace the partition ``day`` (``YYYY-MM-DD``) with the records of its landing folder.

    Returns an :class:`IngestReport` with per-file counts that reconcile
    (read = accepted + rejected + duplicates). A landing folder that is missing or holds
    no files raises :class:`EmptyLandingFolder` (nothing is changed) unless
    ``allow_empty``: then the day is stored empty.
    ``fast_formats=False`` maps every record of the other formats in Python (the fast
    paths of :mod:`flywheel.ingest.fast` give the same tables; tests compare them).
    """
    date.fromisoformat(day)  # a clear error for a malformed partition key
    say = progress or (lambda _msg: None)
    report = IngestReport(day=day, pii_mode=settings.pii_mode)
    paths = landing_files(settings, day)
    if not paths:
        if not allow_empty:
            _refuse_empty(con, settings, day)
        say(f"{day}: landing folder {settings.source_name(settings.landing_for(day))} holds 0 files: "
            "the day is stored empty")

    with _ordered_inserts(con):
        _replace_day(con, settings, day, paths, report, say, fast_formats=fast_formats)
    crash_point(settings, "ingest:after_commit")
    return report


class _SharedSettings:
    """DuckDB settings that statements on several connections run with at once.

    DuckDB's settings are the database's, not a connection's (``SET SESSION`` is refused
    for these), and the fast formats map batches of lines on connections of their own
    while the loader stores others. A statement holds the settings it needs from setting
    them to setting them back: statements that need the same ones hold them together
    (the first sets them, the last sets back what was there), one that needs others
    waits until no one holds any.
    """

    def __init__(self):
        self._changed = threading.Condition()
        self._held: frozenset | None = None
        self._holders = 0
        self._previous: dict[str, str | None] = {}

    @contextlib.contextmanager
    def held(self, con, settings: dict[str, str]) -> Iterator[None]:
        """Run the block with DuckDB's ``settings`` (set and set back on ``con``)."""
        key = frozenset(settings.items())
        with self._changed:
            while self._holders and self._held != key:
                self._changed.wait()
            if not self._holders:
                self._previous = _set(con, settings)
                self._held = key
            self._holders += 1
        try:
            yield
        finally:
            with self._changed:
                self._holders -= 1
                if not self._holders:
                    self._held = None
                    try:
                        # (The last holder's connection: the first one's may be closed.)
                        _set_back(con, self._previous)
                    finally:
                        self._changed.notify_all()


SHARED_SETTINGS = _SharedSettings()

# DuckDB settings for the day's transaction (see :func:`_ordered_inserts`).
DAY_SETTINGS = {"preserve_insertion_order": "true", "write_buffer_row_group_memory_limit": "256MB"}


@contextlib.contextmanager
def _ordered_inserts(con) -> Iterator[None]:
    """Run the day's transaction with :data:`DAY_SETTINGS`, and the settings as they
    were afterwards.

    The rows a transaction inserts stay in memory until its COMMIT, unless DuckDB writes
    full row groups to the database file as they fill, which it does for inserts that
    keep their order; unordered inserts (the connection's default) each leave their
    rows in memory: a day of a million records held about 4 GB there. DuckDB also
    buffers the row groups it writes out (by default up to 20% of its memory limit per
    thread: over 2 GB of Langfuse traces): a smaller buffer bounds that.
    """
    with _settings(con, DAY_SETTINGS):
        yield


@contextlib.contextmanager
def _settings(con, settings: dict[str, str]) -> Iterator[None]:
    """Set DuckDB's ``settings`` (name: value), and back as they were afterwards (a
    setting at its default is reset: some defaults follow other settings)."""
    previous = _set(con, settings)
    try:
        yield
    finally:
        _set_back(con, previous)


def _set(con, settings: dict[str, str]) -> dict[str, str | None]:
    """Set DuckDB's ``settings``; return what they were (None: the default)."""
    def current(name: str) -> str:
        return con.execute(f"SELECT current_setting('{name}')::VARCHAR").fetchone()[0]

    previous: dict[str, str | None] = {}
    for name in settings:
        previous[name] = current(name)
        con.execute(f"RESET {name}")
        if current(name) == previous[name]:
            previous[name] = None  # the default
    for name, value in settings.items():
        con.execute(f"SET {name} = '{value}'")
    return previous


def _set_back(con, previous: dict[str, str | None]) -> None:
    """Set DuckDB's settings back to ``previous`` (as :func:`_set` returned them)."""
    for name, value in previous.items():
        con.execute(f"RESET {name}" if value is None else f"SET {name} = '{value}'")


def _replace_day(con, settings: Settings, day: str, paths: list[Path], report: IngestReport, say: Progress, *,
                 fast_formats: bool) -> None:
    """Replace the day's rows with those of ``paths`` in one transaction (see
    :func:`ingest_day`), filling ``report``."""
    con.execute("BEGIN TRANSACTION")
    try:
        for table in DAILY_TABLES:
            con.execute(f"DELETE FROM {table} WHERE day = ?", [day])
        detected, batch_requests = _detect_all(paths, report, settings)
        for path, fmt, file_report in detected:
            say(f"{day}: reading {path.name} ({fmt})")
            try:
                _load_file(con, settings, day, path, fmt, file_report, report, batch_requests,
                           fast_formats=fast_formats)
            except UnreadableFile as exc:
                _forget_file(con, day, file_report.source_file)
                file_report.error = exc.reason
                file_report.read = file_report.blank_lines = file_report.ignored = 0
                say(f"{day}: cannot read {path}: {exc.reason}")
        _move_duplicates(con, day)
        _count(con, day, report)
        _record_files(con, day, report)
        crash_point(settings, "ingest:before_commit")
        con.execute("COMMIT")
    except BaseException:
        # A failed COMMIT (a lost race in lake mode) has already ended the transaction:
        # a plain ROLLBACK would raise again and hide why.
        store.rollback(con)
        raise


def _detect_all(paths: list[Path], report: IngestReport, settings: Settings):
    """Return the (path, format, report) of each file to load, and the OpenAI batch
    requests by custom_id and OTel log records by span (companion files, which hold no
    log records of their own)."""
    detected: list[tuple[Path, str, FileReport]] = []
    batch_requests: dict[str, dict] = {}
    for path in paths:
        file_report = FileReport(source_file=settings.source_name(path))
        report.files.append(file_report)
        try:
            fmt = formats.detect_format(path)
            file_report.format = fmt
            if fmt in formats.COMPANION_FORMATS:  # batch input lines, OTel log records
                batch_requests.update(formats.load_companion(path, fmt))
                continue
        except UnreadableFile as exc:
            file_report.error = exc.reason
            continue
        detected.append((path, fmt, file_report))
    return detected, batch_requests


def _load_file(con, settings, day, path, fmt, file_report, report, batch_requests, *,
               fast_formats: bool = True) -> None:
    """Stage, scrub, validate and store one file's records."""
    window = ts_window(day, settings.max_ts_skew_days)
    if fmt == "canonical_jsonl" and fmt in ONE_RECORD_PER_LINE:
        _load_lines(con, day, path, file_report, settings.pii_mode, report, window)
        return
    if fast_formats and fast.handles(fmt) and _load_fast(con, settings, day, path, fmt, file_report, report,
                                                         batch_requests, window):
        return
    pii_gate = settings.pii_mode != "off"
    try:
        _store_batches(con, day, fmt, _batches(con, path, fmt, file_report, batch_requests, pii_gate=pii_gate),
                       file_report, settings.pii_mode, report, window)
    except _RowByRow:
        # Arrow read the file whole or not at all: start it again, row by row.
        _forget_file(con, day, file_report.source_file)
        file_report.read = file_report.blank_lines = 0
        _store_batches(con, day, fmt, _csv_rows(path, file_report, pii_gate=pii_gate),
                       file_report, settings.pii_mode, report, window)


def _store_batches(con, day, fmt, batches, file_report, mode, report, window) -> None:
    """Store each staged batch of one file, counting its records and blank lines."""
    later = _Later(con, day, file_report.source_file, fmt, fast=fmt in ONE_RECORD_PER_LINE, mode=mode,
                   report=report, window=window)
    for batch in batches:
        if batch.num_rows == 0:
            continue
        blank = pc.sum(batch.column("blank").cast(pa.int64())).as_py() or 0
        file_report.blank_lines += blank
        file_report.read += batch.num_rows - blank
        _store_batch(con, day, file_report.source_file, fmt, batch, mode, report, window, later=later)
    later.flush()


def _load_fast(con, settings, day, path, fmt, file_report, report, batch_requests, window) -> bool:
    """Load a file through its format's fast path (records mapped in SQL by the batch,
    one record per line); return False, with nothing of it stored, where the file
    cannot take it.

    The fast path yields staged batches (``BATCH_SCHEMA``), and may yield rows it
    accepted itself (``ACCEPTED_SCHEMA``), which are inserted as they are, and staged
    records for the detailed checks only (``SECOND_LOOK_SCHEMA``, told by its metadata).
    Accepted rows of a line come after the staged records of that line (the fast
    statement counts what it took of a line in `logs`)."""
    pii_counts = dict(report.pii_counts)
    later = _Later(con, day, file_report.source_file, fmt, fast=True, mode=settings.pii_mode, report=report,
                   window=window)
    stats: dict = {}
    try:
        for batch in fast.fast_batches(con, path, fmt, pii_gate=settings.pii_mode != "off",
                                       batch_requests=batch_requests, stats=stats, window=window):
            if not batch.num_rows:
                continue
            file_report.read += batch.num_rows
            if batch.schema.metadata == PII_CANDIDATES_SCHEMA.metadata:
                # Tested and scrubbed here, while the fast path's thread maps the next batch.
                _insert_rows(con, day, file_report.source_file, fmt,
                             _scrubbed_candidates(batch, settings.pii_mode, report))
            elif batch.schema.equals(ACCEPTED_SCHEMA):
                _insert_rows(con, day, file_report.source_file, fmt, batch)
            elif batch.schema.metadata == SECOND_LOOK_SCHEMA.metadata:
                later.add(batch.replace_schema_metadata(None))
            else:
                _store_batch(con, day, file_report.source_file, fmt, batch, settings.pii_mode, report, window,
                             one_record_per_line=True, later=later)
        later.flush()
    except fast.NotFast:
        _forget_file(con, day, file_report.source_file)
        file_report.read = 0
        report.pii_counts.clear()
        report.pii_counts.update(pii_counts)
        return False
    file_report.ignored = stats.get("ignored_spans", 0)
    return True


def _load_lines(con, day: str, path: Path, file_report: FileReport, mode: str, report: IngestReport,
                window: TsWindow) -> None:
    """Load a JSON-lines file with one statement: DuckDB pulls the file's batches (read
    and split by a thread ahead of it) and inserts the records that pass the combined
    test, writing them out as it goes. The records it left out are found by their
    lines afterwards and judged in detail (see :func:`_second_look`)."""
    source_file = file_report.source_file
    hold_back = None if mode == "off" else pii.PREFILTER_PATTERN
    # In redact mode the records with PII are scrubbed as they are read, and taken
    # with the others (flag mode stores them as they are: the detailed checks flag them).
    fix_ups = mode == "redact"
    source = _LineSource(path, pii_gate=hold_back is not None, fix_ups=fix_ups)
    first = source.first()
    empty = first is None
    if not empty:
        accepted = fast_accepted_sql("stage_lines", pii_gate=hold_back, key_lists=_key_lists(first), window=window,
                                     fix_ups=fix_ups, documents=False)
        del first  # (its block's buffer is used again)
        con.register("stage_lines", pa.RecordBatchReader.from_batches(source.schema, source.record_batches()))
        try:
            with _fast_insert_settings(con, whole_file=True):
                taken = _insert_accepted(con, day, source_file, "canonical_jsonl", accepted)
        finally:
            con.unregister("stage_lines")
            source.close()
        if fix_ups:  # the PII the records taken scrubbed were counted by no one yet
            _count_pii(con, day, source_file, report)
    if source.error is not None:
        raise UnreadableFile(path, source.error)
    file_report.read += source.records
    file_report.blank_lines += source.blank
    if source.cut:
        _broke_off(file_report, source.cut[0])
    if empty or taken == source.records:
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
    _second_look(con, day, source_file, "canonical_jsonl", second, fast=True, mode=mode, report=report,
                 window=window)



def _count_pii(con, day: str, source_file: str, report: IngestReport) -> None:
    """Add to the report's PII counts the records of the file in `logs` with each type."""
    for kind, count in con.execute(
        """SELECT kind, count(*) FROM (SELECT unnest(pii) AS kind FROM logs
           WHERE day = ? AND source_file = ? AND pii IS NOT NULL) GROUP BY kind""",
        [day, source_file],
    ).fetchall():
        report.pii_counts[kind] = report.pii_counts.get(kind, 0) + count


def _scan_once(table: pa.Table) -> pa.RecordBatchReader:
    """Return ``table`` as a stream of its record batches, for DuckDB to scan once.

    DuckDB keeps an Arrow table registered on a connection alive until the end of the
    transaction (even after it is unregistered), and the day is one transaction: every
    batch of the day would stay in memory. A stream is consumed, and each of its batches
    freed, as the statement reads it. A statement that reads a relation twice needs it
    registered again.
    """
    return pa.RecordBatchReader.from_batches(table.schema, table.to_batches())


class _LineSource:
    """The batches of a JSON-lines file for DuckDB to pull, read ahead by a thread.

    It counts records and blank lines as they go by and keeps the rows that could hold
    PII (up to :data:`STASH_BYTES`): most records the combined test leaves out are
    those, and the others are read again from the file. A read error ends the batches
    (DuckDB sees a short file, not an error that would abort the day's transaction)
    and is kept in ``error``.
    """

    def __init__(self, path: Path, *, pii_gate: bool, fix_ups: bool = False):
        self.path = path
        self.schema = FIX_UPS_SCHEMA if fix_ups else BATCH_SCHEMA
        self.error: str | None = None
        self.cut: list[str] = []  # why the file broke off (a truncated gzip stream), once read
        self.records = self.blank = self.lines = 0
        self.blank_lines: list[int] = []
        self._stash: list[pa.Table] | None = [] if pii_gate else None
        self._stash_bytes = 0
        self._tables = _read_ahead(_line_batches(path, pii_gate=pii_gate, cut=self.cut, ahead=AHEAD_BLOCKS,
                                                 fix_ups=fix_ups))
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
            table, self._first = self._first, None  # (not kept: its block's buffer is reused)
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
            kept = table.select(BATCH_SCHEMA.names).filter(pc.fill_null(table.column("maybe_pii"), True))
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
        yield from _parsed_batches(_until_broken(path, records, file_report))
        file_report.ignored = stats["ignored_spans"]


def _until_broken(path: Path, records: Iterator[RawRecord], file_report: FileReport) -> Iterator[RawRecord]:
    """Yield a parser's records; a gzip stream that breaks off after some records ends
    them there (those are kept, the file's report says where it broke). Broken before
    any record, the file is unreadable."""
    seen = 0
    try:
        for record in records:
            seen += 1
            yield record
    except UnreadableFile as exc:
        if not seen or not isinstance(exc.__cause__, (*_BROKEN_STREAM, gzip.BadGzipFile)):
            raise
        _broke_off(file_report, f"{exc.reason} after record {seen:,}")


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


def _line_batches(path: Path, *, pii_gate: bool = False, cut: list[str] | None = None,
                  block_bytes: int = LINES_BLOCK_BYTES, ahead: int | None = None,
                  fix_ups: bool = False) -> Iterator[pa.Table]:
    """Yield the lines of a JSON-lines file (gzipped or not) with 1-based line numbers.

    Blocks of the file are split at newlines with numpy and handed to Arrow without
    copying; every line is one value, blank lines included, so line numbers stay exact.
    With ``pii_gate``, ``maybe_pii`` tells which lines could hold PII. A leading UTF-8
    byte-order mark is not part of the first record.

    A gzip stream that breaks off (truncated or corrupt) after some lines ends the
    file there: every line before is kept, the line it cut is rejected (``pre_error``),
    and the reason is appended to ``cut``.

    ``ahead``: read at most this many blocks ahead of the consumer (see
    :class:`_Buffers`); by default as far as it asks. With ``fix_ups`` (and
    ``pii_gate``), the batches (``FIX_UPS_SCHEMA``) have the PII fix-ups of the lines
    the prefilter flags (:func:`flywheel.ingest.pii_ahead.fix_ups`).
    """
    start = 1
    buffers = _Buffers(keep=ahead, wait=True) if ahead else _Buffers()
    pii_fix_ups = pii_ahead.FixUps() if fix_ups else None
    try:
        with (_Gunzip(path) if path.name.endswith(".gz") else open(path, "rb")) as stream:
            broke: list[str] = []
            for raw, offsets in _split_lines(stream, broke=broke, block_bytes=block_bytes, buffers=buffers):
                n = len(raw)
                text, undecodable = _as_text(raw)
                pre_error = pa.nulls(n, pa.string())
                if broke:  # the last block: the line where the stream broke off
                    pre_error = pa.array([broke[0]] * n, pa.string())
                maybe_pii = _maybe_pii(text) if pii_gate else pa.nulls(n, pa.bool_())
                columns = [
                    pa.array(np.arange(n, dtype=np.int64)),
                    pa.array(np.arange(start, start + n, dtype=np.int64)),
                    text,
                    undecodable,
                    pa.nulls(n, pa.string()),
                    pre_error,
                    pa.nulls(n, pa.string()),
                    _blank_mask(raw, offsets),
                    maybe_pii,
                ]
                if pii_fix_ups is not None:
                    columns += pii_fix_ups(text, pc.fill_null(maybe_pii, False).to_numpy(zero_copy_only=False))
                yield _parallel(pa.Table.from_arrays(columns, schema=FIX_UPS_SCHEMA if fix_ups else BATCH_SCHEMA))
                start += n
            if broke and cut is not None:
                cut.append(f"{broke[0]} in line {start - 1:,}")
    except (OSError, EOFError, zlib.error) as exc:
        raise UnreadableFile(path, _read_error(exc)) from None


UTF8_BOM = b"\xef\xbb\xbf"
_BROKEN_STREAM = (EOFError, zlib.error)


class _Gunzip(io.RawIOBase):
    """The decompressed bytes of a gzip file (members one after another).

    Unlike :func:`gzip.open`, a stream that breaks off (truncated, or corrupt from some
    point) first gives every byte that decompressed before the break, then raises
    (EOFError, zlib.error).
    """

    def __init__(self, path: Path, *, keep_error: bool = False):
        self._file = open(path, "rb")
        self._member = zlib.decompressobj(wbits=31)
        self._fed = False  # bytes of the current member were decompressed
        self._out = b""  # decompressed, from self._at on not yet read
        self._at = 0
        # With keep_error, a break ends the stream (as if the file ended) and is kept here.
        self._keep_error = keep_error
        self.error: BaseException | None = None

    def readable(self) -> bool:
        return True

    def readinto(self, view) -> int:
        while not self._out:
            if self.error is not None:
                return 0
            try:
                chunk = self._file.read(1 << 16)
                if not chunk:
                    if self._fed and not self._member.eof:
                        raise EOFError("the compressed stream ends before its end marker")
                    return 0
                self._out = self._decompress(chunk)
            except _BROKEN_STREAM as exc:
                if not self._keep_error:
                    raise
                self.error = exc
        n = min(len(view), len(self._out) - self._at)
        view[:n] = self._out[self._at:self._at + n]
        self._at += n
        if self._at == len(self._out):
            self._out, self._at = b"", 0
        return n

    def _decompress(self, chunk: bytes) -> bytes:
        out = []
        while chunk:
            if self._member.eof:  # the next member
                self._member, self._fed = zlib.decompressobj(wbits=31), False
            out.append(self._member.decompress(chunk))
            self._fed = True
            chunk = self._member.unused_data if self._member.eof else b""
        return b"".join(out)

    def close(self) -> None:
        self._file.close()
        super().close()


def _split_lines(stream, *, buffers: _Buffers, broke: list[str] | None = None,
                 block_bytes: int = LINES_BLOCK_BYTES) -> Iterator[tuple[pa.Array, np.ndarray]]:
    """Yield Arrow binary arrays of whole lines (each with its newline) read from
    ``stream``, with their offsets. Each block is read straight into a buffer of
    ``buffers`` that the array then holds (no copy). A
    leading byte-order mark is skipped.

    With ``broke``, a stream that breaks off after some bytes (a truncated gzip) ends
    the lines instead of raising: the reason is appended to ``broke``, then one last
    block holds the line it cut (when there is one).
    """
    carry = b""
    first = True
    while True:
        # Not zero-filled: every byte used is read into it first. (The small first
        # block takes a buffer of its own: the pool's are all of one size.)
        buffer = (np.empty(min(block_bytes, FIRST_BLOCK_BYTES), dtype=np.uint8) if first
                  else buffers.take(len(carry) + block_bytes))
        buffer[: len(carry)] = np.frombuffer(carry, dtype=np.uint8)
        got, error = _read_into(stream, memoryview(buffer)[len(carry):])
        filled = len(carry) + got
        if error is not None and (broke is None or (first and not filled)):
            raise error
        if first and filled:
            first = False
            if bytes(buffer[:3]) == UTF8_BOM:
                buffer, filled = buffer[3:], filled - 3
        if error is not None:
            data = memoryview(buffer)[:filled]
            cut = _last_newline(buffer, filled) + 1
            if cut:
                yield _lines_array(data[:cut])
            broke.append(_read_error(error))
            if filled > cut:
                yield _lines_array(memoryview(bytes(data[cut:]) + b"\n"))
            return
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


class _Buffers:
    """The read buffers of one file's blocks, each used again once nothing holds it.

    Memory the process has not touched before costs the kernel a page fault and a
    zeroed page per 4 KiB: here about 2 s of system time per GB, a tenth of a canonical
    ingest's CPU when every block took a fresh buffer. The lines of a block are Arrow
    arrays over its buffer (no copy): whatever still holds them (DuckDB, a batch in a
    queue) holds a reference to the buffer, so a buffer only the pool refers to is free.

    With ``wait``, :meth:`take` waits for one of the ``keep`` buffers to come free
    instead of taking another: the reader then stays at most ``keep`` blocks ahead of
    its consumer. (DuckDB scans a stream of Arrow batches through a scanner that reads
    ahead as far as it can: without it, most of a file would be in memory at once.) A
    consumer that keeps blocks longer than ``patience`` seconds ends the waiting for
    the rest of the file: memory then grows, but nothing stalls.
    """

    def __init__(self, *, keep: int = 3, wait: bool = False, patience: float = 2.0):
        self._keep = keep
        self._wait = wait
        self._patience = patience
        self._pool: list[np.ndarray] = []

    def take(self, size: int) -> np.ndarray:
        """Return a buffer of ``size`` bytes (not zeroed): a free one of the pool again,
        or a new one."""
        deadline = time.monotonic() + self._patience
        while True:
            for buffer in self._pool:
                # Referred to by the pool, the loop and getrefcount's argument only.
                if len(buffer) >= size and sys.getrefcount(buffer) <= 3:
                    return buffer[:size]
            if not self._wait or len(self._pool) < self._keep:
                break
            if time.monotonic() > deadline:
                self._wait = False
                break
            time.sleep(0.002)
        # Room for the end of a line carried over from the block before.
        buffer = np.empty(size + (size >> 4), dtype=np.uint8)
        if len(self._pool) < self._keep:
            self._pool.append(buffer)
        return buffer[:size]


def _last_newline(buffer: np.ndarray, end: int) -> int:
    """Return the index of the last newline in ``buffer[:end]`` (-1 when none)."""
    step = 1 << 16
    for stop in range(end, 0, -step):
        found = np.flatnonzero(buffer[max(0, stop - step):stop] == 10)
        if len(found):
            return max(0, stop - step) + int(found[-1])
    return -1


def _read_into(stream, view: memoryview) -> tuple[int, BaseException | None]:
    """Fill ``view`` from the stream (less only at its end); return the bytes read, and
    the error of a stream that broke off (None at a proper end)."""
    total = 0
    while total < len(view):
        try:
            n = stream.readinto(view[total:])
        except _BROKEN_STREAM as exc:
            return total, exc
        if not n:
            break
        total += n
    return total, None


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


def _parallel(table: pa.Table, *, rows: int = PARALLEL_CHUNK_ROWS) -> pa.Table:
    """Return the table cut into record batches of at most ``rows`` rows (zero-copy).

    DuckDB scans an Arrow table one record batch per thread: a single large batch would
    keep the whole validation on one core.
    """
    return pa.Table.from_batches(table.to_batches(max_chunksize=rows), table.schema)


def _blank_mask(raw: pa.Array, offsets: np.ndarray) -> pa.Array:
    """Return True where a line holds only whitespace (no record there); only short
    lines are looked at."""
    mask = np.diff(offsets) <= 8
    for i in mask.nonzero()[0]:
        mask[i] = not raw[int(i)].as_py().strip()
    return pa.array(mask, pa.bool_())


def _broke_off(file_report: FileReport, reason: str) -> None:
    """Note in the file's report that it broke off (the records before are kept)."""
    file_report.partial = True
    file_report.error = f"{reason}: the records before it are kept"


def _read_error(exc: BaseException) -> str:
    text = str(exc).strip() or type(exc).__name__
    if isinstance(exc, EOFError):
        return "truncated gzip stream (it ends before its end marker)"
    if "gzip" in text.lower() or isinstance(exc, zlib.error):
        return f"corrupt gzip stream ({text})"
    return text


def _tabular_batches(con, path: Path, fmt: str, *, pii_gate: bool = False) -> Iterator[pa.Table]:
    """Yield CSV rows or Parquet rows as JSON documents, numbered as in the file.

    Arrow reads the file in order and the numbers are attached before DuckDB sees a
    row, so they stay right however DuckDB schedules its work. CSV cells are read as
    text (types are checked later, like every format's); a CSV row's line number is its
    row number plus one for the header (a quoted cell spanning lines shifts it).
    """
    first_line = 2 if fmt == "canonical_csv" else 1
    ragged: list[str] = []
    try:
        for batch in _arrow_rows(path, fmt, ragged=ragged):
            if ragged:
                raise _RowByRow
            n = batch.num_rows
            rows = pa.StructArray.from_arrays([_finite_or_text(c) for c in batch.columns], names=batch.schema.names)
            con.register("stage_rows", _scan_once(pa.table({"row": rows})))
            try:
                text = con.sql("SELECT to_json(row)::VARCHAR FROM stage_rows").to_arrow_table().column(0)
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
    except (pa.ArrowInvalid, OSError, EOFError, zlib.error, UnicodeDecodeError, duckdb.Error) as exc:
        if fmt == "canonical_csv":  # a line that is not UTF-8, a gzip that breaks off
            raise _RowByRow from None
        raise UnreadableFile(path, f"cannot read as {fmt.split('_')[1].upper()}: {exc}") from None


def _finite_or_text(column: pa.Array) -> pa.Array:
    """Return a float column with NaN or infinity as text (JSON has no such number:
    as text, the field's range check rejects its record); other columns as they are."""
    if not pa.types.is_floating(column.type) or pc.all(pc.fill_null(pc.is_finite(column), True)).as_py():
        return column
    return column.cast(pa.string())


class _RowByRow(Exception):
    """A CSV file that Arrow cannot read whole (a row with too many or too few cells, a
    line that is not UTF-8, a gzip stream that breaks off): it is read again with
    :func:`_csv_rows`, which rejects only the bad rows."""


def _csv_rows(path: Path, file_report: FileReport, *, pii_gate: bool) -> Iterator[pa.Table]:
    """Yield a CSV file's rows as JSON documents (the text Arrow's path gives them), in
    batches, read row by row: a row with the wrong number of cells or bytes that are not
    UTF-8 is rejected with its line (the line where the row starts, exact also for cells
    spanning lines). A gzip stream that breaks off ends the file there."""
    csv.field_size_limit(1 << 30)  # long outputs are cells too
    columns: dict[str, list] = {name: [] for name in BATCH_SCHEMA.names}

    def flush() -> pa.Table:
        table = pa.table(columns, schema=BATCH_SCHEMA)
        if pii_gate:
            table = table.set_column(table.schema.get_field_index("maybe_pii"), "maybe_pii",
                                     _maybe_pii(table.column("text")))
        for values in columns.values():
            values.clear()
        return _parallel(table)

    def add(line: int, text: str | None, raw: bytes | None, error: str | None) -> None:
        columns["rid"].append(len(columns["line"]))
        columns["line"].append(line)
        columns["text"].append(text)
        columns["raw"].append(raw)
        columns["doc"].append(None)
        columns["pre_error"].append(error)
        columns["pre_field"].append(None)
        columns["blank"].append(False)
        columns["maybe_pii"].append(None)

    gunzip = _Gunzip(path, keep_error=True) if path.name.endswith(".gz") else None
    with io.TextIOWrapper(io.BufferedReader(gunzip) if gunzip else open(path, "rb"),
                          encoding="utf-8-sig", errors="surrogateescape", newline="") as stream:
        reader = csv.reader(stream)
        try:
            header = next(reader, [])
            if _undecodable(",".join(header)):
                raise UnreadableFile(path, "the CSV header is not valid UTF-8")
            before = reader.line_num
            for row in reader:
                line, before = before + 1, reader.line_num
                if not row:
                    continue  # a blank line: no record
                if len(columns["line"]) >= PARSED_BATCH_ROWS:
                    yield flush()
                cells = _csv_line(row)
                if len(row) != len(header):
                    add(line, _utf8_or_none(cells), cells.encode("utf-8", "surrogateescape"),
                        f"wrong number of cells: {len(row)}, the header has {len(header)}")
                elif _utf8_or_none(cells) is None:
                    add(line, None, cells.encode("utf-8", "surrogateescape"), None)
                else:
                    document = dict(zip(header, (cell if cell != "" else None for cell in row)))
                    add(line, json.dumps(document, ensure_ascii=False, separators=(",", ":")), None, None)
        except csv.Error as exc:
            raise UnreadableFile(path, f"cannot read as CSV: {exc} (line {reader.line_num})") from None
    if gunzip is not None and gunzip.error is not None:
        reason = _read_error(gunzip.error)
        if not header:
            raise UnreadableFile(path, reason)
        if columns["line"]:  # the row it cut
            columns["pre_error"][-1] = reason
        _broke_off(file_report, f"{reason} in line {before:,}")
    if columns["line"]:
        yield flush()


def _csv_line(row: list[str]) -> str:
    """Return the row as one CSV line (quoted where needed), for `rejected_logs`."""
    out = io.StringIO()
    csv.writer(out, lineterminator="").writerow(row)
    return out.getvalue()


def _undecodable(text: str | None) -> bool:
    """Return whether text holds bytes that were not UTF-8 (as lone surrogates)."""
    return text is not None and _utf8_or_none(text) is None


def _utf8_or_none(text: str) -> str | None:
    """Return ``text`` when it is valid UTF-8 (no undecodable bytes), else None."""
    try:
        text.encode("utf-8")
    except UnicodeEncodeError:
        return None
    return text


def _arrow_rows(path: Path, fmt: str, *, ragged: list[str] | None = None) -> Iterator[pa.RecordBatch]:
    """Yield the rows of a CSV (all cells as text) or Parquet file in Arrow batches.
    A CSV row with the wrong number of cells is left out and its text appended to
    ``ragged`` (before the batch that would have held it is yielded)."""
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
            # Blocks as large as a JSON-lines batch: each batch pays for a few statements.
            read_options=pcsv.ReadOptions(encoding="utf8", block_size=LINES_BLOCK_BYTES),
            parse_options=pcsv.ParseOptions(
                newlines_in_values=True,
                invalid_row_handler=lambda row: ragged.append(row.text) or "skip" if ragged is not None else "error",
            ),
            # An empty cell is a missing value, as in the canonical JSON.
            # (only an empty cell: "NaN", "NA" or "null" are the cell's text, judged as such).
            convert_options=pcsv.ConvertOptions(
                column_types={name: pa.string() for name in header}, strings_can_be_null=True,
                null_values=[""],
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
        raw_text, doc, error, field_name = _batch_row(rec)
        columns["rid"].append(len(columns["line"]))
        columns["line"].append(rec.line)
        columns["text"].append(raw_text)
        columns["raw"].append(None)
        columns["doc"].append(doc)
        columns["pre_error"].append(error)
        columns["pre_field"].append(field_name)
        columns["blank"].append(False)
        columns["maybe_pii"].append(None)
        if len(columns["line"]) >= PARSED_BATCH_ROWS:
            yield flush()
    if columns["line"]:
        yield flush()


def _batch_row(rec: RawRecord) -> tuple[str, str | None, str | None, str | None]:
    """Return a parser record as a batch holds it: (raw text, canonical JSON, reason,
    field). A record holding text that is not UTF-8 (bytes that were not, read as lone
    surrogates by formats.open_text, or a lone surrogate written as a JSON escape) is
    rejected whole, its raw text with the replacement character in their place."""
    raw_text = rec.raw
    if rec.record is None:
        doc, error, field_name = None, rec.error, rec.field
    else:
        doc, error, field_name = _record_json(rec.record)
    if _undecodable(raw_text) or _undecodable(doc):
        raw_text = raw_text.encode("utf-8", "surrogateescape").decode("utf-8", "replace")
        doc, error, field_name = None, REASONS["bad_encoding"], None
    return raw_text, doc, error, field_name


def _record_json(record: dict) -> tuple[str | None, str | None, str | None]:
    """Return ``(json, None, None)`` for a parsed record, or ``(None, reason, field)``
    when it has no JSON text: NaN or infinity (JSON has no such number), or nesting too
    deep to serialize."""
    try:
        return json.dumps(record, default=str, ensure_ascii=False, allow_nan=False), None, None
    except ValueError:
        name = next((k for k, v in record.items() if isinstance(v, float) and not math.isfinite(v)), None)
        return None, REASONS["bad_value"], name
    except RecursionError:
        return None, f"{REASONS['invalid_json']}: nested too deeply", None


def _pii_fixes(docs: list[tuple], mode: str, report: IngestReport) -> pa.Table:
    """Return the PII fix-ups of records held back by the prefilter: per row (``rid``),
    the scrubbed input, output, context, session and user id, messages, tags and
    metadata (with the unknown fields; redact mode) and the types found.

    ``docs`` holds ``(rid, input, output, context, session_id, user_id, messages, tags,
    metadata)`` of each record as stored (``messages`` and ``metadata`` JSON text), a
    text field None where it cannot hold PII. Messages are parsed and scanned only where
    the prefilter for JSON matches their text (a record held for another field, say an
    OTel trace id that starts with seven digits, does not pay for them); where PII is
    found elsewhere in the record, they are written again all the same.
    """
    rows: dict[str, list] = {name: [] for name in FIX_SCHEMA.names}
    redact = mode == "redact"
    messages_texts = [doc[6] for doc in docs]
    scanned = _json_may_hold_pii(messages_texts)
    parsed = [(rid, texts, json.loads(messages_json) if may else None, tags,
               None if metadata_json is None else json.loads(metadata_json))
              for (rid, *texts, messages_json, tags, metadata_json), may in zip(docs, scanned)]
    # The strings of messages, tags and metadata, all tested by the prefilter at once (RE2
    # in Arrow; Python's re takes some 20 us a string), then scanned where it matches.
    scan = _PrefilteredScan(parsed)
    for (rid, texts, messages, tags, metadata), messages_json in zip(parsed, messages_texts):
        found: set[str] = set()
        values: dict[str, object] = {}
        for name, text in zip(SCRUBBED_FIELDS, texts):
            if text is not None:
                values[name], kinds = pii.scan(text)
                found |= kinds
        if messages is not None:
            messages, kinds = _scan_messages(messages, scan=scan)
            found |= kinds
            values["messages"] = json.dumps(messages, ensure_ascii=False)
        for name, value in (("tags", tags), ("metadata", metadata)):
            if value is not None:
                cleaned, kinds = pii.scan_value(value, scan_text=scan)
                found |= kinds
                values[name] = cleaned if name == "tags" else json.dumps(cleaned, ensure_ascii=False)
        if messages is None and messages_json is not None and redact and found:
            values["messages"] = json.dumps(json.loads(messages_json), ensure_ascii=False)
        for kind in found:
            report.pii_counts[kind] = report.pii_counts.get(kind, 0) + 1
        rows["rid"].append(rid)
        for name in (*SCRUBBED_FIELDS, "messages", "tags", "metadata"):
            rows[name].append(values.get(name) if redact and found else None)
        rows["text"].append(None)
        rows["pii"].append(sorted(found) or None)
    return pa.table(rows, schema=FIX_SCHEMA)


def _json_may_hold_pii(texts: list[str | None]) -> list[bool]:
    """Return, for each JSON text (None: absent), whether the prefilter for JSON matches
    it: False where no string in it can hold PII."""
    try:
        return pc.fill_null(pc.match_substring_regex(pa.array(texts, pa.string()), pii.JSON_PREFILTER_PATTERN),
                            False).to_pylist()
    except (pa.ArrowInvalid, UnicodeEncodeError):  # a lone surrogate: every text scanned
        return [text is not None for text in texts]


def _scrubbed_candidates(candidates: pa.Table, mode: str, report: IngestReport) -> pa.Table:
    """Return the rows a fast path held for the PII test (``PII_CANDIDATES_SCHEMA``) as
    accepted rows (``ACCEPTED_SCHEMA``), scrubbed as :func:`_second_look` scrubs a record:
    the fields are tested by the same prefilters (the text fields by the one for text,
    messages and metadata by the one for JSON), and where one matches, the same fields
    are scanned where those prefilters match them (the text fields, each string of the
    messages and of the metadata) by :func:`_pii_fixes`; in redact mode the values it
    scrubbed put in, the types it found in ``pii`` (and the report's counts) in either
    mode. A row no prefilter matches is taken as it is."""
    rows = candidates.replace_schema_metadata(None)
    if not rows.num_rows:
        return rows

    def matches(name: str, pattern: str) -> pa.ChunkedArray:
        return pc.fill_null(pc.match_substring_regex(rows.column(name), pattern), False)

    text_matches = {name: matches(name, pii.PREFILTER_PATTERN) for name in SCRUBBED_FIELDS}
    json_matches = {name: matches(name, pii.JSON_PREFILTER_PATTERN) for name in ("messages", "metadata")}
    maybe = pc.is_valid(rows.column("tags"))  # (a fast path that fills tags: scanned whole)
    for flags in (*text_matches.values(), *json_matches.values()):
        maybe = pc.or_(maybe, flags)
    places = np.flatnonzero(maybe.to_numpy(zero_copy_only=False))
    if not len(places):
        return rows
    take = pa.array(places)
    texts = [pc.if_else(text_matches[name], rows.column(name), None).take(take).to_pylist()
             for name in SCRUBBED_FIELDS]
    metadata = pc.if_else(json_matches["metadata"], rows.column("metadata"), None).take(take).to_pylist()
    messages = rows.column("messages").take(take).to_pylist()
    tags = rows.column("tags").take(take).to_pylist()
    docs = [(i, *(text[i] for text in texts), messages[i], tags[i], metadata[i]) for i in range(len(places))]
    fixes = _pii_fixes(docs, mode, report)
    # Each value: its fix-up where it has one (redact mode), else as it was. A column
    # without any is kept as it is; a text column is copied once, with its fix-ups put in.
    n = rows.num_rows
    index = None
    for name in (*SCRUBBED_FIELDS, "messages", "tags", "metadata", "pii"):
        kind = rows.schema.field(name).type
        fixed = fixes.column(name).cast(kind)
        if fixed.null_count == len(fixed):
            continue
        if kind == pa.string():
            changed = pc.is_valid(fixed).to_numpy(zero_copy_only=False)
            mask = np.zeros(n, dtype=bool)
            mask[places[changed]] = True
            column = pc.replace_with_mask(rows.column(name), pa.array(mask),
                                          fixed.filter(pa.array(changed)).combine_chunks())
        else:  # (lists: replace_with_mask has no kernel for them)
            if index is None:
                index = np.arange(n, dtype=np.int64)
                index[places] = n + np.arange(len(places), dtype=np.int64)
                index = pa.array(index)
            if name != "pii":
                fixed = pc.coalesce(fixed, rows.column(name).take(take))
            column = pa.concat_arrays([rows.column(name).combine_chunks(), fixed.combine_chunks()]).take(index)
        rows = rows.set_column(rows.schema.get_field_index(name), name, column)
    return rows


# The prefilter in Python, for strings Arrow cannot hold (a lone surrogate): a string it
# does not match holds nothing the detectors find, and is left alone.
_MAY_HOLD_PII = re.compile(pii.PREFILTER_PATTERN)


def _scan_messages(messages: list, *, scan) -> tuple[list, set[str]]:
    """Return the messages with their text contents scanned by ``scan``, and the PII types found."""
    found: set[str] = set()
    cleaned = []
    for message in messages:
        if isinstance(message, dict) and isinstance(message.get("content"), str):
            content, kinds = scan(message["content"])
            found |= kinds
            message = {**message, "content": content}
        cleaned.append(message)
    return cleaned, found


class _PrefilteredScan:
    """:func:`flywheel.pii.scan` for the strings of the records' messages, tags and
    metadata, called in the order they are walked: the prefilter runs over all of them at
    once first (RE2 matches a superset of what Python's re matches with this pattern: its
    \\s and \\w are ASCII, and appear only in negated classes), and only the strings it
    matches are scanned."""

    def __init__(self, parsed: list[tuple]):
        strings: list[str] = []

        def record(text: str) -> tuple[str, frozenset[str]]:
            strings.append(text)
            return text, frozenset()

        for _rid, _texts, messages, tags, metadata in parsed:
            if messages is not None:
                _scan_messages(messages, scan=record)
            for value in (tags, metadata):
                if value is not None:
                    pii.scan_value(value, scan_text=record)
        try:
            self._may = pc.match_substring_regex(pa.array(strings, pa.string()), pii.PREFILTER_PATTERN).to_pylist()
        except (pa.ArrowInvalid, UnicodeEncodeError):  # a lone surrogate: tested one by one
            self._may = [_MAY_HOLD_PII.search(text) is not None for text in strings]
        self._next = 0

    def __call__(self, text: str) -> tuple[str, frozenset[str]]:
        may = self._may[self._next]
        self._next += 1
        return pii.scan(text) if may else (text, frozenset())


class _Later:
    """The records of one file's batches left for a second look, judged together (a
    second look costs a few large statements, whatever the number of records): at the
    end of the file, or once they hold :data:`STASH_BYTES`."""

    def __init__(self, con, day: str, source_file: str, fmt: str, *, fast: bool, mode: str,
                 report: IngestReport, window: TsWindow):
        self._con, self._day, self._source_file, self._fmt = con, day, source_file, fmt
        self._fast, self._mode, self._report, self._window = fast, mode, report, window
        self._tables: list[pa.Table] = []
        self._bytes = 0

    def add(self, second: pa.Table) -> None:
        self._tables.append(second)
        self._bytes += second.nbytes
        if self._bytes > STASH_BYTES:
            self.flush()

    def flush(self) -> None:
        """Judge the records kept so far."""
        if not self._tables:
            return
        second = pa.concat_tables(self._tables)
        self._tables, self._bytes = [], 0
        # Row ids were per batch: the fix-ups are matched by them.
        second = second.set_column(0, "rid", pa.array(np.arange(second.num_rows, dtype=np.int64)))
        _second_look(self._con, self._day, self._source_file, self._fmt, second, fast=self._fast,
                     mode=self._mode, report=self._report, window=self._window)


def _store_batch(con, day: str, source_file: str, fmt: str, batch: pa.Table, mode: str,
                 report: IngestReport, window: TsWindow, *, one_record_per_line: bool = False,
                 later: _Later | None = None) -> None:
    """Write a staged batch: accepted records to `logs`, broken ones to `rejected_logs`.

    One statement validates the batch and inserts the records that pass and hold no
    possible PII (a regular expression that matches a superset of what the detectors
    find: over each whole line in Arrow first, ``maybe_pii``, then over the fields of
    the lines it flags in DuckDB). Only the few records it left out are looked at again, with
    the detailed checks: broken ones get their reason, good ones are inserted, and the
    PII candidates are scrubbed in Python, then inserted.

    Formats with one record per line take the fast statement (one combined test,
    see :func:`flywheel.ingest.normalize.fast_accepted_sql`); the lines it took are
    read back from `logs`. Other formats take the detailed statement, whose lines taken
    are counted in `logs` (see :func:`_detailed_pass`).
    """
    try:
        hold_back = None if mode == "off" else pii.PREFILTER_PATTERN
        fast = one_record_per_line or fmt in ONE_RECORD_PER_LINE
        left_out = (_fast_pass(con, day, source_file, fmt, batch, hold_back, window) if fast
                    else _detailed_pass(con, day, source_file, fmt, batch, hold_back, window))
        if left_out is None:
            return
        # The few records left out, copied out of the batch, so that the statements
        # below do not scan the whole batch again.
        second = batch.filter(pc.is_in(batch.column("line"), left_out.column(0)))
        if fast and _several_per_line(pc.filter(second.column("line"), pc.invert(second.column("blank")))):
            # Lines of several records (OTel spans): the records of theirs it took stay.
            second = _untaken(con, second, hold_back, window)
        if later is not None:
            later.add(second)
        else:
            _second_look(con, day, source_file, fmt, second, fast=fast, mode=mode, report=report, window=window)
    finally:
        for name in ("stage_batch", "stage_fix"):
            con.unregister(name)


def _second_look(con, day: str, source_file: str, fmt: str, second: pa.Table, *, fast: bool,
                 mode: str, report: IngestReport, window: TsWindow) -> None:
    """Judge in detail the records (rows of a batch) the first statement left out:
    store the broken ones with their reason, and the good ones (with ``fast``, those the
    combined test did not settle; always, the PII candidates, scrubbed in Python)."""
    hold_back = None if mode == "off" else pii.PREFILTER_PATTERN
    con.register("stage_second", _scan_once(_parallel(second, rows=SECOND_LOOK_CHUNK_ROWS)))
    con.register("stage_fix", _scan_once(FIX_SCHEMA.empty_table()))
    try:
        # Judged once, then read three ways: rejected, accepted, held back for PII. (In
        # Arrow, registered again for each statement, not in a temporary table: DuckDB
        # would keep every one made until the day's COMMIT.)
        # (A relation's to_arrow_table(): execute().fetch_arrow_table() of a statement that
        # reads a registered stream ran on one thread about half the time.)
        judged = con.sql(judged_sql("stage_second", "stage_fix", window=window)).to_arrow_table()

        def stage_judged() -> str:
            con.register("stage_judged", _scan_once(_parallel(judged, rows=SECOND_LOOK_CHUNK_ROWS)))
            return "stage_judged"

        rejected = con.execute(judged_rejected(stage_judged())).fetchall()
        _insert_rejected(con, day, source_file, rejected, mode, report)
        if fast:
            _insert_accepted(con, day, source_file, fmt, judged_accepted(stage_judged(), hold_back=hold_back))
        # The held records' text fields, each with whether the prefilter matches it:
        # only those are scanned in Python (the detectors find nothing elsewhere).
        pattern = "'" + hold_back.replace("'", "''") + "'" if hold_back is not None else ""
        json_pattern = "'" + pii.JSON_PREFILTER_PATTERN.replace("'", "''") + "'"
        docs = [] if hold_back is None else con.execute(
            f"""SELECT rid, {", ".join(f"CASE WHEN regexp_matches({name}, {pattern}) THEN {name} END"
                                       for name in SCRUBBED_FIELDS)},
                       messages::VARCHAR,
                       CASE WHEN regexp_matches(tags::VARCHAR, {json_pattern}) THEN tags END,
                       CASE WHEN regexp_matches(metadata::VARCHAR, {json_pattern}) THEN metadata::VARCHAR END
                FROM ({judged_accepted(stage_judged(), hold_back=hold_back, held=True)})"""
        ).fetchall()
        if docs:
            # The scrubbed values replace the record's own (acceptance does not change:
            # a placeholder is never blank).
            con.register("stage_fix", _scan_once(_pii_fixes(docs, mode, report)))
            _insert_accepted(con, day, source_file, fmt, judged_accepted(stage_judged(), fix="stage_fix"))
    finally:
        for name in ("stage_second", "stage_fix", "stage_judged"):
            con.unregister(name)


def _fast_pass(con, day, source_file, fmt, batch: pa.Table, hold_back: str | None,
               window: TsWindow) -> pa.Table | None:
    """Insert the records of the batch that pass the combined test; return the lines left
    for a second look (None when every record was taken).

    Mostly each record has a line of its own, and the batches of a file cover distinct
    lines: the lines taken are those of this file, in this batch's range, now in `logs`.
    Where lines hold several records (OTel spans), the lines left are those with fewer
    rows in `logs` than records (the caller then drops the records of theirs that were
    taken, see :func:`_untaken`).
    """
    records = pc.filter(batch.column("line"), pc.invert(batch.column("blank")))
    if len(records) == 0:
        return None
    accepted = fast_accepted_sql("stage_batch", pii_gate=hold_back, key_lists=_key_lists(batch), window=window)
    bounds = pc.min_max(records)
    several = _several_per_line(records)
    where = "day = ? AND source_file = ? AND source_line BETWEEN ? AND ?"
    held_before = (con.execute(f"SELECT count(*) FROM logs WHERE {where}",
                               [day, source_file, bounds["min"].as_py(), bounds["min"].as_py()]).fetchone()[0]
                   if several else 0)
    con.register("stage_batch", _scan_once(batch))
    with _fast_insert_settings(con):
        taken = _insert_accepted(con, day, source_file, fmt, accepted)
    if taken == len(records):
        return None
    if several:  # lines with fewer records taken than they hold (see _detailed_pass)
        return _lines_short(con, records, held_before, where,
                            [day, source_file, bounds["min"].as_py(), bounds["max"].as_py()])
    con.register("stage_batch", _scan_once(batch.select(["line", "blank"])))
    return con.sql(
        """SELECT line FROM stage_batch WHERE NOT blank
           EXCEPT
           SELECT source_line FROM logs WHERE day = ? AND source_file = ? AND source_line BETWEEN ? AND ?""",
        params=[day, source_file, bounds["min"].as_py(), bounds["max"].as_py()],
    ).to_arrow_table()


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
    with SHARED_SETTINGS.held(con, settings):
        yield


def _key_lists(batch: pa.Table, *, sample: int = 200, most: int = 4) -> tuple[tuple[str, ...], ...]:
    """Return the key lists (in order) of the first records of the batch, most common
    first: records written by one program mostly share one or a few. (A record mapped
    from another format is its canonical document, not its line.)"""
    head = batch.slice(0, sample)
    texts = pc.coalesce(head.column("doc"), head.column("text")).to_pylist()
    seen: Counter = Counter()
    for text in texts:
        try:
            doc = json.loads(text) if text else None
        except (ValueError, RecursionError):  # a broken record: judged later, as any other
            continue
        if isinstance(doc, dict):
            seen[tuple(doc)] += 1
    return tuple(keys for keys, _ in seen.most_common(most))


def _detailed_pass(con, day, source_file, fmt, batch: pa.Table, hold_back: str | None,
                   window: TsWindow) -> pa.Table | None:
    """Insert the accepted records of the batch, judged in detail, into `logs`; return
    the lines left for a second look (None when every record was taken).

    A line may hold several records (OTLP spans), and a batch may begin with the last
    records of a line the previous batch began: what the batch took of a line is what
    `logs` holds of it now, less (for its first line) what it held before. (Not a
    temporary table with ``RETURNING``, which a DuckLake table cannot do: its rows
    would stay in memory until the day's COMMIT.)
    """
    records = pc.filter(batch.column("line"), pc.invert(batch.column("blank")))
    if len(records) == 0:
        return None
    bounds = pc.min_max(records)
    first, last = bounds["min"].as_py(), bounds["max"].as_py()
    where = "day = ? AND source_file = ? AND source_line BETWEEN ? AND ?"
    held_before = con.execute(f"SELECT count(*) FROM logs WHERE {where}",
                              [day, source_file, first, first]).fetchone()[0]
    con.register("stage_batch", _scan_once(batch))
    con.register("stage_fix", _scan_once(FIX_SCHEMA.empty_table()))
    # Without filter pushdown: DuckDB would otherwise repeat the parse of every record
    # for each field the checks name (on OTel spans 3 GB of RSS and most of the time).
    with _fast_insert_settings(con):
        accepted = con.sql(accepted_sql("stage_batch", "stage_fix", hold_back=hold_back,
                                        window=window)).to_arrow_table()
    # Inserted from Arrow: an insert straight from the checks (which join) does not keep
    # its order, and DuckDB would hold its rows in memory until the day's COMMIT.
    con.register("stage_accepted", _scan_once(accepted))
    del accepted
    try:
        taken = _insert_accepted(con, day, source_file, fmt, "SELECT * FROM stage_accepted")
    finally:
        con.unregister("stage_accepted")
    if taken == len(records):
        return None
    return _lines_short(con, records, held_before, where, [day, source_file, first, last])


def _several_per_line(records: pa.Array) -> bool:
    """Return whether some line of a batch (its records' lines, in order) holds more
    than one record."""
    lines = records.to_numpy()
    return bool(len(lines) > 1 and (np.diff(lines) == 0).any())


def _lines_short(con, records: pa.Array, held_before: int, where: str, params: list) -> pa.Table:
    """Return the lines (a ``line`` table) of which `logs` holds fewer rows than the
    batch has records; ``held_before``: the rows of the batch's first line stored
    before it (a line a previous batch began), ``where`` with ``params``: the batch's
    lines of the file in `logs`."""
    wanted = Counter(records.to_pylist())
    wanted[params[2]] += held_before
    wanted.subtract(dict(con.execute(f"SELECT source_line, count(*) FROM logs WHERE {where} GROUP BY ALL",
                                     params).fetchall()))
    return pa.table({"line": pa.array([line for line, missing in wanted.items() if missing > 0], pa.int64())})


def _untaken(con, second: pa.Table, hold_back: str | None, window: TsWindow) -> pa.Table:
    """Return the rows of ``second`` (rows of a batch's lines the fast statement did not
    take whole) that it did not take: the statement, run again on just these rows,
    takes the same ones (it judges each row by itself)."""
    con.register("stage_taken", _scan_once(second))
    try:
        with _fast_insert_settings(con):
            taken = con.sql(f"SELECT rid FROM ({fast_accepted_sql('stage_taken', pii_gate=hold_back, window=window)})"
                            ).to_arrow_table().column(0)
    finally:
        con.unregister("stage_taken")
    return second.filter(pc.invert(pc.is_in(second.column("rid"), taken)))


def _insert_sql(accepted: str, *, table: str = "logs") -> str:
    """Return the INSERT into `logs` (or ``table``) of the records an
    :func:`accepted_sql` SELECT gives (parameters: day, source file, format)."""
    return f"""INSERT INTO {table} ({", ".join(LOG_COLUMNS)})
        SELECT log_id, ts, ?::DATE, source, input, output, context, model, prompt_name,
               prompt_version, feedback, messages, git_commit, session_id, user_id,
               latency_ms, prompt_tokens, completion_tokens, cost_usd, tags, metadata, pii,
               ?, ?, line, now()
        FROM ({accepted})"""


def _insert_rows(con, day: str, source_file: str, fmt: str, rows: pa.Table) -> int:
    """Insert accepted rows (``ACCEPTED_SCHEMA``) into `logs`; return how many."""
    con.register("stage_rows", _scan_once(_parallel(rows)))
    try:
        return _insert_accepted(con, day, source_file, fmt, "SELECT * FROM stage_rows")
    finally:
        con.unregister("stage_rows")


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
    for table in ("logs", "rejected_logs"):
        con.execute(f"DELETE FROM {table} WHERE day = ? AND source_file = ?", [day, source_file])


def _move_duplicates(con, day: str) -> None:
    """Keep one copy of each log id in `logs` and move the others to `duplicate_logs`
    (where the kept copy is) and `duplicate_rows` (their full rows).

    The kept copy is the earliest: lowest day, then file name, then line. That does not
    depend on the order days are ingested in: ingesting an earlier day that holds a
    log id moves a later day's copy out of `logs`, and ingesting a day again without
    the copy it kept brings the next copy back. Only log ids with more than one copy
    (in this day, or this day and another) are looked at; the counts of other days'
    files whose rows moved are updated in `ingest_files`.
    """
    # The day's log ids are grouped once (materialized): the ids it holds twice and the
    # joins with the other days both read that grouping (a stored day of a million ids:
    # 0.16 CPU-s instead of 0.38 for grouping them twice).
    con.execute(
        """CREATE OR REPLACE TEMP TABLE contested AS
        WITH today AS MATERIALIZED (SELECT log_id, count(*) AS copies FROM logs WHERE day = $day GROUP BY log_id)
        SELECT DISTINCT log_id FROM (
            SELECT log_id FROM today WHERE copies > 1
            UNION ALL
            SELECT l.log_id FROM logs l SEMI JOIN today USING (log_id) WHERE l.day <> $day
            UNION ALL
            SELECT r.log_id FROM duplicate_rows r SEMI JOIN today USING (log_id)
            UNION ALL
            -- copies elsewhere whose kept copy was on this day: it may be gone now
            SELECT log_id FROM duplicate_logs WHERE first_day = $day AND day <> $day
        )""",
        {"day": day},
    )
    if con.execute("SELECT count(*) FROM contested").fetchone()[0]:
        con.execute(
            """CREATE OR REPLACE TEMP TABLE copies AS
            SELECT *, row_number() OVER (PARTITION BY log_id
                                         ORDER BY day, source_file, source_line, ts, input, output) AS copy
            FROM (SELECT * FROM logs SEMI JOIN contested USING (log_id)
                  UNION ALL BY NAME
                  SELECT * FROM duplicate_rows SEMI JOIN contested USING (log_id))"""
        )
        # Every copy of a contested id is placed again from `copies`. (Duplicates
        # recorded without their row, by an older version, are left as they are.)
        con.execute("DELETE FROM logs WHERE log_id IN (SELECT log_id FROM contested)")
        con.execute("DELETE FROM duplicate_rows WHERE log_id IN (SELECT log_id FROM contested)")
        con.execute(
            """DELETE FROM duplicate_logs WHERE (day, source_file, line, log_id) IN
               (SELECT (day, source_file, source_line, log_id) FROM copies)"""
        )
        columns = ", ".join(LOG_COLUMNS)
        con.execute(f"INSERT INTO logs ({columns}) SELECT {columns} FROM copies WHERE copy = 1")
        con.execute(f"INSERT INTO duplicate_rows ({columns}) SELECT {columns} FROM copies WHERE copy > 1")
        con.execute(
            """INSERT INTO duplicate_logs (day, log_id, source_file, line, first_day, first_file, first_line)
               SELECT c.day, c.log_id, c.source_file, c.source_line, k.day, k.source_file, k.source_line
               FROM copies c JOIN copies k ON k.log_id = c.log_id AND k.copy = 1
               WHERE c.copy > 1"""
        )
        _recount_other_days(con, day)
        con.execute("DROP TABLE copies")
    con.execute("DROP TABLE contested")


def _recount_other_days(con, day: str) -> None:
    """Update the accepted and duplicate counts in `ingest_files` of the other days'
    files that had copies moved (their read and rejected counts do not change)."""
    files = con.execute(
        "SELECT DISTINCT day, source_file FROM copies WHERE day <> ?::DATE", [day]
    ).fetchall()
    for other_day, source_file in files:
        con.execute(
            """UPDATE ingest_files SET
                   accepted = (SELECT count(*) FROM logs WHERE day = $day AND source_file = $file),
                   duplicates = (SELECT count(*) FROM duplicate_logs WHERE day = $day AND source_file = $file)
               WHERE day = $day AND source_file = $file""",
            {"day": other_day, "file": source_file},
        )


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
        "partly_read_files": [Path(f.source_file).name for f in report.partly_read],
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
