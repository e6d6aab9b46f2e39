"""Compare every table of two flywheel homes (used by the kill-and-rerun tests)."""

from __future__ import annotations

import duckdb

# Columns that differ between two clean runs of the same input: when something ran (every
# timestamp column is left out by type), and ids of runs and of what a run drew at random.
VOLATILE = {"run_id", "request_hash"}


def snapshot(home, *, skip_tables: frozenset[str] = frozenset()) -> dict[str, list[tuple]]:
    """Return every table's rows of the home's DuckDB file (sorted, without timestamp and
    :data:`VOLATILE` columns, the home's own path written as ``$HOME``)."""
    con = duckdb.connect(str(home / "flywheel.duckdb"), read_only=True)
    try:
        tables = [t for (t,) in con.execute(
            "SELECT table_name FROM information_schema.tables WHERE table_schema = 'main' ORDER BY 1").fetchall()
            if t not in skip_tables]
        out = {}
        for table in tables:
            columns = [name for name, kind in con.execute(
                "SELECT column_name, data_type FROM information_schema.columns WHERE table_name = ? "
                "ORDER BY ordinal_position", [table]).fetchall()
                if "TIMESTAMP" not in kind and name not in VOLATILE]
            select = ", ".join(f'"{c}"::VARCHAR' for c in columns)
            rows = con.execute(f"SELECT {select} FROM {table}").fetchall()
            out[table] = sorted((tuple(None if v is None else v.replace(str(home), "$HOME") for v in row)
                                 for row in rows), key=repr)
        return out
    finally:
        con.close()


def differences(a: dict[str, list[tuple]], b: dict[str, list[tuple]]) -> dict[str, str]:
    """Return, per table that differs, a short description of how."""
    diff = {}
    for table in sorted(set(a) | set(b)):
        left, right = a.get(table), b.get(table)
        if left != right:
            if left is None or right is None:
                diff[table] = "missing on one side"
                continue
            only_a = [r for r in left if r not in right][:2]
            only_b = [r for r in right if r not in left][:2]
            diff[table] = f"{len(left)} vs {len(right)} rows; only first: {only_a}; only second: {only_b}"
    return diff
