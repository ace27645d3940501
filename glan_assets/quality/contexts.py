"""The `PairContext` of a pair, per method, from the rows the method stored: what the quality
level hands the rules besides the pair's own text."""

import dataclasses
from collections.abc import Callable, Sequence

from glan_assets.dynosaur.prompts import task_messages
from glan_assets.dynosaur.schemas import DatasetMetadataRow, InstanceRow, TaskRow
from glan_assets.quality.rules import PairContext, example_strings, worked_examples
from glan_assets.uit.schemas import RawInstructionRow, UnifiedRow
from glan_assets.uit.tasks import group_tasks, source_view
from resources.storage import DuckDBStore


def glan_context() -> PairContext:
    """A GLAN question and its answer: no input, no worked example in their prompts."""
    return PairContext(source="glan")


def uit_context(unified: UnifiedRow, task_rows: Sequence[RawInstructionRow]) -> PairContext:
    """A UIT instance under its task's chosen instruction. `task_rows` are the task's raw
    instances: their outputs are the gold labels a demonstration must agree with, and the
    task as the rewrite request showed it is the material a worked-example phrase may come from."""
    (task,) = group_tasks(task_rows)
    return PairContext(
        source="uit",
        input=unified.input,
        worked_examples=example_strings(worked_examples("uit"), own=source_view(task)),
        gold=tuple((r.input, r.output) for r in task.instances),
    )


def field_values(text: str, fields: Sequence[str]) -> dict[str, str]:
    """A Dynosaur input (`field: value` lines, in the task's field order) read back by field;
    a value may run over several lines. A field whose line is missing (cut at max_chars) is left out."""
    values: dict[str, str] = {}
    rest = text
    for i, name in enumerate(fields):
        prefix = f"{name}: "
        if not rest.startswith(prefix):
            break
        rest = rest[len(prefix) :]
        end = rest.find(f"\n{fields[i + 1]}: ") if i + 1 < len(fields) else -1
        end = end if end >= 0 else len(rest)
        values[name], rest = rest[:end], rest[end + 1 :]
    return values


def dynosaur_context(instance: InstanceRow, task: TaskRow, dataset_text: str = "") -> PairContext:
    """A Dynosaur instance of a task. `dataset_text` is what the task call showed of the dataset
    (its name, description and columns): a worked-example phrase it holds is no copy."""
    return PairContext(
        source="dynosaur",
        input=instance.input,
        worked_examples=example_strings(worked_examples("dynosaur"), own=dataset_text),
        input_fields=tuple(task.input_fields),
        output_field=task.output_field,
        input_values=field_values(instance.input, task.input_fields),
    )


def glan_contexts(store: DuckDBStore, key: str) -> Callable[[str], PairContext]:
    return lambda source_id: glan_context()


def uit_contexts(store: DuckDBStore, key: str) -> Callable[[str], PairContext]:
    """A collection's pairs' contexts, by unified id: one per task, with each pair's input."""
    unified = {u.unified_id: u for u in store.read(UnifiedRow, key)}
    raws: dict[str, list[RawInstructionRow]] = {}
    for raw in store.read(RawInstructionRow, key):
        raws.setdefault(raw.task_id, []).append(raw)
    per_task: dict[str, PairContext] = {}

    def context(source_id: str) -> PairContext:
        row = unified[source_id]
        if row.task_id not in per_task:
            per_task[row.task_id] = uit_context(row, raws[row.task_id])
        return dataclasses.replace(per_task[row.task_id], input=row.input)

    return context


def dynosaur_contexts(store: DuckDBStore, key: str) -> Callable[[str], PairContext]:
    """A dataset's pairs' contexts, by instance id; the task call showed its metadata."""
    instances = {i.instance_id: i for i in store.read(InstanceRow, key)}
    tasks = {t.task_id: t for t in store.read(TaskRow, key)}
    shown = "\n".join(task_messages(m)[-1]["content"] for m in store.read(DatasetMetadataRow, key))
    return lambda source_id: dynosaur_context(instances[source_id], tasks[instances[source_id].task_id], shown)


# Each method's contexts for one of its partitions, by the pair's origin id.
CONTEXTS: dict[str, Callable[[DuckDBStore, str], Callable[[str], PairContext]]] = {
    "glan": glan_contexts,
    "uit": uit_contexts,
    "dynosaur": dynosaur_contexts,
}
