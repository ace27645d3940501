"""Runs whose process is gone. A `glan build` killed mid-run (or one of its workers) leaves
its runs STARTED: they hold places in the UI's run queue and their `llm` pool slots, and with
as many of them as `max_concurrent_runs` `dagster dev` launches nothing more.

Each run glan executes in its own process carries that process's host, pid and start
(`process_tags`). `fail_orphaned_runs` marks failed the runs whose process is certainly gone
and frees their slots; `glan build` calls it before planning, and `orphaned_runs_sensor`
every 30 s in the code location, so the instance heals with no build.

Dagster's run monitoring does not cover these runs: it asks the run launcher whether a run's
worker is alive (`check_run_worker_health`), which the default launcher does not support, and
`glan build`'s runs (`dg.materialize` in its worker processes) were launched by no launcher.
"""

import os
import socket
from collections.abc import Mapping
from pathlib import Path

import dagster as dg

from glan_assets.dagster_internal import free_pool_slots

HOST_TAG = "glan/host"
PID_TAG = "glan/pid"
PROCESS_TAG = "glan/process"  # the process's start: a pid alone may since name another process
# What a run executing in its own process can be in while the process lives.
RUNNING = [
    dg.DagsterRunStatus.NOT_STARTED,
    dg.DagsterRunStatus.STARTING,
    dg.DagsterRunStatus.STARTED,
    dg.DagsterRunStatus.CANCELING,
]
PROC = Path("/proc")


def _process_start(pid: int) -> str | None:
    """When process `pid` started, as `boot id/clock ticks since boot` (Linux's /proc, which
    no clock change moves): with the pid, it names one process for the host's whole life.
    None when no such process lives (a zombie has exited; only its parent has not read it).
    Raises OSError where /proc cannot be read."""
    boot = (PROC / "sys/kernel/random/boot_id").read_text().strip()
    try:
        stat = (PROC / str(pid) / "stat").read_text()
    except (FileNotFoundError, ProcessLookupError):  # the latter while it exits
        return None
    state, *fields = stat.rsplit(")", 1)[1].split()  # the name before ")" may hold spaces
    return None if state in ("Z", "X") else f"{boot}/{fields[18]}"  # field 22, starttime


def process_tags() -> dict[str, str]:
    """Tags for a run this process executes, so that another process can tell it is gone."""
    tags = {HOST_TAG: socket.gethostname(), PID_TAG: str(os.getpid())}
    try:
        return tags | {PROCESS_TAG: _process_start(os.getpid())}
    except OSError:  # no /proc: the run is never judged
        return tags


def process_gone(tags: Mapping[str, str]) -> bool:
    """Whether the process that executes a run is certainly gone: it ran on this host, and no
    process with its pid and start lives here. A run of another host, or without the tags
    (launched by the UI, or where there is no /proc), is never judged."""
    if tags.get(HOST_TAG) != socket.gethostname() or PROCESS_TAG not in tags:
        return False
    try:
        return _process_start(int(tags[PID_TAG])) != tags[PROCESS_TAG]
    except (KeyError, ValueError, OSError):
        return False


def fail_orphaned_runs(instance: dg.DagsterInstance) -> list[str]:
    """Mark failed the runs whose process is gone, and free their pool slots; their ids."""
    failed = []
    for record in instance.get_run_records(dg.RunsFilter(statuses=RUNNING)):
        run = record.dagster_run
        if not process_gone(run.tags):
            continue
        pid, host = run.tags[PID_TAG], run.tags[HOST_TAG]
        instance.report_run_failed(run, message=f"the process that ran this (pid {pid} on {host}) is gone: killed?")
        free_pool_slots(instance, run.run_id)
        failed.append(run.run_id)
    return failed


@dg.sensor(
    minimum_interval_seconds=30,
    default_status=dg.DefaultSensorStatus.RUNNING,
    description="Marks failed the runs whose process is gone (a killed `glan build`), freeing their "
    "run-queue places and pool slots.",
)
def orphaned_runs_sensor(context: dg.SensorEvaluationContext) -> dg.SkipReason:
    failed = fail_orphaned_runs(context.instance)
    if failed:
        context.log.info(f"marked failed, their process gone: {', '.join(failed)}")
    return dg.SkipReason(f"marked {len(failed)} run(s) failed, their process gone" if failed else "no orphaned run")
