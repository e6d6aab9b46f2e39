"""The DuckDB concurrency pool of the Dagster instance, seen from the command line.

A run killed while it held the pool's slot (``kill -9``, a crash, a lost machine) never
gives it back, and every later run would wait for it forever. Before each run the CLI
frees the slots of runs that are finished or whose process is gone (:func:`free_dead_runs`),
then waits for a free slot itself (:func:`wait_for_slot`): saying which run holds it, and
stoppable with Ctrl-C or SIGTERM (Dagster's own wait inside a run ignores both).
"""

from __future__ import annotations

import os
import socket
import time
from collections.abc import Callable

from assets.resources import DUCKDB_POOL

PID_TAG = "flywheel/pid"
HOST_TAG = "flywheel/host"


def run_tags() -> dict[str, str]:
    """Return the tags that let a later process tell whether this run's process is alive."""
    return {PID_TAG: str(os.getpid()), HOST_TAG: socket.gethostname()}


def process_alive(pid: int) -> bool:
    """Return whether a process of that id runs on this machine (a zombie does not count)."""
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    try:
        with open(f"/proc/{pid}/stat", encoding="ascii") as stat:
            return stat.read().rsplit(")", 1)[1].split()[0] != "Z"
    except (OSError, IndexError):
        return True


def why_gone(run) -> str | None:
    """Return why a run holding a slot will never free it (None: it may still be running)."""
    if run is None:
        return "the run is not recorded in this instance"
    if run.is_finished:
        return f"the run ended ({run.status.value})"
    pid, host = run.tags.get(PID_TAG), run.tags.get(HOST_TAG)
    if pid and host == socket.gethostname() and not process_alive(int(pid)):
        return f"its process (PID {pid}) is gone"
    return None


def free_dead_runs(instance, *, say: Callable[[str], None] = lambda _m: None) -> list[str]:
    """Free the pool slots (claimed or pending) of runs that will never free them; mark such a
    run failed when it still looks started. Return the ids of the runs freed."""
    storage = instance.event_log_storage
    if DUCKDB_POOL not in storage.get_concurrency_keys():
        return []
    info = storage.get_concurrency_info(DUCKDB_POOL)
    run_ids = {s.run_id for s in info.claimed_slots} | {p.run_id for p in info.pending_steps}
    freed = []
    for run_id in sorted(run_ids):
        run = instance.get_run_by_id(run_id)
        reason = why_gone(run)
        if reason is None:
            continue
        storage.free_concurrency_slots_for_run(run_id)
        if run is not None and not run.is_finished:
            instance.report_run_failed(run, message=f"freed its {DUCKDB_POOL} pool slot: {reason}")
        say(f"freed the {DUCKDB_POOL} pool slot of run {run_id} ({run.job_name if run else '?'}): {reason}")
        freed.append(run_id)
    return freed


def holders(instance) -> list[str]:
    """Return a description of each run holding a slot of the pool, e.g.
    "run 1a2b3c4d (nightly 2026-11-20, step logs, PID 4242)"."""
    storage = instance.event_log_storage
    if DUCKDB_POOL not in storage.get_concurrency_keys():
        return []
    described = []
    for slot in storage.get_concurrency_info(DUCKDB_POOL).claimed_slots:
        run = instance.get_run_by_id(slot.run_id)
        partition = run.tags.get("dagster/partition", "") if run else ""
        pid = run.tags.get(PID_TAG) if run else None
        where = ", ".join(x for x in (f"{run.job_name} {partition}".strip() if run else "", f"step {slot.step_key}",
                                      f"PID {pid}" if pid else "") if x)
        described.append(f"run {slot.run_id[:8]} ({where})")
    return described


def wait_for_slot(instance, *, say: Callable[[str], None], poll_seconds: float = 1.0) -> None:
    """Return once the pool has a free slot, freeing dead runs' slots meanwhile; say once
    what it waits for. A plain sleep: Ctrl-C (KeyboardInterrupt) and SIGTERM stop it."""
    said = None
    while True:
        free_dead_runs(instance, say=say)
        storage = instance.event_log_storage
        if DUCKDB_POOL not in storage.get_concurrency_keys():
            return
        info = storage.get_concurrency_info(DUCKDB_POOL)
        limit = info.limit if info.limit is not None else instance.global_op_concurrency_default_limit
        if limit is None or len(info.claimed_slots) < limit:
            return
        held = ", ".join(holders(instance))
        if held != said:
            say(f"waiting for the {DUCKDB_POOL} pool slot (one DuckDB writer at a time), held by {held}; "
                "Ctrl-C stops")
            said = held
        time.sleep(poll_seconds)
