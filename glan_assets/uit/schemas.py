"""UIT's rows: every instance as its collection states it, every candidate instruction with
its measured loss, and the instances under their task's winning instruction."""

from typing import ClassVar

from glan_assets.rows import TableRow


class CollectionTableRow(TableRow):
    partition_column: ClassVar[str | None] = "collection"


class RawInstructionRow(CollectionTableRow):
    """One instance of a registered collection, read from its file as it is."""

    table: ClassVar[str] = "instructions_raw"
    id_column: ClassVar[str] = "raw_id"
    raw_id: str
    task_id: str  # the task it belongs to: one format transfer per task
    collection: str
    task: str
    instruction: str  # the task's instruction as the source format states it
    input: str
    output: str  # the gold output (the first reference when there are several)
    source_format: str
    source_row: str  # file:line, or file:index for a JSON array or a task file
    turns: str  # a chat's turns as JSON [{"role", "content"}], every turn kept; "[]" otherwise
    license: str


class CandidateRow(CollectionTableRow):
    """One rewrite of a task's instruction into the target format, and its loss."""

    table: ClassVar[str] = "uit_candidates"
    id_column: ClassVar[str] = "candidate_id"
    candidate_id: str
    task_id: str
    collection: str
    task: str
    candidate_index: int  # the sample index of the rewrite request
    target_format: str
    instruction: str
    # Mean teacher-forced cross-entropy (nats per token) of the task's gold outputs given this
    # instruction and their inputs, over `scored_instances` instances of the task.
    loss: float
    scored_instances: int
    chosen: bool  # the lowest loss of its task
    model: str  # the model that wrote it
    scorer_model: str


class UnifiedRow(CollectionTableRow):
    """An instance under its task's winning instruction: what a training pair needs."""

    table: ClassVar[str] = "instructions_unified"
    id_column: ClassVar[str] = "unified_id"
    parent_column: ClassVar[str | None] = "raw_id"
    unified_id: str
    raw_id: str
    candidate_id: str
    task_id: str
    collection: str
    task: str
    instruction: str
    input: str
    output: str
    turns: str
    source_format: str
    license: str
