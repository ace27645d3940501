"""Level 1: the field (and sub-field) each discipline belongs to, read from the taxonomy file."""

import dagster as dg

from glan_assets.partitions import discipline_partitions
from glan_assets.results import store_partition
from glan_assets.schemas import FieldRow
from resources.settings import GenerationSettings
from resources.storage import DuckDBStore


@dg.asset(
    partitions_def=discipline_partitions,
    group_name="taxonomy",
    code_version="1",
    kinds={"yaml", "duckdb"},
    owners=["team:data"],
    description="The field and sub-field of each discipline, from the taxonomy file (`GLAN_TAXONOMY`).",
)
def fields(
    context: dg.AssetExecutionContext, settings: GenerationSettings, store: DuckDBStore
) -> dg.MaterializeResult:
    node = settings.taxonomy().node(context.partition_key)
    row = FieldRow(
        field_id=node.field_id,
        discipline=node.name,
        field_name=node.field,
        sub_field_name=node.sub_field,
        description=node.field_description,
    )
    return store_partition(context, store, FieldRow, [row])
