"""Tasks and their instructions, as pure functions: grouping instances into tasks, what the
rewrite request shows of a task, how an instance reads under a candidate instruction, and
which candidate wins (the lowest loss of the task's gold outputs)."""

from collections.abc import Callable, Sequence
from dataclasses import dataclass

from glan_assets.uit.schemas import RawInstructionRow
from resources.scorer import PairLoss

SHOWN_EXAMPLES = 2  # instances of a task the rewrite request shows
FUSED = {"flan", "promptsource"}  # formats whose instruction text is the instance's own


@dataclass(frozen=True)
class Task:
    task_id: str
    task: str
    source_format: str
    instances: tuple[RawInstructionRow, ...]  # in id order: the scored ones are a fixed sample

    @property
    def instruction(self) -> str | None:
        """The instruction every instance shares (Super-NI, Alpaca); None when it is per
        instance (FLAN and PromptSource fuse instruction and input)."""
        texts = {r.instruction for r in self.instances}
        return next(iter(texts)) if len(texts) == 1 and self.source_format not in FUSED else None


def group_tasks(rows: Sequence[RawInstructionRow]) -> list[Task]:
    by_task: dict[str, list[RawInstructionRow]] = {}
    for row in sorted(rows, key=lambda r: r.raw_id):
        by_task.setdefault(row.task_id, []).append(row)
    return [
        Task(task_id, group[0].task, group[0].source_format, tuple(group)) for task_id, group in sorted(by_task.items())
    ]


def source_view(task: Task) -> str:
    """The task as its source format states it: the shared instruction and examples, or
    examples of the fused instruction-and-input with their outputs."""
    shown = task.instances[:SHOWN_EXAMPLES]
    if task.instruction is not None:
        parts = [f"Instruction: {task.instruction}"]
        parts += [f"Example {i} -\nInput: {r.input}\nOutput: {r.output}" for i, r in enumerate(shown, 1)]
    else:
        parts = [f"Example {i} -\n{r.instruction}\nOutput: {r.output}" for i, r in enumerate(shown, 1)]
    return "\n\n".join(parts)


def copied_example(text: str, request: str, demonstrated: Sequence[str]) -> str | None:
    """The first worked-example sentence a rewrite holds that its own task does not."""
    lowered, asked = text.lower(), request.lower()
    return next((d for d in demonstrated if d.lower() in lowered and d.lower() not in asked), None)


def instance_input(task: Task, row: RawInstructionRow) -> str:
    """What stays of an instance once its task has one instruction: its input, and its own
    instruction text when that was per instance (it holds the instance's content)."""
    if task.instruction is not None:
        return row.input
    return "\n\n".join(t for t in (row.instruction, row.input) if t)


def unify(target_format: str, instruction: str, input_: str) -> tuple[str, str]:
    """(instruction, input) of an instance under a candidate: a FLAN-style template takes the
    input into its `{input}` placeholder; a definition keeps it apart."""
    if target_format == "template" and "{input}" in instruction:
        return instruction.replace("{input}", input_), ""
    return instruction, input_


def prompt_text(instruction: str, input_: str) -> str:
    """The prompt the scorer conditions on: what a training pair's prompt holds."""
    return f"{instruction}\n\n{input_}" if input_ else instruction


@dataclass(frozen=True)
class Score:
    loss: float  # nats per gold output token
    instances: int


def score_candidates(
    score: Callable[[list[tuple[str, str]]], list[PairLoss]],
    candidates: Sequence[tuple[Task, str]],
    target_format: str,
    max_instances: int,
) -> list[Score]:
    """Each (task, instruction)'s mean teacher-forced loss of the gold outputs of up to
    `max_instances` of its instances, scored in one call so the scorer batches across tasks."""
    pairs, owner = [], []
    for c, (task, instruction) in enumerate(candidates):
        for row in task.instances[:max_instances]:
            pairs.append((prompt_text(*unify(target_format, instruction, instance_input(task, row))), row.output))
            owner.append(c)
    losses = score(pairs) if pairs else []
    nll, tokens = [0.0] * len(candidates), [0] * len(candidates)
    for c, loss in zip(owner, losses):
        nll[c] += loss.nll
        tokens[c] += loss.tokens
    return [
        Score(nll[c] / tokens[c] if tokens[c] else float("inf"), min(len(task.instances), max_instances))
        for c, (task, _) in enumerate(candidates)
    ]


def winners(scored: Sequence[tuple[str, int, float]]) -> set[tuple[str, int]]:
    """(task id, candidate index) of each task's lowest loss; a tie goes to the lower index."""
    best: dict[str, tuple[float, int]] = {}
    for task_id, index, loss in scored:
        if task_id not in best or (loss, index) < best[task_id]:
            best[task_id] = (loss, index)
    return {(task_id, index) for task_id, (_, index) in best.items()}
