"""The `flywheel` command line: demo data, then the nightly job over every demo day."""

from __future__ import annotations

from typer.testing import CliRunner

from jobs.cli import app
from tests.conftest import rows


def test_demo_then_run_all_days(settings, monkeypatch, tmp_path):
    monkeypatch.setenv("FLYWHEEL_HOME", str(settings.home))
    monkeypatch.setenv("DAGSTER_HOME", str(tmp_path / "dagster"))
    (tmp_path / "dagster").mkdir()
    runner = CliRunner()
    demo = runner.invoke(app, ["demo", "--days", "2", "--rows-per-day", "300", "--start", "2026-11-01"])
    assert demo.exit_code == 0, demo.output
    assert "2 days" in demo.output
    result = runner.invoke(app, ["run", "--all"])
    assert result.exit_code == 0, result.output
    assert "2026-11-02: ok" in result.output and "import_annotations: ok" in result.output
    assert str(settings.database_path) in result.output
    per_day = rows(settings, "SELECT day::VARCHAR, count(*) FROM logs GROUP BY 1 ORDER BY 1")
    assert [day for day, _ in per_day] == ["2026-11-01", "2026-11-02"]
    # Every demo record is accounted for: accepted, rejected, or a duplicate.
    (read, accepted, rejected, duplicates), = rows(
        settings, "SELECT sum(read), sum(accepted), sum(rejected), sum(duplicates) FROM ingest_files")
    assert read == accepted + rejected + duplicates and rejected > 0 and accepted == sum(n for _, n in per_day)
    # The demo's inbox files were imported and archived; the consensus has both labels.
    labels = dict(rows(settings, "SELECT label, count(*) FROM consensus GROUP BY 1"))
    assert set(labels) == {"hallucination", "relevance"} and min(labels.values()) > 10
    assert not list(settings.annotations_inbox.glob("*"))
    # Slices, their metrics and a queue exported to the outbox exist for each day.
    assert rows(settings, "SELECT count(DISTINCT day) FROM slice_metrics") == [(2,)]
    assert rows(settings, "SELECT count(DISTINCT day), count(*) = count(DISTINCT log_id) FROM annotation_queue") == [(2, True)]
    assert (settings.annotations_outbox / "labelstudio-tasks-2026-11-02.json").exists()
    assert list(settings.reports_dir.glob("worst-slices-*.png"))
    # `flywheel status` summarizes it: the runs just made, the days, labels and queue.
    summary = runner.invoke(app, ["status"])
    assert summary.exit_code == 0, summary.output
    assert "nightly" in summary.output and "2026-11-02" in summary.output
    assert "Labels (consensus): hallucination" in summary.output
    assert "Annotation queue:" in summary.output


def test_bad_usage_exits_2_with_a_one_line_error(settings, monkeypatch):
    monkeypatch.setenv("FLYWHEEL_HOME", str(settings.home))
    result = CliRunner().invoke(app, ["run", "--start", "2026-11-01"])
    assert result.exit_code == 2
    assert "--start and --end go together" in result.output


def test_run_without_landed_days_fails_clearly(settings, monkeypatch):
    monkeypatch.setenv("FLYWHEEL_HOME", str(settings.home))
    result = CliRunner().invoke(app, ["run", "--all"])
    assert result.exit_code == 1
    assert "flywheel demo" in result.output
