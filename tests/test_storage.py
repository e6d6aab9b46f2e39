"""Scaling out: the storage mode where several processes write partitions at once
(FLYWHEEL_STORAGE=ducklake), and the production Dagster instance config (deploy/)."""

from __future__ import annotations

import json
import multiprocessing
import time
from datetime import date, timedelta
from pathlib import Path

import duckdb
import pytest
import yaml

from flywheel import store
from flywheel.settings import SettingsError, load
from tests.conftest import ROOT, land

DAYS = [(date(2026, 11, 1) + timedelta(days=i)).isoformat() for i in range(6)]
PER_DAY = 700
LOG_COLUMNS = ["log_id", "ts", "day", "source", "input", "output", "source_file", "source_format",
               "source_line", "ingested_at"]


def lake_settings(home: Path):
    return load({"FLYWHEEL_HOME": str(home), "FLYWHEEL_STORAGE": "ducklake", "FLYWHEEL_DUCKDB_THREADS": "1"})


def write_day(args: tuple[str, str]) -> tuple[str, int, float, float]:
    """One backfill worker (its own process): replace one day of `logs` in the lake from
    that day's landing file. Returns the day, its row count, and when it ran."""
    home, day = args
    settings = lake_settings(Path(home))
    started = time.time()
    with store.connection(settings) as con:
        path = settings.landing_for(day) / "app.jsonl"
        written = store.replace_partition(
            con, "logs", day,
            """SELECT log_id, ts::TIMESTAMPTZ, ?::DATE, source, input, output, ?, 'canonical_jsonl',
                      row_number() OVER (), now()
               FROM read_json(?, format = 'newline_delimited',
                              columns = {log_id: 'VARCHAR', ts: 'VARCHAR', source: 'VARCHAR',
                                         input: 'VARCHAR', output: 'VARCHAR'})""",
            [day, settings.source_name(path), str(path)],
            columns=LOG_COLUMNS,
        )
    return day, written, started, time.time()


def land_days(settings) -> None:
    for day in DAYS:
        land(settings, day, "app.jsonl", "".join(
            json.dumps({"log_id": f"{day}-{i}", "ts": f"{day}T{i % 24:02d}:00:00Z", "source": "web-chat",
                        "input": f"question {i}", "output": f"answer {i}"}) + "\n"
            for i in range(PER_DAY)))


def test_lake_mode_backfills_days_in_parallel_processes_without_losing_or_doubling_a_row(tmp_path):
    home = tmp_path / "home"
    settings = lake_settings(home)
    land_days(settings)
    with store.connection(settings) as con:  # the catalog and its tables, once
        assert store.table_exists(con, "logs")
    # Every day once, and half of them a second time at the same moment (a retried run).
    work = [(str(home), day) for day in DAYS + DAYS[::2]]
    with multiprocessing.get_context("spawn").Pool(3) as pool:
        results = pool.map(write_day, work, chunksize=1)

    assert [n for _, n, _, _ in results] == [PER_DAY] * len(work)
    # The writers did overlap in time: this was a parallel backfill, not a queue.
    spans = sorted((start, end) for _, _, start, end in results)
    assert any(later[0] < earlier[1] for earlier, later in zip(spans, spans[1:]))
    with store.connection(settings, read_only=True) as con:
        per_day = con.execute("SELECT day::VARCHAR, count(*), count(DISTINCT log_id) FROM logs GROUP BY 1 ORDER BY 1").fetchall()
        total, distinct = con.execute("SELECT count(*), count(DISTINCT log_id) FROM logs").fetchone()
        files = con.execute("SELECT count(*) FROM ducklake_list_files('lake', 'logs')").fetchone()[0]
    assert per_day == [(day, PER_DAY, PER_DAY) for day in DAYS]
    assert total == distinct == PER_DAY * len(DAYS)
    assert files >= len(DAYS)  # partitioned by day: each day in its own file(s)
    # Parquet under the home, a catalog beside it; no DuckDB file was written.
    assert list((home / "lake" / "data").rglob("*.parquet"))
    assert not settings.database_path.exists()


def test_lake_mode_keeps_the_rest_of_the_code_unchanged(tmp_path):
    """Readers and writers of the other tables go through the same connect(): temporary
    tables, rowid deletes and JSON/list columns behave as with one DuckDB file."""
    settings = lake_settings(tmp_path / "home")
    with store.connection(settings) as con:
        con.execute("""INSERT INTO consensus (log_id, label, value, n_annotators, agreement, status, updated_at, n_positive)
                       SELECT 'x' || range, 'hallucination', range % 2, 2, 1.0, 'agreed', now(), range % 2 FROM range(10)""")
        con.execute("CREATE TEMP TABLE doomed AS SELECT rowid AS rid FROM consensus WHERE value = 1")
        con.execute("DELETE FROM consensus WHERE rowid IN (SELECT rid FROM doomed)")
        con.execute("""INSERT INTO prompts (name, version, text_hash, few_shot_ids, status, created_at)
                       VALUES ('docs-qa', 'v1', 'h', ['a', 'b'], 'champion', now())""")
    with store.connection(settings, read_only=True) as con:
        assert con.execute("SELECT count(*), sum(value) FROM consensus").fetchone() == (5, 0)
        assert con.execute("SELECT few_shot_ids FROM prompts").fetchone() == (["a", "b"],)
        with pytest.raises(duckdb.Error):
            con.execute("DELETE FROM consensus")  # read-only connections cannot write


def ingest_worker(args: tuple[str, str]) -> tuple[str, int, float, float]:
    """A backfill worker running the real ingest of one day; a commit that lost the race
    with another day's is run again (the day is replaced whole, so that is safe)."""
    from flywheel.ingest.loader import ingest_day

    home, day = args
    settings = lake_settings(Path(home))
    started = time.time()
    with store.connection(settings) as con:
        report = store.retry_conflicts(lambda: ingest_day(con, settings, day))
    return day, report.total("accepted"), started, time.time()


def test_the_ingest_loader_backfills_clean_days_in_parallel_in_lake_mode(tmp_path):
    home = tmp_path / "home"
    settings = lake_settings(home)
    land_days(settings)
    with store.connection(settings):
        pass
    with multiprocessing.get_context("spawn").Pool(3) as pool:
        results = pool.map(ingest_worker, [(str(home), day) for day in DAYS[:4]], chunksize=1)
    assert [n for _, n, _, _ in results] == [PER_DAY] * 4
    with store.connection(settings, read_only=True) as con:
        assert con.execute("SELECT count(*), count(DISTINCT log_id) FROM logs").fetchone() == (4 * PER_DAY, 4 * PER_DAY)
        assert con.execute("SELECT sum(read), sum(accepted) FROM ingest_files").fetchone() == (4 * PER_DAY, 4 * PER_DAY)


def test_storage_mode_is_validated():
    with pytest.raises(SettingsError, match="FLYWHEEL_STORAGE='lakehouse' is not one of duckdb, ducklake"):
        load({"FLYWHEEL_STORAGE": "lakehouse"})
    lake = load({"FLYWHEEL_HOME": "/srv/fw", "FLYWHEEL_STORAGE": "ducklake"})
    assert lake.lake_catalog_uri == "sqlite:/srv/fw/lake/catalog.sqlite"
    assert lake.lake_data_uri == "/srv/fw/lake/data/"
    pg = load({"FLYWHEEL_STORAGE": "ducklake", "FLYWHEEL_LAKE_CATALOG": "postgres:dbname=lake host=db",
               "FLYWHEEL_LAKE_DATA_PATH": "s3://bucket/flywheel/"})
    assert (pg.lake_catalog_uri, pg.lake_data_uri) == ("postgres:dbname=lake host=db", "s3://bucket/flywheel/")


def test_retry_conflicts_retries_only_lost_races():
    calls = []

    def flaky():
        calls.append(1)
        if len(calls) < 3:
            raise duckdb.TransactionException("Failed to commit DuckLake transaction: database is locked")
        return "done"

    assert store.retry_conflicts(flaky, wait=0.001) == "done" and len(calls) == 3

    def masked():  # a writer whose ROLLBACK after the failed COMMIT raises again
        calls.append(1)
        if len(calls) < 5:
            try:
                raise duckdb.TransactionException("Failed to commit: database is locked")
            except duckdb.Error:
                raise duckdb.TransactionException("cannot rollback - no transaction is active")
        return "done"

    assert store.retry_conflicts(masked, wait=0.001) == "done" and len(calls) == 5

    def broken():
        calls.append(1)
        raise duckdb.BinderException("column nope does not exist")

    calls.clear()
    with pytest.raises(duckdb.BinderException):
        store.retry_conflicts(broken, wait=0.001)
    assert len(calls) == 1


# -- the production instance config ----------------------------------------------------

PG_ENV = {"DAGSTER_PG_HOST": "db.internal", "DAGSTER_PG_PORT": "5432", "DAGSTER_PG_DB": "dagster",
          "DAGSTER_PG_USER": "dagster", "DAGSTER_PG_PASSWORD": "from-a-secret",
          "FLYWHEEL_IMAGE": "registry.example/flywheel:1", "DAGSTER_K8S_NAMESPACE": "flywheel"}


def validate_instance_yaml(folder: Path) -> dict[str, str]:
    """Validate ``folder/dagster.yaml`` against Dagster's instance schema and each
    configured class against its own config schema; return the class of each part."""
    from dagster._config import process_config
    from dagster._core.instance.config import dagster_instance_config
    from dagster._core.instance.ref import InstanceRef
    from dagster._serdes.config_class import class_from_code_pointer

    dagster_instance_config(str(folder))  # raises DagsterInvalidConfigError
    ref = InstanceRef.from_dir(str(folder))
    classes = {}
    for part in ("storage_data", "run_launcher_data", "run_coordinator_data"):
        data = getattr(ref, part)
        cls = class_from_code_pointer(data.module_name, data.class_name)
        result = process_config(cls.config_type(), yaml.safe_load(data.config_yaml) or {})
        assert result.success, (part, [e.message for e in result.errors])
        classes[part] = f"{data.module_name}.{data.class_name}"
    return classes


def test_the_production_instance_yaml_is_valid_dagster_config(monkeypatch):
    for key, value in PG_ENV.items():
        monkeypatch.setenv(key, value)
    classes = validate_instance_yaml(ROOT / "deploy")
    assert classes == {
        "storage_data": "dagster_postgres.DagsterPostgresStorage",
        "run_launcher_data": "dagster_k8s.K8sRunLauncher",
        "run_coordinator_data": "dagster._core.run_coordinator.QueuedRunCoordinator",
    }
    text = (ROOT / "deploy" / "dagster.yaml").read_text()
    assert "from-a-secret" not in text  # credentials come from the environment only


def test_a_mistake_in_the_instance_yaml_is_caught(monkeypatch, tmp_path):
    from dagster._core.errors import DagsterInvalidConfigError

    for key, value in PG_ENV.items():
        monkeypatch.setenv(key, value)
    config = yaml.safe_load((ROOT / "deploy" / "dagster.yaml").read_text())
    config["run_launcher"]["config"]["service_acount_name"] = config["run_launcher"]["config"].pop("service_account_name")
    (tmp_path / "dagster.yaml").write_text(yaml.safe_dump(config))
    with pytest.raises((AssertionError, DagsterInvalidConfigError)):
        validate_instance_yaml(tmp_path)
