"""Automation: the jobs' groups, the nightly schedule, the sensors, and declarative
automation (eager whole-history assets follow new labels without hand-written chains)."""

from __future__ import annotations

import json
from datetime import date, datetime, timezone

import dagster as dg
import pytest

from assets.annotations import annotations, consensus
from assets.resources import FlywheelResource
from jobs.definitions import defs
from jobs.nightly import DAILY_GROUPS, LEARN_GROUPS, nightly_schedule
from jobs.sensors import inbox_sensor, landing_sensor
from tests.conftest import land


def groups_of(job_name: str) -> dict[str, str]:
    job = defs.resolve_job_def(job_name)
    return {key.to_user_string(): defs.resolve_assets_def(key).group_names_by_key[key]
            for key in job.asset_layer.executable_asset_keys}


def test_the_nightly_job_runs_the_daily_groups_and_learn_the_whole_history_ones():
    nightly = groups_of("nightly")
    assert set(nightly.values()) <= set(DAILY_GROUPS)
    assert {"logs", "slices", "slice_metrics", "annotation_queue", "report"} <= set(nightly)
    assert nightly["report"] == "report"
    # Every daily asset of the code location is in the nightly job, each partitioned by day.
    for key in defs.resolve_asset_graph().get_all_asset_keys():
        assets_def = defs.resolve_assets_def(key)
        if assets_def.group_names_by_key.get(key) in DAILY_GROUPS and assets_def.is_executable:
            assert key.to_user_string() in nightly
            assert isinstance(assets_def.partitions_def, dg.DailyPartitionsDefinition)
    learn = groups_of("learn")
    assert set(learn.values()) <= set(LEARN_GROUPS)
    for key in defs.resolve_job_def("learn").asset_layer.executable_asset_keys:
        assets_def = defs.resolve_assets_def(key)
        assert assets_def.partitions_def is None
        # The contract: whole-history assets follow by automation conditions.
        assert assets_def.automation_conditions_by_key.get(key) is not None, key
    for name in ("nightly", "learn", "import_annotations"):
        assert defs.resolve_job_def(name).executor_def.name == "in_process"


def test_the_real_definitions_run_the_automation_sensor_by_default():
    sensor = defs.resolve_sensor_def("automation")
    assert isinstance(sensor, dg.AutomationConditionSensorDefinition)
    assert sensor.default_status == dg.DefaultSensorStatus.RUNNING
    graph = defs.resolve_asset_graph()
    targeted = sensor.asset_selection.resolve(graph)
    with_conditions = {key for key in graph.get_all_asset_keys()
                       if graph.get(key).automation_condition is not None}
    assert with_conditions <= targeted
    for other in ("landing_sensor", "inbox_sensor"):
        assert defs.resolve_sensor_def(other).default_status == dg.DefaultSensorStatus.RUNNING
    # The runs it requests (ad-hoc selections) run their steps in one process, as the jobs do.
    assert defs.resolve_implicit_global_asset_job_def().executor_def.name == "in_process"


def test_the_schedule_runs_yesterday_at_two_across_a_month_boundary():
    assert nightly_schedule.default_status == dg.DefaultScheduleStatus.RUNNING
    context = dg.build_schedule_context(
        scheduled_execution_time=datetime(2026, 12, 1, 2, 0, tzinfo=timezone.utc),
        repository_def=defs.get_repository_def(),
    )
    (request,) = nightly_schedule.evaluate_tick(context).run_requests
    assert request.partition_key == "2026-11-30"
    assert request.run_key == "nightly-2026-11-30"
    assert nightly_schedule.job_name == "nightly"


def test_the_landing_sensor_ignores_folders_that_are_not_days(settings, monkeypatch):
    monkeypatch.setenv("FLYWHEEL_HOME", str(settings.home))
    land(settings, "2026-11-19", "a.jsonl", "{}\n")
    land(settings, "notes", "readme.txt", "not a day")
    land(settings, "2020-01-01", "old.jsonl", "{}\n")  # before FLYWHEEL_START_DATE
    (settings.landing_for("2026-11-18")).mkdir(parents=True)  # an empty day
    context = dg.build_sensor_context(repository_def=defs.get_repository_def())
    assert [r.partition_key for r in landing_sensor(context)] == ["2026-11-19"]
    assert json.loads(context.cursor) and list(json.loads(context.cursor)) == ["2026-11-19"]


def test_the_inbox_sensor_requests_one_import_per_new_set_of_files(settings, monkeypatch):
    monkeypatch.setenv("FLYWHEEL_HOME", str(settings.home))
    context = dg.build_sensor_context(repository_def=defs.get_repository_def())
    assert list(inbox_sensor(context)) == []  # no inbox yet
    settings.annotations_inbox.mkdir(parents=True)
    (settings.annotations_inbox / "a.csv").write_text("log_id,annotator,label,value\nx,a,hallucination,1\n")
    context = dg.build_sensor_context(cursor=context.cursor, repository_def=defs.get_repository_def())
    (first,) = inbox_sensor(context)
    assert first.job_name in (None, "import_annotations")
    context = dg.build_sensor_context(cursor=context.cursor, repository_def=defs.get_repository_def())
    assert list(inbox_sensor(context)) == []
    (settings.annotations_inbox / "b.csv").write_text("log_id,annotator,label,value\ny,a,hallucination,0\n")
    context = dg.build_sensor_context(cursor=context.cursor, repository_def=defs.get_repository_def())
    (second,) = inbox_sensor(context)
    assert second.run_key != first.run_key


@dg.asset(deps=[consensus], automation_condition=dg.AutomationCondition.eager(), group_name="classifiers")
def trained_probe() -> None:
    """Stands in for a whole-history asset trained on the consensus (eager, as the contract says)."""


def test_an_eager_asset_is_requested_after_the_consensus_materializes_and_not_before(settings):
    settings.home.mkdir(parents=True)
    resources = {"flywheel": FlywheelResource(home=str(settings.home))}
    local = dg.Definitions(assets=[annotations, consensus, trained_probe], resources=resources)
    probe = dg.AssetKey("trained_probe")
    with dg.instance_for_test() as instance:
        before = dg.evaluate_automation_conditions(defs=local, instance=instance)
        assert before.total_requested == 0  # its input does not exist yet
        assert dg.materialize([annotations, consensus], instance=instance, resources=resources).success
        after = dg.evaluate_automation_conditions(defs=local, instance=instance, cursor=before.cursor)
        assert after.total_requested == 1
        assert after.get_requested_partitions(probe) == {None}
        assert dg.materialize([trained_probe], instance=instance, resources=resources).success
        settled = dg.evaluate_automation_conditions(defs=local, instance=instance, cursor=after.cursor)
        assert settled.total_requested == 0  # up to date: nothing to do until new labels
        assert dg.materialize([consensus], instance=instance, resources=resources).success
        again = dg.evaluate_automation_conditions(defs=local, instance=instance, cursor=settled.cursor)
        assert again.get_requested_partitions(probe) == {None}


def test_the_real_learning_assets_follow_new_labels():
    graph = defs.resolve_asset_graph()
    # The whole-history assets trained on the labels and the logs: the classifiers, the judges.
    learners = {key for key in defs.resolve_job_def("learn").asset_layer.executable_asset_keys
                if {"consensus", "logs"} <= {dep.to_user_string() for dep in graph.get(key).parent_keys}}
    assert learners, "no whole-history asset depends on the consensus and the logs"
    with dg.instance_for_test() as instance:
        first = dg.evaluate_automation_conditions(defs=defs, instance=instance)
        # New labels (consensus) and one ingested day, as the nightly jobs record them.
        instance.report_runless_asset_event(dg.AssetMaterialization("annotations"))
        instance.report_runless_asset_event(dg.AssetMaterialization("consensus"))
        instance.report_runless_asset_event(dg.AssetMaterialization("logs", partition="2026-11-20"))
        after = dg.evaluate_automation_conditions(defs=defs, instance=instance, cursor=first.cursor)
        requested = {key for key in learners if after.get_requested_partitions(key)}
    assert requested == learners


def test_the_landing_sensor_skips_days_ingested_with_the_same_files_and_starts_one_run_at_a_time(
        settings, monkeypatch):
    """`dagster dev` on a home whose days are ingested must not re-run them all at once (#13)."""
    from dagster._core.storage.dagster_run import DagsterRun

    from flywheel import store
    from flywheel.demo import DemoSpec, generate
    from flywheel.ingest.loader import ingest_day

    monkeypatch.setenv("FLYWHEEL_HOME", str(settings.home))
    summary = generate(settings.home, DemoSpec(days=3, rows_per_day=50, seed=3, start=date(2026, 11, 1)))
    days = [d.day for d in summary.days]
    with store.connection(settings) as con:
        for day in days:
            ingest_day(con, settings, day)
    with dg.instance_for_test() as instance:
        def tick(cursor=None):
            context = dg.build_sensor_context(instance=instance, cursor=cursor,
                                              repository_def=defs.get_repository_def())
            return [r.partition_key for r in landing_sensor(context)], context.cursor

        requested, cursor = tick()
        assert requested == []  # every day already ingested with these very files
        # A file changed after the ingest, and two new days: one run per tick, oldest first.
        land(settings, days[1], "late.jsonl", '{"log_id": "late", "ts": "2026-11-02T10:00:00Z", '
                                              '"input": "q", "output": "a"}\n')
        for day in ("2026-11-10", "2026-11-11"):
            land(settings, day, "app.jsonl", '{"log_id": "n", "ts": "' + day + 'T10:00:00Z", '
                                             '"input": "q", "output": "a"}\n')
        requested, cursor = tick(cursor)
        assert requested == [days[1]]
        # While a nightly run is in progress, nothing more is started.
        busy = DagsterRun(job_name="nightly", run_id="f" * 36, status=dg.DagsterRunStatus.STARTED)
        instance.add_run(busy)
        assert tick(cursor)[0] == []
        instance.report_run_failed(busy)
        requested, cursor = tick(cursor)
        assert requested == ["2026-11-10"]
        requested, cursor = tick(cursor)
        assert requested == ["2026-11-11"]
        assert tick(cursor)[0] == []


def test_a_run_on_a_home_that_does_not_exist_fails_at_once_and_creates_nothing(settings):
    """A typo in FLYWHEEL_HOME (here: the resource's home) must not start a new, empty home."""
    with dg.instance_for_test() as instance:
        result = dg.materialize([annotations], instance=instance, raise_on_error=False,
                                resources={"flywheel": FlywheelResource(home=str(settings.home))})
    assert not result.success and not settings.home.exists()
    (failure,) = [e for e in result.all_events if e.is_step_failure]
    assert f"FLYWHEEL_HOME={settings.home} does not exist (a typo?)" in failure.step_failure_data.error.message
    assert not [e for e in result.all_events if e.event_type_value == "STEP_UP_FOR_RETRY"]


def test_runs_are_tagged_with_their_process_and_the_sensor_frees_slots_of_dead_ones(settings, monkeypatch):
    """Runs launched by the UI or the daemon (not the CLI) carry their process id too, so
    that a slot held by one that was killed is freed (by the landing sensor's tick)."""
    import os
    import socket
    import subprocess
    import sys

    from dagster._core.storage.dagster_run import DagsterRun

    settings.home.mkdir(parents=True)
    monkeypatch.setenv("FLYWHEEL_HOME", str(settings.home))
    with dg.instance_for_test() as instance:
        result = dg.materialize([annotations], instance=instance,
                                resources={"flywheel": FlywheelResource(home=str(settings.home))})
        tags = instance.get_run_by_id(result.run_id).tags
        assert (tags["flywheel/pid"], tags["flywheel/host"]) == (str(os.getpid()), socket.gethostname())

        gone = subprocess.Popen([sys.executable, "-c", "pass"])
        gone.wait()
        dead = DagsterRun(job_name="nightly", run_id="d" * 36, status=dg.DagsterRunStatus.STARTED,
                          tags={"flywheel/pid": str(gone.pid), "flywheel/host": socket.gethostname()})
        instance.add_run(dead)
        storage = instance.event_log_storage
        storage.set_concurrency_slots("flywheel_duckdb", 1)
        assert storage.claim_concurrency_slot("flywheel_duckdb", dead.run_id, "logs").is_claimed
        context = dg.build_sensor_context(instance=instance, repository_def=defs.get_repository_def())
        list(landing_sensor(context))
        assert storage.get_concurrency_info("flywheel_duckdb").claimed_slots == []
        assert instance.get_run_by_id(dead.run_id).status == dg.DagsterRunStatus.FAILURE
