"""The taxonomy sensor keeps partitions in step with the file and asks for the runs the
build plan names: what is missing or stale, once per state."""

import subprocess
import sys
import threading
import time

import dagster as dg
import pytest

from glan_assets.glan import method as glan
from glan_assets.definitions import defs
from glan_assets.glan.partitions import discipline_partitions
from glan_assets.glan.schemas import AnswerRow
from glan_assets.plan import NEW, NODE
from glan_assets.registry import resources_from_env
from resources.storage import DuckDBStore

GLAN = (*(lv.name for lv in glan.LEVELS), "glan_quality")  # fields ... answers, then its quality level


@pytest.fixture
def project(project):
    """The project on a Dagster home on disk, as the daemon has: a tick resolves its run
    requests against the instance's partitions (through its ref), which an ephemeral
    instance does not have."""
    with project.instance_on_disk() as project.instance:
        yield project


def tick(project, **env: str):
    """One sensor evaluation (with extra settings `env`) as the daemon makes it, its
    partition requests applied as the daemon would."""
    definitions = defs()
    # Entered, as the daemon does: the instance it opens from the ref is closed with it.
    with dg.build_sensor_context(
        instance_ref=project.instance.get_ref(), resources=resources_from_env(project.env | env), definitions=definitions
    ) as context:
        result = definitions.resolve_sensor_def("taxonomy_sensor").evaluate_tick(context)
    for request in result.dynamic_partitions_requests:
        if isinstance(request, dg.AddDynamicPartitionsRequest):
            project.instance.add_dynamic_partitions(request.partitions_def_name, list(request.partition_keys))
        else:
            for key in request.partition_keys:
                project.instance.delete_dynamic_partition(request.partitions_def_name, key)
    return result


def runs(result) -> list[tuple[str, tuple[str, ...], str]]:
    """(partition, levels, reason) of each run the tick asks for."""
    return sorted(
        (r.partition_key, tuple(k.to_user_string() for k in r.asset_selection), r.tags["glan/reason"])
        for r in result.run_requests
    )


def run_keys(result) -> set[str]:
    return {r.run_key for r in result.run_requests}


def partitions(project) -> list[str]:
    return project.instance.get_dynamic_partitions(discipline_partitions.name)


def test_a_new_discipline_gets_its_partition_and_one_run_for_it(project):
    first = tick(project)
    assert partitions(project) == ["Physics", "Astronomy"]
    assert runs(first) == [("Astronomy", GLAN, NEW), ("Physics", GLAN, NEW)]
    assert {r.job_name for r in first.run_requests} == {"build_discipline"}
    # The daemon launches a run once per run key: a tick that sees the same state asks nothing new.
    assert run_keys(tick(project)) == run_keys(first)

    project.add_discipline("Optics")
    second = tick(project)

    assert partitions(project) == ["Physics", "Astronomy", "Optics"]
    (request,) = [r for r in second.run_requests if r.run_key not in run_keys(first)]
    assert (request.partition_key, request.job_name) == ("Optics", "build_discipline")
    assert tuple(k.to_user_string() for k in request.asset_selection) == GLAN
    assert run_keys(tick(project)) == run_keys(second)


def test_a_built_taxonomy_asks_for_no_run(project):
    assert all(s.success for s in project.build(until="glan_quality"))
    result = tick(project)
    assert result.run_requests == [] and result.dynamic_partitions_requests == []


def test_a_removed_discipline_keeps_its_rows_unless_the_sensor_prunes(project):
    project.build(until="glan_quality")
    store = DuckDBStore(path=str(project.db))
    assert store.read(AnswerRow, "Astronomy")
    project.taxonomy.write_text(project.taxonomy.read_text().replace("          - name: Astronomy\n", ""))

    kept = tick(project)

    assert kept.run_requests == []
    assert partitions(project) == ["Physics", "Astronomy"]  # deleting data is a decision for `glan build --prune`
    assert store.read(AnswerRow, "Astronomy")

    pruned = tick(project, GLAN_SENSOR_PRUNES="1")

    assert pruned.run_requests == []
    assert partitions(project) == ["Physics"]
    assert store.read(AnswerRow, "Astronomy") == []
    assert store.read(AnswerRow, "Physics")


def test_an_edited_description_rebuilds_only_that_discipline_from_its_taxonomy_levels(project):
    project.build(until="glan_quality")
    project.taxonomy.write_text(
        project.taxonomy.read_text().replace("- name: Astronomy\n", "- name: Astronomy\n            description: stars\n")
    )
    result = tick(project)
    (request,) = result.run_requests
    assert (request.partition_key, request.job_name) == ("Astronomy", "build_discipline")
    assert runs(result) == [("Astronomy", GLAN, NODE)]
    assert run_keys(tick(project)) == run_keys(result)  # asked once


def test_the_sensor_and_its_job_are_in_the_code_location():
    definitions = defs()
    assert definitions.resolve_sensor_def("taxonomy_sensor").default_status == dg.DefaultSensorStatus.RUNNING
    job = definitions.resolve_job_def("build_discipline")
    assert {k.to_user_string() for k in job.asset_layer.selected_asset_keys} == set(GLAN)


def test_build_registers_the_same_partitions_as_the_sensor(project):
    (method,) = project.plan().methods  # what `glan build` does before it builds
    assert (method.added, method.removed) == (["Physics", "Astronomy"], [])
    assert tick(project).dynamic_partitions_requests == []  # nothing new for the sensor to register


def test_a_partition_with_a_run_in_progress_is_not_asked_again(project, fake_llm):
    """A tick while a partition's run goes on asks nothing for it, though the run's first
    levels have landed and the plan now names the rest: the sensor's own run (its job) and a
    `glan build`'s run of the partition (another job) both count."""
    first = tick(project)
    assert runs(first) == [("Astronomy", GLAN, NEW), ("Physics", GLAN, NEW)]
    fake_llm.delay_s = 0.5  # runs of some seconds, for a tick to see them in progress
    # The sensor's job in this process; `glan build` in its own, as each build run is.
    run = threading.Thread(target=defs().resolve_job_def("build_discipline").execute_in_process,
                           kwargs={"instance": project.instance, "partition_key": "Physics"})
    run.start()
    build = subprocess.Popen([sys.executable, "-m", "glan_assets.cli", "build", "--discipline", "Astronomy", "--until",
                              "glan_quality"], env=project.subprocess_env(), cwd=project.root, stdout=subprocess.DEVNULL)
    try:
        # Both runs have written a level, so each partition's plan (and its old run key) moved.
        deadline = time.monotonic() + 120
        while not all(project.instance.fetch_materializations(
            dg.AssetRecordsFilter(dg.AssetKey("disciplines"), asset_partitions=[key]), limit=1
        ).records for key in ("Physics", "Astronomy")):
            assert time.monotonic() < deadline, "the runs wrote no level"
            time.sleep(0.2)
        going = {r.tags["dagster/partition"]: r.job_name for r in project.instance.get_runs()
                 if r.status == dg.DagsterRunStatus.STARTED}
        assert going == {"Physics": "build_discipline", "Astronomy": "__ephemeral_asset_job__"}

        assert tick(project).run_requests == []
    finally:
        run.join()
        assert build.wait(timeout=300) == 0
    assert {r.status for r in project.instance.get_runs()} == {dg.DagsterRunStatus.SUCCESS}
    assert tick(project).run_requests == []  # built
