"""The Dagster layer: the logs asset and its blocking checks in real runs, the nightly
job and schedule, and the boundary between flywheel/ and the orchestrator."""


import ast
import json
from datetime import datetime, timezone

import dagster as dg

from assets.ingest import logs
from assets.resources import FlywheelResource
from jobs.definitions import defs
from jobs.nightly import nightly_schedule
from tests.conftest import ROOT, land, rows, shared_data

DAY = "2026-11-20"


def record(log_id: str, **extra) -> str:
    base = {"log_id": log_id, "ts": f"{DAY}T10:00:00Z", "input": "Where is my order A-17?",
            "output": "Order A-17 shipped yesterday.", "source": "web-chat", "latency_ms": 800}
    base.update(extra)
    return json.dumps(base) + "\n"


@dg.asset(deps=[logs], partitions_def=logs.partitions_def)
def downstream_probe(context: dg.AssetExecutionContext) -> None:
    """Stands in for the assets after ingest: it must not run on a day that fails a check."""


def materialize(settings, *assets):
    with dg.instance_for_test() as instance:
        return dg.materialize(
            list(assets) or [logs],
            partition_key=DAY,
            instance=instance,
            resources={"flywheel": FlywheelResource(home=str(settings.home))},
            raise_on_error=False,
        )


def check_results(result) -> dict[str, bool]:
    return {
        e.asset_check_evaluation_data.check_name: e.asset_check_evaluation_data.passed
        for e in result.all_events
        if e.event_type_value == "ASSET_CHECK_EVALUATION"
    }


def test_logs_asset_materializes_with_reconciled_metadata_and_passing_checks(settings):
    land(settings, DAY, "app.jsonl", record("a") + record("b") + "{broken\n")
    land(settings, DAY, "more.jsonl", "".join(record(f"m{i}") for i in range(60)))
    result = materialize(settings, logs, downstream_probe)
    assert result.success
    (mat,) = result.asset_materializations_for_node("logs")
    meta = mat.metadata
    assert meta["dagster/row_count"].value == 62
    assert meta["read"].value == 63 and meta["rejected"].value == 1 and meta["reconciles"].value is True
    assert "| app.jsonl | canonical_jsonl | 3 | 2 | 1 | 0 | yes |" in meta["files"].value
    assert check_results(result) == dict.fromkeys(
        ["schema", "required_fields", "unique_log_id", "value_ranges", "rejected_share"], True)
    assert result.asset_materializations_for_node("downstream_probe")


def test_a_failed_blocking_check_stops_downstream_assets(settings):
    # Half of the records are broken: far above the 5% rejected-share threshold.
    land(settings, DAY, "app.jsonl", record("a") + record("b") + "{x\n{y\n{z\n")
    result = materialize(settings, logs, downstream_probe)
    assert not result.success
    assert check_results(result)["rejected_share"] is False
    assert not result.asset_materializations_for_node("downstream_probe")
    # The good records are stored, and the bad ones are kept with their reason.
    assert rows(settings, "SELECT count(*) FROM logs") == [(2,)]
    assert rows(settings, "SELECT count(*) FROM rejected_logs") == [(3,)]


def test_halueval_as_canonical_records_through_a_dagster_run(settings):
    source = shared_data("halueval/general_data.json")
    lines = []
    with source.open(encoding="utf-8") as f:
        for line in f:
            item = json.loads(line)
            lines.append(json.dumps({
                "log_id": f"halueval-{item['ID']}", "ts": f"{DAY}T00:00:00Z", "source": "halueval",
                "input": item["user_query"], "output": item["chatgpt_response"],
            }))
    land(settings, DAY, "halueval.jsonl", "\n".join(lines) + "\n")
    result = materialize(settings, logs)
    assert result.success
    records = [json.loads(line) for line in lines]
    distinct = {r["log_id"] for r in records if r["output"].strip()}
    assert len(records) == 4507
    # Every record is accepted once, rejected, or counted as a repeated id.
    assert rows(settings, "SELECT count(*), count(DISTINCT log_id) FROM logs") == [(len(distinct), len(distinct))]
    (read, accepted, rejected, duplicates), = rows(
        settings, "SELECT read, accepted, rejected, duplicates FROM ingest_files")
    assert (read, accepted) == (4507, len(distinct))
    assert rejected + duplicates == 4507 - len(distinct)
    (mat,) = result.asset_materializations_for_node("logs")
    assert mat.metadata["reconciles"].value is True


def test_definitions_load_with_the_nightly_job_and_a_running_schedule():
    dg.Definitions.validate_loadable(defs)
    job = defs.resolve_job_def("nightly")
    assert "logs" in {key.to_user_string() for key in job.asset_layer.executable_asset_keys}
    assert nightly_schedule.default_status == dg.DefaultScheduleStatus.RUNNING
    assert nightly_schedule.cron_schedule == "0 2 * * *"
    # Every asset that writes to DuckDB takes its turn in the pool and retries transient failures.
    for key in ("logs", "slice_metrics", "annotation_queue", "annotations", "consensus"):
        assets_def = defs.resolve_assets_def(key)
        assert assets_def.op.pool == "flywheel_duckdb"
        assert assets_def.op.retry_policy.max_retries == 2


def test_the_schedule_runs_the_day_that_just_ended():
    context = dg.build_schedule_context(
        scheduled_execution_time=datetime(2026, 11, 21, 2, 0, tzinfo=timezone.utc),
        repository_def=defs.get_repository_def(),
    )
    request = nightly_schedule.evaluate_tick(context).run_requests[0]
    assert request.partition_key == DAY


def test_flywheel_package_never_imports_dagster():
    offenders = []
    for path in (ROOT / "flywheel").rglob("*.py"):
        tree = ast.parse(path.read_text(encoding="utf-8"))
        for node in ast.walk(tree):
            names = []
            if isinstance(node, ast.Import):
                names = [a.name for a in node.names]
            elif isinstance(node, ast.ImportFrom) and node.module:
                names = [node.module]
            offenders += [f"{path.relative_to(ROOT)}: {n}" for n in names if n.split(".")[0].startswith("dagster")]
    assert offenders == []


def test_landing_sensor_requests_a_run_for_new_and_changed_days(settings, monkeypatch):
    from jobs.sensors import landing_sensor

    monkeypatch.setenv("FLYWHEEL_HOME", str(settings.home))
    land(settings, "2026-11-19", "a.jsonl", record("a"))
    land(settings, DAY, "b.jsonl", record("b"))
    context = dg.build_sensor_context(repository_def=defs.get_repository_def())
    first = list(landing_sensor(context))  # one day per tick, oldest first
    context = dg.build_sensor_context(cursor=context.cursor, repository_def=defs.get_repository_def())
    second = list(landing_sensor(context))
    assert [r.partition_key for r in first + second] == ["2026-11-19", DAY]
    # Nothing new: no run. A changed file: a run for that day only.
    context = dg.build_sensor_context(cursor=context.cursor, repository_def=defs.get_repository_def())
    assert list(landing_sensor(context)) == []
    land(settings, DAY, "c.jsonl", record("c"))
    context = dg.build_sensor_context(cursor=context.cursor, repository_def=defs.get_repository_def())
    assert [r.partition_key for r in landing_sensor(context)] == [DAY]


def test_annotations_and_consensus_assets_with_the_agreement_check(settings, monkeypatch):
    from assets.annotations import annotations, consensus
    from jobs.sensors import inbox_sensor

    land(settings, DAY, "app.jsonl", "".join(record(f"x{i}") for i in range(4)))
    assert materialize(settings, logs).success
    settings.annotations_inbox.mkdir(parents=True)
    # Two annotators who disagree on half of the items: kappa 0, below the 0.4 warning.
    lines = ["log_id,annotator,label,value,comment,created_at"]
    for i, (a, b) in enumerate([(1, 1), (0, 0), (1, 0), (0, 1)]):
        lines += [f"x{i},ann-a,hallucination,{a},,", f"x{i},ann-b,hallucination,{b},,"]
    lines.append("nope,ann-a,hallucination,1,,")
    (settings.annotations_inbox / "labels.csv").write_text("\n".join(lines) + "\n")

    monkeypatch.setenv("FLYWHEEL_HOME", str(settings.home))
    context = dg.build_sensor_context(repository_def=defs.get_repository_def())
    assert len(list(inbox_sensor(context))) == 1

    with dg.instance_for_test() as instance:
        result = dg.materialize(
            [annotations, consensus], instance=instance,
            resources={"flywheel": FlywheelResource(home=str(settings.home))},
        )
    assert result.success
    (imported,) = result.asset_materializations_for_node("annotations")
    assert imported.metadata["accepted"].value == 8 and imported.metadata["pending"].value == 1
    assert rows(settings, "SELECT log_id FROM pending_annotations") == [("nope",)]  # waits for its log
    assert rows(settings, "SELECT count(*), count(*) FILTER (WHERE status = 'tie') FROM consensus") == [(4, 2)]
    assert check_results(result) == {"agreement": False}
    # The imported file was archived, so the sensor has nothing new to start.
    context = dg.build_sensor_context(cursor=context.cursor, repository_def=defs.get_repository_def())
    assert list(inbox_sensor(context)) == []
