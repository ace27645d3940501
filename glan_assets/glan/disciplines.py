"""Level 2: the discipline itself, the root of all its generated data."""

import dagster as dg

from glan_assets.glan.partitions import discipline_partitions
from glan_assets.glan.resources import GenerationSettings
from glan_assets.glan.schemas import DisciplineRow
from glan_assets.levels import Level, level_asset
from glan_assets.plan import FINGERPRINT
from glan_assets.results import store_partition
from resources.storage import DuckDBStore

LEVEL = Level(
    "disciplines",
    DisciplineRow,
    id_prefix="dsc",
    method="glan",
    group="taxonomy",
    description="One row per discipline (the partition key), with its description and field id.",
    parent="fields",
    label="discipline",
    lineage_columns={"sub_field_name": "sub_field_name", "discipline": "discipline"},
    kinds=frozenset({"yaml", "duckdb"}),
    partitions_def=discipline_partitions,
    records_fingerprint=True,
)


@level_asset(LEVEL)
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
    return store_partition(context, store, LEVEL, [row], metadata={FINGERPRINT: node.fingerprint})
