"""Pydantic models of the training set: the pairs kept, the pairs removed and why.

Like every table row, each puts its own id first and its parent's id second. A pair's parent
is the row it came from, in whichever source level declared it (`Level.training_pairs`):
an answer (`ans_`), a Dynosaur instance (`dinst_`) or a UIT unified instance (`uni_`), so
`glan lineage` follows it by the id's prefix. `group_name` is the group its held-out split
is drawn per: the discipline (GLAN), the dataset (Dynosaur) or the collection (UIT).
"""

from typing import ClassVar, Literal

from pydantic import BaseModel

from glan_assets.ids import content_hash
from glan_assets.rows import TableRow

Split = Literal["train", "test"]
# "quality": a rule flagged it, or its IFD or judge score missed a threshold (`signal`).
RemovalReason = Literal["exact_duplicate", "near_duplicate", "contaminated", "quality"]


def pair_id_of(source_id: str) -> str:
    """A pair is named after its origin row, so its id (and its split) survive a regenerated text."""
    return f"pair_{content_hash(['pair', source_id])[:16]}"


class TrainingPairRow(TableRow):
    """One instruction/response pair of the curated training set."""

    table: ClassVar[str] = "training_set"
    id_column: ClassVar[str] = "pair_id"
    parent_column: ClassVar[str | None] = "source_id"
    pair_id: str
    source_id: str  # the id of the row it came from: ans_..., dinst_..., uni_...
    source: str  # the method it came from: glan, dynosaur, uit
    group_name: str  # discipline, dataset or collection: the held-out split is per group
    field_name: str = ""  # GLAN's field and subject; empty for other sources
    subject_name: str = ""
    instruction: str
    response: str
    turns: str = "[]"  # a multi-turn chat's every turn as JSON [{"role", "content"}]; "[]" otherwise
    # Its quality signals (`<source>_quality`): IFD, the judge's 1-10 score (None: not in the
    # judge's sample) and the rules that flagged it (none unless GLAN_DROP_FLAGGED=0).
    ifd: float | None = None
    judge_score: int | None = None
    quality_flags: str = ""
    split: Split = "train"


class RemovedPairRow(TableRow):
    """A pair left out of the training set: a duplicate of a kept pair, contaminated, or
    below the quality thresholds."""

    table: ClassVar[str] = "training_removed"
    id_column: ClassVar[str] = "pair_id"
    parent_column: ClassVar[str | None] = "source_id"
    pair_id: str
    source_id: str
    source: str
    group_name: str
    reason: RemovalReason
    kept_pair_id: str = ""  # the pair a duplicate was removed in favour of
    # For reason "quality": the first signal it failed (a rule's name, "ifd" or "judge"),
    # what that signal measured (None: the pair has no such score), and every failure's reason.
    signal: str = ""
    signal_value: float | None = None
    detail: str = ""


class ContaminationRow(TableRow):
    """An instruction that shares an n-gram with a benchmark item (one row per item matched)."""

    table: ClassVar[str] = "contamination"
    id_column: ClassVar[str] = "contamination_id"
    parent_column: ClassVar[str | None] = "pair_id"
    contamination_id: str
    pair_id: str
    group_name: str
    benchmark_file: str
    benchmark_item: str  # the item's own id, or `line N` when it has none
    ngram: str


class BenchmarkItem(BaseModel):
    """A benchmark question or prompt that generated instructions must not contain."""

    file: str
    line: int
    item_id: str
    text: str
