"""NVIDIA data-flywheel records: OpenAI request/response logs without an id.

NVIDIA's data-flywheel blueprint logs ``{request, response, workload_id, client_id,
timestamp}`` (read as openai_chat, see :mod:`.openai`), and the datasets its
``src/scripts/aiva.py`` builds keep only ``response.choices[].message``: no
``response.id``, no usage, no top-level id. Such records get a log_id derived from
their content, :func:`content_log_id`: ``sha256:`` and the first 32 hex digits of the
SHA-256 of the record's JSON (keys sorted, compact). The same record always gets the
same id (so re-ingesting a file, or the same record twice, is a duplicate, not a new
log); any difference in request, response, workload, client or timestamp gives another.
The metadata says ``log_id_from: content``.
"""

from __future__ import annotations

import hashlib
import json
from typing import Any

CONTENT_ID_PREFIX = "sha256:"


def content_log_id(record: Any) -> str:
    """Return the stable log_id of a record that carries none: a hash of its JSON."""
    text = json.dumps(record, sort_keys=True, ensure_ascii=False, separators=(",", ":"), default=str)
    return CONTENT_ID_PREFIX + hashlib.sha256(text.encode("utf-8")).hexdigest()[:32]
