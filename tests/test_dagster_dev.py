"""`dagster dev` alone on a project, as a user leaves it running: its sensors build each new
partition once, and the runs of a killed `glan build` do not keep it from building.

Each test starts `dagster dev` on its own Dagster home and reads the outcome from that
instance (runs, materializations) and from GraphQL (pool slots); the UI's log goes to
test-artifacts/.
"""

import os
import shutil
import signal
import subprocess
import sys
import time
from collections import Counter
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import dagster as dg
import pytest
import yaml

from glan_assets.glan import method as glan
from glan_assets.dagster_internal import pool_slot_holders
from tests.test_browser import ARTIFACTS, REPO, DagsterUI, free_port, stop, wait_until

LEVELS = [*(lv.name for lv in glan.LEVELS), "glan_quality"]  # fields ... answers, then its quality level
# What a run is in until it finishes.
IN_FLIGHT = [dg.DagsterRunStatus.QUEUED, dg.DagsterRunStatus.NOT_STARTED, dg.DagsterRunStatus.STARTING,
             dg.DagsterRunStatus.STARTED, dg.DagsterRunStatus.CANCELING]
SENSOR_TICK_S = 15  # taxonomy_sensor's minimum interval
# Each test waits for `dagster dev`'s runs: minutes on a loaded 2-core machine.
pytestmark = pytest.mark.timeout(1500)


@pytest.fixture
def instance(project) -> Iterator[dg.DagsterInstance]:
    """The project's Dagster home, with the repository's instance settings (run queue, pools)."""
    shutil.copy(REPO / "dagster_home" / "dagster.yaml", project.dagster_home)
    instance = dg.DagsterInstance.from_config(str(project.dagster_home))
    try:
        yield instance
    finally:
        instance.dispose()


@contextmanager
def dagster_dev(project, log_name: str) -> Iterator[DagsterUI]:
    """`dagster dev` from the repository on the project's home, up once its code location loads."""
    ARTIFACTS.mkdir(exist_ok=True)
    with open(ARTIFACTS / log_name, "w") as log:
        port = free_port()
        proc = subprocess.Popen(
            [str(Path(sys.executable).parent / "dagster"), "dev", "-h", "127.0.0.1", "-p", str(port), "-w",
             "workspace.yaml"],
            cwd=REPO, env=project.subprocess_env(), stdout=log, stderr=subprocess.STDOUT, start_new_session=True,
        )
        try:
            ui = DagsterUI(f"http://127.0.0.1:{port}", project)
            wait_until(ui.asset_names, 180, "dagster dev to load the code location")
            yield ui
        finally:
            stop(proc)


def glan_build(project, *args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "glan_assets.cli", "build", "--until", "glan_quality", *args],
                          cwd=project.root, env=project.subprocess_env(), capture_output=True, text=True, timeout=600)


def in_flight(instance: dg.DagsterInstance) -> list[dg.DagsterRun]:
    return list(instance.get_runs(dg.RunsFilter(statuses=IN_FLIGHT)))


def settle(instance: dg.DagsterInstance, since: float, quiet_s: float, timeout_s: float) -> float:
    """Wait until no run is in flight or new for `quiet_s`; the seconds from `since` to the
    last moment one was."""
    seen, last_busy = len(instance.get_runs()), time.monotonic()
    deadline = time.monotonic() + timeout_s
    while time.monotonic() - last_busy < quiet_s:
        assert time.monotonic() < deadline, f"runs still going after {timeout_s:.0f} s: {in_flight(instance)}"
        count = len(instance.get_runs())
        if in_flight(instance) or count != seen:
            seen, last_busy = count, time.monotonic()
        time.sleep(1)
    return last_busy - since


def materializations(instance: dg.DagsterInstance, level: str, partition: str) -> int:
    records = instance.fetch_materializations(
        dg.AssetRecordsFilter(dg.AssetKey(level), asset_partitions=[partition]), limit=100
    ).records
    return len(records)


def test_new_disciplines_get_one_run_each_and_one_materialization_per_level(project, fake_llm, instance):
    built = glan_build(project)  # Physics and Astronomy: the sensor's first tick finds nothing to do
    assert built.returncode == 0, built.stdout + built.stderr
    fake_llm.requests.clear()
    fake_llm.delay_s = 0.2  # each run lasts several sensor ticks, as a real endpoint's do
    new = ["Geology", "Chemistry", "Optics"]
    before = {r.run_id for r in instance.get_runs()}

    with dagster_dev(project, "dagster-dev-new-disciplines.log"):
        for name in new:
            project.add_discipline(name)
        start = time.monotonic()
        wait_until(lambda: all(materializations(instance, "answers", d) for d in new), 600, "the new disciplines' answers")
        settled = settle(instance, start, quiet_s=3 * SENSOR_TICK_S, timeout_s=600)

    ui_runs = [r for r in instance.get_runs() if r.run_id not in before]
    launched = [r for r in ui_runs if r.job_name == "build_discipline"]
    counts = {(level, d): materializations(instance, level, d) for level in LEVELS for d in new}
    # What each level's one materialization says it sent (a syllabus's questions repeat a prompt).
    counted = sum(int(record.asset_materialization.metadata["requests_sent"].value)
                  for level in LEVELS for d in new
                  for record in instance.fetch_materializations(
                      dg.AssetRecordsFilter(dg.AssetKey(level), asset_partitions=[d]), limit=1).records
                  if "requests_sent" in record.asset_materialization.metadata)
    print(f"\n{len(launched)} build_discipline runs, {sum(counts.values())} materializations of {len(counts)} "
          f"level partitions, {len(fake_llm.requests)} LLM requests ({counted} counted by the levels), settled in "
          f"{settled:.0f} s; runs by job: {dict(Counter(r.job_name for r in ui_runs))}")
    assert sorted(r.tags["dagster/partition"] for r in launched) == sorted(new)
    assert {r.status for r in launched} == {dg.DagsterRunStatus.SUCCESS}
    assert counts == {(level, d): 1 for level in LEVELS for d in new}
    assert len(fake_llm.requests) == counted  # none sent by a run whose level was built again
    # training_automation waited for the generation runs: the training set once, after them.
    assert [r.job_name for r in ui_runs if r not in launched] == ["__ASSET_JOB"]


def test_runs_of_a_killed_build_are_failed_and_the_sensors_runs_then_go(project, fake_llm, instance):
    """kill -9 of a `glan build` leaves its runs STARTED, holding `llm` pool slots; with as
    many of them as the run queue allows at once, `dagster dev` would launch nothing."""
    config = yaml.safe_load((project.dagster_home / "dagster.yaml").read_text())
    config["run_queue"]["max_concurrent_runs"] = 2
    (project.dagster_home / "dagster.yaml").write_text(yaml.safe_dump(config))
    fake_llm.delay_s = 1.0  # long LLM steps: the kill finds each run holding a slot
    build = subprocess.Popen([sys.executable, "-m", "glan_assets.cli", "build", "--workers", "2", "--until", "answers"],
                             cwd=project.root, env=project.subprocess_env(), stdout=subprocess.DEVNULL,
                             stderr=subprocess.DEVNULL, start_new_session=True)
    try:
        wait_until(lambda: len(set(pool_slot_holders(instance, "llm"))) == 2, 180, "both runs in an LLM step")
    finally:
        os.killpg(build.pid, signal.SIGKILL)
        build.wait()
    orphans = in_flight(instance)
    assert [r.status for r in orphans] == [dg.DagsterRunStatus.STARTED] * 2
    assert set(pool_slot_holders(instance, "llm")) == {r.run_id for r in orphans}
    fake_llm.delay_s = 0
    project.add_discipline("Geology")  # a new partition for the sensor to build

    with dagster_dev(project, "dagster-dev-orphans.log"):
        up = time.monotonic()
        ids = {r.run_id for r in orphans}
        wait_until(lambda: {instance.get_run_by_id(i).status for i in ids} == {dg.DagsterRunStatus.FAILURE}
                   and not ids & set(pool_slot_holders(instance, "llm")), 120,
                   "the killed build's runs to be marked failed and their slots freed")
        healed = time.monotonic() - up
        geology = wait_until(lambda: [r for r in instance.get_runs(dg.RunsFilter(job_name="build_discipline"))
                                      if r.tags["dagster/partition"] == "Geology" and r.is_finished], 300,
                             "the sensor's Geology run")
        settle(instance, up, quiet_s=2 * SENSOR_TICK_S, timeout_s=300)

    print(f"\nthe killed build's runs failed {healed:.0f} s after dagster dev was up")
    assert healed < 60
    for run in orphans:
        (failure,) = instance.all_logs(run.run_id, of_type=dg.DagsterEventType.RUN_FAILURE)
        assert f"pid {run.tags['glan/pid']}" in failure.message and "is gone" in failure.message
    assert [r.status for r in geology] == [dg.DagsterRunStatus.SUCCESS]
    # The killed build's partitions too, once each.
    sensor_runs = instance.get_runs(dg.RunsFilter(job_name="build_discipline"))
    assert sorted(r.tags["dagster/partition"] for r in sensor_runs) == ["Astronomy", "Geology", "Physics"]
    assert {r.status for r in sensor_runs} == {dg.DagsterRunStatus.SUCCESS}
    assert materializations(instance, "answers", "Geology") == 1
