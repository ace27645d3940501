"""A method (GLAN, Dynosaur, UIT) as the build sees it: its partitioned levels in build
order, the partitions they share, the file that says which partitions there should be, and
what generic code (the quality rules, the plan's estimate) needs to know of it.

The build and each method's sensor plan with the same code (`glan_assets.plan`) over these.
Each method's package declares its `METHOD`; the root (`glan_assets.registry`) lists them,
once, and hands them to `glan_assets.composition.compose`.
"""

from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from types import ModuleType

import dagster as dg

from glan_assets.levels import Level
from glan_assets.plan import PartitionPlan
from glan_assets.quality.rules import PairContext
from glan_assets.stages import Stage
from resources.storage import DuckDBStore

# A partition's pairs' contexts for the quality rules, by the pair's origin id.
Contexts = Callable[[DuckDBStore, str], Callable[[str], PairContext]]
# The test endpoint's reply to a request (its messages, and the endpoint's switches), or None
# when the request is none of the method's stages'.
FakeReply = Callable[[Sequence[Mapping[str, str]], Mapping[str, bool]], str | None]
# A partition's LLM calls, (level, stage, calls), for the levels its plan builds: from the
# resources, and the partition's rows of levels not rebuilt (`Fanout.stored_rows`' names -> count).
Calls = Callable[[PartitionPlan, Mapping[str, dg.ConfigurableResource], Mapping[str, int]], list[tuple[str, Stage, int]]]


@dataclass(frozen=True)
class Fanout:
    """How the plan's estimate (`glan_assets.estimate`) counts a method's calls."""

    calls: Calls
    # name -> SQL counting rows per partition, "SELECT <partition> AS k, count(*) AS n FROM <table> GROUP BY 1":
    # what `calls` is handed for its partition (0 where the table has none).
    stored_rows: Mapping[str, str] = field(default_factory=dict)
    # Stage name -> (prompt, completion) tokens per call before the cache has measured any.
    default_tokens: Mapping[str, tuple[int, int]] = field(default_factory=dict)


# Dagster refuses these in a partition key; names are keys as written, so a file with one is refused.
_FORBIDDEN_IN_KEYS = ("...", "\a", "\b", "\f", "\n", "\r", "\t", "\v", "\0")


def partition_key_problem(name: str) -> str | None:
    """Why a name cannot be a partition key, or None when it can."""
    bad = [s for s in _FORBIDDEN_IN_KEYS if s in name]
    if bad:
        return f"contains {bad[0]!r}, which Dagster refuses in a partition key"
    if name != name.strip():
        return "has leading or trailing whitespace"
    return None


@dataclass(frozen=True)
class MethodSettings:
    """How the settings (`glan_assets.settings`) resolve a method's resource: its class, each
    scalar field from `<prefix><FIELD>`, the variable that names the method's file, and the
    values a profile gives it."""

    resource_class: type[dg.ConfigurableResource]
    resource_key: str  # what its assets and `wanted` ask for
    file_variable: str  # "GLAN_TAXONOMY"
    file_field: str  # the field it sets: "taxonomy_path"
    prefix: str = "GLAN_"
    profiles: Mapping[str, Mapping[str, object]] = field(default_factory=dict)  # profile name -> field values


@dataclass(frozen=True)
class Method:
    name: str  # "glan"; the CLI's filter option is `--<partition noun>`
    levels: tuple[Level, ...]  # partitioned levels, in build order
    modules: tuple[ModuleType, ...]  # the modules that define their assets
    partitions: dg.DynamicPartitionsDefinition
    # From the resources: partition key -> fingerprint of its entry in the method's file
    # (a taxonomy node, a registry entry), in file order. Raises a clear error for a bad file.
    wanted: Callable[[Mapping[str, dg.ConfigurableResource]], dict[str, str]]
    source_file: Callable[[Mapping[str, dg.ConfigurableResource]], str]  # for messages
    settings: MethodSettings  # its resource, which `wanted` reads
    # The sensor deletes a partition that left the file only when this setting is true.
    prunes: Callable[[Mapping[str, dg.ConfigurableResource]], bool] = lambda res: False
    # What its pairs are, in one line, for the model and dataset cards.
    note: str = ""
    # Strings of the worked examples in its prompts that its outputs should never hold.
    worked_examples: tuple[str, ...] = ()
    # What the quality rules know of a pair besides its text; None: nothing (its source only).
    contexts: Contexts | None = None
    # Modules of levels asked for on demand, not built per partition (`glan taxonomy propose`).
    on_demand: tuple[ModuleType, ...] = ()
    # Its sensor's name, when not `<noun>_sensor` (a running sensor's cursor is kept by name).
    sensor: str = ""
    # What the test endpoint (`tests/fake_llm.py`) replies to its stages: a method brings its own.
    fake_reply: FakeReply = lambda messages, switches: None
    # How the plan's estimate counts its calls; None: its levels are "not estimated".
    fanout: Fanout | None = None

    def __post_init__(self) -> None:
        # A level names its method and partitions too (its asset is made before the method):
        # they must be this method's, or the build, the sensor and the UI would disagree.
        for lv in self.levels:
            if lv.method != self.name or lv.partitions_def is not self.partitions:
                raise ValueError(
                    f"method {self.name!r}: level {lv.name!r} declares method={lv.method!r} and partitions "
                    f"{getattr(lv.partitions_def, 'name', None)!r}; its method's are {self.name!r} and {self.noun!r}"
                )

    @property
    def noun(self) -> str:
        """What one partition is: "discipline", "dataset", "collection"."""
        return self.partitions.name

    @property
    def resource_keys(self) -> frozenset[str]:
        """What `wanted` reads."""
        return frozenset({self.settings.resource_key})

    @property
    def job_name(self) -> str:
        """The job that builds one partition: "build_discipline"."""
        return f"build_{self.noun}"

    @property
    def sensor_name(self) -> str:
        return self.sensor or f"{self.noun}_sensor"

    @property
    def partition_column(self) -> str:
        return self.levels[0].row_type.partition_column

    def pair_contexts(self, store: DuckDBStore, key: str) -> Callable[[str], PairContext]:
        """The contexts of partition `key`'s pairs, by the pair's origin id."""
        if self.contexts is None:
            return lambda source_id: PairContext(source=self.name)
        return self.contexts(store, key)
