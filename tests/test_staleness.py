"""Data versions come from content, so the UI shows stale exactly what changed upstream."""

import dagster as dg
from dagster._core.definitions.data_version import CachingStaleStatusResolver, StaleStatus
from dagster._core.loader import LoadingContextForTest

from glan_assets.definitions import GENERATION_ASSETS, defs


def status(project, asset: str, partition: str) -> StaleStatus:
    resolver = CachingStaleStatusResolver(
        project.instance, defs.resolve_asset_graph(), LoadingContextForTest(project.instance)
    )
    return resolver.get_status(dg.AssetKey(asset), partition)


def data_version(record) -> str:
    return record.asset_materialization.tags["dagster/data_version"]


def refresh_taxonomy(project, partition: str) -> None:
    fields, disciplines = GENERATION_ASSETS[:2]
    result = dg.materialize([fields, disciplines], partition_key=partition, instance=project.instance,
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
    project.build("Physics")
    second = project.instance.get_latest_data_version_record(key, partition_key="Physics")
    assert first.storage_id != second.storage_id  # it was materialized again...
    assert data_version(first) == data_version(second)  # ...with the same content


def test_a_prompt_edit_changes_the_code_version_of_its_asset_only(monkeypatch):
    import glan_assets.prompts as prompts

    before = prompts.code_version(prompts.ANSWER)
    edited = prompts.Prompt("answer", prompts.ANSWER.system + " Be concise.", prompts.ANSWER.user)
    assert prompts.code_version(edited) != before
    versions = {a.key.to_user_string(): a.code_versions_by_key[a.key] for a in GENERATION_ASSETS}
    assert versions["answers"] == before
    assert len(set(versions.values())) == len(versions) - 1  # fields and disciplines share "1"
