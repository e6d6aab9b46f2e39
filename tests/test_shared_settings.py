"""DuckDB settings held by statements on several connections at once (the loader's
``SHARED_SETTINGS``): the same settings are held together, other settings wait, and the
last holder sets back what was there before."""

from __future__ import annotations

import threading

import duckdb

from flywheel.ingest.loader import _SharedSettings

FAST = {"disabled_optimizers": "filter_pushdown"}
ORDERED = {"disabled_optimizers": "filter_pushdown", "preserve_insertion_order": "false"}


def _setting(con, name: str) -> str:
    return con.execute(f"SELECT current_setting('{name}')::VARCHAR").fetchone()[0]


def test_statements_that_need_the_same_settings_hold_them_together():
    shared = _SharedSettings()
    with duckdb.connect() as con:
        first, second = con.cursor(), con.cursor()
        both_in = threading.Barrier(2, timeout=10)
        seen = []

        def hold(cursor):
            with shared.held(cursor, FAST):
                both_in.wait()  # fails (BrokenBarrierError) unless both are inside at once
                seen.append(_setting(cursor, "disabled_optimizers"))
                both_in.wait()

        threads = [threading.Thread(target=hold, args=(c,)) for c in (first, second)]
        for t in threads:
            t.start()
        for t in threads:
            t.join(20)
        assert seen == ["filter_pushdown", "filter_pushdown"]
        # Set back by the last one out, though the first one's connection is closed by now.
        first.close()
        assert _setting(con, "disabled_optimizers") == ""


def test_other_settings_wait_until_no_one_holds_any():
    shared = _SharedSettings()
    with duckdb.connect() as con:
        holder, waiter = con.cursor(), con.cursor()
        held = threading.Event()
        release = threading.Event()
        order = []

        def hold():
            with shared.held(holder, FAST):
                held.set()
                release.wait(10)
                order.append(("fast, leaving", _setting(holder, "preserve_insertion_order")))

        def wait_for_other():
            held.wait(10)
            with shared.held(waiter, ORDERED):
                order.append(("ordered, inside", _setting(waiter, "preserve_insertion_order")))

        threads = [threading.Thread(target=hold), threading.Thread(target=wait_for_other)]
        for t in threads:
            t.start()
        held.wait(10)
        threads[1].join(0.3)
        assert threads[1].is_alive()  # waiting: the other settings are held
        release.set()
        for t in threads:
            t.join(20)
        assert order == [("fast, leaving", "true"), ("ordered, inside", "false")]
        assert _setting(con, "disabled_optimizers") == ""
        assert _setting(con, "preserve_insertion_order") == "true"


def test_a_setting_changed_before_is_set_back_to_that_value():
    shared = _SharedSettings()
    with duckdb.connect() as con:
        con.execute("SET preserve_insertion_order = false")
        with shared.held(con, ORDERED | {"preserve_insertion_order": "true"}):
            assert _setting(con, "preserve_insertion_order") == "true"
        assert _setting(con, "preserve_insertion_order") == "false"
        assert _setting(con, "disabled_optimizers") == ""
