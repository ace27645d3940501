"""What the quality rules know of a Dynosaur pair besides its text (`PairContext`): its
task's fields, its input by field, and the worked examples of the task prompt it must not copy."""

from collections.abc import Callable, Sequence

from glan_assets.dynosaur.prompts import TASKS_DESCRIBED, TASKS_UNDESCRIBED, task_messages
from glan_assets.dynosaur.schemas import DatasetMetadataRow, InstanceRow, TaskRow
from glan_assets.quality.rules import PairContext, example_strings, json_strings
from resources.storage import DuckDBStore

# The example tasks' instructions (the strings of their JSON answers).
WORKED_EXAMPLES = tuple(s for p in (TASKS_DESCRIBED, TASKS_UNDESCRIBED) for _, answer in p.examples
                        for s in json_strings(answer))


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
        worked_examples=example_strings(WORKED_EXAMPLES, own=dataset_text),
        input_fields=tuple(task.input_fields),
        output_field=task.output_field,
        input_values=field_values(instance.input, task.input_fields),
    )


def dynosaur_contexts(store: DuckDBStore, key: str) -> Callable[[str], PairContext]:
    """A dataset's pairs' contexts, by instance id; the task call showed its metadata."""
    instances = {i.instance_id: i for i in store.read(InstanceRow, key)}
    tasks = {t.task_id: t for t in store.read(TaskRow, key)}
    shown = "\n".join(task_messages(m)[-1]["content"] for m in store.read(DatasetMetadataRow, key))
    return lambda source_id: dynosaur_context(instances[source_id], tasks[instances[source_id].task_id], shown)
