"""Data-quality checks of one ingested day, on a real DuckDB file."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest

from flywheel import quality, store
from flywheel.settings import Settings

DAY = "2026-11-20"
OTHER_DAY = "2026-11-19"


@pytest.fixture
def con(tmp_path):
    connection = store.connect(Settings(home=tmp_path))
    yield connection
    connection.close()


def add_logs(con, day: str, n: int, prefix: str = "log") -> None:
    """Insert n well-formed log rows for day, with log_ids prefix-0 .. prefix-(n-1)."""
    con.execute(
        """
        INSERT INTO logs (log_id, ts, day, source, input, output, context, model, feedback,
                          latency_ms, prompt_tokens, completion_tokens, cost_usd,
                          source_file, source_format, source_line, ingested_at)
        SELECT $prefix || '-' || i, $day::TIMESTAMPTZ + to_seconds(i), $day::DATE, 'app',
               'question ' || i, 'answer ' || i, CASE WHEN i % 2 = 0 THEN 'passage' END,
               'gpt-x', [-1, 0, 1, NULL][i % 4 + 1], 100.0 + i, 10 + i, 20 + i, 0.001 * i,
               'logs.jsonl', 'canonical', i + 1, now()
        FROM range($n) t(i)
        """,
        {"prefix": prefix, "day": day, "n": n},
    )


def add_rejected(con, day: str, n: int) -> None:
    con.execute(
        """
        INSERT INTO rejected_logs (day, source_file, line, reason, field, raw, rejected_at)
        SELECT $day::DATE, 'logs.jsonl', 1000 + i, 'missing required field', 'output', '{}', now()
        FROM range($n) t(i)
        """,
        {"day": day, "n": n},
    )


def run(con, max_rejected_share: float = 0.05) -> dict[str, quality.CheckOutcome]:
    outcomes = quality.check_partition(con, DAY, max_rejected_share=max_rejected_share)
    assert [o.name for o in outcomes] == list(quality.CHECK_NAMES)
    for o in outcomes:
        json.dumps(o.metadata)  # plain, serializable types only
        assert o.description
    return {o.name: o for o in outcomes}


def failed(outcomes: dict[str, quality.CheckOutcome]) -> set[str]:
    return {name for name, o in outcomes.items() if not o.passed}


def test_good_partition_passes_every_check(con):
    add_logs(con, DAY, 200)
    add_logs(con, OTHER_DAY, 50, prefix="older")
    outcomes = run(con)
    assert failed(outcomes) == set()
    assert outcomes["value_ranges"].metadata["rows"] == 200
    assert outcomes["unique_log_id"].metadata["log_ids_on_other_days"] == 0
    assert outcomes["rejected_share"].metadata["rejected_share"] == 0.0
    assert outcomes["schema"].metadata["missing_columns"] == []


def test_partition_frame_has_structural_columns_only(con):
    add_logs(con, DAY, 3)
    add_logs(con, OTHER_DAY, 2, prefix="older")
    frame = quality.partition_frame(con, DAY)
    assert tuple(frame.columns) == quality.FRAME_COLUMNS
    assert len(frame) == 3
    assert sorted(frame["output_len"]) == [len("answer 0"), len("answer 1"), len("answer 2")]
    assert frame["context_len"].isna().sum() == 1


def test_duplicate_log_id_within_the_day_fails(con):
    add_logs(con, DAY, 20)
    add_logs(con, DAY, 1)  # a second "log-0"
    outcomes = run(con)
    assert failed(outcomes) == {"unique_log_id"}
    meta = outcomes["unique_log_id"].metadata
    assert meta["duplicates_within_day"] == 2  # both rows of the pair
    assert meta["example_log_ids"] == ["log-0"]
    assert meta["log_ids_on_other_days"] == 0


def test_log_id_present_on_another_day_fails(con):
    add_logs(con, DAY, 20)
    add_logs(con, OTHER_DAY, 1, prefix="log")  # "log-0" also on the day before
    outcomes = run(con)
    assert failed(outcomes) == {"unique_log_id"}
    meta = outcomes["unique_log_id"].metadata
    assert meta["duplicates_within_day"] == 0
    assert meta["log_ids_on_other_days"] == 1
    assert meta["other_day_examples"] == [{"log_id": "log-0", "other_day": OTHER_DAY}]
    assert meta["example_log_ids"] == ["log-0"]
    assert "another day" in outcomes["unique_log_id"].description


@pytest.mark.parametrize(
    ("column", "bad_value"),
    [
        ("latency_ms", -5.0),
        ("latency_ms", 7_200_000.0),
        ("feedback", 5),
        ("prompt_tokens", -1),
        ("completion_tokens", 3_000_000),
        ("cost_usd", -0.5),
    ],
)
def test_value_out_of_range_fails(con, column, bad_value):
    add_logs(con, DAY, 30)
    con.execute(f"UPDATE logs SET {column} = ? WHERE log_id = 'log-7'", [bad_value])
    outcomes = run(con)
    assert failed(outcomes) == {"value_ranges"}
    meta = outcomes["value_ranges"].metadata
    assert meta["example_log_ids"] == ["log-7"]
    assert meta["failing_values"] == 1
    (bad,) = [e for e in meta["expectations"] if not e["passed"]]
    assert bad["column"] == column
    assert bad["example_values"] == [bad_value]
    assert column in outcomes["value_ranges"].description


def test_null_feedback_is_allowed(con):
    add_logs(con, DAY, 8)
    con.execute("UPDATE logs SET feedback = NULL")
    assert run(con)["value_ranges"].passed


def test_empty_output_fails_required_fields(con):
    add_logs(con, DAY, 10)
    con.execute("UPDATE logs SET output = '' WHERE log_id = 'log-3'")
    outcomes = run(con)
    assert failed(outcomes) == {"required_fields"}
    meta = outcomes["required_fields"].metadata
    assert meta["example_log_ids"] == ["log-3"]
    assert meta["failed_expectations"] == ["expect_column_values_to_be_between(output_len)"]


def test_null_output_fails_required_fields(con):
    # A table created without the NOT NULL constraint (e.g. by an older version).
    con.execute("ALTER TABLE logs ALTER COLUMN output DROP NOT NULL")
    add_logs(con, DAY, 10)
    con.execute("UPDATE logs SET output = NULL WHERE log_id IN ('log-2', 'log-5')")
    outcomes = run(con)
    assert failed(outcomes) == {"required_fields"}
    meta = outcomes["required_fields"].metadata
    assert sorted(meta["example_log_ids"]) == ["log-2", "log-5"]
    assert "expect_column_values_to_not_be_null(output_len)" in meta["failed_expectations"]


def test_empty_log_id_fails_required_fields(con):
    add_logs(con, DAY, 5)
    con.execute("UPDATE logs SET log_id = '' WHERE log_id = 'log-1'")
    outcomes = run(con)
    assert "required_fields" in failed(outcomes)
    assert outcomes["required_fields"].metadata["example_log_ids"] == [""]


def test_rejected_share_from_ingest_files(con):
    add_logs(con, DAY, 90)
    con.execute(
        "INSERT INTO ingest_files VALUES (?::DATE, 'logs.jsonl', 'canonical', 100, 90, 10, 0, NULL, now())",
        [DAY],
    )
    outcomes = run(con, max_rejected_share=0.05)
    assert failed(outcomes) == {"rejected_share"}
    meta = outcomes["rejected_share"].metadata
    assert meta["counted_from"] == "ingest_files"
    assert (meta["accepted"], meta["rejected"]) == (90, 10)
    assert meta["rejected_share"] == pytest.approx(0.10)
    assert "over the limit" in outcomes["rejected_share"].description
    assert run(con, max_rejected_share=0.10)["rejected_share"].passed  # the limit is inclusive


def test_rejected_share_from_table_rows(con):
    add_logs(con, DAY, 40)
    add_rejected(con, DAY, 10)
    add_rejected(con, OTHER_DAY, 500)  # another day's rejections do not count
    outcomes = run(con, max_rejected_share=0.1)
    meta = outcomes["rejected_share"].metadata
    assert meta["counted_from"] == "logs and rejected_logs rows"
    assert (meta["accepted"], meta["rejected"]) == (40, 10)
    assert not outcomes["rejected_share"].passed
    assert len(meta["example_rejections"]) == quality.EXAMPLES
    assert meta["example_rejections"][0] == {
        "source_file": "logs.jsonl",
        "line": 1000,
        "reason": "missing required field",
    }
    assert run(con, max_rejected_share=0.25)["rejected_share"].passed


def test_empty_partition_passes_with_a_note(con):
    add_logs(con, OTHER_DAY, 5, prefix="older")
    outcomes = run(con)
    assert failed(outcomes) == set()
    for name in ("schema", "required_fields", "unique_log_id", "value_ranges"):
        assert outcomes[name].metadata["note"] == quality.EMPTY_NOTE
        assert outcomes[name].metadata["rows"] == 0
    assert outcomes["rejected_share"].metadata["note"] == "no records ingested for this day"


def test_all_records_rejected_fails_even_with_no_rows(con):
    add_rejected(con, DAY, 3)
    outcomes = run(con)
    assert failed(outcomes) == {"rejected_share"}
    assert outcomes["rejected_share"].metadata["rejected_share"] == 1.0


def test_schema_type_change_fails(con):
    con.execute("ALTER TABLE logs ALTER COLUMN git_commit TYPE INTEGER")
    add_logs(con, DAY, 5)
    outcomes = run(con)
    assert failed(outcomes) == {"schema"}
    assert outcomes["schema"].metadata["type_mismatches"] == {
        "git_commit": {"expected": "VARCHAR", "actual": "INTEGER"}
    }


def test_schema_extra_column_is_allowed_missing_column_is_not(con):
    con.execute("ALTER TABLE logs ADD COLUMN team VARCHAR")
    add_logs(con, DAY, 5)
    outcomes = run(con)
    assert outcomes["schema"].passed
    assert outcomes["schema"].metadata["extra_columns"] == ["team"]

    con.execute("ALTER TABLE logs DROP COLUMN prompt_name")
    outcomes = run(con)
    assert failed(outcomes) == {"schema"}
    assert outcomes["schema"].metadata["missing_columns"] == ["prompt_name"]


def test_missing_frame_column_fails_frame_checks_as_not_run(con):
    add_logs(con, DAY, 5)
    con.execute("ALTER TABLE logs DROP COLUMN latency_ms")
    outcomes = run(con)
    assert failed(outcomes) == {"schema", "required_fields", "unique_log_id", "value_ranges"}
    assert "latency_ms" in outcomes["schema"].description
    assert outcomes["value_ranges"].description.startswith("not run")


def test_expected_columns_come_from_the_store_schema():
    columns = dict(quality.expected_logs_columns())
    assert columns["log_id"] == "VARCHAR"
    assert columns["ts"] == "TIMESTAMP WITH TIME ZONE"
    assert columns["tags"] == "VARCHAR[]"
    assert set(quality.FRAME_SOURCE_COLUMNS) <= set(columns)


def test_importing_quality_does_not_import_great_expectations():
    code = "import sys, flywheel.quality; assert 'great_expectations' not in sys.modules"
    subprocess.run([sys.executable, "-c", code], check=True)
