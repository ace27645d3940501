"""The taxonomy sensor keeps partitions in step with the file."""

import dagster as dg

from glan_assets.build import sync_partitions
from glan_assets.definitions import defs
from glan_assets.partitions import discipline_partitions
from glan_assets.schemas import AnswerRow
from glan_assets.sensors import taxonomy_sensor
from resources.storage import DuckDBStore


def tick(project, cursor=None) -> dg.SensorResult:
    """One sensor evaluation; its partition requests applied as the daemon would."""
    context = dg.build_sensor_context(instance=project.instance, cursor=cursor, resources=project.resources())
    result = taxonomy_sensor(context)
    for request in result.dynamic_partitions_requests:
        if isinstance(request, dg.AddDynamicPartitionsRequest):
            project.instance.add_dynamic_partitions(request.partitions_def_name, list(request.partition_keys))
        else:
            for key in request.partition_keys:
                project.instance.delete_dynamic_partition(request.partitions_def_name, key)
    return result


def partitions(project) -> list[str]:
    return project.instance.get_dynamic_partitions(discipline_partitions.name)


def test_a_new_discipline_gets_its_partition_and_one_run_for_it(project):
    first = tick(project)
    assert partitions(project) == ["Physics", "Astronomy"]
    assert sorted(r.partition_key for r in first.run_requests) == ["Astronomy", "Physics"]

    project.add_discipline("Optics")
    second = tick(project, first.cursor)

    assert partitions(project) == ["Physics", "Astronomy", "Optics"]
    (request,) = second.run_requests
    assert (request.partition_key, request.job_name) == ("Optics", "build_discipline")
    assert tick(project, second.cursor).run_requests == []


def test_a_removed_discipline_loses_its_partition_and_its_rows(project):
    project.build()
    store = DuckDBStore(path=str(project.db))
    assert store.read(AnswerRow, "Astronomy")
    cursor = tick(project).cursor

    project.taxonomy.write_text(project.taxonomy.read_text().replace("          - name: Astronomy\n", ""))
    result = tick(project, cursor)

    assert result.run_requests == []
    assert partitions(project) == ["Physics"]
    assert store.read(AnswerRow, "Astronomy") == []
    assert store.read(AnswerRow, "Physics")


def test_an_edited_description_refreshes_only_that_discipline(project):
    cursor = tick(project).cursor
    project.taxonomy.write_text(
        project.taxonomy.read_text().replace("- name: Astronomy\n", "- name: Astronomy\n            description: stars\n")
    )
    (request,) = tick(project, cursor).run_requests
    assert (request.partition_key, request.job_name) == ("Astronomy", "refresh_taxonomy")


def test_the_sensor_and_its_jobs_are_in_the_code_location():
    assert defs.get_sensor_def("taxonomy_sensor").default_status == dg.DefaultSensorStatus.RUNNING
    job = defs.resolve_job_def("build_discipline")
    assert {k.to_user_string() for k in job.asset_layer.selected_asset_keys} == {
        "fields", "disciplines", "subjects", "syllabi", "sessions", "questions", "answers"
    }


def test_build_registers_the_same_partitions_as_the_sensor(project):
    res = project.resources()
    assert sync_partitions(project.instance, res["settings"], res["store"]) == (["Physics", "Astronomy"], [])
    assert tick(project).run_requests == []  # nothing new for the sensor
