"""`glan build`: register the taxonomy's partitions, then materialize them in parallel runs.

Each discipline is one run in the Dagster instance (`DAGSTER_HOME`), so what the CLI
builds shows up in the UI exactly as a UI-launched run would, and so the build can report
each level as its run writes it there.
"""

import threading
import time
import uuid
from collections.abc import Callable, Iterator
from concurrent.futures import as_completed
from contextlib import ExitStack, contextmanager
from dataclasses import dataclass, field

import dagster as dg
from dagster._core.instance.ref import InstanceRef
from dagster._core.storage.tags import PARTITION_NAME_TAG

from glan_assets.checks import ALL_CHECKS
from glan_assets.definitions import GENERATION_ASSETS, TRAINING_ASSETS
from glan_assets.partitions import discipline_partitions, partition_changes
from glan_assets.workers import worker_pool
from resources.settings import GenerationSettings, resources_from_env
from resources.storage import DuckDBStore

# Progress lines say what the console log would (rejects included); the event log keeps it all.
QUIET = {"loggers": {"console": {"config": {"log_level": "ERROR"}}}}
BUILD_TAG = "glan/build"  # the same id on every run of one `build`


@dataclass
class LevelSummary:
    asset: str
    rows: int = 0
    rejects: int = 0
    llm_calls: int = 0
    cache_hits: int = 0


@dataclass
class LevelProgress:
    """One level of a discipline's run, as soon as it is materialized or has failed."""

    discipline: str
    level: LevelSummary
    seconds: float  # since the discipline's run was created
    failed: bool = False


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


def build_one(
    instance: dg.DagsterInstance, discipline: str, until: str = "answers", *, build_id: str
) -> DisciplineSummary:
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
        tags={"glan/launched_by": "glan build", BUILD_TAG: build_id},
    )
    levels = [level_of(event) for event in result.get_asset_materialization_events()]
    failed_checks = [
        f"{e.asset_key.to_user_string()}:{e.check_name}" for e in result.get_asset_check_evaluations() if not e.passed
    ]
    error = "" if result.success else failure_message(result)
    return DisciplineSummary(
        discipline, result.success, time.monotonic() - start, result.run_id, levels, failed_checks, error
    )


def level_of(event: dg.DagsterEvent) -> LevelSummary:
    """A level's counts from its materialization's metadata, or from its step failure's
    (what `store_partition` raises carries the rejects and calls)."""
    if event.is_step_failure:
        failure = event.step_failure_data.user_failure_data
        asset, metadata = event.step_key, failure.metadata if failure else {}
    else:
        mat = event.event_specific_data.materialization
        asset, metadata = mat.asset_key.to_user_string(), mat.metadata
    counts = ("rows", "rejects", "llm_calls", "cache_hits")
    return LevelSummary(asset, *(int(metadata[k].value) if k in metadata else 0 for k in counts))


def failure_message(result: dg.ExecuteInProcessResult) -> str:
    """Each failed step with its error's first line of explanation."""
    return "; ".join(
        f"{e.step_key}: {e.step_failure_data.error.message.strip() if e.step_failure_data.error else ''}"
        for e in result.all_events
        if e.is_step_failure
    )


class LevelWatch:
    """Reads the event log of one build's runs, handing each level to `on_progress` once."""

    def __init__(self, instance: dg.DagsterInstance, build_id: str, on_progress: Callable[[LevelProgress], None]):
        self.instance = instance
        self.runs = dg.RunsFilter(tags={BUILD_TAG: build_id})
        self.on_progress = on_progress
        self.cursors: dict[str, str] = {}
        self.read_to_end: set[str] = set()
        self.lock = threading.Lock()  # the watch thread and `build` both poll

    def poll(self) -> None:
        with self.lock:
            for record in self.instance.get_run_records(self.runs, ascending=True):
                run = record.dagster_run
                if run.run_id in self.read_to_end:
                    continue
                # Finished before this read, so all its steps' events are stored: the last read.
                if run.is_finished:
                    self.read_to_end.add(run.run_id)
                events = self.instance.get_records_for_run(
                    run.run_id,
                    self.cursors.get(run.run_id),
                    of_type={dg.DagsterEventType.ASSET_MATERIALIZATION, dg.DagsterEventType.STEP_FAILURE},
                )
                self.cursors[run.run_id] = events.cursor
                for event in (r.event_log_entry for r in events.records):
                    self.on_progress(
                        LevelProgress(
                            run.tags[PARTITION_NAME_TAG],
                            level_of(event.dagster_event),
                            event.timestamp - record.create_timestamp.timestamp(),
                            event.dagster_event.is_step_failure,
                        )
                    )


@contextmanager
def watching(
    instance: dg.DagsterInstance, build_id: str, on_progress: Callable[[LevelProgress], None], every_s: float = 1.0
) -> Iterator[LevelWatch]:
    """Poll the build's runs every `every_s` in a thread while the caller builds; the caller
    polls once more before reporting a run done, so its levels come first."""
    watch = LevelWatch(instance, build_id, on_progress)
    stop = threading.Event()

    def loop() -> None:
        while not stop.wait(every_s):
            watch.poll()

    thread = threading.Thread(target=loop, name="glan-build-progress", daemon=True)
    thread.start()
    try:
        yield watch
    finally:
        stop.set()
        thread.join()


def _build_in_worker(instance_ref: InstanceRef, discipline: str, until: str, build_id: str) -> DisciplineSummary:
    return build_one(dg.DagsterInstance.from_ref(instance_ref), discipline, until, build_id=build_id)


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
    on_progress: Callable[[LevelProgress], None] = lambda p: None,
) -> list[DisciplineSummary]:
    """Build the disciplines, `workers` runs at a time (one in-process when workers is 1),
    reporting each level as it lands and each discipline when its run is done."""
    build_id = uuid.uuid4().hex
    summaries = []
    with watching(instance, build_id, on_progress) as watch, ExitStack() as stack:
        if workers <= 1 or len(disciplines) <= 1:
            finished = (build_one(instance, key, until, build_id=build_id) for key in disciplines)
        else:
            pool = stack.enter_context(worker_pool(workers))
            futures = [pool.submit(_build_in_worker, instance.get_ref(), key, until, build_id) for key in disciplines]
            finished = (future.result() for future in as_completed(futures))
        for summary in finished:
            watch.poll()  # the run's last levels before its summary
            summaries.append(summary)
            on_done(summary)
    return summaries
