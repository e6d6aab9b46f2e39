"""All DuckDB access of flywheel: connections, the schema, and small table helpers.

Every other module gets its connection from :func:`connect`, so that where the data
lives (one DuckDB file today) is a setting and not a rewrite. DuckDB allows one
writing process per file; the orchestration layer makes sure writers take turns.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator

import duckdb

from flywheel.settings import Settings

# Columns of `logs` that other parts and users' own queries rely on come first.
SCHEMA = """
CREATE TABLE IF NOT EXISTS logs (
    log_id            VARCHAR NOT NULL,
    ts                TIMESTAMPTZ NOT NULL,
    day               DATE NOT NULL,
    source            VARCHAR NOT NULL,
    input             VARCHAR NOT NULL,
    output            VARCHAR NOT NULL,
    context           VARCHAR,
    model             VARCHAR,
    prompt_name       VARCHAR,
    prompt_version    VARCHAR,
    feedback          TINYINT,
    messages          JSON,
    git_commit        VARCHAR,
    session_id        VARCHAR,
    user_id           VARCHAR,
    latency_ms        DOUBLE,
    prompt_tokens     BIGINT,
    completion_tokens BIGINT,
    cost_usd          DOUBLE,
    tags              VARCHAR[],
    metadata          JSON,
    pii               VARCHAR[],
    source_file       VARCHAR NOT NULL,
    source_format     VARCHAR NOT NULL,
    source_line       BIGINT NOT NULL,
    ingested_at       TIMESTAMPTZ NOT NULL
);

CREATE TABLE IF NOT EXISTS rejected_logs (
    day          DATE NOT NULL,
    source_file  VARCHAR NOT NULL,
    line         BIGINT,
    reason       VARCHAR NOT NULL,
    field        VARCHAR,
    raw          VARCHAR,
    rejected_at  TIMESTAMPTZ NOT NULL
);

CREATE TABLE IF NOT EXISTS duplicate_logs (
    day          DATE NOT NULL,
    log_id       VARCHAR NOT NULL,
    source_file  VARCHAR NOT NULL,
    line         BIGINT,
    first_day    DATE,
    first_file   VARCHAR,
    first_line   BIGINT
);

CREATE TABLE IF NOT EXISTS ingest_files (
    day          DATE NOT NULL,
    source_file  VARCHAR NOT NULL,
    format       VARCHAR,
    read         BIGINT NOT NULL,
    accepted     BIGINT NOT NULL,
    rejected     BIGINT NOT NULL,
    duplicates   BIGINT NOT NULL,
    error        VARCHAR,
    ingested_at  TIMESTAMPTZ NOT NULL
);
"""

# Tables of the annotation loop (annotations, rejected_annotations, consensus, ...):
# owned by flywheel/annotations/.
ANNOTATION_SCHEMA = """
CREATE TABLE IF NOT EXISTS annotations (
    log_id         VARCHAR NOT NULL,
    annotator      VARCHAR NOT NULL,
    label          VARCHAR NOT NULL,
    value          TINYINT NOT NULL,
    comment        VARCHAR,
    created_at     TIMESTAMPTZ,
    span_start     BIGINT,
    span_end       BIGINT,
    source_file    VARCHAR NOT NULL,
    source_format  VARCHAR NOT NULL,
    line           BIGINT,
    imported_at    TIMESTAMPTZ NOT NULL,
    tool           VARCHAR NOT NULL,
    raw_label      VARCHAR,
    raw_value      VARCHAR
);

CREATE TABLE IF NOT EXISTS rejected_annotations (
    source_file    VARCHAR NOT NULL,
    line           BIGINT,
    reason         VARCHAR NOT NULL,
    raw            VARCHAR,
    rejected_at    TIMESTAMPTZ NOT NULL,
    detail         VARCHAR,
    source_format  VARCHAR
);

CREATE TABLE IF NOT EXISTS annotation_files (
    source_file    VARCHAR NOT NULL,
    sha256         VARCHAR NOT NULL,
    format         VARCHAR,
    read           BIGINT NOT NULL,
    accepted       BIGINT NOT NULL,
    rejected       BIGINT NOT NULL,
    duplicates     BIGINT NOT NULL,
    imported_at    TIMESTAMPTZ NOT NULL,
    skipped        BIGINT NOT NULL,
    error          VARCHAR,
    archived_to    VARCHAR
);

CREATE TABLE IF NOT EXISTS consensus (
    log_id         VARCHAR NOT NULL,
    label          VARCHAR NOT NULL,
    value          TINYINT,
    n_annotators   INTEGER NOT NULL,
    agreement      DOUBLE NOT NULL,
    status         VARCHAR NOT NULL,
    updated_at     TIMESTAMPTZ NOT NULL,
    n_positive     INTEGER NOT NULL
);

CREATE TABLE IF NOT EXISTS annotation_agreement (
    label          VARCHAR NOT NULL,
    annotator_a    VARCHAR,
    annotator_b    VARCHAR,
    method         VARCHAR,
    kappa          DOUBLE,
    n_items        BIGINT NOT NULL,
    observed       DOUBLE,
    updated_at     TIMESTAMPTZ NOT NULL
);

-- The items queued for people to label, per day (flywheel/annotations/queue.py).
CREATE TABLE IF NOT EXISTS annotation_queue (
    day            DATE NOT NULL,
    log_id         VARCHAR NOT NULL,
    strategy       VARCHAR NOT NULL,
    reason         VARCHAR NOT NULL,
    priority       INTEGER NOT NULL,
    queued_at      TIMESTAMPTZ NOT NULL,
    detail         JSON,
    seed           BIGINT
);
"""

# Tables of the slicing (slice_membership, slice_metrics, ...): owned by flywheel/slicing/.
SLICE_SCHEMA = """
CREATE TABLE IF NOT EXISTS slice_membership (
    day          DATE NOT NULL,
    log_id       VARCHAR NOT NULL,
    slice_type   VARCHAR NOT NULL,
    slice_value  VARCHAR NOT NULL
);

CREATE TABLE IF NOT EXISTS slice_metrics (
    day                      DATE NOT NULL,
    slice_type               VARCHAR NOT NULL,
    slice_value              VARCHAR NOT NULL,
    label                    VARCHAR,
    n                        BIGINT NOT NULL,
    share                    DOUBLE,
    n_signal                 BIGINT,
    failures                 BIGINT,
    failure_rate             DOUBLE,
    failure_low              DOUBLE,
    failure_high             DOUBLE,
    n_feedback               BIGINT,
    negative_feedback        BIGINT,
    negative_feedback_rate   DOUBLE,
    negative_feedback_low    DOUBLE,
    negative_feedback_high   DOUBLE,
    mean_hallucination       DOUBLE,
    mean_relevance           DOUBLE,
    latency_p50              DOUBLE,
    latency_p95              DOUBLE,
    prompt_tokens            BIGINT,
    completion_tokens        BIGINT,
    cost_usd                 DOUBLE,
    prev_n                   BIGINT,
    prev_failure_rate        DOUBLE,
    failure_rate_change_prev DOUBLE,
    trailing7_n              DOUBLE,
    trailing7_failure_rate   DOUBLE,
    failure_rate_change_7d   DOUBLE,
    fingerprint              UBIGINT,
    signal                   VARCHAR NOT NULL,
    computed_at              TIMESTAMPTZ NOT NULL
);

CREATE TABLE IF NOT EXISTS worst_slices (
    day           DATE NOT NULL,
    rank          INTEGER NOT NULL,
    slice_type    VARCHAR NOT NULL,
    slice_value   VARCHAR NOT NULL,
    label         VARCHAR,
    n_signal      BIGINT NOT NULL,
    failures      BIGINT NOT NULL,
    failure_rate  DOUBLE NOT NULL,
    failure_low   DOUBLE,
    failure_high  DOUBLE,
    rest_rate     DOUBLE,
    lift          DOUBLE,
    test          VARCHAR NOT NULL,
    p_value       DOUBLE NOT NULL,
    q_value       DOUBLE NOT NULL,
    aliases       VARCHAR[],
    signal        VARCHAR NOT NULL
);

CREATE TABLE IF NOT EXISTS slice_drift (
    day           DATE NOT NULL,
    slice_type    VARCHAR NOT NULL,
    slice_value   VARCHAR NOT NULL,
    label         VARCHAR,
    prev_day      DATE NOT NULL,
    prev_n_signal BIGINT NOT NULL,
    prev_failures BIGINT NOT NULL,
    prev_rate     DOUBLE NOT NULL,
    n_signal      BIGINT NOT NULL,
    failures      BIGINT NOT NULL,
    rate          DOUBLE NOT NULL,
    test          VARCHAR NOT NULL,
    p_value       DOUBLE NOT NULL,
    q_value       DOUBLE NOT NULL,
    signal        VARCHAR NOT NULL
);

CREATE TABLE IF NOT EXISTS slice_candidates (
    day           DATE NOT NULL,
    field         VARCHAR NOT NULL,
    term          VARCHAR NOT NULL,
    ngram         INTEGER NOT NULL,
    n             BIGINT NOT NULL,
    failures      BIGINT NOT NULL,
    rate          DOUBLE NOT NULL,
    rate_low      DOUBLE,
    rate_high     DOUBLE,
    overall_rate  DOUBLE,
    lift          DOUBLE,
    lift_low      DOUBLE,
    lift_high     DOUBLE,
    p_value       DOUBLE,
    q_value       DOUBLE,
    test          VARCHAR,
    in_rule       VARCHAR,
    signal        VARCHAR NOT NULL
);

CREATE TABLE IF NOT EXISTS topic_models (
    version          VARCHAR NOT NULL,
    fitted_at        TIMESTAMPTZ NOT NULL,
    trained_through  DATE,
    n_docs           BIGINT,
    n_topics         INTEGER,
    path             VARCHAR
);

CREATE TABLE IF NOT EXISTS topics (
    model_version  VARCHAR NOT NULL,
    topic_id       INTEGER NOT NULL,
    label          VARCHAR NOT NULL,
    top_terms      VARCHAR[],
    share          DOUBLE,
    matched_from   INTEGER
);
"""

# Model registry and classifier scores (#5). Filled in by the classifiers work.
MODEL_SCHEMA = """
"""

# LLM calls, judges and prompts (#6). Filled in by the judges and prompts work.
LLM_SCHEMA = """
"""

PROMPT_SCHEMA = """
"""


def all_schemas() -> str:
    """Return the DDL of every table flywheel keeps, in creation order."""
    return SCHEMA + ANNOTATION_SCHEMA + SLICE_SCHEMA + MODEL_SCHEMA + LLM_SCHEMA + PROMPT_SCHEMA


# Partition-owned tables: re-materializing a day replaces exactly these rows.
DAILY_TABLES = ("logs", "rejected_logs", "duplicate_logs", "ingest_files")


def connect(settings: Settings, *, read_only: bool = False) -> duckdb.DuckDBPyConnection:
    """Return a connection to the home's DuckDB file with the schema in place.

    The session time zone is UTC so that timestamps read and print the same on every
    machine.
    """
    path = settings.database_path
    path.parent.mkdir(parents=True, exist_ok=True)
    config: dict[str, object] = {}
    if settings.duckdb_threads:
        config["threads"] = settings.duckdb_threads
    if settings.duckdb_memory_limit:
        config["memory_limit"] = settings.duckdb_memory_limit
    if read_only and not path.exists():
        read_only = False  # nothing to read yet: create the file and its schema
    con = duckdb.connect(str(path), read_only=read_only, config=config)
    con.execute("SET TimeZone = 'UTC'")
    # Rows carry their own file and line: insertion order need not be kept, which lets
    # DuckDB insert in parallel.
    con.execute("SET preserve_insertion_order = false")
    if not read_only:
        con.execute(all_schemas())
    return con


@contextlib.contextmanager
def connection(settings: Settings, *, read_only: bool = False) -> Iterator[duckdb.DuckDBPyConnection]:
    """Yield a connection from :func:`connect` and close it afterwards."""
    con = connect(settings, read_only=read_only)
    try:
        yield con
    finally:
        con.close()


def table_exists(con: duckdb.DuckDBPyConnection, name: str) -> bool:
    """Return whether a table of that name exists in the main schema."""
    row = con.execute(
        "SELECT count(*) FROM information_schema.tables WHERE table_name = ?", [name]
    ).fetchone()
    return bool(row and row[0])



def schema_columns(table: str) -> list[tuple[str, str]]:
    """Return the (column, type) pairs of one table as the schema declares it."""
    schema = all_schemas()
    start = schema.index(f"CREATE TABLE IF NOT EXISTS {table} (")
    body = schema[schema.index("(", start) + 1 : schema.index(");", start)]
    columns = []
    for line in body.strip().splitlines():
        line = line.split("--", 1)[0].strip().rstrip(",")
        if not line or line.upper().startswith(("PRIMARY KEY", "UNIQUE", "CHECK")):
            continue
        name, sql_type, *_ = line.split()
        columns.append((name, sql_type))
    return columns
