"""Level 1: the field (and sub-field) each discipline belongs to, read from the taxonomy file."""

import dagster as dg

from glan_assets.glan.partitions import discipline_partitions
from glan_assets.glan.resources import GenerationSettings
from glan_assets.glan.schemas import FieldRow
from glan_assets.levels import Level, level_asset
from glan_assets.plan import FINGERPRINT
from glan_assets.results import store_partition
from resources.storage import DuckDBStore

LEVEL = Level(
    "fields",
    FieldRow,
    id_prefix="fld",
    method="glan",
    group="taxonomy",
    description="The field and sub-field of each discipline, from the taxonomy file (`GLAN_TAXONOMY`).",
    label="field",
    lineage_columns={"field_name": "field_name"},
    kinds=frozenset({"yaml", "duckdb"}),
    partitions_def=discipline_partitions,
    records_fingerprint=True,
)


@level_asset(LEVEL)
def fields(context: dg.AssetExecutionContext, settings: GenerationSettings, store: DuckDBStore) -> dg.MaterializeResult:
    node = settings.taxonomy().node(context.partition_key)
    row = FieldRow(
        field_id=node.field_id,
        discipline=node.name,
        field_name=node.field,
        sub_field_name=node.sub_field,
        description=node.field_description,
    )
    return store_partition(context, store, LEVEL, [row], metadata={FINGERPRINT: node.fingerprint})
