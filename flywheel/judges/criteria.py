"""The criteria LLM judges decide: built in (hallucination, relevance) and from files.

A criterion is a yes/no question about one logged answer. ``verdict = true`` has the
polarity of the human label it is aligned with (``label``): for ``hallucination`` true
means hallucinated, for ``relevance`` true means relevant.

User-defined criteria live in ``$FLYWHEEL_HOME/judges/*.toml``; each ``[judges.<name>]``
table is one criterion (a file may hold several, and a name that is built in replaces
the built-in one)::

    [judges.faithfulness]
    label = "hallucination"        # consensus label it is aligned with (default: the name)
    question = "Does the answer state anything the context does not support?"
    true_means = "some claim is not supported by the context"
    false_means = "every claim is supported by the context"
    guidance = "Ignore style; judge facts only."   # optional
    uses_context = true                              # optional, default true

A file that cannot be read, or a table that lacks a field or has one of the wrong type,
is skipped and reported (:class:`CriteriaReport.problems` names the file and the field);
the other criteria still run.
"""

from __future__ import annotations

import hashlib
import tomllib
from dataclasses import dataclass, field
from pathlib import Path

from flywheel.settings import Settings

REQUIRED_FIELDS = ("question", "true_means", "false_means")
OPTIONAL_FIELDS = {"label": str, "guidance": str, "uses_context": bool}


@dataclass(frozen=True)
class Criterion:
    """One yes/no question a judge answers; ``source`` is "builtin" or the file path."""

    name: str
    question: str
    true_means: str
    false_means: str
    label: str
    guidance: str = ""
    uses_context: bool = True
    source: str = "builtin"

    def template(self) -> str:
        """Return the judge's instructions (the system message) for this criterion."""
        lines = [
            "You are a careful evaluator of answers given by an AI assistant.",
            f"Criterion: {self.name}.",
            f"Question: {self.question}",
            f"Answer true when {self.true_means}.",
            f"Answer false when {self.false_means}.",
        ]
        if self.guidance:
            lines.append(self.guidance)
        if self.uses_context:
            lines.append("Use the context (retrieved passages or source document), when given, as the ground truth.")
        lines.append(
            'Reply with a JSON object only: {"verdict": true or false, "reason": "<one short sentence>"}.'
        )
        return "\n".join(lines)

    def template_hash(self) -> str:
        """Return the content hash (12 hex digits of SHA-256) of :meth:`template`."""
        return hashlib.sha256(self.template().encode("utf-8")).hexdigest()[:12]


BUILTIN: dict[str, Criterion] = {
    "hallucination": Criterion(
        name="hallucination",
        label="hallucination",
        question="Does the answer contain claims that are not supported by the context or are factually wrong?",
        true_means="the answer states at least one fact that the context does not support, contradicts the "
        "context, or is false (the answer is hallucinated)",
        false_means="every factual claim in the answer is supported by the context or is common knowledge, "
        "or the answer makes no factual claim",
    ),
    "relevance": Criterion(
        name="relevance",
        label="relevance",
        question="Does the answer address what the user asked?",
        true_means="the answer responds to the user's request (it is relevant), even if it is incomplete",
        false_means="the answer is off topic, answers a different question, or ignores the request",
        uses_context=False,
    ),
}


@dataclass
class CriteriaReport:
    """The criteria in force and what was wrong with the files (file: problem)."""

    criteria: dict[str, Criterion] = field(default_factory=dict)
    problems: list[str] = field(default_factory=list)
    files: list[str] = field(default_factory=list)


def judges_dir(settings: Settings) -> Path:
    """Return the folder of user-defined criteria: ``$FLYWHEEL_HOME/judges``."""
    return settings.home / "judges"


def load_criteria(settings: Settings) -> CriteriaReport:
    """Return the built-in criteria plus those of ``$FLYWHEEL_HOME/judges/*.toml``."""
    report = CriteriaReport(criteria=dict(BUILTIN))
    folder = judges_dir(settings)
    for path in sorted(folder.glob("*.toml")) if folder.is_dir() else []:
        name_of_file = settings.source_name(path)
        report.files.append(name_of_file)
        try:
            data = tomllib.loads(path.read_text(encoding="utf-8"))
        except (OSError, UnicodeDecodeError, tomllib.TOMLDecodeError) as exc:
            report.problems.append(f"{name_of_file}: cannot be read ({exc})")
            continue
        tables = data.get("judges")
        if not isinstance(tables, dict) or not tables:
            report.problems.append(f"{name_of_file}: no [judges.<name>] table")
            continue
        for name, table in tables.items():
            criterion, problem = _criterion(name, table, name_of_file)
            if problem:
                report.problems.append(problem)
            else:
                report.criteria[name] = criterion
    return report


def _criterion(name: str, table: object, source: str) -> tuple[Criterion | None, str | None]:
    where = f"{source}: [judges.{name}]"
    if not isinstance(table, dict):
        return None, f"{where} is not a table"
    if not name.replace("_", "").replace("-", "").isalnum():
        return None, f"{where}: the name may hold only letters, digits, '_' and '-'"
    values: dict[str, object] = {}
    for key in REQUIRED_FIELDS:
        value = table.get(key)
        if not isinstance(value, str) or not value.strip():
            return None, f"{where}: field {key!r} is missing or not a non-empty string"
        values[key] = value.strip().rstrip(".")
    for key, kind in OPTIONAL_FIELDS.items():
        if key in table:
            if not isinstance(table[key], kind):
                return None, f"{where}: field {key!r} must be a {kind.__name__}"
            values[key] = table[key].strip() if kind is str else table[key]
    unknown = sorted(set(table) - set(REQUIRED_FIELDS) - set(OPTIONAL_FIELDS))
    if unknown:
        return None, f"{where}: unknown field(s) {', '.join(unknown)}"
    values.setdefault("label", name)
    return Criterion(name=name, source=source, **values), None
