"""What a build has to do: per partition, the first level that is missing or stale, and why.

The build plan is decided in Dagster's terms, from the instance's event log, so that
`glan build`, the sensors and the UI's stale markers read the same facts:
- a level never materialized for the partition is *new*;
- one whose last attempt failed after its last materialization *failed earlier*;
- one whose recorded code version is not the level's current one has *code changed*;
- one whose recorded input data versions (Dagster's provenance) differ from what its
  upstream partitions hold now has *upstream changed*;
- a taxonomy level whose recorded taxonomy fingerprint differs has *taxonomy node changed*.
A partition is rebuilt from that level down; everything else is up to date and not run.
"""

from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field

import dagster as dg

from glan_assets.ids import content_hash
from glan_assets.levels import Level, resource_keys
from resources.versioning import settings_version

NEW = "new"
FAILED = "earlier run failed"
CODE = "code changed"
UPSTREAM = "upstream changed"
NODE = "taxonomy node changed"
CONFIG = "settings changed"
FORCED = "forced"

# Metadata a level's materialization records so the plan can compare it with the file.
FINGERPRINT = "taxonomy_fingerprint"
DATA_VERSION = "data_version"
# The data versions of the upstream partitions it read, as JSON. Dagster's own provenance
# tags hash a partitioned input's versions into one value, which cannot be compared with the
# upstream partition's own data version.
INPUT_VERSIONS = "input_data_versions"
CONFIG_VERSION = "config_version"  # the settings the level depends on: `config_version()`
# A partition's run tag: per level, the plan's estimate (`glan_assets.estimate`) as JSON; the
# materialization records it as ESTIMATE beside its actual figures.
ESTIMATE_TAG = "glan/estimate"
ESTIMATE = "estimate"


@dataclass(frozen=True)
class Latest:
    """The last materialization of one asset partition, as the plan reads it."""

    storage_id: int
    code_version: str | None
    data_version: str | None
    inputs: Mapping[str, str | None]  # upstream asset -> the data version it had then
    metadata: Mapping[str, object]


@dataclass(frozen=True)
class PartitionPlan:
    key: str
    levels: tuple[str, ...]  # the levels to build, in order: the first stale one and all below it
    reason: str  # why the first one is built
    estimate: str = field(default="", compare=False)  # ESTIMATE_TAG's value for its run


def latest_by_partition(instance: dg.DagsterInstance, asset: str, batch: int = 1000) -> dict[str | None, Latest]:
    """The last materialization of each partition of `asset` (None: unpartitioned)."""
    found: dict[str | None, Latest] = {}
    cursor = None
    while True:
        result = instance.fetch_materializations(dg.AssetKey(asset), limit=batch, cursor=cursor)
        for record in result.records:
            mat = record.asset_materialization
            if mat is None or mat.partition in found:
                continue
            provenance = dg.DataProvenance.from_tags(mat.tags or {})
            inputs = mat.metadata.get(INPUT_VERSIONS)
            found[mat.partition] = Latest(
                storage_id=record.storage_id,
                code_version=provenance.code_version if provenance else None,
                data_version=_text(mat.metadata.get(DATA_VERSION)),
                inputs=inputs.value if inputs is not None else {},
                metadata={k: _text(v) for k, v in mat.metadata.items()},
            )
        if not result.has_more:
            return found
        cursor = result.cursor


def failed_after(instance: dg.DagsterInstance, asset: str, since: Mapping[str | None, Latest]) -> set[str | None]:
    """Partitions whose latest attempt failed after their latest materialization."""
    failed: set[str | None] = set()
    seen: set[str | None] = set()
    result = instance.fetch_failed_materializations(dg.AssetKey(asset), limit=10_000)
    for record in result.records:
        partition = record.event_log_entry.dagster_event.partition
        if partition in seen:
            continue
        seen.add(partition)
        last = since.get(partition)
        if last is None or record.storage_id > last.storage_id:
            failed.add(partition)
    return failed


def _text(value: object) -> str | None:
    return None if value is None else str(getattr(value, "value", value))


@dataclass
class History:
    """Every level's last materialization per partition, and its failed attempts: read once."""

    latest: dict[str, dict[str | None, Latest]]
    failed: dict[str, set[str | None]]

    @classmethod
    def read(cls, instance: dg.DagsterInstance, assets: Iterable[str]) -> "History":
        latest, failed = {}, {}
        for asset in assets:
            latest[asset] = latest_by_partition(instance, asset)
            failed[asset] = failed_after(instance, asset, latest[asset])
        return cls(latest, failed)


def config_version(level: Level, resources: Mapping[str, object]) -> str:
    """A hash of the settings a level's rows depend on: every versioned field of each resource
    its asset reads (`resources.versioning`; files by content), and each stage's model,
    sampling (prices aside) and attempts."""
    values: dict[str, object] = {}
    for key in sorted(resource_keys(level)):
        fields = settings_version(resources[key], level.name) or {}
        values.update({f"{key}.{name}": value for name, value in fields.items()})
    for stage in level.stages:
        llm = resources["llm"]
        sampling = llm.sampling(stage.name, stage.sampling)
        values[stage.name] = [llm.model_for(sampling), sampling.temperature, sampling.top_p, sampling.max_tokens,
                              llm.parse_attempts, llm.structured_outputs]
    return content_hash(values)[:16]


def with_input_versions(
    assets: Iterable[dg.AssetsDefinition], levels: Sequence[Level], resources: Mapping[str, object]
) -> list[dg.AssetsDefinition]:
    """The assets with each level's code version extended by `config_version`, so Dagster's own
    stale markers and automation conditions see a changed setting or input file as the plan does."""
    by_name = {lv.name: lv for lv in levels}

    def extend(spec: dg.AssetSpec) -> dg.AssetSpec:
        level = by_name.get(spec.key.to_user_string())
        if level is None:
            return spec
        return spec.replace_attributes(code_version=f"{level.code_version}+{config_version(level, resources)}")

    return dg.map_asset_specs(extend, list(assets))


def stale_reason(
    level: Level, key: str | None, history: History, fingerprint: str | None = None, config: str | None = None
) -> str | None:
    """Why the level's partition must be built, or None when it is up to date."""
    last = history.latest[level.name].get(key)
    if last is None:
        return FAILED if key in history.failed[level.name] else NEW
    if key in history.failed[level.name]:
        return FAILED
    # Recorded as "<code>+<inputs>" (`with_input_versions`); the inputs are compared below.
    if (last.code_version or "").split("+")[0] != level.code_version:
        return CODE
    if fingerprint is not None and last.metadata.get(FINGERPRINT) != fingerprint:
        return NODE
    if config is not None and last.metadata.get(CONFIG_VERSION) != config:
        return CONFIG
    for dep in level.deps:
        upstream = history.latest.get(dep, {}).get(key)
        if upstream is not None and last.inputs.get(dep) != upstream.data_version:
            return UPSTREAM
    return None


def plan_partitions(
    levels: Sequence[Level],
    keys: Sequence[str],
    history: History,
    fingerprints: Mapping[str, str] | None = None,
    force: Iterable[str] = (),
    resources: Mapping[str, object] | None = None,
) -> list[PartitionPlan]:
    """For each partition, the first level (in build order) that needs building, and all
    after it. `fingerprints` (partition -> taxonomy node) apply to levels that record one;
    with `resources`, a level whose settings changed is stale too."""
    fingerprints = fingerprints or {}
    configs = {lv.name: config_version(lv, resources) for lv in levels} if resources is not None else {}
    forced = set(force)
    plans = []
    for key in keys:
        for i, level in enumerate(levels):
            if key in forced:
                reason = FORCED
            else:
                fp = fingerprints.get(key) if level.records_fingerprint else None
                reason = stale_reason(level, key, history, fp, configs.get(level.name))
            if reason:
                plans.append(PartitionPlan(key, tuple(lv.name for lv in levels[i:]), reason))
                break
    return plans


def input_versions(instance: dg.DagsterInstance, level: Level, key: str | None) -> dict[str, str | None]:
    """The current data version of each upstream partition the level reads (same key)."""
    versions = {}
    for dep in level.deps:
        result = instance.fetch_materializations(
            dg.AssetRecordsFilter(dg.AssetKey(dep), asset_partitions=[key] if key else None), limit=1
        )
        mat = result.records[0].asset_materialization if result.records else None
        versions[dep] = _text(mat.metadata.get(DATA_VERSION)) if mat else None
    return versions


def sources_version(
    instance: dg.DagsterInstance, sources: Mapping[str, dg.PartitionsDefinition], history: History | None = None
) -> str:
    """One version for the current data of every partition of the source levels (name ->
    partitions): it changes when any partition's data version changes, or a partition comes or goes."""
    state = []
    for name, partitions in sources.items():
        latest = history.latest[name] if history else latest_by_partition(instance, name)
        for key in sorted(partitions.get_partition_keys(dynamic_partitions_store=instance)):
            state.append([name, key, getattr(latest.get(key), "data_version", None)])
    return content_hash(state)[:16]


# Metadata the training assets record, so the plan can tell whether their inputs moved.
SOURCES_VERSION = "sources_version"  # training_set: `sources_version` of its source levels
TRAINING_DATA_VERSION = "training_data_version"  # model_checkpoint: the training set it used
RECIPE_VERSION = "recipe_version"  # model_checkpoint: content hash of its recipe
ADAPTER_VERSION = "adapter_version"  # model_eval: hash of the adapter files it scored
EVAL_VERSION = "eval_version"  # model_eval: hash of the benchmark files and evaluation settings


def training_set_reason(
    instance: dg.DagsterInstance,
    level: Level,
    sources: Sequence[Level],
    history: History,
    resources: Mapping[str, object],
) -> str | None:
    """Why the training set must be rebuilt: its own history and settings (benchmark files by
    content), or a source partition's data."""
    if reason := stale_reason(level, None, history, config=config_version(level, resources)):
        return reason
    last = history.latest[level.name][None]
    if last.metadata.get(SOURCES_VERSION) != sources_version(instance, {lv.name: lv.partitions_def for lv in sources}, history):
        return UPSTREAM
    return None


def checkpoint_reason(
    asset: str, code_version: str, recipe: str, recipe_version: str, training_level: Level, history: History
) -> str | None:
    """Why a recipe's checkpoint must be trained: new, failed, code, data or recipe changed."""
    last = history.latest[asset].get(recipe)
    if last is None:
        return FAILED if recipe in history.failed[asset] else NEW
    if recipe in history.failed[asset]:
        return FAILED
    if last.code_version != code_version:
        return CODE
    if last.metadata.get(RECIPE_VERSION) != recipe_version:
        return "recipe changed"
    training = history.latest[training_level.name].get(None)
    if training is None or last.metadata.get(TRAINING_DATA_VERSION) != training.data_version:
        return UPSTREAM
    return None


def eval_reason(asset: str, code_version: str, recipe: str, adapter: str | None, benchmarks: str,
                history: History) -> str | None:
    """Why a recipe's evaluation must run: new, failed, code changed, the checkpoint's adapter
    changed (`adapter`: its hash now), or the benchmarks or evaluation settings did (`benchmarks`)."""
    last = history.latest[asset].get(recipe)
    if last is None:
        return FAILED if recipe in history.failed[asset] else NEW
    if recipe in history.failed[asset]:
        return FAILED
    if last.code_version != code_version:
        return CODE
    if last.metadata.get(ADAPTER_VERSION) != adapter:
        return "checkpoint changed"
    if last.metadata.get(EVAL_VERSION) != benchmarks:
        return "benchmarks or evaluation settings changed"
    return None
