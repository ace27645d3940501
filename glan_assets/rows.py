"""The base of every table row, and the rejects table every method shares.

Table rows put their own id first and their parent's id second, so lineage is a join.
A partitioned table carries its partition key in `partition_column`.
"""

from collections.abc import Sequence
from typing import ClassVar

from pydantic import BaseModel, ConfigDict

from glan_assets.ids import content_hash


class TableRow(BaseModel):
    """A row of a DuckDB table; the storage derives the table's DDL from the fields."""

    model_config = ConfigDict(extra="forbid")
    table: ClassVar[str]
    id_column: ClassVar[str]
    parent_column: ClassVar[str | None] = None
    partition_column: ClassVar[str | None] = None  # None: the table is not partitioned

    @property
    def row_id(self) -> str:
        return getattr(self, self.id_column)


class RejectRow(TableRow):
    """An LLM output (or input item) that could not be used, kept with its reason instead of dropped."""

    table: ClassVar[str] = "rejects"
    id_column: ClassVar[str] = "reject_id"
    parent_column: ClassVar[str | None] = "parent_id"
    partition_column: ClassVar[str | None] = "partition_key"
    reject_id: str
    parent_id: str
    partition_key: str  # the partition of `asset` it was meant for ("" when unpartitioned)
    asset: str  # the table whose partition the output was meant for
    stage: str  # the LLM stage that produced it
    reason: str
    raw_output: str
    attempts: int

    @classmethod
    def of(
        cls, asset: str, partition_key: str, parent_id: str, stage: str, reason: str, raw_output: str = "",
        attempts: int = 0, *, key: Sequence[object],
    ) -> "RejectRow":
        """A reject whose id is a hash of what it was for (`key`), so a rebuild writes the same one."""
        return cls(
            reject_id=f"rej_{content_hash(list(key))[:16]}", parent_id=parent_id, partition_key=partition_key,
            asset=asset, stage=stage, reason=reason, raw_output=raw_output, attempts=attempts,
        )
