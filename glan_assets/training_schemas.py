"""Pydantic models of the training set: the pairs kept, the pairs removed and why.

Like every table row, each puts its own id first, its parent's id second and carries
`discipline`.
"""

from typing import ClassVar, Literal

from pydantic import BaseModel

from glan_assets.ids import content_hash
from glan_assets.schemas import TableRow

Split = Literal["train", "test"]
RemovalReason = Literal["exact_duplicate", "near_duplicate", "contaminated"]


def pair_id_of(answer_id: str) -> str:
    """A pair is named after its answer, so its id (and its split) survive a regenerated text."""
    return f"pair_{content_hash(['pair', answer_id])[:16]}"


class TrainingPairRow(TableRow):
    """One instruction/response pair of the curated training set."""

    table: ClassVar[str] = "training_set"
    id_column: ClassVar[str] = "pair_id"
    parent_column: ClassVar[str | None] = "answer_id"
    pair_id: str
    answer_id: str
    discipline: str
    field_name: str
    subject_name: str
    instruction: str
    response: str
    split: Split = "train"


class RemovedPairRow(TableRow):
    """A pair left out of the training set: a duplicate of a kept pair, or contaminated."""

    table: ClassVar[str] = "training_removed"
    id_column: ClassVar[str] = "pair_id"
    parent_column: ClassVar[str | None] = "answer_id"
    pair_id: str
    answer_id: str
    discipline: str
    reason: RemovalReason
    kept_pair_id: str = ""  # the pair a duplicate was removed in favour of


class ContaminationRow(TableRow):
    """An instruction that shares an n-gram with a benchmark item (one row per item matched)."""

    table: ClassVar[str] = "contamination"
    id_column: ClassVar[str] = "contamination_id"
    parent_column: ClassVar[str | None] = "pair_id"
    contamination_id: str
    pair_id: str
    discipline: str
    benchmark_file: str
    benchmark_item: str  # the item's own id, or `line N` when it has none
    ngram: str


class BenchmarkItem(BaseModel):
    """A benchmark question or prompt that generated instructions must not contain."""

    file: str
    line: int
    item_id: str
    text: str
