"""All DuckDB access of flywheel: connections, the schema, and small table helpers.

Every other module gets its connection from :func:`connect`, so that where the data
lives (one DuckDB file today) is a setting and not a rewrite. DuckDB allows one
writing process per file; the orchestration layer makes sure writers take turns.
"""

from __future__ import annotations

import contextlib
import errno
import importlib.util
import random
import re
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import TypeVar

import duckdb

from flywheel.settings import Settings

# Columns of `logs` that other parts and users' own queries rely on come first. The long
# texts are compressed with FSST, which DuckDB picks for them anyway: named here, it spares
# DuckDB trying a dictionary on every row group of them (measured: about 2% of a canonical ingest's CPU).
SCHEMA = """
CREATE TABLE IF NOT EXISTS logs (
    log_id            VARCHAR NOT NULL,
    ts                TIMESTAMPTZ NOT NULL,
    day               DATE NOT NULL,
    source            VARCHAR NOT NULL,
    input             VARCHAR NOT NULL USING COMPRESSION fsst,
    output            VARCHAR NOT NULL USING COMPRESSION fsst,
    context           VARCHAR USING COMPRESSION fsst,
    model             VARCHAR,
    prompt_name       VARCHAR,
    prompt_version    VARCHAR,
    feedback          TINYINT,
    messages          JSON USING COMPRESSION fsst,
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

-- The full row of each duplicate (`duplicate_logs` says where it was first seen), so that
-- a copy takes the place of the kept one when the day holding that is ingested again
-- without it: the earliest copy is kept, whatever order the days are ingested in.
CREATE TABLE IF NOT EXISTS duplicate_rows (
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
    archived_to    VARCHAR,
    pending        BIGINT DEFAULT 0,  -- records waiting in pending_annotations for their log
    size_bytes     BIGINT             -- the size read: an archived file that grew is read again
);

-- Labels whose log_id is not in `logs` yet (they arrived before their logs, or the day's
-- ingest failed): they wait here and join `annotations` when their log lands.
CREATE TABLE IF NOT EXISTS pending_annotations (
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
    read_at        TIMESTAMPTZ NOT NULL,
    tool           VARCHAR NOT NULL,
    raw_label      VARCHAR,
    raw_value      VARCHAR,
    file_sha256    VARCHAR NOT NULL,
    raw            VARCHAR
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

# Model registry and classifier scores (#5): owned by flywheel/classifiers/.
MODEL_SCHEMA = """
CREATE TABLE IF NOT EXISTS models (
    version          VARCHAR NOT NULL,
    task             VARCHAR NOT NULL,
    status           VARCHAR NOT NULL,   -- candidate | champion | retired
    trained_at       TIMESTAMPTZ NOT NULL,
    data_hash        VARCHAR NOT NULL,
    code_version     VARCHAR NOT NULL,
    settings         JSON,
    metrics          JSON,
    artifact_path    VARCHAR,
    reason           VARCHAR,
    artifact_sha256  VARCHAR,
    n_train          BIGINT,
    n_eval           BIGINT,
    promoted_at      TIMESTAMPTZ,
    retired_at       TIMESTAMPTZ
);

CREATE TABLE IF NOT EXISTS log_scores (
    log_id         VARCHAR NOT NULL,
    day            DATE NOT NULL,
    task           VARCHAR NOT NULL,
    model_version  VARCHAR NOT NULL,
    score          DOUBLE,
    scored_at      TIMESTAMPTZ NOT NULL,
    trusted        BOOLEAN             -- the model passes the trust floor for the log's source (NULL: written before the flag; counts as trusted)
);
"""

# LLM calls, judges and prompts (#6). Filled in by the judges and prompts work.
LLM_SCHEMA = """
-- Every chat request, paid or served from the cache (flywheel/llm/): the cost ledger and
-- the cache (a request_hash with status 'ok' is never sent again).
CREATE TABLE IF NOT EXISTS llm_calls (
    request_hash       VARCHAR NOT NULL,
    model              VARCHAR NOT NULL,
    purpose            VARCHAR,
    status             VARCHAR NOT NULL,
    cached             BOOLEAN NOT NULL,
    prompt_tokens      BIGINT,
    completion_tokens  BIGINT,
    latency_ms         DOUBLE,
    cost_usd           DOUBLE,
    called_at          TIMESTAMPTZ NOT NULL,
    response           VARCHAR,
    error              VARCHAR,
    base_url           VARCHAR,
    run_id             VARCHAR
);

-- One verdict per log, criterion and judge prompt version (flywheel/judges/).
CREATE TABLE IF NOT EXISTS judge_verdicts (
    log_id          VARCHAR NOT NULL,
    criterion       VARCHAR NOT NULL,
    prompt_version  VARCHAR NOT NULL,
    verdict         BOOLEAN,
    reason          VARCHAR,
    parse_error     VARCHAR,
    judged_at       TIMESTAMPTZ NOT NULL,
    request_hash    VARCHAR,
    status          VARCHAR,   -- ok | parse_error | error (the request failed)
    holdout         BOOLEAN,   -- one of the criterion's held-out alignment items
    error           VARCHAR
);

-- Agreement of each judge prompt version with the human consensus on a held-out set.
CREATE TABLE IF NOT EXISTS judge_alignment (
    criterion       VARCHAR NOT NULL,
    prompt_version  VARCHAR NOT NULL,
    kappa           DOUBLE,
    tpr             DOUBLE,
    tnr             DOUBLE,
    n               BIGINT NOT NULL,
    n_pos           BIGINT NOT NULL,
    n_neg           BIGINT NOT NULL,
    parse_failures  BIGINT NOT NULL,
    trusted         BOOLEAN NOT NULL,
    evaluated_at    TIMESTAMPTZ NOT NULL,
    tp              BIGINT,
    tn              BIGINT,
    fp              BIGINT,
    fn              BIGINT,
    errors          BIGINT,
    accuracy        DOUBLE,
    min_kappa       DOUBLE,
    label_hash      VARCHAR,
    few_shot_ids    VARCHAR[]
);

-- The judge prompt versions (content hash of the rendered template) and their text.
CREATE TABLE IF NOT EXISTS judge_prompts (
    criterion       VARCHAR NOT NULL,
    prompt_version  VARCHAR NOT NULL,
    model           VARCHAR NOT NULL,
    template_hash   VARCHAR NOT NULL,
    few_shot_ids    VARCHAR[],
    source          VARCHAR,
    messages        JSON NOT NULL,
    created_at      TIMESTAMPTZ NOT NULL
);
"""

PROMPT_SCHEMA = """
-- The prompt registry (flywheel/prompts/registry.py): every rendered prompt version,
-- its few-shot example ids and its lineage (label_hash: the consensus rows it was built
-- from; eval_id: the evaluation that promoted or rejected it).
CREATE TABLE IF NOT EXISTS prompts (
    name           VARCHAR NOT NULL,
    version        VARCHAR NOT NULL,
    text_hash      VARCHAR NOT NULL,
    few_shot_ids   VARCHAR[],
    status         VARCHAR NOT NULL,
    path           VARCHAR,
    created_at     TIMESTAMPTZ NOT NULL,
    label_hash     VARCHAR,
    eval_id        VARCHAR,
    template_hash  VARCHAR,
    text           VARCHAR,
    reason         VARCHAR,
    promoted_at    TIMESTAMPTZ,
    retired_at     TIMESTAMPTZ
);

-- The few-shot examples chosen for each prompt name (flywheel/prompts/few_shot.py).
CREATE TABLE IF NOT EXISTS few_shot_examples (
    prompt_name    VARCHAR NOT NULL,
    rank           INTEGER NOT NULL,
    log_id         VARCHAR NOT NULL,
    reason         VARCHAR NOT NULL,
    worst_slices   VARCHAR[],
    relevance      DOUBLE,
    max_similarity DOUBLE,
    mmr            DOUBLE,
    label_hash     VARCHAR NOT NULL,
    selected_at    TIMESTAMPTZ NOT NULL
);

-- The fixed evaluation set of each prompt name (flywheel/prompts/evaluate.py).
CREATE TABLE IF NOT EXISTS prompt_eval_sets (
    eval_set_id    VARCHAR NOT NULL,
    prompt_name    VARCHAR NOT NULL,
    position       INTEGER NOT NULL,
    log_id         VARCHAR NOT NULL,
    created_at     TIMESTAMPTZ NOT NULL
);

-- One row per metric per evaluation of a candidate against the champion.
CREATE TABLE IF NOT EXISTS prompt_evals (
    eval_id            VARCHAR NOT NULL,
    prompt_name        VARCHAR NOT NULL,
    champion_version   VARCHAR NOT NULL,
    candidate_version  VARCHAR NOT NULL,
    metric             VARCHAR NOT NULL,
    champion_score     DOUBLE,
    candidate_score    DOUBLE,
    p_value            DOUBLE,
    n                  BIGINT NOT NULL,
    promoted           BOOLEAN NOT NULL,
    evaluated_at       TIMESTAMPTZ NOT NULL,
    test               VARCHAR,
    eval_set_id        VARCHAR,
    decision           VARCHAR,
    detail             JSON
);
"""


def all_schemas() -> str:
    """Return the DDL of every table flywheel keeps, in creation order."""
    return SCHEMA + ANNOTATION_SCHEMA + SLICE_SCHEMA + MODEL_SCHEMA + LLM_SCHEMA + PROMPT_SCHEMA


# Partition-owned tables: re-materializing a day replaces exactly these rows.
DAILY_TABLES = ("logs", "rejected_logs", "duplicate_logs", "duplicate_rows", "ingest_files")


def connect(settings: Settings, *, read_only: bool = False) -> duckdb.DuckDBPyConnection:
    """Return a connection to the home's tables with the schema in place.

    ``FLYWHEEL_STORAGE=duckdb`` (default): the home's DuckDB file, one writing process at a
    time. ``FLYWHEEL_STORAGE=ducklake``: the same tables in a DuckLake (see
    :func:`_connect_lake`), which several processes may write at once. Either way the
    session time zone is UTC so that timestamps read and print the same on every machine.
    """
    config: dict[str, object] = {}
    if settings.duckdb_threads:
        config["threads"] = settings.duckdb_threads
    if settings.duckdb_memory_limit:
        config["memory_limit"] = settings.duckdb_memory_limit
    if settings.storage == "ducklake":
        return _connect_lake(settings, read_only=read_only, config=config)
    path = settings.database_path
    path.parent.mkdir(parents=True, exist_ok=True)
    if read_only and not path.exists():
        read_only = False  # nothing to read yet: create the file and its schema
    con = duckdb.connect(str(path), read_only=read_only, config=config)
    con.execute("SET TimeZone = 'UTC'")
    # Rows carry their own file and line: insertion order need not be kept, which lets
    # DuckDB insert in parallel.
    con.execute("SET preserve_insertion_order = false")
    if not read_only:
        con.execute(all_schemas())
        for statement in MIGRATIONS:
            con.execute(statement)
    return con


# Columns added after a table was first released: a file made by an older version gets them.
MIGRATIONS = (
    "ALTER TABLE annotation_files ADD COLUMN IF NOT EXISTS pending BIGINT DEFAULT 0",
    "ALTER TABLE annotation_files ADD COLUMN IF NOT EXISTS size_bytes BIGINT",
    "ALTER TABLE log_scores ADD COLUMN IF NOT EXISTS trusted BOOLEAN",
)


# -- storage mode "ducklake" ---------------------------------------------------------------

LAKE = "lake"  # the attached DuckLake's name; it is the default catalog of lake connections


class StorageError(RuntimeError):
    """The storage mode cannot be used here; the message says what to install or set."""


def _connect_lake(settings: Settings, *, read_only: bool, config: dict) -> duckdb.DuckDBPyConnection:
    """Return an in-memory DuckDB connection whose default catalog is the home's DuckLake.

    The catalog (``settings.lake_catalog_uri``) is a SQLite file by default, or Postgres;
    the data are Parquet files under ``settings.lake_data_uri``, the daily tables
    partitioned by ``day``. Each writer commits its own snapshot: several processes can
    write different partitions at once, and a commit that loses a race raises a
    ``duckdb.TransactionException`` that :func:`retry_conflicts` runs again. Temporary
    tables stay in the connection's own memory.
    """
    catalog, data = settings.lake_catalog_uri, settings.lake_data_uri
    con = duckdb.connect(":memory:", config=config)
    try:
        con.execute("SET TimeZone = 'UTC'")
        con.execute("SET preserve_insertion_order = false")
        _load_extension(con, "ducklake")
        options = [f"DATA_PATH '{_quote(data)}'"]
        if catalog.startswith("sqlite:"):
            _load_extension(con, "sqlite")
            sqlite_path = Path(catalog.removeprefix("sqlite:"))
            sqlite_path.parent.mkdir(parents=True, exist_ok=True)
            if read_only and not sqlite_path.exists():
                read_only = False  # nothing to read yet: create the catalog and its schema
            # WAL lets readers run beside the writer; writers wait for each other's commit.
            options += ["META_JOURNAL_MODE 'WAL'", "META_BUSY_TIMEOUT 60000"]
        elif catalog.startswith("postgres:"):
            _load_extension(con, "postgres")
        if "://" not in data:
            Path(data).mkdir(parents=True, exist_ok=True)
        if read_only:
            options.append("READ_ONLY")
        con.execute(f"ATTACH '{_quote('ducklake:' + catalog)}' AS {LAKE} ({', '.join(options)})")
        con.execute(f"USE {LAKE}")
        if not read_only:
            retry_conflicts(lambda: _create_lake_tables(con))
            retry_conflicts(lambda: _add_lake_columns(con))
    except BaseException:
        con.close()
        raise
    return con


def _create_lake_tables(con: duckdb.DuckDBPyConnection) -> None:
    """Create the tables the lake lacks; tables with a ``day`` column are partitioned by it,
    so that each day's rows live in their own files (and a day's rewrite touches only them)."""
    present = {
        name for (name,) in con.execute(
            "SELECT table_name FROM information_schema.tables WHERE table_catalog = ?", [LAKE]
        ).fetchall()
    }
    missing = [m for m in _TABLE_DDL.finditer(all_schemas()) if m.group(1) not in present]
    if not missing:
        return
    con.execute("BEGIN TRANSACTION")
    try:
        for match in missing:
            # (DuckLake writes Parquet: a column's DuckDB compression is not its to take.)
            con.execute(_COMPRESSION.sub("", match.group(0)))
            if any(name == "day" for name, _ in schema_columns(match.group(1))):
                con.execute(f"ALTER TABLE {match.group(1)} SET PARTITIONED BY (day)")
        con.execute("COMMIT")
    except BaseException:
        rollback(con)
        raise


def _add_lake_columns(con: duckdb.DuckDBPyConnection) -> None:
    """Add the columns of :data:`LAKE_MIGRATIONS` that a lake made by an older version lacks."""
    for table, column, sql_type in LAKE_MIGRATIONS:
        present = con.execute(
            "SELECT count(*) FROM information_schema.columns WHERE table_catalog = ? AND table_name = ? "
            "AND column_name = ?", [LAKE, table, column]).fetchone()[0]
        if not present:
            con.execute(f"ALTER TABLE {table} ADD COLUMN {column} {sql_type}")


# Columns added after release that lakes get too: (table, column, type).
LAKE_MIGRATIONS = (("log_scores", "trusted", "BOOLEAN"),)

_TABLE_DDL = re.compile(r"CREATE TABLE IF NOT EXISTS (\w+) \(.*?\n\);", re.S)
_COMPRESSION = re.compile(r" USING COMPRESSION \w+")


def _load_extension(con: duckdb.DuckDBPyConnection, name: str) -> None:
    """Load a DuckDB extension, installing it first from its PyPI package
    (``duckdb-extension-<name>``, which must match the installed DuckDB version) or, without
    the package, from DuckDB's extension repository."""
    installed = con.execute(
        "SELECT count(*) FROM duckdb_extensions() WHERE (extension_name = ? OR list_contains(aliases, ?)) AND installed",
        [name, name],
    ).fetchone()[0]
    if not installed:
        spec = importlib.util.find_spec(f"duckdb_extension_{name}")
        if spec is not None and spec.origin:
            shipped = Path(spec.origin).parent / "extensions"
            path = shipped / f"v{duckdb.__version__}" / f"{name}.duckdb_extension"
            if not path.exists():
                versions = ", ".join(sorted(p.name for p in shipped.iterdir())) or "none"
                raise StorageError(
                    f"FLYWHEEL_STORAGE=ducklake: the package duckdb-extension-{name} ships the extension for "
                    f"DuckDB {versions}, but duckdb {duckdb.__version__} is installed: install matching versions "
                    f"(pip install 'flywheel[lake]' pins them)"
                )
            with _install_lock():  # several processes may be the first at once
                con.execute(f"INSTALL '{_quote(str(path))}'")
        else:
            try:
                con.execute(f"INSTALL {name}")
            except duckdb.Error as exc:
                raise StorageError(
                    f"FLYWHEEL_STORAGE=ducklake needs the DuckDB extension {name!r}: "
                    f"pip install 'flywheel[lake]' ({str(exc).splitlines()[0]})"
                ) from None
    con.execute(f"LOAD {name}")


@contextlib.contextmanager
def _install_lock() -> Iterator[None]:
    """Hold a machine-wide lock while an extension is copied into DuckDB's extension folder."""
    import tempfile

    try:
        import fcntl
    except ImportError:  # not POSIX: installs are rare, go without the lock
        yield
        return
    with open(Path(tempfile.gettempdir()) / "flywheel-duckdb-extension-install.lock", "w") as handle:
        fcntl.flock(handle, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(handle, fcntl.LOCK_UN)


def _quote(text: str) -> str:
    return text.replace("'", "''")


def rollback(con: duckdb.DuckDBPyConnection) -> None:
    """Roll back the open transaction, if any (a failed COMMIT has already ended it)."""
    try:
        con.execute("ROLLBACK")
    except duckdb.Error:
        pass


T = TypeVar("T")

# What a lost race between two lake writers looks like: DuckLake's own conflict check, or
# the catalog's lock (SQLite) that a concurrent commit held.
_CONFLICT = re.compile(r"conflict|database is locked|could not serialize|deadlock", re.I)


def is_conflict(exc: BaseException) -> bool:
    """Return whether ``exc`` is a commit that lost a race with another writer (worth
    retrying), also when a later error (a ROLLBACK after the failed COMMIT) hides it."""
    seen: set[int] = set()
    while exc is not None and id(exc) not in seen:
        seen.add(id(exc))
        if isinstance(exc, duckdb.Error) and _CONFLICT.search(str(exc)):
            return True
        exc = exc.__cause__ or exc.__context__
    return False


# Errors that may clear if the same work runs again a little later: the DuckDB file held by
# another process, a lost commit race, a full disk or exhausted memory, a network hiccup.
_TRANSIENT_DUCKDB = re.compile(r"could not set lock|conflicting lock|database is locked|conflict|"
                               r"could not serialize|deadlock|no space left|out of memory", re.I)
_TRANSIENT_ERRNOS = {errno.ENOSPC, errno.EAGAIN, errno.EBUSY, errno.ETIMEDOUT, errno.EINTR,
                     errno.ECONNRESET, errno.ECONNREFUSED, errno.EDQUOT, errno.ENOMEM}


def is_transient(exc: BaseException) -> bool:
    """Return whether ``exc`` (or what caused it) may go away when the work is tried again:
    a lock held by another process, a lost commit race, a full disk or memory, a network
    error. Bugs and bad input (anything else) fail the same way every time."""
    seen: set[int] = set()
    while exc is not None and id(exc) not in seen:
        seen.add(id(exc))
        if isinstance(exc, (duckdb.TransactionException, duckdb.OutOfMemoryException)):
            return True
        if isinstance(exc, duckdb.Error) and _TRANSIENT_DUCKDB.search(str(exc)):
            return True
        if isinstance(exc, (TimeoutError, ConnectionError)):
            return True
        if isinstance(exc, OSError) and exc.errno in _TRANSIENT_ERRNOS:
            return True
        exc = exc.__cause__ or exc.__context__
    return False


def retry_conflicts(work: Callable[[], T], *, attempts: int = 20, wait: float = 0.1) -> T:
    """Return ``work()``, running it again (after a short, growing, jittered wait) when it
    fails because a concurrent writer committed first; other errors propagate at once.

    ``work`` must be idempotent (a partition replaced in one transaction is).
    """
    for attempt in range(1, attempts + 1):
        try:
            return work()
        except duckdb.Error as exc:
            if attempt == attempts or not is_conflict(exc):
                raise
            time.sleep(wait * (1.5 ** min(attempt, 10)) * (0.5 + random.random()))
    raise AssertionError("unreachable")


def replace_partition(con: duckdb.DuckDBPyConnection, table: str, day: str, select_sql: str,
                      params: list | None = None, *, columns: list[str] | None = None) -> int:
    """Replace the rows of ``day`` in ``table`` by the rows of ``select_sql`` (the
    ``columns`` given, default all in table order), in one transaction retried on a lost
    race; return the number of rows the day then has. Idempotent: running it twice leaves
    the same rows as once."""
    target = f"{table} ({', '.join(columns)})" if columns else table

    def once() -> int:
        con.execute("BEGIN TRANSACTION")
        try:
            con.execute(f"DELETE FROM {table} WHERE day = ?", [day])
            con.execute(f"INSERT INTO {target} {select_sql}", params or [])
            written = con.execute(f"SELECT count(*) FROM {table} WHERE day = ?", [day]).fetchone()[0]
            con.execute("COMMIT")
            return written
        except BaseException:
            rollback(con)
            raise

    return retry_conflicts(once)


@contextlib.contextmanager
def connection(settings: Settings, *, read_only: bool = False) -> Iterator[duckdb.DuckDBPyConnection]:
    """Yield a connection from :func:`connect` and close it afterwards."""
    con = connect(settings, read_only=read_only)
    try:
        yield con
    finally:
        con.close()


class DatabaseBusy(RuntimeError):
    """The DuckDB file is held by another process; the message names it and what to do."""


_LOCKED = re.compile(r"could not set lock|conflicting lock", re.I)
_HOLDER = re.compile(r"Conflicting lock is held in (.*?) \(PID (\d+)\)")


def lock_holder(exc: BaseException) -> str | None:
    """Return "PID n (program)" of the process holding the DuckDB file, from DuckDB's
    lock error, or None when ``exc`` is not one."""
    if not isinstance(exc, duckdb.Error) or not _LOCKED.search(str(exc)):
        return None
    found = _HOLDER.search(str(exc))
    return f"PID {found.group(2)} ({found.group(1)})" if found else "another process"


@contextlib.contextmanager
def connection_when_free(
    settings: Settings,
    *,
    read_only: bool = True,
    timeout: float | None = None,
    on_wait: Callable[[str], None] | None = None,
) -> Iterator[duckdb.DuckDBPyConnection]:
    """Yield a connection like :func:`connection`, waiting while another process holds the
    DuckDB file (a run writing it: DuckDB lets no other process read meanwhile).

    Waits at most ``timeout`` seconds (default ``FLYWHEEL_BUSY_TIMEOUT_SECONDS``), saying
    once through ``on_wait`` what it waits for; then raises :class:`DatabaseBusy`.
    """
    timeout = settings.busy_timeout_seconds if timeout is None else timeout
    deadline = time.monotonic() + timeout
    said = False
    while True:
        try:
            con = connect(settings, read_only=read_only)
            break
        except duckdb.Error as exc:
            holder = lock_holder(exc)
            if holder is None:
                raise
            if time.monotonic() >= deadline:
                raise DatabaseBusy(
                    f"{settings.database_path} is being written by {holder}; waited {timeout:g} s "
                    "(FLYWHEEL_BUSY_TIMEOUT_SECONDS): try again when that run is done"
                ) from None
            if on_wait is not None and not said:
                on_wait(f"waiting up to {timeout:g} s for {holder} to finish writing {settings.database_path} ...")
                said = True
            time.sleep(0.25)
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
