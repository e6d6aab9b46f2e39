"""The prompt registry: templates, rendered versions, their status and lineage.

Where prompts live (all under ``settings.prompts_dir``, i.e. ``$FLYWHEEL_HOME/prompts/``):

- ``templates/<prompt_name>.txt``: the base template of one prompt name (as the logs'
  ``prompt_name`` carries it), written by people (``flywheel demo`` writes the demo
  application's). It is the system prompt of the application with one ``{few_shot}``
  place where the few-shot examples go. Other braces are left alone.
- ``<prompt_name>/<version>.txt``: every rendered version (candidates too), for review.
- ``<prompt_name>.txt`` and ``<prompt_name>.json``: the **champion**, which is what the
  application reads: the prompt text, and its version, text hash, few-shot example ids,
  label hash and evaluation id. Only promotion writes these two files.

A version is the first 16 hex digits of the SHA-256 of the rendered text (``text_hash``
is the whole digest), so the same text is always the same version. ``status`` is
``candidate``, ``champion`` or ``retired``; each name has at most one champion. Lineage:
``few_shot_ids`` (the exact example log ids), ``label_hash`` (hash of the consensus rows
the examples were chosen from), ``template_hash`` and ``eval_id`` (the evaluation in
``prompt_evals`` that promoted, or rejected, the version).
"""

from __future__ import annotations

import datetime as dt
import hashlib
import json
import os
import re
from dataclasses import asdict, dataclass
from pathlib import Path

import duckdb

from flywheel.settings import Settings

FEW_SHOT_PLACE = "{few_shot}"
NAME_PATTERN = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,127}$")
STATUSES = ("candidate", "champion", "retired")
CONTEXT_CHARS = 600  # context of an example shown in a prompt, at most


class PromptError(ValueError):
    """A template or prompt name that cannot be used; the message names the file."""


@dataclass(frozen=True)
class Template:
    """One base template: ``name`` (the prompt name), its text, file and hash."""

    name: str
    text: str
    path: Path
    hash: str


@dataclass(frozen=True)
class Example:
    """One few-shot example: an approved log's request and answer."""

    log_id: str
    input: str
    output: str
    context: str | None = None


@dataclass
class PromptVersion:
    """One row of the ``prompts`` table."""

    name: str
    version: str
    text_hash: str
    few_shot_ids: list[str]
    status: str
    path: str | None
    created_at: dt.datetime
    label_hash: str | None = None
    eval_id: str | None = None
    template_hash: str | None = None
    text: str = ""
    reason: str | None = None
    promoted_at: dt.datetime | None = None
    retired_at: dt.datetime | None = None

    def lineage(self) -> dict[str, object]:
        """Return the version's lineage as plain values (the champion's JSON file)."""
        return {
            "name": self.name,
            "version": self.version,
            "text_hash": self.text_hash,
            "few_shot_ids": list(self.few_shot_ids),
            "label_hash": self.label_hash,
            "eval_id": self.eval_id,
            "template_hash": self.template_hash,
            "reason": self.reason,
            "created_at": _iso(self.created_at),
            "promoted_at": _iso(self.promoted_at),
        }


_COLUMNS = [f for f in PromptVersion.__dataclass_fields__]


def content_hash(text: str) -> str:
    """Return the SHA-256 hex digest of ``text`` (UTF-8)."""
    return hashlib.sha256(text.encode("utf-8")).hexdigest()


def version_of(text: str) -> str:
    """Return the version of a rendered prompt: the first 16 hex digits of its hash."""
    return content_hash(text)[:16]


def check_name(name: str) -> str:
    """Return ``name`` if it can name prompt files, else raise :class:`PromptError`."""
    if not NAME_PATTERN.match(name or ""):
        raise PromptError(
            f"prompt name {name!r} cannot name a file: use letters, digits, '.', '_' and '-' "
            "(starting with a letter or digit)"
        )
    return name


def templates_dir(settings: Settings) -> Path:
    """Return the folder of the base templates, ``$FLYWHEEL_HOME/prompts/templates``."""
    return settings.prompts_dir / "templates"


def load_templates(settings: Settings) -> tuple[dict[str, Template], list[str]]:
    """Read every ``templates/<name>.txt``.

    Returns the usable templates by prompt name, and one problem message per file that
    cannot be used (bad name, not UTF-8, empty, no or several ``{few_shot}`` places);
    those files are skipped, never half-used.
    """
    folder = templates_dir(settings)
    templates: dict[str, Template] = {}
    problems: list[str] = []
    if not folder.is_dir():
        return templates, problems
    for path in sorted(folder.glob("*.txt")):
        name = path.stem
        try:
            check_name(name)
            text = path.read_text(encoding="utf-8")
        except PromptError as exc:
            problems.append(f"{path}: {exc}")
            continue
        except UnicodeDecodeError as exc:
            problems.append(f"{path}: not UTF-8 text ({exc.reason} at byte {exc.start})")
            continue
        except OSError as exc:
            problems.append(f"{path}: cannot be read ({exc.strerror})")
            continue
        count = text.count(FEW_SHOT_PLACE)
        if not text.strip():
            problems.append(f"{path}: the template is empty")
        elif count != 1:
            problems.append(
                f"{path}: the template must have exactly one {FEW_SHOT_PLACE} place (it has {count})"
            )
        else:
            templates[name] = Template(name=name, text=text, path=path, hash=content_hash(text))
    return templates, problems


def write_template(settings: Settings, name: str, text: str) -> Path:
    """Write the base template of ``name`` (must contain ``{few_shot}`` once); returns its path."""
    check_name(name)
    if text.count(FEW_SHOT_PLACE) != 1:
        raise PromptError(f"template of {name!r} must have exactly one {FEW_SHOT_PLACE} place")
    path = templates_dir(settings) / f"{name}.txt"
    _write_atomic(path, text)
    return path


def render_examples(examples: list[Example]) -> str:
    """Return the few-shot block for ``examples`` ("" when there are none).

    Each example shows the question, the retrieved context (first
    :data:`CONTEXT_CHARS` characters) when there was one, and the approved answer.
    """
    if not examples:
        return ""
    parts = ["Examples of answers that people approved:"]
    for number, ex in enumerate(examples, 1):
        lines = [f"### Example {number}", f"Question: {ex.input.strip()}"]
        context = (ex.context or "").strip()
        if context:
            if len(context) > CONTEXT_CHARS:
                context = context[:CONTEXT_CHARS].rstrip() + " ..."
            lines.append(f"Context: {context}")
        lines.append(f"Answer: {ex.output.strip()}")
        parts.append("\n".join(lines))
    return "\n\n".join(parts)


def render(template: str, examples: list[Example]) -> str:
    """Return ``template`` with its ``{few_shot}`` place replaced by the examples' block."""
    if template.count(FEW_SHOT_PLACE) != 1:
        raise PromptError(f"a template must have exactly one {FEW_SHOT_PLACE} place")
    return template.replace(FEW_SHOT_PLACE, render_examples(examples))


# ---------------------------------------------------------------------------------------
# The table
# ---------------------------------------------------------------------------------------


def _rows(con: duckdb.DuckDBPyConnection, where: str, params: list) -> list[PromptVersion]:
    cols = ", ".join(_COLUMNS)
    result = con.execute(f"SELECT {cols} FROM prompts WHERE {where} ORDER BY created_at, version", params)
    return [PromptVersion(**dict(zip(_COLUMNS, row))) for row in result.fetchall()]


def get(con: duckdb.DuckDBPyConnection, name: str, version: str) -> PromptVersion | None:
    """Return the registry row of one version, or None."""
    rows = _rows(con, "name = ? AND version = ?", [name, version])
    return rows[0] if rows else None


def champion(con: duckdb.DuckDBPyConnection, name: str) -> PromptVersion | None:
    """Return the champion of ``name``, or None when it has none yet."""
    rows = _rows(con, "name = ? AND status = 'champion'", [name])
    return rows[-1] if rows else None


def versions(con: duckdb.DuckDBPyConnection, name: str | None = None) -> list[PromptVersion]:
    """Return every registered version (of ``name``, or of all names), oldest first."""
    if name is None:
        return _rows(con, "true", [])
    return _rows(con, "name = ?", [name])


def latest_candidate(con: duckdb.DuckDBPyConnection, name: str) -> PromptVersion | None:
    """Return the newest candidate of ``name`` (the one the next evaluation takes), or None."""
    rows = _rows(con, "name = ? AND status = 'candidate'", [name])
    return rows[-1] if rows else None


def lineage_markdown(con: duckdb.DuckDBPyConnection) -> str:
    """Return a table of every name's champion and newest candidate with their lineage:
    example ids, label hash and evaluation id."""
    lines = ["| prompt | status | version | examples | label hash | eval id | reason |",
             "|---|---|---|---|---|---|---|"]
    for row in _rows(con, "status IN ('champion', 'candidate')", []):
        if row.status == "candidate" and latest_candidate(con, row.name).version != row.version:
            continue
        lines.append(f"| {row.name} | {row.status} | {row.version} | {', '.join(row.few_shot_ids) or '-'} | "
                     f"{row.label_hash or '-'} | {row.eval_id or '-'} | {row.reason or ''} |")
    return "\n".join(lines)


def version_path(settings: Settings, name: str, version: str) -> Path:
    """Return where the text of one version is kept: ``prompts/<name>/<version>.txt``."""
    return settings.prompts_dir / check_name(name) / f"{version}.txt"


def champion_paths(settings: Settings, name: str) -> tuple[Path, Path]:
    """Return the champion's files the application reads: ``prompts/<name>.txt`` and ``.json``."""
    check_name(name)
    return settings.prompts_dir / f"{name}.txt", settings.prompts_dir / f"{name}.json"


def register(
    con: duckdb.DuckDBPyConnection,
    settings: Settings,
    *,
    name: str,
    text: str,
    few_shot_ids: list[str],
    label_hash: str | None,
    template_hash: str | None,
    reason: str,
    status: str = "candidate",
) -> tuple[PromptVersion, bool]:
    """Register a rendered prompt and write its version file.

    Returns the registry row and whether it is new. A text already registered keeps
    its row (same version, same example ids); a retired version proposed again becomes a
    candidate again. Status ``champion`` is for a name's first prompt only (use
    :func:`promote` otherwise).
    """
    if status not in ("candidate", "champion"):
        raise ValueError(f"status {status!r}: register as 'candidate' or 'champion'")
    version = version_of(text)
    existing = get(con, name, version)
    path = version_path(settings, name, version)
    if not path.exists():
        _write_atomic(path, text)
    if existing is not None:
        if existing.status == "retired" and status == "candidate":
            con.execute(
                "UPDATE prompts SET status = 'candidate', retired_at = NULL, reason = ? WHERE name = ? AND version = ?",
                [reason, name, version],
            )
            existing.status, existing.reason, existing.retired_at = "candidate", reason, None
        return existing, False
    if status == "champion" and champion(con, name) is not None:
        raise ValueError(f"{name} already has a champion: promote the new version instead")
    now = _now()
    row = PromptVersion(
        name=name, version=version, text_hash=content_hash(text), few_shot_ids=list(few_shot_ids),
        status=status, path=settings.source_name(path), created_at=now, label_hash=label_hash,
        template_hash=template_hash, text=text, reason=reason,
        promoted_at=now if status == "champion" else None,
    )
    values = asdict(row)
    con.execute(
        f"INSERT INTO prompts ({', '.join(_COLUMNS)}) VALUES ({', '.join('?' for _ in _COLUMNS)})",
        [values[c] for c in _COLUMNS],
    )
    if status == "champion":
        publish(settings, row)
    return row, True


def set_eval(con: duckdb.DuckDBPyConnection, *, name: str, version: str, eval_id: str) -> None:
    """Record on a version the evaluation that decided about it."""
    con.execute("UPDATE prompts SET eval_id = ? WHERE name = ? AND version = ?", [eval_id, name, version])


def promote(
    con: duckdb.DuckDBPyConnection, settings: Settings, *, name: str, version: str, eval_id: str | None
) -> PromptVersion:
    """Make ``version`` the champion of ``name`` and write the champion files.

    The previous champion is retired. Returns the new champion's row.
    """
    row = get(con, name, version)
    if row is None:
        raise ValueError(f"{name} has no registered version {version}")
    now = _now()
    con.execute("BEGIN TRANSACTION")
    try:
        con.execute(
            "UPDATE prompts SET status = 'retired', retired_at = ? WHERE name = ? AND status = 'champion' AND version <> ?",
            [now, name, version],
        )
        con.execute(
            "UPDATE prompts SET status = 'champion', promoted_at = ?, eval_id = coalesce(?, eval_id), retired_at = NULL "
            "WHERE name = ? AND version = ?",
            [now, eval_id, name, version],
        )
        con.execute("COMMIT")
    except Exception:
        con.execute("ROLLBACK")
        raise
    row = get(con, name, version)
    publish(settings, row)
    return row


def publish(settings: Settings, row: PromptVersion) -> tuple[Path, Path]:
    """Write a champion where the application reads it; returns the text and JSON paths."""
    text_path, meta_path = champion_paths(settings, row.name)
    _write_atomic(text_path, row.text)
    _write_atomic(meta_path, json.dumps(row.lineage(), indent=2, sort_keys=True) + "\n")
    return text_path, meta_path


def published(settings: Settings, name: str) -> dict | None:
    """Return the lineage JSON of the champion file of ``name``, or None when absent/unreadable."""
    _, meta_path = champion_paths(settings, name)
    try:
        return json.loads(meta_path.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None


def ensure_champions(
    con: duckdb.DuckDBPyConnection, settings: Settings, templates: dict[str, Template]
) -> list[PromptVersion]:
    """Give every template without a champion its first champion: the template rendered
    with no examples, so there is always something to compare a candidate against.

    Also rewrites a champion's files when they are missing or stale. Returns the
    champions created now.
    """
    created = []
    for name, template in sorted(templates.items()):
        current = champion(con, name)
        if current is None:
            row, _ = register(
                con, settings, name=name, text=render(template.text, []), few_shot_ids=[],
                label_hash=None, template_hash=template.hash, status="champion",
                reason="base template without examples (first champion)",
            )
            if row.status != "champion":  # the same text was registered before: promote it
                row = promote(con, settings, name=name, version=row.version, eval_id=None)
            created.append(row)
        elif (published(settings, name) or {}).get("version") != current.version or not champion_paths(settings, name)[0].exists():
            publish(settings, current)
    return created


def _write_atomic(path: Path, text: str) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    tmp.write_text(text, encoding="utf-8")
    os.replace(tmp, path)


def _now() -> dt.datetime:
    return dt.datetime.now(dt.timezone.utc)


def _iso(value: dt.datetime | None) -> str | None:
    return value.isoformat() if value is not None else None
