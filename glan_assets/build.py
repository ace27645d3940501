"""`glan build`: register the taxonomy's partitions, then materialize them in parallel runs.

Each discipline is one run in the Dagster instance (`DAGSTER_HOME`), so what the CLI
builds shows up in the UI exactly as a UI-launched run would.
"""

import time
from collections.abc import Callable
from concurrent.futures import ProcessPoolExecutor, as_completed
from dataclasses import dataclass, field

import dagster as dg
from dagster._core.instance.ref import InstanceRef

from glan_assets.checks import ALL_CHECKS
from glan_assets.definitions import GENERATION_ASSETS, TRAINING_ASSETS
from glan_assets.partitions import discipline_partitions, partition_changes
from resources.settings import GenerationSettings, resources_from_env
from resources.storage import DuckDBStore

QUIET = {"loggers": {"console": {"config": {"log_level": "WARNING"}}}}


@dataclass
class LevelSummary:
    asset: str
    rows: int = 0
    rejects: int = 0
    llm_calls: int = 0
    cache_hits: int = 0


@dataclass
class DisciplineSummary:
    discipline: str
    success: bool
    seconds: float
    run_id: str
    levels: list[LevelSummary] = field(default_factory=list)
    failed_checks: list[str] = field(default_factory=list)
    error: str = ""


def sync_partitions(
    instance: dg.DagsterInstance, settings: GenerationSettings, store: DuckDBStore
) -> tuple[list[str], list[str]]:
    """Make the discipline partitions match the taxonomy file; drop removed ones' rows."""
    taxonomy = settings.taxonomy()
    registered = instance.get_dynamic_partitions(discipline_partitions.name)
    added, removed = partition_changes(registered, list(taxonomy.disciplines))
    if added:
        instance.add_dynamic_partitions(discipline_partitions.name, added)
    for key in removed:
        store.delete_discipline(key)
        instance.delete_dynamic_partition(discipline_partitions.name, key)
    return added, removed


LEVELS = [a.key.to_user_string() for a in (*GENERATION_ASSETS, *TRAINING_ASSETS)]


def build_one(instance: dg.DagsterInstance, discipline: str, until: str = "answers") -> DisciplineSummary:
    """Materialize one discipline's partitions, from its taxonomy node to `until`, in one run."""
    start = time.monotonic()
    assets = GENERATION_ASSETS[: min(LEVELS.index(until), len(GENERATION_ASSETS) - 1) + 1]
    checked = {a.key for a in assets}
    result = dg.materialize(
        [*assets, *(c for c in ALL_CHECKS if {k.asset_key for k in c.check_keys} <= checked)],
        partition_key=discipline,
        instance=instance,
        resources=resources_from_env(),
        run_config=QUIET,
        raise_on_error=False,
        tags={"glan/launched_by": "glan build"},
    )
    levels = []
    for event in result.get_asset_materialization_events():
        mat = event.event_specific_data.materialization
        md = {k: v.value for k, v in mat.metadata.items()}
        levels.append(
            LevelSummary(mat.asset_key.to_user_string(), *(int(md.get(k, 0)) for k in ("rows", "rejects", "llm_calls", "cache_hits")))
        )
    failed_checks = [
        f"{e.asset_key.to_user_string()}:{e.check_name}" for e in result.get_asset_check_evaluations() if not e.passed
    ]
    error = "" if result.success else failure_message(result)
    return DisciplineSummary(
        discipline, result.success, time.monotonic() - start, result.run_id, levels, failed_checks, error
    )


def failure_message(result: dg.ExecuteInProcessResult) -> str:
    """Each failed step with its error's first line of explanation."""
    return "; ".join(
        f"{e.step_key}: {e.step_failure_data.error.message.strip() if e.step_failure_data.error else ''}"
        for e in result.all_events
        if e.is_step_failure
    )


def _build_in_worker(instance_ref: InstanceRef, discipline: str, until: str) -> DisciplineSummary:
    return build_one(dg.DagsterInstance.from_ref(instance_ref), discipline, until)


def train(instance: dg.DagsterInstance, recipe: str, until: str = "model_checkpoint") -> list[dg.ExecuteInProcessResult]:
    """The training set from every discipline's answers, then the recipe's checkpoint."""
    results = []
    for asset in TRAINING_ASSETS[: LEVELS.index(until) - len(GENERATION_ASSETS) + 1]:
        partitioned = asset.partitions_def is not None
        results.append(
            dg.materialize(
                [asset],
                partition_key=recipe if partitioned else None,
                instance=instance,
                resources=resources_from_env(),
                run_config=QUIET,
                raise_on_error=False,
                tags={"glan/launched_by": "glan build"},
            )
        )
        if not results[-1].success:
            break
    return results


def build(
    instance: dg.DagsterInstance,
    disciplines: list[str],
    workers: int = 4,
    on_done: Callable[[DisciplineSummary], None] = lambda s: None,
    until: str = "answers",
) -> list[DisciplineSummary]:
    """Build the disciplines, `workers` runs at a time (one in-process when workers is 1)."""
    if workers <= 1 or len(disciplines) <= 1:
        summaries = []
        for key in disciplines:
            summaries.append(build_one(instance, key, until))
            on_done(summaries[-1])
        return summaries
    summaries = []
    with ProcessPoolExecutor(max_workers=workers) as pool:
        futures = [pool.submit(_build_in_worker, instance.get_ref(), key, until) for key in disciplines]
        for future in as_completed(futures):
            summaries.append(future.result())
            on_done(summaries[-1])
    return summaries
