"""The `flywheel` command line: demo data, a run over every demo day, and the commands
people use afterwards (status, report, export-queue, import-annotations)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from typer.testing import CliRunner

from flywheel import store
from flywheel.settings import load
from jobs.cli import app
from tests.conftest import land, rows

DAYS = ["2026-11-01", "2026-11-02"]


@pytest.fixture(scope="module")
def demo_home(tmp_path_factory):
    """One demo home (2 days x 300 records) run once by `flywheel run --all` for the module."""
    base = tmp_path_factory.mktemp("cli")
    env = {"FLYWHEEL_HOME": str(base / "home"), "DAGSTER_HOME": str(base / "dagster")}
    (base / "dagster").mkdir()
    with pytest.MonkeyPatch.context() as mp:
        for key, value in env.items():
            mp.setenv(key, value)
        runner = CliRunner()
        demo = runner.invoke(app, ["demo", "--days", "2", "--rows-per-day", "300", "--start", DAYS[0]])
        assert demo.exit_code == 0, demo.output
        assert "2 days" in demo.output
        run = runner.invoke(app, ["run", "--all"])
    return env, run


@pytest.fixture
def home(demo_home, monkeypatch):
    env, _ = demo_home
    for key, value in env.items():
        monkeypatch.setenv(key, value)
    return load({"FLYWHEEL_HOME": env["FLYWHEEL_HOME"]})


def error_lines(output: str) -> list[str]:
    return [line for line in output.splitlines() if line.startswith("error:")]


def test_run_all_ingests_then_imports_then_learns_then_runs_each_day(demo_home, home):
    _, result = demo_home
    assert result.exit_code == 0, result.output
    out = result.output
    # The order that lets the night's assets use what was learned from the labels.
    order = [out.index(f"ingest {DAYS[0]}: ok"), out.index(f"ingest {DAYS[1]}: ok"),
             out.index("import_annotations: ok"), out.index(f"{DAYS[0]}: scores, slices"),
             out.index(f"\n    {DAYS[1]}: ok")]
    assert order == sorted(order)
    if "learn: classifiers" in out:
        assert out.index("import_annotations: ok") < out.index("learn: ok") < order[3]
    assert str(home.database_path) in out
    per_day = rows(home, "SELECT day::VARCHAR, count(*) FROM logs GROUP BY 1 ORDER BY 1")
    assert [day for day, _ in per_day] == DAYS
    (read, accepted, rejected, duplicates), = rows(
        home, "SELECT sum(read), sum(accepted), sum(rejected), sum(duplicates) FROM ingest_files")
    assert read == accepted + rejected + duplicates and rejected > 0 and accepted == sum(n for _, n in per_day)
    labels = dict(rows(home, "SELECT label, count(*) FROM consensus GROUP BY 1"))
    assert set(labels) == {"hallucination", "relevance"} and min(labels.values()) > 10
    assert rows(home, "SELECT count(DISTINCT day) FROM slice_metrics") == [(2,)]
    assert rows(home, "SELECT count(DISTINCT day), count(*) = count(DISTINCT log_id) FROM annotation_queue") == [(2, True)]
    assert (home.annotations_outbox / f"labelstudio-tasks-{DAYS[1]}.json").exists()
    # Each night wrote its HTML report.
    assert sorted(p.name for p in home.reports_dir.glob("*.html")) == [f"{d}.html" for d in DAYS]
    with store.connection(home, read_only=True) as con:
        if store.table_exists(con, "models") and store.table_exists(con, "log_scores"):
            champions = con.execute("SELECT count(*) FROM models WHERE status = 'champion'").fetchone()[0]
            scored = con.execute("SELECT count(DISTINCT day) FROM log_scores").fetchone()[0]
            # Trained before the days were scored: every day has the champions' scores.
            assert champions == 0 or scored == len(DAYS)


def test_status_prints_last_run_models_judges_prompts_and_slices(home):
    with store.connection(home) as con:
        con.execute("""CREATE TABLE IF NOT EXISTS models (version VARCHAR, task VARCHAR, status VARCHAR,
                           trained_at TIMESTAMPTZ, data_hash VARCHAR, code_version VARCHAR, settings JSON,
                           metrics JSON, artifact_path VARCHAR, reason VARCHAR)""")
        con.execute("UPDATE models SET status = 'retired' WHERE task = 'hallucination' AND status = 'champion'")
        con.execute("""INSERT INTO models (version, task, status, trained_at, data_hash, code_version, metrics)
                       VALUES ('hal-test', 'hallucination', 'champion', TIMESTAMPTZ '2026-11-02 03:00:00+00',
                               'd', 'c', '{"auroc": 0.8123, "ap": 0.51, "f1": 0.6, "n_eval": 140}')""")
    result = CliRunner().invoke(app, ["status"])
    assert result.exit_code == 0, result.output
    out = result.output
    assert out.startswith("Last run: nightly 2026-11-02 SUCCESS at ")
    assert "hallucination: hal-test (trained 2026-11-02 03:00) auroc=0.812 ap=0.510 f1=0.600 n_eval=140" in out
    for heading in ("Recent runs:", "Ingested days", "Trusted judges:", "Current prompts:", "Worst slices",
                    "Labels (consensus): hallucination", "Annotation queue: 100 items queued"):
        assert heading in out


def test_report_writes_and_prints_the_page(home):
    result = CliRunner().invoke(app, ["report", "--day", DAYS[0]])
    assert result.exit_code == 0, result.output
    path = Path(result.stdout.strip().splitlines()[-1])
    assert path == home.reports_dir / f"{DAYS[0]}.html" and path.stat().st_size > 10_000
    assert "flywheel report for 2026-11-01" in path.read_text(encoding="utf-8")
    latest = CliRunner().invoke(app, ["report"])
    assert latest.stdout.strip().endswith(f"{DAYS[1]}.html")
    bad = CliRunner().invoke(app, ["report", "--day", "2026-13-01"])
    assert bad.exit_code == 2 and error_lines(bad.output) == ["error: --day '2026-13-01' is not a date (YYYY-MM-DD)"]


def test_export_queue_writes_the_outbox_files_and_prints_their_paths(home):
    for path in home.annotations_outbox.glob(f"*{DAYS[0]}*"):
        path.unlink()
    result = CliRunner().invoke(app, ["export-queue", "--day", DAYS[0]])
    assert result.exit_code == 0, result.output
    paths = [Path(line) for line in result.stdout.splitlines()[1:]]
    assert [p.name for p in paths] == [f"labelstudio-tasks-{DAYS[0]}.json", "labelstudio-config.xml",
                                       f"argilla-records-{DAYS[0]}.jsonl", f"queue-{DAYS[0]}.csv"]
    assert all(p.exists() for p in paths)
    assert len(json.loads(paths[0].read_text())) == 50
    none = CliRunner().invoke(app, ["export-queue", "--day", "2026-10-01"])
    assert none.exit_code == 1
    assert error_lines(none.output) == ["error: no queue for 2026-10-01: run `flywheel run --day 2026-10-01` first"]


def test_import_annotations_imports_a_file_and_says_what_was_rejected(home, tmp_path):
    log_id = rows(home, "SELECT log_id FROM logs ORDER BY log_id LIMIT 1")[0][0]
    labels = tmp_path / "reviewed.csv"
    labels.write_text("log_id,annotator,label,value\n"
                      f"{log_id},cli-tester,hallucination,1\n"
                      f"{log_id},cli-tester,hallucination,maybe\n"
                      "no-such-log,cli-tester,hallucination,0\n")
    before = rows(home, "SELECT count(*) FROM annotations")[0][0]
    result = CliRunner().invoke(app, ["import-annotations", str(labels)])
    assert result.exit_code == 0, result.output
    assert "imported: 1 labels accepted, 1 rejected, 0 duplicates, 1 pending" in result.output
    assert "1 labels wait for their logs" in result.output
    assert rows(home, "SELECT count(*) FROM annotations")[0][0] == before + 1
    assert rows(home, "SELECT reason FROM rejected_annotations WHERE source_file LIKE '%reviewed%'") == [
        ("unmappable value",)]
    assert rows(home, "SELECT log_id FROM pending_annotations WHERE source_file LIKE '%reviewed%'") == [
        ("no-such-log",)]
    assert labels.exists() and not list(home.annotations_inbox.glob("reviewed*"))  # copied, imported, archived


def test_import_annotations_of_a_missing_file_is_a_one_line_usage_error(home, tmp_path):
    result = CliRunner().invoke(app, ["import-annotations", str(tmp_path / "nope.csv")])
    assert result.exit_code == 2
    assert error_lines(result.output) == [f"error: {tmp_path / 'nope.csv'}: no such file"]
    folder = CliRunner().invoke(app, ["import-annotations", str(tmp_path)])
    assert folder.exit_code == 2 and error_lines(folder.output) == [f"error: {tmp_path}: not a file"]


def test_a_failed_run_names_the_asset_and_why_in_one_line(settings, monkeypatch, tmp_path):
    monkeypatch.setenv("FLYWHEEL_HOME", str(settings.home))
    monkeypatch.setenv("DAGSTER_HOME", str(tmp_path / "dagster"))
    (tmp_path / "dagster").mkdir()
    # One good record and three broken ones: far above the 5% rejected-share threshold.
    land(settings, "2026-11-20", "app.jsonl",
         '{"log_id": "a", "ts": "2026-11-20T10:00:00Z", "input": "q", "output": "a"}\n{x\n{y\n{z\n')
    result = CliRunner().invoke(app, ["run", "--day", "2026-11-20"])
    assert result.exit_code == 1
    failures = [line.strip() for line in result.output.splitlines() if "failed:" in line and "step" in line]
    assert failures == ["step logs failed: 1 blocking asset check failed with ERROR severity: logs: rejected_share"]
    assert error_lines(result.output) == ["error: 1 runs failed: ingest 2026-11-20"]


def test_bad_usage_exits_2_with_a_one_line_error(settings, monkeypatch):
    monkeypatch.setenv("FLYWHEEL_HOME", str(settings.home))
    settings.home.mkdir(parents=True)
    result = CliRunner().invoke(app, ["run", "--start", "2026-11-01"])
    assert result.exit_code == 2
    assert error_lines(result.output) == ["error: --start and --end go together"]
    both = CliRunner().invoke(app, ["run", "--day", "2026-11-01", "--all"])
    assert both.exit_code == 2 and error_lines(both.output) == ["error: use one of --day, --start/--end, --all"]
    backwards = CliRunner().invoke(app, ["run", "--start", "2026-11-05", "--end", "2026-11-01"])
    assert backwards.exit_code == 2
    assert error_lines(backwards.output) == ["error: --end 2026-11-01 is before --start 2026-11-05"]
    unknown = CliRunner().invoke(app, ["frobnicate"])
    assert unknown.exit_code == 2


def test_run_without_landed_days_fails_clearly(settings, monkeypatch):
    monkeypatch.setenv("FLYWHEEL_HOME", str(settings.home))
    settings.home.mkdir(parents=True)
    result = CliRunner().invoke(app, ["run", "--all"])
    assert result.exit_code == 1
    assert "flywheel demo" in result.output


def test_a_bad_setting_is_a_usage_error(monkeypatch, settings):
    monkeypatch.setenv("FLYWHEEL_HOME", str(settings.home))
    monkeypatch.setenv("FLYWHEEL_STORAGE", "floppy")
    result = CliRunner().invoke(app, ["status"])
    assert result.exit_code == 2
    assert error_lines(result.output) == ["error: FLYWHEEL_STORAGE='floppy' is not one of duckdb, ducklake"]


def test_labels_of_a_day_run_before_its_logs_wait_and_join_at_the_next_run(demo_home, tmp_path, monkeypatch):
    """`run --day <day 2>` first imports labels of day 1 before day 1 is ingested: they wait
    (pending) and `run --all` then keeps every label, as a clean `run --all` does (#13)."""
    monkeypatch.setenv("FLYWHEEL_HOME", str(tmp_path / "home"))
    monkeypatch.setenv("DAGSTER_HOME", str(tmp_path / "dagster"))
    (tmp_path / "dagster").mkdir()
    runner = CliRunner()
    assert runner.invoke(app, ["demo", "--days", "2", "--rows-per-day", "300", "--start", DAYS[0]]).exit_code == 0
    home = load({"FLYWHEEL_HOME": str(tmp_path / "home")})
    first = runner.invoke(app, ["run", "--day", DAYS[1]])
    assert first.exit_code == 0, first.output
    waiting = rows(home, "SELECT count(*) FROM pending_annotations")[0][0]
    assert waiting > 0 and f"{waiting} labels wait for their logs" in first.output
    assert rows(home, "SELECT count(*) FROM rejected_annotations WHERE reason LIKE '%log_id%'") == [(0,)]
    status = runner.invoke(app, ["status"])
    assert f"Labels waiting for their logs: {waiting} labels of " in status.output

    second = runner.invoke(app, ["run", "--all"])
    assert second.exit_code == 0, second.output
    assert "labels wait for their logs" not in second.output
    # The clean run of the module's home (without what other tests imported into it since).
    clean = load({"FLYWHEEL_HOME": demo_home[0]["FLYWHEEL_HOME"]})
    demo_labels = "log_id NOT IN (SELECT log_id FROM annotations WHERE annotator = 'cli-tester')"
    query = f"SELECT log_id, annotator, label, value, tool FROM annotations WHERE {demo_labels} ORDER BY ALL"
    assert len(rows(home, query)) > 0 and rows(home, query) == rows(clean, query)
    assert rows(home, "SELECT count(*) FROM pending_annotations") == [(0,)]
    consensus = f"SELECT log_id, label, value, n_annotators, status FROM consensus WHERE {demo_labels} ORDER BY ALL"
    assert rows(home, consensus) == rows(clean, consensus)


def test_a_typo_in_flywheel_home_is_refused_and_init_creates_a_home(demo_home, tmp_path, monkeypatch):
    typo = tmp_path / "hoem"
    monkeypatch.setenv("FLYWHEEL_HOME", str(typo))
    monkeypatch.setenv("DAGSTER_HOME", demo_home[0]["DAGSTER_HOME"])
    for command in (["run", "--all"], ["status"], ["report"], ["export-queue"],
                    ["import-annotations", str(tmp_path)]):
        result = CliRunner().invoke(app, command)
        assert result.exit_code == 2, (command, result.output)
        assert error_lines(result.output) == [
            f"error: FLYWHEEL_HOME={typo} does not exist (a typo?); create a new home with "
            "`flywheel init` or `flywheel demo`"], command
    assert not typo.exists()  # nothing was created
    created = CliRunner().invoke(app, ["init"])
    assert created.exit_code == 0 and f"new home: {typo}" in created.output
    assert (typo / "landing").is_dir() and (typo / "annotations" / "inbox").is_dir()
    assert (typo / "flywheel.duckdb").exists()
    run = CliRunner().invoke(app, ["run", "--all"])
    assert run.exit_code == 1 and "flywheel demo" in run.output  # a home now, but no landed day yet


def test_a_day_outside_the_partitions_is_one_line_naming_the_valid_range(home):
    from datetime import date, timedelta

    yesterday = (date.today() - timedelta(days=1)).isoformat()
    valid = (f"the days that can run go from {home.start_date} (FLYWHEEL_START_DATE) to {yesterday} "
             "(the last day that has ended)")
    future = CliRunner().invoke(app, ["run", "--day", "2099-01-01"])
    assert future.exit_code == 2
    assert error_lines(future.output) == [f"error: 2099-01-01 cannot run: {valid}"]
    assert len(future.output.strip().splitlines()) == 1  # no traceback
    today = CliRunner().invoke(app, ["run", "--day", date.today().isoformat()])
    assert error_lines(today.output) == [f"error: {date.today().isoformat()} cannot run: {valid}"]
    before = CliRunner().invoke(app, ["run", "--start", "2024-12-30", "--end", "2025-01-02"])
    assert before.exit_code == 2
    assert error_lines(before.output) == [f"error: 2024-12-30 .. 2024-12-31 (2 days) cannot run: {valid}"]
