"""Read annotation files of every supported tool into :class:`ParsedRecord` objects.

One parsed record is one label claim: one annotator's value of one label for one log
(plus, for span labels, one span). Records keep the file's line and raw text so that
a rejection can point at them. This module only reads: mapping names and values to the
label schema, and the checks against the database, are :mod:`.values` and
:mod:`.importer`.

One module per tool (:mod:`.canonical`, :mod:`.queue_csv`, :mod:`.label_studio`,
:mod:`.argilla`, :mod:`.langfuse`), :mod:`.reading` for text, JSON and CSV with their
lines, :mod:`.detection` for telling formats apart, :mod:`.records` for the record type.

Formats (:func:`parse_file` detects them from the content, not the file name):

=================  ===========  =====================================================
format             tool         what one record is
=================  ===========  =====================================================
canonical_csv      canonical    a row ``log_id,annotator,label,value[,comment,created_at,
                                span_start,span_end]`` (comma, tab or semicolon)
canonical_json     canonical    an object with the same keys (JSON lines or an array)
label_studio       label_studio a ``choices`` or ``labels`` result of a not-cancelled
                                annotation of a task (JSON export: array, or lines)
label_studio_min   label_studio a filled label column of a JSON-MIN export row (one row
                                per annotation, task data and one column per control)
label_studio_csv   label_studio the same rows as a CSV or TSV export
argilla            argilla      a response of one user to one question of a record
                                (``record.to_dict()``, or the flattened ``to_list()``)
langfuse_scores    langfuse     a score row with ``source`` = ``ANNOTATION`` (CSV export,
                                JSON-encoded date cells unwrapped, or score objects as JSON)
wide_csv           canonical    a filled cell of a label column (``hallucination``,
                                ``relevance``) of a row with ``log_id`` and ``annotator``:
                                the queue CSV of the outbox, filled in by a person
=================  ===========  =====================================================

Log ids: canonical ``log_id``; Label Studio ``data.log_id``, else ``data.id``, else the
task id as ``ls-<id>`` (tasks with none of these are rejected: ``missing log_id``;
JSON-MIN/CSV rows: ``log_id``, else ``ls-<id>``);
Argilla ``metadata.log_id``, else ``fields.log_id``, else the record ``id``; Langfuse
``traceId``.

Annotators: Label Studio ``completed_by`` as ``label-studio:<user id>`` whether it is
an id or an object (so that one person is one annotator in every export), the e-mail
when the object has no id; Argilla the response's ``user_id``; Langfuse the
``authorUserId`` column, else ``authorUserName``, else ``authorUserEmail``, else
``annotator``/``author``/``authorUserId``/``user``/``email`` in the score's metadata,
else ``langfuse``; Label Studio JSON-MIN/CSV the ``annotator`` column (an e-mail).

Not labels, so counted as *skipped* rather than read: cancelled Label Studio
annotations, annotations without results, Argilla responses with status ``discarded``
or ``draft``, Langfuse scores whose source is not ``ANNOTATION`` (API, EVAL).
"""

from __future__ import annotations

from flywheel.annotations.formats.detection import detect_format, parse_file
from flywheel.annotations.formats.queue_csv import WIDE_LABEL_COLUMNS
from flywheel.annotations.formats.records import (
    CANONICAL_FIELDS,
    RAW_LIMIT,
    TOOL_OF_FORMAT,
    ParsedRecord,
    UnreadableAnnotationFile,
)

__all__ = [
    "CANONICAL_FIELDS",
    "RAW_LIMIT",
    "TOOL_OF_FORMAT",
    "WIDE_LABEL_COLUMNS",
    "ParsedRecord",
    "UnreadableAnnotationFile",
    "detect_format",
    "parse_file",
]
