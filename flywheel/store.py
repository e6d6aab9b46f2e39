"""All DuckDB access of flywheel: connections, the schema, and small table helpers.

Every other module gets its connection from :func:`connect`, so that where the data
lives (one DuckDB file today) is a setting and not a rewrite. DuckDB allows one
writing process per file; the orchestration layer makes sure writers take turns.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from pathlib import Path

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
"""

# Tables of the slicing (slice_membership, slice_metrics, ...): owned by flywheel/slicing/.
SLICE_SCHEMA = """
"""

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
        con.execute(SCHEMA + ANNOTATION_SCHEMA + SLICE_SCHEMA)
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


def database_file(settings: Settings) -> Path:
    """Return the path of the DuckDB file (for messages and the README)."""
    return settings.database_path


def schema_columns(table: str) -> list[tuple[str, str]]:
    """Return the (column, type) pairs of one table as :data:`SCHEMA` declares it."""
    start = SCHEMA.index(f"CREATE TABLE IF NOT EXISTS {table} (")
    body = SCHEMA[SCHEMA.index("(", start) + 1 : SCHEMA.index(");", start)]
    columns = []
    for line in body.strip().splitlines():
        name, sql_type, *_ = line.strip().rstrip(",").split()
        columns.append((name, sql_type))
    return columns
