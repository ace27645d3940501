"""Level 2: instruction tasks per dataset, from ONE call (temperature 0, as in the paper)
that reads the dataset's metadata and proposes up to three. The reply schema is built per
dataset, its field names enums of the dataset's columns; the filter drops what is still
unusable into the rejects table, with its reason."""

import dataclasses

import dagster as dg

from glan_assets import stages
from glan_assets.dynosaur.metadata import LEVEL as METADATA
from glan_assets.dynosaur.partitions import dataset_partitions
from glan_assets.dynosaur.prompts import TASKS_DESCRIBED, TASKS_UNDESCRIBED, shown_columns, task_messages
from glan_assets.dynosaur.schemas import MAX_TASKS, DatasetMetadataRow, ProposedTask, ProposedTasks, TaskRow, tasks_schema
from glan_assets.ids import stable_id
from glan_assets.levels import Level, level_asset
from glan_assets.results import store_partition
from glan_assets.rows import RejectRow
from glan_assets.stages import Reply, Request, Stage
from resources.llm import LLMResource, Sampling
from resources.storage import DuckDBStore

PROPOSE = Stage(
    "dynosaur_tasks", (TASKS_DESCRIBED, TASKS_UNDESCRIBED), Sampling(temperature=0.0, top_p=1.0, max_tokens=512), ProposedTasks
)

LEVEL = Level(
    "dynosaur_tasks",
    TaskRow,
    id_prefix="dtask",
    method="dynosaur",
    group="dynosaur",
    description="Up to 3 instruction tasks per dataset (instruction, input fields, output field) from one "
    "LLM call over its metadata; invalid tasks go to the rejects table with their reason.",
    parent=METADATA.name,
    stages=(PROPOSE,),
    dedup_column="instruction",
    label="task",
    lineage_columns={"instruction": "task_instruction", "output_field": "output_field"},
    partitions_def=dataset_partitions,
)


def _norm(text: str) -> str:
    return " ".join(text.casefold().split())


def filter_tasks(proposed: list[ProposedTask], columns: list[str]) -> list[tuple[ProposedTask, str | None]]:
    """Each proposed task with why it is dropped, or None when it is kept: an empty
    instruction, no input or output field, a field not in the dataset, the output field
    among the inputs, the instruction or field choice of a task kept before it, or valid
    tasks beyond the first MAX_TASKS."""
    known = set(columns)
    kept_instructions: dict[str, int] = {}
    kept_choices: dict[tuple[frozenset[str], str], int] = {}
    judged: list[tuple[ProposedTask, str | None]] = []
    for i, task in enumerate(proposed, start=1):
        inputs = list(dict.fromkeys(task.input_fields))
        task = task.model_copy(update={"instruction": task.instruction.strip(), "input_fields": inputs})
        unknown = [f for f in [*inputs, task.output_field] if f and f not in known]
        choice = (frozenset(inputs), task.output_field)
        if not task.instruction:
            reason = "empty instruction"
        elif not task.output_field:
            reason = "no output field"
        elif not inputs:
            reason = "no input field"
        elif unknown:
            reason = f"unknown field {', '.join(map(repr, unknown))}; the dataset's fields are {', '.join(map(repr, columns))}"
        elif task.output_field in inputs:
            reason = f"output field {task.output_field!r} is also an input"
        elif _norm(task.instruction) in kept_instructions:
            reason = f"repeats the instruction of task {kept_instructions[_norm(task.instruction)]}"
        elif choice in kept_choices:
            reason = f"repeats the field choice of task {kept_choices[choice]}"
        elif len(kept_choices) == MAX_TASKS:
            reason = f"more than {MAX_TASKS} valid tasks"
        else:
            reason = None
            kept_instructions[_norm(task.instruction)] = i
            kept_choices[choice] = i
        judged.append((task, reason))
    return judged


def task_rows(
    meta: DatasetMetadataRow, reply: Reply, model: str
) -> tuple[list[TaskRow], list[RejectRow]]:
    """The kept tasks as rows, and a reject (naming the dataset) for each dropped one."""
    if not reply.ok:
        return [], []  # the unparseable reply itself is recorded from the batch
    columns = [c.name for c in meta.text_columns()]
    rows, rejects = [], []
    for i, (task, reason) in enumerate(filter_tasks(reply.value.tasks, columns), start=1):
        if reason:
            rejects.append(
                RejectRow.of(
                    LEVEL.name, meta.dataset, meta.dataset_id, PROPOSE.name, f"dataset {meta.dataset!r}, task {i}: {reason}",
                    task.model_dump_json(), reply.attempts, key=[PROPOSE.name, meta.dataset_id, i, "filter"],
                )
            )
            continue
        rows.append(
            TaskRow(
                task_id=stable_id(LEVEL.id_prefix, meta.dataset_id, task.instruction, task.input_fields, task.output_field),
                dataset_id=meta.dataset_id,
                dataset=meta.dataset,
                task_index=i,
                instruction=task.instruction,
                input_fields=task.input_fields,
                output_field=task.output_field,
                llm_calls=reply.attempts,
                model=model,
            )
        )
    return rows, rejects


@level_asset(LEVEL)
def dynosaur_tasks(context: dg.AssetExecutionContext, llm: LLMResource, store: DuckDBStore) -> dg.MaterializeResult:
    (meta,) = store.read(DatasetMetadataRow, context.partition_key)
    stage = dataclasses.replace(PROPOSE, schema=tasks_schema(shown_columns(meta)))
    batch = stages.run(llm, stage, [Request(meta.dataset_id, task_messages(meta))])
    rows, rejects = task_rows(meta, batch.replies[0], stages.model_of(llm, PROPOSE))
    return store_partition(
        context, store, LEVEL, rows, {PROPOSE.name: batch}, rejects=rejects,
        metadata={"tasks_kept": len(rows), "tasks_dropped": len(rejects) + len(batch.replies[0].dropped)},
    )
