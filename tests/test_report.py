"""The nightly HTML report: written from the tables, opened in headless Chromium (Debian's
package; `python3 dev.py test` installs it), where every chart must render."""

from __future__ import annotations

import os
import re
import subprocess
import urllib.parse
from datetime import date, timedelta

import dagster as dg
import pytest

from assets.report import report as report_asset
from assets.resources import FlywheelResource
from flywheel import store
from flywheel.report import chart_names, rendered_sizes, report_path, write_report

CHROMIUM = "/usr/bin/chromium"
DAY = "2026-11-20"
DAYS = [(date(2026, 11, 20) - timedelta(days=i)).isoformat() for i in range(4, -1, -1)]


def chromium_dom(path, profile) -> str:
    """Return the DOM of the page after Chromium loaded it and ran its inline script."""
    if not os.path.exists(CHROMIUM):
        if os.environ.get("CI", "").lower() == "true":
            pytest.fail(f"{CHROMIUM} is missing: CI installs chromium (python3 dev.py test)")
        pytest.skip(f"{CHROMIUM} is absent: `apt-get install chromium` (python3 dev.py test does it)")
    result = subprocess.run(
        [CHROMIUM, "--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
         "--disable-background-networking", "--disable-component-update", "--disable-sync",
         f"--user-data-dir={profile}", "--window-size=1200,900", "--virtual-time-budget=5000",
         "--dump-dom", "file://" + urllib.parse.quote(str(path))],
        capture_output=True, text=True, timeout=120,
    )
    assert result.returncode == 0, result.stderr[-2000:]
    return result.stdout


def fill_tables(settings) -> None:
    """Rows in every table the report draws from, shaped as the nightly assets write them."""
    with store.connection(settings) as con:
        for i, day in enumerate(DAYS):
            for slice_type, value, rate in (("source", "web-chat", 0.10 + 0.02 * i), ("topic", "refunds", 0.30 - 0.03 * i),
                                            ("model", "gpt-4o-mini", 0.15)):
                con.execute(
                    """INSERT INTO slice_metrics (day, slice_type, slice_value, n, n_signal, failures, failure_rate,
                           failure_low, failure_high, signal, computed_at)
                       VALUES (?, ?, ?, 200, 200, ?, ?, ?, ?, 'feedback', now())""",
                    [day, slice_type, value, int(200 * rate), rate, rate - 0.04, rate + 0.05])
            for n in range(20):
                con.execute("""INSERT INTO annotation_queue (day, log_id, strategy, reason, priority, queued_at)
                               VALUES (?, ?, 'random', 'uniform sample', ?, now())""", [day, f"{day}-{n}", n])
        con.execute(
            """INSERT INTO worst_slices (day, rank, slice_type, slice_value, n_signal, failures, failure_rate,
                   failure_low, failure_high, rest_rate, test, p_value, q_value, signal)
               VALUES (?, 1, 'topic', 'refunds', 200, 36, 0.18, 0.13, 0.24, 0.09, 'z', 0.001, 0.004, 'feedback'),
                      (?, 2, 'source', 'web-chat', 200, 28, 0.14, 0.10, 0.19, 0.09, 'z', 0.01, 0.03, 'feedback')""",
            [DAY, DAY])
        con.execute("""INSERT INTO annotations (log_id, annotator, label, value, source_file, source_format,
                           imported_at, tool)
                       SELECT log_id, 'ann-a', 'hallucination', 1, 'x.csv', 'csv', now(), 'canonical'
                       FROM annotation_queue WHERE priority < 7""")
        # The registries of the learning loop (tables as the shared contract defines them).
        con.execute("""CREATE TABLE IF NOT EXISTS models (version VARCHAR, task VARCHAR, status VARCHAR,
                           trained_at TIMESTAMPTZ, data_hash VARCHAR, code_version VARCHAR, settings JSON,
                           metrics JSON, artifact_path VARCHAR, reason VARCHAR)""")
        for n, (auroc, status) in enumerate([(0.71, "retired"), (0.78, "retired"), (0.83, "champion")]):
            for task in ("hallucination", "relevance"):
                con.execute(
                    """INSERT INTO models (version, task, status, trained_at, data_hash, code_version, metrics)
                       VALUES (?, ?, ?, TIMESTAMPTZ '2026-11-15 00:00:00+00' + to_days(?), 'd', 'c', ?)""",
                    [f"{task[:4]}-{n}", task, status, n,
                     f'{{"auroc": {auroc}, "ap": {auroc - 0.2:.2f}, "f1": {auroc - 0.15:.2f}, "ece": 0.05}}'])
        con.execute(
            """INSERT INTO judge_alignment (criterion, prompt_version, kappa, tpr, tnr, n, n_pos, n_neg,
                   parse_failures, trusted, evaluated_at)
               VALUES ('hallucination', 'j1', 0.42, 0.7, 0.8, 80, 20, 60, 1, false, now() - INTERVAL 1 DAY),
                      ('hallucination', 'j2', 0.71, 0.85, 0.9, 80, 20, 60, 0, true, now()),
                      ('relevance', 'j1', 0.66, 0.9, 0.7, 80, 60, 20, 0, true, now())""")
        con.execute(
            """INSERT INTO prompt_evals (eval_id, prompt_name, champion_version, candidate_version, metric,
                   champion_score, candidate_score, p_value, n, promoted, evaluated_at)
               VALUES ('e1', 'support-triage', 'p1', 'p2', 'judge_pass_rate', 0.72, 0.81, 0.02, 60, true, now()),
                      ('e2', 'docs-qa', 'p1', 'p3', 'judge_pass_rate', 0.80, 0.78, 0.60, 60, false, now())""")


def test_the_report_renders_every_chart_in_headless_chromium(settings, tmp_path):
    fill_tables(settings)
    with store.connection(settings, read_only=True) as con:
        page = write_report(con, settings, DAY)
    assert page.path == settings.reports_dir / f"{DAY}.html"
    assert page.chart_status() == dict.fromkeys(chart_names(), "chart")
    text = page.path.read_text(encoding="utf-8")
    # Self-contained: nothing to fetch (no external scripts, styles, images or fonts).
    assert not re.search(r"""(src|href)\s*=\s*["']?(https?:|//)""", text)
    assert "@import" not in text and "url(http" not in text and "<img" not in text and "<link" not in text
    assert page.summary["champion classifiers"] == "hallucination hall-2, relevance rele-2"
    assert page.summary["trusted judges"] == "hallucination, relevance"

    sizes = rendered_sizes(chromium_dom(page.path, tmp_path / "profile"))
    assert set(sizes) == set(chart_names())
    for name, (rendered, drawn) in sizes.items():
        width, height = (int(v) for v in rendered.split("x"))
        drawn_w, drawn_h = (int(v) for v in drawn.split("x"))
        # Laid out at a readable size, and something was drawn inside the SVG.
        assert width >= 300 and height >= 150, (name, rendered)
        assert drawn_w >= 200 and drawn_h >= 100, (name, drawn)


def test_an_empty_home_gives_a_page_of_no_data_notes_that_still_opens(settings, tmp_path):
    with store.connection(settings, read_only=True) as con:
        page = write_report(con, settings, DAY)
    assert set(page.chart_status().values()) == {"no data yet"}
    text = page.path.read_text(encoding="utf-8")
    assert text.count("no data yet:") == len(chart_names())
    sizes = rendered_sizes(chromium_dom(page.path, tmp_path / "profile"))
    assert set(sizes.values()) == {("none", "")}


def test_the_report_asset_writes_the_page_of_its_partition(settings):
    fill_tables(settings)
    with dg.instance_for_test() as instance:
        result = dg.materialize(
            [report_asset], partition_key=DAY, instance=instance,
            resources={"flywheel": FlywheelResource(home=str(settings.home))},
        )
    assert result.success
    (mat,) = result.asset_materializations_for_node("report")
    assert mat.metadata["path"].value == str(report_path(settings, DAY))
    assert mat.metadata["charts_with_data"].value == len(chart_names())
    assert report_path(settings, DAY).stat().st_size > 20_000

