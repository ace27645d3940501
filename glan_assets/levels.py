"""A level, declared once: its table, ids, parent, LLM stages and checks, beside its asset.

Everything that lists levels (lineage, checks, export, stage settings, the CLI's level
names, the build order) derives from the declarations that the root composes
(`glan_assets.composition`).
"""

import functools
import gc
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field

import dagster as dg

from glan_assets.rows import TableRow
from glan_assets.stages import Stage, code_version
from resources.batch import BatchPending


@dataclass(frozen=True)
class Level:
    name: str  # the asset key and the table name
    row_type: type[TableRow]
    id_prefix: str  # ids of its rows start with `<prefix>_`; `glan lineage` looks them up here
    method: str  # the subpackage that builds it: "glan", "training", ...
    group: str  # the asset group in the UI
    description: str
    parent: str | None = None  # the level whose id the row's parent column holds
    stages: tuple[Stage, ...] = ()
    logic_version: str = "1"  # bump when the asset's own code changes what it writes
    dedup_column: str | None = None  # text a partition should not repeat (duplicate_rate check)
    label: str = ""  # what one row is called in `glan lineage` output
    # column -> name in the method's lineage view (one row per leaf with every ancestor's text)
    lineage_columns: dict[str, str] = field(default_factory=dict)
    kinds: frozenset[str] = frozenset({"duckdb"})
    partitions_def: dg.PartitionsDefinition | None = None
    # Other levels this one reads besides its parent (their data change makes it stale).
    extra_deps: tuple[str, ...] = ()
    # On a method's last level: the view with one row per row of it and its ancestors' columns.
    lineage_view: str = ""
    # Records the taxonomy node's fingerprint, so an edited node makes it stale.
    records_fingerprint: bool = False
    # Other tables that may hold its ids (a pair curation left out is in training_removed).
    other_row_types: tuple[type[TableRow], ...] = ()
    # On a level the training set draws from: a SELECT over its table (or its method's lineage
    # view) with the columns of a pair: source_id, group_name (the held-out split's group),
    # task_id (what source caps count), instruction, response; optionally field_name,
    # subject_name, turns. The rows' `source` is the level's method.
    training_pairs: str = ""

    def __post_init__(self) -> None:
        if self.row_type.table != self.name:
            raise ValueError(f"level {self.name!r}: its row type {self.row_type.__name__} writes {self.row_type.table!r}")

    @property
    def code_version(self) -> str:
        return code_version(*self.stages, logic=self.logic_version)

    @property
    def deps(self) -> list[str]:
        return [d for d in (self.parent, *self.extra_deps) if d]


def level_asset(level: Level, **overrides: object) -> Callable:
    """`@dg.asset` for a level's asset: name, partitions, upstream by key, code version, group."""
    kinds = set(level.kinds) | ({"openai"} if level.stages else set())
    asset = dg.asset(
        **{
            "name": level.name,
            "partitions_def": level.partitions_def,
            "deps": level.deps,
            "group_name": level.group,
            "code_version": level.code_version,
            "kinds": kinds,
            "owners": ["team:data"],
            "description": level.description,
            # LLM-calling levels share one Dagster pool, so an instance-wide limit
            # (`dagster instance concurrency set llm N`) caps them across all runs.
            "pool": "llm" if level.stages else None,
            # Within a run, a level's step goes before the checks of the level above it, which
            # are not its inputs: a check waiting on the DuckDB file's lock (8 s with eight runs
            # writing) then no longer holds up the next LLM level. The checks run last.
            "op_tags": {"dagster/priority": "1"},
            # In batch mode the step may end with its requests in a batch and nothing to
            # materialize: the levels below are skipped, and the `llm_batches` sensor asks
            # for the level again once the batch has ended.
            **({"output_required": False} if level.stages else {}),
            **overrides,
        }
    )

    def decorate(compute: Callable) -> dg.AssetsDefinition:
        @functools.wraps(compute)
        def step(*args, **kwargs):
            with old_objects_frozen():
                return compute(*args, **kwargs)

        @functools.wraps(compute)
        def step_or_batch(*args, **kwargs):
            # A generator: with nothing yielded, Dagster records no materialization.
            try:
                result = step(*args, **kwargs)
            except BatchPending as pending:
                dg.get_dagster_logger().info(f"{level.name}: {pending}")
                return
            yield result

        defined = asset(step_or_batch if level.stages else step)
        # What the asset takes is what its version covers (`resources.versioning`).
        # (Dagster adds its default io_manager; levels return MaterializeResults and store nothing
        # through it.)
        _READS[level.name] = frozenset(defined.required_resource_keys) - {"io_manager"}
        return defined

    return decorate


_READS: dict[str, frozenset[str]] = {}


def resource_keys(level: Level) -> frozenset[str]:
    """The resources a level's asset reads, as its definition declares them."""
    try:
        return _READS[level.name]
    except KeyError:
        raise KeyError(f"level {level.name!r} has no asset declared with `level_asset`") from None


@contextmanager
def old_objects_frozen() -> Iterator[None]:
    """Python's full garbage collections scan every object the process holds. In a step's
    process those are mostly Dagster's and the definitions': each full collection took
    0.2-0.26 s, three times in a 3.5 s step of 3,000 LLM calls. Frozen for the step, they
    are left out of its collections; unfrozen after, so nothing that would be freed is kept."""
    gc.freeze()
    try:
        yield
    finally:
        gc.unfreeze()
