"""Where the training set's pairs come from: every level that declares `training_pairs`.

A source level's `training_pairs` is a SELECT over its table (or its method's lineage view)
with the columns of a pair; its method names the pairs' `source`. A per-source cap keeps
at most N rows per task, chosen in SQL by a hash of the row id (a stable, spread sample that
a rebuild repeats), so a million-row dataset is never read into Python.
"""

from collections.abc import Mapping, Sequence
from dataclasses import dataclass

import dagster as dg

from glan_assets.levels import Level
from glan_assets.lineage import ensure_lineage_views
from glan_assets.methods import Method
from glan_assets.quality.stored import level_name
from glan_assets.training.schemas import TrainingPairRow, pair_id_of
from resources.storage import DuckDBStore


@dataclass(frozen=True)
class Sources:
    """What the training set reads, from the generation methods the root composes and hands
    down: the levels that declare `training_pairs`."""

    methods: tuple[Method, ...]

    @property
    def levels(self) -> tuple[Level, ...]:
        return tuple(lv for m in self.methods for lv in m.levels if lv.training_pairs)

    @property
    def names(self) -> tuple[str, ...]:
        return tuple(dict.fromkeys(lv.method for lv in self.levels))

    @property
    def generation_levels(self) -> tuple[Level, ...]:
        """The levels whose lineage views the source levels' SELECTs may read."""
        return tuple(lv for m in self.methods for lv in m.levels)

    @property
    def upstream(self) -> dict[str, dg.PartitionsDefinition]:
        """What the training set reads, by name, with its partitions: every source level, then
        each source's quality level (partitioned like it)."""
        return {
            **{lv.name: lv.partitions_def for lv in self.levels},
            **{level_name(lv.method): lv.partitions_def for lv in self.levels},
        }

    @property
    def notes(self) -> dict[str, str]:
        """What each source is, for the model and dataset cards."""
        return {m.name: m.note for m in self.methods}

    @property
    def group_nouns(self) -> dict[str, str]:
        """What one of a source's groups is, for the dataset card."""
        return {m.name: m.noun for m in self.methods}

REQUIRED = ("source_id", "group_name", "task_id", "instruction", "response")
OPTIONAL = ("field_name", "subject_name", "turns")


@dataclass(frozen=True)
class SourceRead:
    """One source level's rows: how many it has, and the pairs taken under its cap."""

    level: str
    source: str
    available: int
    cap: int | None  # rows per task at most; None: uncapped
    pairs: list[TrainingPairRow]

    @property
    def capped_away(self) -> int:
        return self.available - len(self.pairs)


def check_caps(caps: Mapping[str, int], sources: Sequence[str]) -> None:
    """A cap names a known source and is not negative."""
    unknown = sorted(set(caps) - set(sources))
    if unknown:
        raise ValueError(f"source caps name unknown source(s) {', '.join(unknown)}; the sources are {', '.join(sources)}")
    negative = sorted(s for s, n in caps.items() if n < 0)
    if negative:
        raise ValueError(f"source caps must be 0 or more (0 leaves a source out): {', '.join(negative)}")


def capped_sql(level: Level, cap: int | None) -> str:
    """The level's pairs, at most `cap` per task (ranked by a hash of the row id), by id."""
    base = f"SELECT * FROM ({level.training_pairs.strip().rstrip(';')}) AS pairs"
    if cap is not None:
        base += f" QUALIFY row_number() OVER (PARTITION BY task_id ORDER BY md5(source_id), source_id) <= {int(cap)}"
    return f"SELECT * FROM ({base}) ORDER BY source_id"


def read_source(store: DuckDBStore, level: Level, cap: int | None) -> SourceRead:
    available = store.query(f"SELECT count(*) AS n FROM ({level.training_pairs.strip().rstrip(';')}) AS pairs")[0]["n"]
    records = store.query(capped_sql(level, cap)) if cap != 0 else []
    if records and (missing := [c for c in REQUIRED if c not in records[0]]):
        raise ValueError(f"level {level.name}: its training_pairs SELECT lacks {', '.join(missing)}")
    pairs = [
        TrainingPairRow(
            pair_id=pair_id_of(r["source_id"]),
            source_id=r["source_id"],
            source=level.method,
            group_name=r["group_name"],
            instruction=r["instruction"],
            response=r["response"],
            **{c: r[c] for c in OPTIONAL if r.get(c) is not None},
        )
        for r in records
    ]
    return SourceRead(level.name, level.method, available, cap, pairs)


def read_sources(store: DuckDBStore, caps: Mapping[str, int], sources: Sources) -> list[SourceRead]:
    """Every source level whose table exists, under its source's cap."""
    check_caps(caps, sources.names)
    tables = {r["table_name"] for r in store.query("SELECT table_name FROM duckdb_tables()")}
    present = [lv for lv in sources.levels if lv.name in tables]
    if present:
        ensure_lineage_views(store, sources.generation_levels)  # a source's SELECT may read its method's view
    return [read_source(store, lv, caps.get(lv.method)) for lv in present]
