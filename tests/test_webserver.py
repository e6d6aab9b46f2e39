"""The Dagster UI's server: a real webserver on 127.0.0.1 serving our code location.

Asserts through its GraphQL endpoint that every asset and check is there, launches a run
of the nightly job for one day and waits for it to succeed, then launches a backfill of a
date range as the UI's "Materialize partitions" dialog does and waits for its runs.
"""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import pytest

from tests.conftest import ROOT, land, rows

DAY = "2026-11-20"
ASSETS = {"logs", "slices", "slice_metrics", "annotation_queue", "annotations", "consensus", "report"}
BACKFILL_DAYS = ["2026-11-18", "2026-11-19"]
CHECKS = {("logs", "schema"), ("logs", "required_fields"), ("logs", "unique_log_id"),
          ("logs", "value_ranges"), ("logs", "rejected_share"), ("slice_metrics", "drift"),
          ("consensus", "agreement")}


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def graphql(port: int, query: str, variables: dict | None = None) -> dict:
    request = urllib.request.Request(
        f"http://127.0.0.1:{port}/graphql",
        data=json.dumps({"query": query, "variables": variables or {}}).encode(),
        headers={"Content-Type": "application/json"},
    )
    with urllib.request.urlopen(request, timeout=30) as response:
        body = json.loads(response.read())
    assert "errors" not in body, body
    return body["data"]


@pytest.fixture
def webserver(settings, tmp_path):
    dagster_home = tmp_path / "dagster_home"
    dagster_home.mkdir()
    # Runs start straight from the webserver (no daemon in a test).
    (dagster_home / "dagster.yaml").write_text(
        "run_coordinator:\n  module: dagster.core.run_coordinator\n  class: DefaultRunCoordinator\n"
        # The backfill's runs start side by side: DuckDB writers take turns in the pool.
        "concurrency:\n  pools:\n    default_limit: 1\n"
        "telemetry:\n  enabled: false\n"
    )
    env = {**os.environ, "DAGSTER_HOME": str(dagster_home), "FLYWHEEL_HOME": str(settings.home)}
    port = free_port()
    process = subprocess.Popen(
        [str(Path(sys.executable).parent / "dagster-webserver"), "-h", "127.0.0.1", "-p", str(port),
         "-m", "jobs.definitions"],
        cwd=ROOT, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True,
    )
    try:
        deadline = time.monotonic() + 120
        while True:
            try:
                urllib.request.urlopen(f"http://127.0.0.1:{port}/server_info", timeout=2)
                break
            except OSError:
                if process.poll() is not None or time.monotonic() > deadline:
                    pytest.fail(f"webserver did not start: {process.stderr.read()[-2000:]}")
                time.sleep(1)
        yield port
    finally:
        process.terminate()
        process.wait(timeout=30)


def test_ui_lists_every_asset_and_check_and_runs_the_nightly_job(settings, webserver):
    port = webserver
    land(settings, DAY, "app.jsonl", "".join(
        json.dumps({"log_id": f"w{i}", "ts": f"{DAY}T10:00:00Z", "input": f"question {i} about refunds",
                    "output": f"answer {i}", "source": "web-chat", "feedback": -1 if i % 5 == 0 else 0}) + "\n"
        for i in range(120)
    ))
    nodes = graphql(port, """{ assetNodes { assetKey { path } groupName description
                                            assetChecksOrError { ... on AssetChecks { checks { name } } } } }""")
    found = {"/".join(n["assetKey"]["path"]): n for n in nodes["assetNodes"]}
    assert ASSETS <= set(found)
    assert all(found[name]["description"] and found[name]["groupName"] for name in ASSETS)
    checks = {(name, c["name"]) for name, n in found.items()
              for c in (n["assetChecksOrError"] or {}).get("checks", [])}
    assert CHECKS <= checks

    launched = graphql(port, """
        mutation($params: ExecutionParams!) { launchRun(executionParams: $params) {
            __typename ... on LaunchRunSuccess { run { runId } } ... on PythonError { message } } }""",
        {"params": {"selector": {"repositoryLocationName": "jobs.definitions", "repositoryName": "__repository__",
                                 "jobName": "nightly"},
                    "executionMetadata": {"tags": [{"key": "dagster/partition", "value": DAY}]}}})
    assert launched["launchRun"]["__typename"] == "LaunchRunSuccess", launched
    run_id = launched["launchRun"]["run"]["runId"]

    # Meanwhile, a backfill of a date range, as the UI launches it (the webserver submits
    # the runs); all three runs go side by side and take turns at the DuckDB steps.
    for day in BACKFILL_DAYS:
        land(settings, day, "app.jsonl", "".join(
            json.dumps({"log_id": f"{day}-{i}", "ts": f"{day}T09:00:00Z", "input": f"question {i}",
                        "output": f"answer {i}", "source": "web-chat"}) + "\n" for i in range(60)))
    backfill = graphql(port, """
        mutation($params: LaunchBackfillParams!) { launchPartitionBackfill(backfillParams: $params) {
            __typename ... on LaunchBackfillSuccess { backfillId } ... on PythonError { message } } }""",
        {"params": {"selector": {"partitionSetName": "nightly_partition_set",
                                 "repositorySelector": {"repositoryLocationName": "jobs.definitions",
                                                        "repositoryName": "__repository__"}},
                    "partitionNames": BACKFILL_DAYS, "forceSynchronousSubmission": True}})
    assert backfill["launchPartitionBackfill"]["__typename"] == "LaunchBackfillSuccess", backfill
    backfill_id = backfill["launchPartitionBackfill"]["backfillId"]
    # Submitted synchronously by the webserver (no daemon here): its runs carry the backfill's tag.
    deadline = time.monotonic() + 300
    while time.monotonic() < deadline:
        runs = graphql(port, """query($tags: [ExecutionTag!]) { runsOrError(filter: {tags: $tags}) {
            ... on Runs { results { status tags { key value } } } } }""",
                       {"tags": [{"key": "dagster/backfill", "value": backfill_id}]})["runsOrError"]["results"]
        statuses = [r["status"] for r in runs]
        if len(statuses) == len(BACKFILL_DAYS) and all(s in ("SUCCESS", "FAILURE", "CANCELED") for s in statuses):
            break
        time.sleep(2)
    partitions = sorted(t["value"] for r in runs for t in r["tags"] if t["key"] == "dagster/partition")
    assert partitions == BACKFILL_DAYS
    assert statuses == ["SUCCESS"] * len(BACKFILL_DAYS)
    status = graphql(port, "query($id: ID!) { runOrError(runId: $id) { ... on Run { status } } }",
                     {"id": run_id})["runOrError"]["status"]
    deadline = time.monotonic() + 120
    while status not in ("SUCCESS", "FAILURE", "CANCELED") and time.monotonic() < deadline:
        time.sleep(2)
        status = graphql(port, "query($id: ID!) { runOrError(runId: $id) { ... on Run { status } } }",
                         {"id": run_id})["runOrError"]["status"]
    assert status == "SUCCESS"
    # Every run has finished: the tables hold each backfilled day once.
    assert rows(settings, "SELECT day::VARCHAR, count(*) FROM logs WHERE day < ?::DATE GROUP BY 1 ORDER BY 1",
                [DAY]) == [(day, 60) for day in BACKFILL_DAYS]
