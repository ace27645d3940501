"""Level 1: every instance of a registered collection, read from its files as they are."""

import json
from collections import Counter

import dagster as dg

from glan_assets.bad_input import IMPORT
from glan_assets.ids import stable_id
from glan_assets.levels import Level, level_asset
from glan_assets.plan import FINGERPRINT
from glan_assets.results import store_partition
from glan_assets.rows import RejectRow
from glan_assets.uit.collections_file import RegistryError
from glan_assets.uit.formats import Bad, FormatError
from glan_assets.uit.partitions import collection_partitions
from glan_assets.uit.reading import read_collection
from glan_assets.uit.resources import UITSettings
from glan_assets.uit.schemas import RawInstructionRow
from resources.storage import DuckDBStore

LEVEL = Level(
    "instructions_raw",
    RawInstructionRow,
    id_prefix="uraw",
    method="uit",
    group="uit",
    description="Every instance of a collection in the registry (`GLAN_COLLECTIONS`), in its own format: "
    "Alpaca, ShareGPT/OpenAI chat, FLAN, Super-NaturalInstructions or PromptSource templates.",
    label="raw instance",
    lineage_columns={
        "collection": "collection",
        "task": "task",
        "source_format": "source_format",
        "source_row": "source_row",
        "instruction": "source_instruction",
    },
    kinds=frozenset({"json", "duckdb"}),
    partitions_def=collection_partitions,
    records_fingerprint=True,
)


@level_asset(LEVEL)
def instructions_raw(context: dg.AssetExecutionContext, uit: UITSettings, store: DuckDBStore) -> dg.MaterializeResult:
    key = context.partition_key
    try:
        collections = uit.collections()
        entry, path = collections.entry(key), collections.data_path(key)
        rows, rejects = [], []
        for item in read_collection(path, entry.format):
            raw_id = stable_id(LEVEL.id_prefix, key, item.source_row)
            if isinstance(item, Bad):
                rejects.append(
                    RejectRow.of(LEVEL.name, key, raw_id, IMPORT, item.reason, item.raw, key=[LEVEL.name, key, item.source_row])
                )
                continue
            rows.append(
                RawInstructionRow(
                    raw_id=raw_id,
                    task_id=stable_id("utask", key, item.task),
                    collection=key,
                    task=item.task,
                    instruction=item.instruction,
                    input=item.input,
                    output=item.output,
                    source_format=item.source_format,
                    source_row=item.source_row,
                    turns=json.dumps(list(item.turns), ensure_ascii=False),
                    license=entry.license,
                )
            )
    except (FormatError, RegistryError) as exc:
        raise dg.Failure(description=f"{key}: {exc}; the rows stored before were kept") from None
    reasons = Counter(r.reason.split(":")[0] for r in rejects)
    return store_partition(
        context,
        store,
        LEVEL,
        rows,
        rejects=rejects,
        metadata={
            FINGERPRINT: uit.wanted()[key],
            "path": str(path),
            "tasks": len({r.task_id for r in rows}),
            "formats": dg.MetadataValue.json(dict(Counter(r.source_format for r in rows))),
            "malformed_lines": reasons.get("malformed JSON line", 0),
            **({"rejects_by_reason": dg.MetadataValue.json(dict(reasons))} if reasons else {}),
        },
    )
