"""Level 2: the discipline itself, the root of all its generated data."""

import dagster as dg

from glan_assets.fields import fields
from glan_assets.partitions import discipline_partitions
from glan_assets.results import store_partition
from glan_assets.schemas import DisciplineRow
from resources.settings import GenerationSettings
from resources.storage import DuckDBStore


@dg.asset(
    partitions_def=discipline_partitions,
    deps=[fields],
    group_name="taxonomy",
    code_version="1",
    kinds={"yaml", "duckdb"},
    owners=["team:data"],
    description="One row per discipline (the partition key), with its description and field id.",
)
def disciplines(
    context: dg.AssetExecutionContext, settings: GenerationSettings, store: DuckDBStore
) -> dg.MaterializeResult:
    node = settings.taxonomy().node(context.partition_key)
    row = DisciplineRow(
        discipline_id=node.discipline_id,
        field_id=node.field_id,
        discipline=node.name,
        field_name=node.field,
        sub_field_name=node.sub_field,
        description=node.description,
    )
    return store_partition(context, store, DisciplineRow, [row])
