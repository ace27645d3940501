"""What the quality rules know of a UIT pair besides its text (`PairContext`): its input, its
task's gold instances, and the worked examples of the rewrite prompt it must not copy."""

import dataclasses
from collections.abc import Callable, Sequence

from glan_assets.quality.rules import PairContext, example_strings
from glan_assets.uit.prompts import DEMONSTRATED
from glan_assets.uit.schemas import RawInstructionRow, UnifiedRow
from glan_assets.uit.tasks import group_tasks, source_view
from resources.storage import DuckDBStore

# The demonstrations' own sentences: an instruction holding one copied the demonstration.
WORKED_EXAMPLES = tuple(DEMONSTRATED)


def uit_context(unified: UnifiedRow, task_rows: Sequence[RawInstructionRow]) -> PairContext:
    """A UIT instance under its task's chosen instruction. `task_rows` are the task's raw
    instances: their outputs are the gold labels a demonstration must agree with, and the
    task as the rewrite request showed it is the material a worked-example phrase may come from."""
    (task,) = group_tasks(task_rows)
    return PairContext(
        source="uit",
        input=unified.input,
        worked_examples=example_strings(WORKED_EXAMPLES, own=source_view(task)),
        gold=tuple((r.input, r.output) for r in task.instances),
    )


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
