"""The human labels of the flywheel: import from the inbox, map to the schema, agree.

- :mod:`.formats`: read canonical CSV/JSON lines, Label Studio, Argilla v2 and Langfuse
  score exports into parsed records with their file and line.
- :mod:`.values`: label names and values of each tool -> ``hallucination``/``relevance``
  and 0/1 (defaults, overridable in ``$FLYWHEEL_HOME/annotations/mapping.toml``).
- :mod:`.importer`: :func:`import_inbox` / :func:`import_file` into `annotations`,
  `pending_annotations` (labels before their logs; :func:`join_pending`),
  `rejected_annotations` and `annotation_files`, archiving processed files.
- :mod:`.consensus`: :func:`build_consensus` into `consensus` and
  `annotation_agreement`, with Cohen's and Fleiss' kappa.
"""

from flywheel.annotations.consensus import (
    AGREEMENT_WARNING_THRESHOLD,
    ConsensusReport,
    build_consensus,
    cohen_kappa,
    fleiss_kappa,
)
from flywheel.annotations.importer import (
    REJECTION_REASONS,
    FileReport,
    ImportReport,
    archive_dir,
    import_file,
    import_inbox,
    inbox_files,
    join_pending,
    report_markdown,
)
from flywheel.annotations.values import LABELS, MappingError, ValueMapping

__all__ = [
    "AGREEMENT_WARNING_THRESHOLD",
    "LABELS",
    "REJECTION_REASONS",
    "ConsensusReport",
    "FileReport",
    "ImportReport",
    "MappingError",
    "ValueMapping",
    "archive_dir",
    "build_consensus",
    "cohen_kappa",
    "fleiss_kappa",
    "import_file",
    "import_inbox",
    "inbox_files",
    "join_pending",
    "report_markdown",
]
