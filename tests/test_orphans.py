"""Runs whose process is gone are marked failed and their pool slots freed; a run of a live
process, or of another host, is left alone. Against a real Dagster home and real processes
(`tests/test_dagster_dev.py` does it with `dagster dev` and a killed `glan build`)."""

import os
import socket
import subprocess
import sys
import time
from collections.abc import Iterator

import dagster as dg
import pytest

from glan_assets.dagster_internal import pool_slot_holders
from glan_assets.orphans import HOST_TAG, PID_TAG, PROCESS_TAG, fail_orphaned_runs, orphaned_runs_sensor, process_gone, process_tags

# A run in a process of its own, holding an `llm` pool slot until the process is killed.
HOLDS_A_SLOT = """
import sys, threading
import dagster as dg
from glan_assets.orphans import process_tags

@dg.asset(pool="llm")
def holds_a_slot():
    threading.Event().wait()

dg.materialize([holds_a_slot], instance=dg.DagsterInstance.from_config(sys.argv[1]), tags=process_tags())
"""


@pytest.fixture
def instance(tmp_path) -> Iterator[dg.DagsterInstance]:
    (tmp_path / "dagster.yaml").write_text("telemetry:\n  enabled: false\nconcurrency:\n  default_op_concurrency_limit: 1\n")
    instance = dg.DagsterInstance.from_config(str(tmp_path))
    try:
        yield instance
    finally:
        instance.dispose()


def wait_for(condition, timeout_s: float = 120):
    deadline = time.monotonic() + timeout_s
    while not (result := condition()):
        assert time.monotonic() < deadline, "gave up waiting"
        time.sleep(0.2)
    return result


def test_the_run_of_a_killed_process_is_failed_and_its_pool_slot_freed(instance, tmp_path):
    child = subprocess.Popen([sys.executable, "-c", HOLDS_A_SLOT, str(tmp_path)])
    try:
        run_id = wait_for(lambda: (pool_slot_holders(instance, "llm") or [None])[0])
        assert fail_orphaned_runs(instance) == []  # its process lives
    finally:
        child.kill()
        child.wait()
    # What a killed build leaves: the run STARTED, its slot held.
    assert instance.get_run_by_id(run_id).status == dg.DagsterRunStatus.STARTED
    assert pool_slot_holders(instance, "llm") == [run_id]

    instance.add_run_tags(run_id, {HOST_TAG: "another-host"})
    assert fail_orphaned_runs(instance) == []  # no process here has its pid, but it ran elsewhere
    instance.add_run_tags(run_id, {HOST_TAG: socket.gethostname()})

    with dg.build_sensor_context(instance=instance) as context:
        tick = orphaned_runs_sensor(context)

    assert tick.skip_message == "marked 1 run(s) failed, their process gone"
    assert instance.get_run_by_id(run_id).status == dg.DagsterRunStatus.FAILURE
    (failure,) = instance.all_logs(run_id, of_type=dg.DagsterEventType.RUN_FAILURE)
    assert f"pid {child.pid} on {socket.gethostname()}" in failure.message
    assert pool_slot_holders(instance, "llm") == []  # dagster_internal.free_pool_slots still works
    with dg.build_sensor_context(instance=instance) as context:
        assert orphaned_runs_sensor(context).skip_message == "no orphaned run"


def test_a_process_is_gone_only_when_no_process_of_its_pid_and_start_lives_here():
    mine = process_tags()
    assert (mine[HOST_TAG], mine[PID_TAG]) == (socket.gethostname(), str(os.getpid()))
    assert not process_gone(mine)
    assert process_gone(mine | {PROCESS_TAG: mine[PROCESS_TAG] + "0"})  # the pid now names a later process
    assert not process_gone(mine | {HOST_TAG: "another-host", PROCESS_TAG: "?"})
    assert not process_gone({HOST_TAG: mine[HOST_TAG], PID_TAG: "999999999"})  # no start recorded: not judged

    exited = subprocess.Popen(["true"])
    tags = {HOST_TAG: mine[HOST_TAG], PID_TAG: str(exited.pid), PROCESS_TAG: "recorded start"}
    # Exited, not yet waited for: a zombie, gone though its pid still shows.
    wait_for(lambda: open(f"/proc/{exited.pid}/stat").read().rsplit(")", 1)[1].split()[0] == "Z")
    assert process_gone(tags)
    exited.wait()
    assert process_gone(tags)
