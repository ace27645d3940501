"""Data versions come from content, so the UI shows stale exactly what changed upstream."""

import dataclasses

import dagster as dg
from dagster._core.definitions.data_version import CachingStaleStatusResolver, StaleStatus
from dagster._core.loader import LoadingContextForTest

from glan_assets import stages
from glan_assets.glan import method as glan
from glan_assets.definitions import defs
from glan_assets.glan import answers
from glan_assets.prompting import Prompt

GENERATION_ASSETS = dg.load_assets_from_modules(glan.MODULES)  # fields ... answers


def status(project, asset: str, partition: str) -> StaleStatus:
    """What the UI shows for the asset partition: fresh, or stale and why."""
    resolver = CachingStaleStatusResolver(
        project.instance, defs().resolve_asset_graph(), LoadingContextForTest(project.instance)
    )
    return resolver.get_status(dg.AssetKey(asset), partition)


def data_version(record) -> str:
    return record.asset_materialization.tags["dagster/data_version"]


def refresh_taxonomy(project, partition: str) -> None:
    """Re-read the partition's taxonomy levels, as a run of them from the UI would."""
    result = dg.materialize([a for a in GENERATION_ASSETS if a.key.to_user_string() in ("fields", "disciplines")], partition_key=partition, instance=project.instance,
                            resources=project.resources())
    assert result.success


def test_editing_a_discipline_marks_only_its_generated_partitions_stale(project):
    project.build()
    assert status(project, "subjects", "Physics") == StaleStatus.FRESH

    project.taxonomy.write_text(
        project.taxonomy.read_text().replace("- name: Physics\n", "- name: Physics\n            description: Matter.\n")
    )
    refresh_taxonomy(project, "Physics")
    refresh_taxonomy(project, "Astronomy")  # re-read but unchanged: same data version

    assert status(project, "subjects", "Physics") == StaleStatus.STALE
    assert status(project, "subjects", "Astronomy") == StaleStatus.FRESH


def test_a_rebuild_with_the_same_output_keeps_the_data_version(project):
    project.build("Physics")
    key = dg.AssetKey("answers")
    first = project.instance.get_latest_data_version_record(key, partition_key="Physics")
    project.build("Physics", force=True)  # up to date, so only a forced build runs it again
    second = project.instance.get_latest_data_version_record(key, partition_key="Physics")
    assert first.storage_id != second.storage_id  # it was materialized again...
    assert data_version(first) == data_version(second)  # ...with the same content


def test_a_prompt_edit_changes_the_code_version_of_its_asset_only():
    before = answers.LEVEL.code_version
    assert before == stages.code_version(answers.RESPOND, logic=answers.LEVEL.logic_version)
    (prompt,) = answers.RESPOND.prompts
    edited = dataclasses.replace(answers.RESPOND, prompts=(Prompt(prompt.name, prompt.system + " Be concise.", prompt.user),))
    assert stages.code_version(edited, logic=answers.LEVEL.logic_version) != before
    versions = {a.key.to_user_string(): a.code_versions_by_key[a.key] for a in GENERATION_ASSETS}
    assert versions["answers"] == before
    assert len(set(versions.values())) == len(versions) - 1  # fields and disciplines share "p1"
