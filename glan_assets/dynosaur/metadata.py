"""Level 1: one row per registered dataset: its description, license, source, row count,
text columns with types and label names, the columns skipped, and a few sample rows."""

import json

import dagster as dg

from glan_assets.bad_input import IMPORT
from glan_assets.dynosaur.partitions import dataset_partitions
from glan_assets.dynosaur.registry_file import DatasetEntry, source_digest
from glan_assets.dynosaur.resources import DynosaurSettings
from glan_assets.dynosaur.schemas import DatasetMetadataRow
from glan_assets.dynosaur.sources import DatasetError, Source, open_source, sample_rows
from glan_assets.ids import stable_id
from glan_assets.levels import Level, level_asset
from glan_assets.plan import FINGERPRINT
from glan_assets.results import store_partition
from glan_assets.rows import RejectRow
from resources.storage import DuckDBStore

LEVEL = Level(
    "dataset_metadata",
    DatasetMetadataRow,
    id_prefix="dset",
    method="dynosaur",
    group="dynosaur",
    description="One row per dataset in the registry (`GLAN_DATASETS`): description, license, source, "
    "row count, text columns with types and label names, skipped columns, up to 3 sample rows.",
    label="dataset",
    lineage_columns={"dataset": "dataset", "description": "dataset_description"},
    kinds=frozenset({"yaml", "duckdb"}),
    partitions_def=dataset_partitions,
    records_fingerprint=True,
)


def metadata_row(entry: DatasetEntry, source: Source) -> DatasetMetadataRow:
    """The registry's fields override what the dataset's own `dataset_info.json` says."""
    info = source.info
    return DatasetMetadataRow(
        dataset_id=stable_id(LEVEL.id_prefix, entry.name),
        dataset=entry.name,
        path=str(entry.path),
        format=entry.format,
        description=entry.description or info.get("description", ""),
        license=entry.license or info.get("license", ""),
        source_url=entry.source_url or info.get("homepage", ""),
        citation=info.get("citation", ""),
        row_count=source.row_count,
        columns=json.dumps([c.model_dump() for c in source.columns], ensure_ascii=False),
        skipped_columns=source.skipped,
        sample_rows=json.dumps(sample_rows(source), ensure_ascii=False),
        source_version=source_digest(entry.path),
    )


@level_asset(LEVEL)
def dataset_metadata(context: dg.AssetExecutionContext, dynosaur: DynosaurSettings, store: DuckDBStore) -> dg.MaterializeResult:
    entry = dynosaur.registry().entry(context.partition_key)
    try:
        with open_source(entry) as source:
            row = metadata_row(entry, source)
            # As UIT does: a bad line is a reject naming its file and line; the good lines are kept.
            rejects = [
                RejectRow.of(LEVEL.name, entry.name, row.dataset_id, IMPORT, bad.reason, bad.raw,
                             key=[LEVEL.name, entry.name, bad.line])
                for bad in source.rejected
            ]
    except DatasetError as exc:
        # `from None`: a build reports the deepest cause, which would be the library's text.
        raise dg.Failure(description=f"{exc}; the rows stored before were kept") from None
    if rejects:
        context.log.warning(f"{entry.name}: {len(rejects)} bad lines left out; see `glan rejects --level {LEVEL.name}`")
    if row.skipped_columns:
        context.log.warning(f"{entry.name}: columns that cannot be text were skipped: {', '.join(row.skipped_columns)}")
    return store_partition(
        context, store, LEVEL, [row], rejects=rejects,
        metadata={FINGERPRINT: entry.fingerprint, "row_count": row.row_count, "rejected_lines": len(rejects),
                  "skipped_columns": dg.MetadataValue.json(row.skipped_columns)},
    )
