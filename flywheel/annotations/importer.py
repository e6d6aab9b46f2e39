"""Import the annotation files of the inbox: nothing lost, nothing doubled.

:func:`import_inbox` imports every new file of ``$FLYWHEEL_HOME/annotations/inbox/``
(:func:`import_file` one file) and moves it to ``annotations/archive/`` afterwards
(files are never deleted). Each file is one transaction and ends up in
`annotation_files` with its SHA-256: a file whose content was imported before is not
read again, so importing twice adds nothing.

Every label record read from a file ends up in exactly one of:

- `annotations` (accepted),
- `pending_annotations` when its log_id is not in `logs` (yet): the label arrived before
  its log, or the day's ingest failed. Pending labels are not lost: every import (and
  every ingest, see :func:`join_pending`) moves those whose log has landed into
  `annotations`, and the file's counts in `annotation_files` follow;
- `rejected_annotations` with the file, line, a reason of :data:`REJECTION_REASONS`, a
  detail and the raw text, or
- the duplicate count: the same (log_id, annotator, label, value, span, tool) as an
  annotation already stored (or pending), or as an earlier record of the same file.

so that per file ``read = accepted + rejected + duplicates + pending``. Records that are
not labels (cancelled Label Studio annotations, discarded Argilla responses, Langfuse
scores that are not ``ANNOTATION``) are counted as ``skipped``, outside ``read``.

Files still being written are not read half: an inbox file is imported only once its
size and modification time have stood still for ``FLYWHEEL_INBOX_SETTLE_SECONDS`` (the
import waits that long for a file that just changed; one that changes meanwhile is left
for the next import). And an archived file that grew after it was imported (a copy still
writing into the file that was moved) is read again: the records imported before count
as duplicates, the rest are added.
"""

from __future__ import annotations

import datetime as dt
import hashlib
import json
import os
import time
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import duckdb
import pyarrow as pa

from flywheel import pii
from flywheel.annotations.formats import TOOL_OF_FORMAT, ParsedRecord, UnreadableAnnotationFile, parse_file
from flywheel.annotations.values import LABELS, ValueMapping
from flywheel.crashpoints import crash_point
from flywheel.settings import Settings

REJECTION_REASONS: tuple[str, ...] = (
    "malformed",                # not parseable, or not the shape of its format
    "missing log_id",           # no log id (a Label Studio task without data.log_id, data.id or id)
    "missing annotator",
    "unknown label",            # not a label of the schema, nor mapped to one
    "missing value",
    "unmappable value",         # a value the mapping cannot turn into 0 or 1 (or several values)
    "unsupported result type",  # a Label Studio result that is not choices/labels (e.g. rectanglelabels)
    "bad span",                 # span_start/span_end not integers >= 0, end before start, or one missing
    "bad created_at",           # created_at not an ISO-8601 time or epoch seconds
)
"""Every reason a record can be rejected for, as written to `rejected_annotations`."""

IGNORED_SUFFIXES = (".tmp", ".part", ".partial", ".crdownload", "~")
"""Inbox files still being written (by these names) are left for the next import."""

Progress = Callable[[str], None]

_STAGE_SCHEMA = pa.schema([
    ("idx", pa.int64()),
    ("line", pa.int64()),
    ("log_id", pa.string()),
    ("annotator", pa.string()),
    ("label", pa.string()),
    ("value", pa.int8()),
    ("comment", pa.string()),
    ("created_at", pa.timestamp("us", tz="UTC")),
    ("span_start", pa.int64()),
    ("span_end", pa.int64()),
    ("raw_label", pa.string()),
    ("raw_value", pa.string()),
    ("raw", pa.string()),
])
_REJECT_SCHEMA = pa.schema([
    ("line", pa.int64()),
    ("reason", pa.string()),
    ("detail", pa.string()),
    ("raw", pa.string()),
])


@dataclass
class FileReport:
    """What happened to one annotation file.

    ``read`` counts label records; ``skipped`` the records that are not labels;
    ``pending`` the labels whose log is not in `logs` yet (they wait in
    `pending_annotations`). ``already_imported`` is set when the same content was imported
    before (nothing is read then); ``error`` when the file is not a readable annotation
    file; ``regrown`` when it is an archived file read again because it grew.
    """

    source_file: str
    sha256: str | None = None
    format: str | None = None
    read: int = 0
    accepted: int = 0
    rejected: int = 0
    duplicates: int = 0
    pending: int = 0
    skipped: int = 0
    size_bytes: int | None = None
    already_imported: bool = False
    regrown: bool = False
    error: str | None = None
    archived_to: str | None = None
    rejected_reasons: dict[str, int] = field(default_factory=dict)
    skipped_reasons: dict[str, int] = field(default_factory=dict)

    @property
    def reconciles(self) -> bool:
        """Return whether every record read is accepted, rejected, a duplicate or pending."""
        return self.read == self.accepted + self.rejected + self.duplicates + self.pending


@dataclass
class PendingJoin:
    """What :func:`join_pending` did: pending labels whose log has landed."""

    joined: int = 0       # moved into `annotations`
    duplicates: int = 0   # identical to an annotation stored meanwhile: counted as duplicates
    waiting: int = 0      # still pending afterwards


@dataclass
class ImportReport:
    """What one import of the inbox did; the `annotations` asset shows it as metadata.

    ``unsettled`` names the inbox files left for the next import because they were still
    being written; ``pending`` says what became of the labels waiting for their logs.
    """

    files: list[FileReport] = field(default_factory=list)
    unsettled: list[str] = field(default_factory=list)
    pending: PendingJoin = field(default_factory=PendingJoin)

    def total(self, name: str) -> int:
        """Return the sum of one count (``read``, ``accepted``, ...) over the files."""
        return sum(getattr(f, name) for f in self.files)

    @property
    def rejected_reasons(self) -> dict[str, int]:
        """Return the number of rejected records per reason, over all files."""
        return dict(sum((Counter(f.rejected_reasons) for f in self.files), Counter()))

    @property
    def skipped_reasons(self) -> dict[str, int]:
        """Return the number of skipped (not label) records per reason, over all files."""
        return dict(sum((Counter(f.skipped_reasons) for f in self.files), Counter()))

    @property
    def reconciles(self) -> bool:
        """Return whether every file's counts reconcile."""
        return all(f.reconciles for f in self.files)

    def markdown(self) -> str:
        """Return a markdown table of the per-file counts (the reconciliation)."""
        return report_markdown(self)

    def summary(self) -> dict[str, Any]:
        """Return the headline numbers as plain values (for asset metadata)."""
        return {
            "files": len(self.files),
            "new_files": sum(1 for f in self.files if not f.already_imported and not f.error),
            "already_imported_files": sum(1 for f in self.files if f.already_imported),
            "unreadable_files": [Path(f.source_file).name for f in self.files if f.error],
            "read": self.total("read"),
            "accepted": self.total("accepted"),
            "rejected": self.total("rejected"),
            "duplicates": self.total("duplicates"),
            "pending": self.total("pending"),
            "skipped": self.total("skipped"),
            "pending_joined": self.pending.joined,
            "pending_waiting": self.pending.waiting,
            "unsettled_files": self.unsettled,
            "regrown_files": [Path(f.source_file).name for f in self.files if f.regrown],
            "reconciles": self.reconciles,
            "rejected_reasons": self.rejected_reasons,
            "skipped_reasons": self.skipped_reasons,
        }


def report_markdown(report: ImportReport) -> str:
    """Return a markdown table of an import's per-file counts and what became of each file."""
    lines = [
        "| file | format | read | accepted | rejected | duplicates | pending | skipped | reconciles | note |",
        "|---|---|---:|---:|---:|---:|---:|---:|---|---|",
    ]
    for f in report.files:
        notes = [f.error] if f.error else ["already imported"] if f.already_imported else []
        notes += ["archived file grew: read again"] if f.regrown else []
        notes += [f"{reason}: {n}" for reason, n in sorted(f.rejected_reasons.items())]
        note = "; ".join(notes)
        lines.append(
            f"| {Path(f.source_file).name} | {f.format or '?'} | {f.read} | {f.accepted} | {f.rejected} "
            f"| {f.duplicates} | {f.pending} | {f.skipped} | {'yes' if f.reconciles else '**NO**'} "
            f"| {note.replace('|', '/')} |"
        )
    for name in report.unsettled:
        lines.append(f"| {name} | | | | | | | | | still being written: left for the next import |")
    return "\n".join(lines)


def archive_dir(settings: Settings) -> Path:
    """Return the folder that imported inbox files are moved to."""
    return settings.home / "annotations" / "archive"


def inbox_files(settings: Settings) -> list[Path]:
    """Return the inbox files an import would read, in name order."""
    inbox = settings.annotations_inbox
    if not inbox.is_dir():
        return []
    return sorted(
        p for p in inbox.iterdir()
        if p.is_file() and not p.name.startswith(".") and not p.name.endswith(IGNORED_SUFFIXES)
    )


def import_inbox(
    con: duckdb.DuckDBPyConnection,
    settings: Settings,
    *,
    progress: Progress | None = None,
    mapping: ValueMapping | None = None,
    sleep: Callable[[float], None] = time.sleep,
) -> ImportReport:
    """Join the pending labels whose log has landed, then import every settled file of the
    annotations inbox (and every archived file that grew) and archive it.

    ``mapping`` defaults to :meth:`ValueMapping.load` (the defaults plus the home's
    ``annotations/mapping.toml``). Returns an :class:`ImportReport` with one
    :class:`FileReport` per file, already-imported and unreadable files included.
    """
    say = progress or (lambda _msg: None)
    mapping = mapping or ValueMapping.load(settings)
    report = ImportReport()
    report.pending = join_pending(con, settings)
    if report.pending.joined or report.pending.duplicates:
        say(f"{report.pending.joined} pending labels joined their logs "
            f"({report.pending.duplicates} duplicates); {report.pending.waiting} still wait")
    regrown = regrown_archive_files(con, settings)
    ready, unsettled = settled_files(regrown + inbox_files(settings),
                                     settle_seconds=settings.inbox_settle_seconds, sleep=sleep)
    for path in unsettled:
        report.unsettled.append(path.name)
        say(f"{path.name}: still being written (changed within the last "
            f"{settings.inbox_settle_seconds:g} s): left for the next import")
    for path in ready:
        file_report = import_file(con, settings, path, mapping=mapping)
        report.files.append(file_report)
        if file_report.regrown:
            say(f"{path.name}: grew after it was imported, read again: {file_report.accepted} accepted, "
                f"{file_report.duplicates} duplicates")
        elif file_report.already_imported:
            say(f"{path.name}: already imported, archived")
        elif file_report.error:
            say(f"{path.name}: not imported: {file_report.error}")
        else:
            say(f"{path.name} ({file_report.format}): {file_report.accepted} accepted, "
                f"{file_report.rejected} rejected, {file_report.duplicates} duplicates, "
                f"{file_report.pending} pending (log not ingested yet), {file_report.skipped} skipped")
    report.pending.waiting = con.execute("SELECT count(*) FROM pending_annotations").fetchone()[0]
    return report


def settled_files(
    paths: list[Path],
    *,
    settle_seconds: float,
    sleep: Callable[[float], None] = time.sleep,
) -> tuple[list[Path], list[Path]]:
    """Return (settled, unsettled) of ``paths``: a file is settled when its size and
    modification time have not changed for ``settle_seconds``.

    Files changed more recently are waited for (at most ``settle_seconds``) and looked at
    again; one that changed meanwhile, or vanished, is not settled.
    """
    def look(path: Path) -> tuple[int, int] | None:
        try:
            stat = path.stat()
        except FileNotFoundError:
            return None
        return stat.st_size, stat.st_mtime_ns

    first = {path: look(path) for path in paths}
    now_ns = time.time_ns()
    settle_ns = int(settle_seconds * 1e9)
    young = {p: now_ns - sig[1] for p, sig in first.items() if sig is not None and now_ns - sig[1] < settle_ns}
    if young:
        sleep((settle_ns - min(young.values())) / 1e9)
    settled, unsettled = [], []
    for path, sig in first.items():
        if sig is None:
            continue
        if path in young and look(path) != sig:
            unsettled.append(path)
        else:
            settled.append(path)
    return settled, unsettled


def regrown_archive_files(con: duckdb.DuckDBPyConnection, settings: Settings) -> list[Path]:
    """Return the archived files that are larger (or smaller) now than when last read.

    An import moves a file to the archive; a copy that was still writing into it goes on
    writing there, so the archive holds the complete file: it is read again.
    """
    rows = con.execute(
        """SELECT archived_to, arg_max(size_bytes, imported_at) FROM annotation_files
           WHERE archived_to IS NOT NULL AND size_bytes IS NOT NULL GROUP BY 1 ORDER BY 1"""
    ).fetchall()
    grown = []
    for archived_to, size in rows:
        path = settings.home / archived_to if not Path(archived_to).is_absolute() else Path(archived_to)
        try:
            if path.stat().st_size != size:
                grown.append(path)
        except FileNotFoundError:
            continue
    return grown


def join_pending(con: duckdb.DuckDBPyConnection, settings: Settings | None = None) -> PendingJoin:
    """Move the pending labels whose log is now in `logs` into `annotations` (one
    transaction) and bring their files' counts in `annotation_files` up to date.

    A pending label identical to an annotation stored meanwhile counts as a duplicate.
    Returns a :class:`PendingJoin`; running it again does nothing more.
    """
    result = PendingJoin()
    if not con.execute("SELECT count(*) FROM pending_annotations p SEMI JOIN logs l USING (log_id)").fetchone()[0]:
        result.waiting = con.execute("SELECT count(*) FROM pending_annotations").fetchone()[0]
        return result
    now = dt.datetime.now(dt.timezone.utc)
    con.execute("BEGIN TRANSACTION")
    try:
        con.execute(
            """
            CREATE OR REPLACE TEMP TABLE _pending_joined AS
            SELECT p.*, EXISTS (
                       SELECT 1 FROM annotations a
                       WHERE a.tool = p.tool AND a.log_id = p.log_id AND a.annotator = p.annotator
                         AND a.label = p.label AND a.value = p.value
                         AND coalesce(a.span_start, -1) = coalesce(p.span_start, -1)
                         AND coalesce(a.span_end, -1) = coalesce(p.span_end, -1)
                   ) AS duplicate
            FROM pending_annotations p SEMI JOIN logs l USING (log_id)
            """
        )
        con.execute(
            """
            INSERT INTO annotations (log_id, annotator, label, value, comment, created_at, span_start, span_end,
                                     source_file, source_format, line, imported_at, tool, raw_label, raw_value)
            SELECT log_id, annotator, label, value, comment, created_at, span_start, span_end,
                   source_file, source_format, line, $now, tool, raw_label, raw_value
            FROM _pending_joined WHERE NOT duplicate ORDER BY source_file, line
            """,
            {"now": now},
        )
        con.execute(
            """
            UPDATE annotation_files f
            SET accepted = f.accepted + j.joined, duplicates = f.duplicates + j.dups,
                pending = f.pending - j.joined - j.dups
            FROM (SELECT source_file, file_sha256, count(*) FILTER (NOT duplicate) AS joined,
                         count(*) FILTER (duplicate) AS dups
                  FROM _pending_joined GROUP BY ALL) j
            WHERE f.source_file = j.source_file AND f.sha256 = j.file_sha256 AND f.error IS NULL
            """
        )
        result.joined, result.duplicates = con.execute(
            "SELECT count(*) FILTER (NOT duplicate), count(*) FILTER (duplicate) FROM _pending_joined"
        ).fetchone()
        con.execute("DELETE FROM pending_annotations WHERE log_id IN (SELECT log_id FROM logs)")
        con.execute("DROP TABLE _pending_joined")
        result.waiting = con.execute("SELECT count(*) FROM pending_annotations").fetchone()[0]
        if settings is not None:
            crash_point(settings, "pending:before_commit")
        con.execute("COMMIT")
    except BaseException:
        con.execute("ROLLBACK")
        raise
    return result


def import_file(
    con: duckdb.DuckDBPyConnection,
    settings: Settings,
    path: Path,
    *,
    mapping: ValueMapping | None = None,
    force: bool = False,
    archive: bool | None = None,
) -> FileReport:
    """Import one annotation file in one transaction and return its :class:`FileReport`.

    A file whose content (SHA-256) was imported before is not read again unless
    ``force`` (then its records come out as duplicates). ``archive`` (default: when
    the file is in the inbox) moves the file to :func:`archive_dir` afterwards.
    """
    path = Path(path)
    if archive is None:
        archive = path.resolve().parent == settings.annotations_inbox.resolve()
    sha256, size = _fingerprint(path)
    report = FileReport(source_file=settings.source_name(path), sha256=sha256, size_bytes=size)
    # An archived file read again (it grew): it stays where it is, under its own name.
    report.regrown = path.resolve().parent == archive_dir(settings).resolve()
    if report.regrown:
        report.archived_to = report.source_file
    previous = None if force else con.execute(
        "SELECT format FROM annotation_files WHERE sha256 = ? AND error IS NULL LIMIT 1", [report.sha256]
    ).fetchone()
    if previous is not None:
        report.already_imported, report.format = True, previous[0]
        if report.regrown:  # its new content was imported under another name: seen
            con.execute("UPDATE annotation_files SET size_bytes = ? WHERE archived_to = ?",
                        [report.size_bytes, report.archived_to])
    else:
        mapping = mapping or ValueMapping.load(settings)
        _import(con, settings, path, report, mapping)
        crash_point(settings, "import:after_commit")
    if archive:
        report.archived_to = settings.source_name(_archive(path, report.sha256, archive_dir(settings)))
    if report.archived_to and not report.already_imported:
        con.execute("UPDATE annotation_files SET archived_to = ? WHERE source_file = ? AND sha256 = ?",
                    [report.archived_to, report.source_file, report.sha256])
    elif report.archived_to:
        # Imported by a run that died before it archived the file: say where it went now.
        con.execute("UPDATE annotation_files SET archived_to = ? WHERE source_file = ? AND sha256 = ? "
                    "AND archived_to IS NULL", [report.archived_to, report.source_file, report.sha256])
    return report


# ---------------------------------------------------------------------------------------
# One file
# ---------------------------------------------------------------------------------------


def _import(con, settings: Settings, path: Path, report: FileReport, mapping: ValueMapping) -> None:
    now = dt.datetime.now(dt.timezone.utc)
    try:
        report.format, records = parse_file(path)
        records = list(records)
    except UnreadableAnnotationFile as exc:
        report.error = exc.reason
        con.execute(
            "INSERT INTO annotation_files (source_file, sha256, format, read, accepted, rejected, duplicates, "
            "imported_at, skipped, error, pending, size_bytes) VALUES (?, ?, NULL, 0, 0, 0, 0, ?, 0, ?, 0, ?)",
            [report.source_file, report.sha256, now, report.error, report.size_bytes],
        )
        return
    tool = TOOL_OF_FORMAT[report.format]
    staged: list[dict[str, Any]] = []
    rejected: list[dict[str, Any]] = []
    skipped: Counter[str] = Counter()
    for record in records:
        if record.skip:
            skipped[record.skip] += 1
            continue
        row, reason, detail = _check(record, tool, mapping)
        if row is None:
            rejected.append({"line": record.line, "reason": reason, "detail": detail, "raw": record.raw})
        else:
            row["idx"] = len(staged)
            staged.append(row)
    if settings.pii_mode == "redact":
        _redact(staged, rejected)
    report.read = len(staged) + len(rejected)
    report.skipped, report.skipped_reasons = sum(skipped.values()), dict(skipped)
    con.execute("BEGIN TRANSACTION")
    try:
        pending, duplicates = _store(con, report, tool, staged, now)
        _store_rejected(con, report, rejected, now)
        report.rejected = len(rejected)
        report.duplicates = duplicates
        report.pending = pending
        report.accepted = len(staged) - pending - duplicates
        report.rejected_reasons = dict(Counter(r["reason"] for r in rejected))
        con.execute(
            "INSERT INTO annotation_files (source_file, sha256, format, read, accepted, rejected, duplicates, "
            "imported_at, skipped, error, pending, size_bytes) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, NULL, ?, ?)",
            [report.source_file, report.sha256, report.format, report.read, report.accepted,
             report.rejected, report.duplicates, now, report.skipped, report.pending, report.size_bytes],
        )
        crash_point(settings, "import:before_commit")
        con.execute("COMMIT")
    except BaseException:
        con.execute("ROLLBACK")
        raise


def _store(con, report: FileReport, tool: str, staged: list[dict], now: dt.datetime) -> tuple[int, int]:
    """Insert the new annotations of ``staged``; those whose log_id is not in `logs` (yet)
    go to `pending_annotations`.

    Returns (pending records, duplicates).
    """
    if not staged:
        return 0, 0
    batch = pa.Table.from_pylist(staged, schema=_STAGE_SCHEMA)
    con.register("_annotation_batch", batch)
    try:
        con.execute(
            """
            CREATE OR REPLACE TEMP TABLE _annotation_judged AS
            WITH known AS (
                SELECT b.*, EXISTS (SELECT 1 FROM logs l WHERE l.log_id = b.log_id) AS known
                FROM _annotation_batch b
            ), ranked AS (
                SELECT *, row_number() OVER (
                    PARTITION BY log_id, annotator, label, value, span_start, span_end ORDER BY idx
                ) AS nth
                FROM known
            ), stored AS (
                SELECT DISTINCT log_id, annotator, label, value, s, e FROM (
                    SELECT log_id, annotator, label, value,
                           coalesce(span_start, -1) AS s, coalesce(span_end, -1) AS e
                    FROM annotations
                    WHERE tool = $tool AND log_id IN (SELECT log_id FROM _annotation_batch)
                    UNION ALL
                    SELECT log_id, annotator, label, value,
                           coalesce(span_start, -1) AS s, coalesce(span_end, -1) AS e
                    FROM pending_annotations
                    WHERE tool = $tool AND log_id IN (SELECT log_id FROM _annotation_batch)
                )
            )
            SELECT r.*,
                   CASE WHEN r.nth > 1 OR s.log_id IS NOT NULL THEN 'duplicate'
                        WHEN NOT r.known THEN 'pending'
                        ELSE 'new' END AS status
            FROM ranked r
            LEFT JOIN stored s
              ON s.log_id = r.log_id AND s.annotator = r.annotator AND s.label = r.label
             AND s.value = r.value AND s.s = coalesce(r.span_start, -1) AND s.e = coalesce(r.span_end, -1)
            """,
            {"tool": tool},
        )
    finally:
        con.unregister("_annotation_batch")
    con.execute(
        """
        INSERT INTO annotations (log_id, annotator, label, value, comment, created_at, span_start, span_end,
                                 source_file, source_format, line, imported_at, tool, raw_label, raw_value)
        SELECT log_id, annotator, label, value, comment, created_at, span_start, span_end,
               $file, $format, line, $now, $tool, raw_label, raw_value
        FROM _annotation_judged WHERE status = 'new' ORDER BY idx
        """,
        {"file": report.source_file, "format": report.format, "now": now, "tool": tool},
    )
    con.execute(
        """
        INSERT INTO pending_annotations (log_id, annotator, label, value, comment, created_at, span_start,
                                         span_end, source_file, source_format, line, read_at, tool, raw_label,
                                         raw_value, file_sha256, raw)
        SELECT log_id, annotator, label, value, comment, created_at, span_start, span_end,
               $file, $format, line, $now, $tool, raw_label, raw_value, $sha256, raw
        FROM _annotation_judged WHERE status = 'pending' ORDER BY idx
        """,
        {"file": report.source_file, "format": report.format, "now": now, "tool": tool, "sha256": report.sha256},
    )
    pending, duplicates = con.execute(
        "SELECT count(*) FILTER (status = 'pending'), count(*) FILTER (status = 'duplicate') FROM _annotation_judged"
    ).fetchone()
    con.execute("DROP TABLE _annotation_judged")
    return int(pending), int(duplicates)


def _redact(staged: list[dict], rejected: list[dict]) -> None:
    """Replace personal data and secrets in comments and raw texts (PII guardrail) before
    they are stored: comments become the judges' few-shot reasons sent to an LLM."""
    for row in staged:
        for name in ("comment", "raw"):
            row[name] = pii.scan(row[name])[0]
    for row in rejected:
        for name in ("raw", "detail"):
            row[name] = pii.scan(row[name])[0]


def _store_rejected(con, report: FileReport, rejected: list[dict], now: dt.datetime) -> None:
    if not rejected:
        return
    con.register("_annotation_rejects", pa.Table.from_pylist(rejected, schema=_REJECT_SCHEMA))
    try:
        con.execute(
            """
            INSERT INTO rejected_annotations (source_file, line, reason, raw, rejected_at, detail, source_format)
            SELECT $file, line, reason, raw, $now, detail, $format FROM _annotation_rejects
            """,
            {"file": report.source_file, "format": report.format, "now": now},
        )
    finally:
        con.unregister("_annotation_rejects")


# ---------------------------------------------------------------------------------------
# Checks of one record (everything but the database)
# ---------------------------------------------------------------------------------------


class _Rejected(Exception):
    def __init__(self, reason: str, detail: str | None = None):
        super().__init__(reason)
        self.reason, self.detail = reason, detail


def _check(record: ParsedRecord, tool: str, mapping: ValueMapping) -> tuple[dict | None, str | None, str | None]:
    """Return (staged row, None, None) for a good record, else (None, reason, detail)."""
    try:
        return _row(record, tool, mapping), None, None
    except _Rejected as exc:
        return None, exc.reason, exc.detail


def _row(record: ParsedRecord, tool: str, mapping: ValueMapping) -> dict:
    if record.reject:
        raise _Rejected(record.reject, record.detail)
    log_id = _scalar_text(record.log_id)
    if log_id is None:
        raise _Rejected("missing log_id")
    annotator = _scalar_text(record.annotator)
    if annotator is None:
        raise _Rejected("missing annotator")
    label = mapping.label_for(tool, record.label)
    raw_value = record.value
    if label is None and record.span_label is not None:
        # A span labelled e.g. "Hallucination" under a name that is not a label: the span's
        # own label names the label, and marking the span says "yes".
        label = mapping.label_for(tool, record.span_label)
        raw_value = 1 if label else raw_value
    if label is None:
        raise _Rejected("unknown label", f"{record.label!r} is not one of {', '.join(LABELS)} "
                                         "(nor mapped to one in the mapping)")
    if raw_value is None:
        raise _Rejected("missing value", f"no value for {label}")
    value = mapping.value_for(tool, label, raw_value)
    if value is None:
        raise _Rejected("unmappable value", f"{raw_value!r} is not a value of {label} (1/0)")
    span_start, span_end = _span(record.span_start, record.span_end)
    created_at = _timestamp(record.created_at)
    comment = record.comment
    if comment is not None and not isinstance(comment, str):
        comment = json.dumps(comment, ensure_ascii=False, default=str)
    return {
        "line": record.line,
        "log_id": log_id,
        "annotator": mapping.annotator_for(annotator),
        "label": label,
        "value": value,
        "comment": comment,
        "created_at": created_at,
        "span_start": span_start,
        "span_end": span_end,
        "raw_label": None if record.label is None else str(record.label),
        "raw_value": None if record.value is None else str(record.value),
        "raw": record.raw,
    }


def _scalar_text(value: Any) -> str | None:
    """Return a string id (numbers as text) or None for missing, empty or structured values."""
    if value is None or isinstance(value, (dict, list, bool)):
        return None
    if isinstance(value, float) and value.is_integer():
        value = int(value)
    text = str(value).strip()
    return text or None


def _integer(value: Any) -> int | None:
    if isinstance(value, bool):
        return None
    if isinstance(value, int):
        return value
    if isinstance(value, float):
        return int(value) if value.is_integer() else None
    try:
        return int(str(value).strip())
    except ValueError:
        return None


def _span(start: Any, end: Any) -> tuple[int | None, int | None]:
    if start is None and end is None:
        return None, None
    if start is None or end is None:
        raise _Rejected("bad span", f"span_start={start!r}, span_end={end!r}: both or neither")
    s, e = _integer(start), _integer(end)
    if s is None or e is None or s < 0 or e < s:
        raise _Rejected("bad span", f"span_start={start!r}, span_end={end!r}: integers with 0 <= start <= end")
    return s, e


def _timestamp(raw: Any) -> dt.datetime | None:
    """Return an aware UTC datetime from ISO-8601 text or epoch seconds (or milliseconds)."""
    if raw is None:
        return None
    number = None
    if isinstance(raw, (int, float)) and not isinstance(raw, bool):
        number = float(raw)
    elif isinstance(raw, str):
        try:
            number = float(raw)
        except ValueError:
            number = None
    try:
        if number is not None:
            seconds = number / 1000 if abs(number) >= 1e11 else number
            return dt.datetime.fromtimestamp(seconds, dt.timezone.utc)
        text = str(raw).strip()
        if text.endswith(("Z", "z")):
            text = text[:-1] + "+00:00"
        value = dt.datetime.fromisoformat(text)
    except (ValueError, OverflowError, OSError):
        raise _Rejected("bad created_at", f"{raw!r} is not an ISO-8601 time or epoch seconds") from None
    if value.tzinfo is None:
        value = value.replace(tzinfo=dt.timezone.utc)
    return value.astimezone(dt.timezone.utc)


# ---------------------------------------------------------------------------------------
# Files
# ---------------------------------------------------------------------------------------


def _fingerprint(path: Path) -> tuple[str, int]:
    """Return the SHA-256 and the size of the bytes of ``path`` (read once)."""
    digest, size = hashlib.sha256(), 0
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            digest.update(block)
            size += len(block)
    return digest.hexdigest(), size


def _sha256(path: Path) -> str:
    return _fingerprint(path)[0]


def _archive(path: Path, sha256: str, folder: Path) -> Path:
    """Move ``path`` into ``folder`` and return where it went; never overwrite other content.

    A different file of the same name already archived keeps its name; this one gets
    the first 12 hex digits of its hash before the suffixes.
    """
    folder.mkdir(parents=True, exist_ok=True)
    target = folder / path.name
    if target.exists() and _sha256(target) != sha256:
        stem, dot, suffixes = path.name.partition(".")
        target = folder / f"{stem}.{sha256[:12]}{dot}{suffixes}" if dot else folder / f"{stem}.{sha256[:12]}"
    # Same content under the target name (an earlier copy): replacing it loses nothing.
    os.replace(path, target)
    return target

