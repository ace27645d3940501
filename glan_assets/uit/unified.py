"""Level 3: each instance under its task's winning instruction, in the target format: what
the training mixture reads (instruction, input, output, ids, collection, license)."""

import dagster as dg

from glan_assets.ids import stable_id
from glan_assets.levels import Level, level_asset
from glan_assets.results import store_partition
from glan_assets.rows import RejectRow
from glan_assets.uit.candidates import TRANSFER
from glan_assets.uit.partitions import collection_partitions
from glan_assets.uit.schemas import CandidateRow, RawInstructionRow, UnifiedRow
from glan_assets.uit.tasks import group_tasks, instance_input, unify
from resources.storage import DuckDBStore

LEVEL = Level(
    "instructions_unified",
    UnifiedRow,
    id_prefix="uni",
    method="uit",
    group="uit",
    description="Every instance under its task's chosen instruction (the lowest-loss candidate in "
    "`uit_candidates`), one format across collections.",
    parent="instructions_raw",
    extra_deps=("uit_candidates",),
    label="unified instance",
    lineage_columns={c: c for c in ("candidate_id", "instruction", "input", "output", "license")},
    lineage_view="uit_lineage",
    partitions_def=collection_partitions,
    # A chat of more than one exchange (or with a system turn) keeps every turn.
    training_pairs="SELECT unified_id AS source_id, collection AS group_name, task_id, "
    "concat_ws(chr(10) || chr(10), instruction, nullif(input, '')) AS instruction, output AS response, "
    "CASE WHEN json_array_length(turns) > 2 THEN turns ELSE '[]' END AS turns FROM instructions_unified",
)


@level_asset(LEVEL)
def instructions_unified(context: dg.AssetExecutionContext, store: DuckDBStore) -> dg.MaterializeResult:
    key = context.partition_key
    chosen = {c.task_id: c for c in store.read(CandidateRow, key, where="chosen")}
    rows, rejects = [], []
    for task in group_tasks(store.read(RawInstructionRow, key)):
        winner = chosen.get(task.task_id)
        if winner is None:  # every rewrite of the task was unusable (see its rejects)
            rejects.append(
                RejectRow.of(
                    LEVEL.name, key, task.task_id, TRANSFER.name,
                    f"task {task.task!r}: no usable candidate instruction; its {len(task.instances)} instances are left out",
                    key=[LEVEL.name, key, task.task_id],
                )
            )
            continue
        for raw in task.instances:
            instruction, input_ = unify(winner.target_format, winner.instruction, instance_input(task, raw))
            rows.append(
                UnifiedRow(
                    unified_id=stable_id(LEVEL.id_prefix, raw.raw_id, winner.candidate_id),
                    raw_id=raw.raw_id,
                    candidate_id=winner.candidate_id,
                    task_id=task.task_id,
                    collection=key,
                    task=task.task,
                    instruction=instruction,
                    input=input_,
                    output=raw.output,
                    turns=raw.turns,
                    source_format=raw.source_format,
                    license=raw.license,
                )
            )
    return store_partition(context, store, LEVEL, rows, rejects=rejects)
