"""`glan build`: register the taxonomy's partitions, plan what is missing or stale, and
materialize exactly that, in parallel runs.

Each partition that needs work is one run in the Dagster instance (`DAGSTER_HOME`), of the
levels the plan names, so what the CLI builds shows up in the UI as a UI-launched run
would, and the build reports each level as its run writes it there. The plan is the same
one the taxonomy sensor follows (`glan_assets.plan`).
"""

import threading
import time
import uuid
from collections import Counter
from collections.abc import Callable, Iterator, Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor, as_completed
from concurrent.futures.process import BrokenProcessPool
from contextlib import ExitStack, contextmanager
from dataclasses import dataclass, field
from pathlib import Path

import dagster as dg

from glan_assets.checks import all_checks
from glan_assets.dagster_internal import failure_text
from glan_assets.methods import Method
from glan_assets.orphans import process_tags
from glan_assets.plan import (
    ESTIMATE_TAG,
    FORCED,
    History,
    PartitionPlan,
    checkpoint_reason,
    eval_reason,
    plan_partitions,
    with_input_versions,
    training_set_reason,
)
from glan_assets.composition import Composition
from glan_assets.registry import COMPOSED, METHODS, settings_from_env
from glan_assets.sensors import partition_changes
from glan_assets.settings import Settings, set_process_environment
from glan_assets.training.model_eval import adapter_version, eval_version
from glan_assets.training.partitions import recipe_partitions
from glan_assets.workers import shared_int, shared_semaphore, worker_pool
from resources import inflight
from resources.batch import BatchRecord, in_flight
from resources.budget import BUILD_TAG  # the same id on every run of one `build`
from resources.storage import DuckDBStore

PARTITION_TAG = "glan/partition"
# The terminal shows the progress lines; Dagster's own log goes to the build's log file.
QUIET = {"loggers": {"console": {"config": {"log_level": "CRITICAL"}}}}
VERBOSE = {"loggers": {"console": {"config": {"log_level": "INFO"}}}}

GENERATION = [lv.name for m in METHODS for lv in m.levels]
TRAINING = COMPOSED.training.names
BUILD_ORDER = GENERATION + TRAINING  # what `--until` can name
# Runs at once: every partition of the demo, as many as dagster_home/dagster.yaml's pools allow.
WORKERS = 8


@dataclass
class LevelSummary:
    asset: str
    rows: int = 0
    rejects: int = 0
    llm_calls: int = 0
    cache_hits: int = 0
    retries: int = 0
    failed: bool = False


@dataclass
class LevelProgress:
    """One level of a partition's run, as soon as it is materialized or has failed."""

    partition: str
    level: LevelSummary
    seconds: float  # since the partition's run was created


@dataclass(frozen=True)
class CheckFailure:
    check: str  # asset:check
    error: bool  # False: a warning, worth reading and not failing the build
    advice: str  # what it found and what to do


@dataclass
class PartitionSummary:
    partition: str
    success: bool
    seconds: float
    run_id: str
    levels: list[LevelSummary] = field(default_factory=list)
    failed_checks: list["CheckFailure"] = field(default_factory=list)
    error: str = ""
    # The LLM batches its levels' requests are in (batch mode): those levels, and the ones below, wait for them.
    batches: list[BatchRecord] = field(default_factory=list)

    @property
    def failed_level(self) -> LevelSummary | None:
        return next((lv for lv in self.levels if lv.failed), None)


@dataclass
class TrainingStep:
    asset: str
    partition: str | None
    reason: str


@dataclass
class MethodPlan:
    method: Method
    partitions: list[PartitionPlan]
    up_to_date: int  # partitions with nothing to build
    added: list[str]
    removed: list[str]  # left out of the method's file; pruned only with `prune`


@dataclass
class BuildPlan:
    methods: list[MethodPlan]
    pruned: bool
    training: list[TrainingStep]

    @property
    def partitions(self) -> list[PartitionPlan]:
        return [p for m in self.methods for p in m.partitions]


def sync_partitions(
    instance: dg.DagsterInstance, method: Method, wanted: Sequence[str], store: DuckDBStore, prune: bool = False
) -> tuple[list[str], list[str]]:
    """Register the method's new partitions; with `prune`, drop removed ones and their rows.
    Returns (added, removed)."""
    registered = instance.get_dynamic_partitions(method.partitions.name)
    added, removed = partition_changes(registered, list(wanted))
    if added:
        instance.add_dynamic_partitions(method.partitions.name, added)
    if prune:
        for key in removed:
            store.delete_partition(method.partition_column, key)
            instance.delete_dynamic_partition(method.partitions.name, key)
    return added, removed


def sync_recipes(instance: dg.DagsterInstance, recipes: Sequence[str]) -> None:
    have = set(instance.get_dynamic_partitions(recipe_partitions.name))
    if missing := [r for r in recipes if r not in have]:
        instance.add_dynamic_partitions(recipe_partitions.name, missing)


def plan_build(
    instance: dg.DagsterInstance,
    resources: dict,
    *,
    only: dict[str, Sequence[str]] | None = None,
    force: bool = False,
    prune: bool = False,
    until: str = BUILD_ORDER[-1],
    recipe: tuple[str, object] | None = None,
    wanted: dict[str, dict[str, str]] | None = None,
    composition: Composition = COMPOSED,
) -> BuildPlan:
    """Register partitions, then decide what to build: per partition of each method, the
    first missing or stale level and everything below it (up to `until`), then the training
    assets whose inputs moved. `only` maps a method's partition noun ("discipline") to the
    keys to consider; `force` rebuilds those (all when none are named). `wanted` (method
    name -> its file's partitions) spares reading the files again when the caller has.
    `composition`: the methods to plan, the root's unless a test composes its own."""
    only, wanted = only or {}, wanted or {}
    training = composition.training.names
    history = History.read(instance, [lv.name for m in composition.methods for lv in m.levels] + training)
    methods = []
    for method in composition.methods:
        entries = wanted[method.name] if method.name in wanted else method.wanted(resources)
        added, removed = sync_partitions(instance, method, list(entries), resources["store"], prune)
        if any(only.values()) and not only.get(method.noun):
            continue  # another method's partitions were named
        keys = list(only.get(method.noun) or entries)
        names = [lv.name for lv in method.levels]
        levels = list(method.levels) if until not in names else list(method.levels[: names.index(until) + 1])
        if until not in training and until not in names:
            continue  # `until` names another method's level
        plans = plan_partitions(levels, keys, history, entries, force=keys if force else (), resources=resources)
        methods.append(MethodPlan(method, plans, len(keys) - len(plans), added, removed))
    changed = any(m.partitions or (m.removed and prune) for m in methods)
    steps = training_steps(instance, resources, history, until, recipe, generating=changed, composition=composition)
    return BuildPlan(methods, prune, steps)


def training_steps(
    instance: dg.DagsterInstance,
    resources: Mapping[str, object],
    history: History,
    until: str,
    recipe: tuple[str, object] | None,
    generating: bool,
    composition: Composition = COMPOSED,
) -> list[TrainingStep]:
    """The training assets to build. While generation runs are planned, the training set
    is decided again after them (its sources may not change); this says so."""
    names = composition.training.names
    if until not in names:
        return []
    steps = []
    training_level = composition.training.level
    sources = [composition.level(name) for name in training_level.deps]
    reason = training_set_reason(instance, training_level, sources, history, resources)
    if reason or generating:
        steps.append(TrainingStep(training_level.name, None, reason or "if the generated data changes"))
    if until in names[1:] and recipe is not None:
        name, spec = recipe
        sync_recipes(instance, [name])
        asset = composition.training.checkpoint
        code = asset.code_versions_by_key[asset.key]
        reason = checkpoint_reason(asset.key.to_user_string(), code, name, spec.version, training_level, history)
        if reason or steps:
            steps.append(TrainingStep(asset.key.to_user_string(), name, reason or "if the training set changes"))
        if until == names[-1]:
            evaluation = composition.training.evaluation
            reason = eval_reason(
                evaluation.key.to_user_string(), evaluation.code_versions_by_key[evaluation.key], name,
                adapter_version(resources["training"].checkpoint_dir(name)),
                eval_version(resources["evaluation"]), history,
            )
            if reason or steps:
                steps.append(TrainingStep(evaluation.key.to_user_string(), name, reason or "if the checkpoint changes"))
    return steps


def _assets_and_checks(resources: Mapping[str, object], composition: Composition) -> list:
    assets = with_input_versions(composition.generation_assets(), composition.levels, resources)
    return [*assets, *all_checks([lv for method in composition.methods for lv in method.levels])]


def run_partition(
    instance: dg.DagsterInstance, plan: PartitionPlan, *, build_id: str, verbose: bool = False,
    composition: Composition = COMPOSED,
) -> PartitionSummary:
    """Materialize the plan's levels of one partition, with their checks, in one run."""
    start = time.monotonic()
    resources = Settings.from_env(None, composition).resources()
    result = dg.materialize(
        _assets_and_checks(resources, composition),
        selection=dg.AssetSelection.assets(*plan.levels),
        partition_key=plan.key,
        instance=instance,
        resources=resources,
        run_config=VERBOSE if verbose else QUIET,
        raise_on_error=False,
        tags={
            "glan/launched_by": "glan build",
            **process_tags(),  # lets a later build, or the sensor, tell a killed build's runs
            BUILD_TAG: build_id,
            PARTITION_TAG: plan.key,
            "glan/reason": plan.reason,
            **({ESTIMATE_TAG: plan.estimate} if plan.estimate else {}),
        },
    )
    levels = [level_of(event) for event in result.all_events if _is_level_event(event)]
    failed_checks = [
        CheckFailure(f"{e.asset_key.to_user_string()}:{e.check_name}", e.severity == dg.AssetCheckSeverity.ERROR,
                     e.description or "")
        for e in result.get_asset_check_evaluations()
        if not e.passed
    ]
    error = "" if result.success else failure_message(result)
    batches = [b for b in in_flight(resources["llm"].cache_path) if b.partition_key == plan.key and b.level in plan.levels]
    return PartitionSummary(plan.key, result.success, time.monotonic() - start, result.run_id, levels, failed_checks,
                            error, batches)


def _is_level_event(event: dg.DagsterEvent) -> bool:
    return event.event_type == dg.DagsterEventType.ASSET_MATERIALIZATION or (
        event.is_step_failure and not event.step_key.endswith("_checks")
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
    counts = ("rows", "rejects", "llm_calls", "cache_hits", "retries")
    return LevelSummary(asset, *(int(metadata[k].value) if k in metadata else 0 for k in counts), event.is_step_failure)


def failure_message(result: dg.ExecuteInProcessResult) -> str:
    """The first failed step with the first line of its error (later steps were skipped)."""
    for e in result.all_events:
        if e.is_step_failure:
            error = e.step_failure_data.error
            while error is not None and error.cause is not None:  # Dagster wraps the user's error
                error = error.cause
            message = (error.message.strip().splitlines() or [""])[0] if error else ""
            return f"{e.step_key}: {failure_text(message)}"
    return "the run failed before any step ran"


class LevelWatch:
    """Reads the event log of one build's runs, handing each level to `on_progress` once."""

    def __init__(self, instance: dg.DagsterInstance, build_id: str,
                 on_progress: Callable[[LevelProgress], None] | None):
        self.instance = instance
        self.runs = dg.RunsFilter(tags={BUILD_TAG: build_id})
        self.on_progress = on_progress
        self.cursors: dict[str, str] = {}
        self.read_to_end: set[str] = set()
        self.lock = threading.Lock()  # the watch thread and `build` both poll

    def poll(self) -> None:
        if self.on_progress is None:
            return
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
                    if _is_level_event(event.dagster_event):
                        self.on_progress(
                            LevelProgress(
                                run.tags.get(PARTITION_TAG, ""),
                                level_of(event.dagster_event),
                                event.timestamp - record.create_timestamp.timestamp(),
                            )
                        )


@contextmanager
def watching(
    instance: dg.DagsterInstance, build_id: str, on_progress: Callable[[LevelProgress], None] | None,
    every_s: float = 0.5,
) -> Iterator[LevelWatch]:
    """Poll the build's runs every `every_s` in a thread while the caller builds; the caller
    polls once more before reporting a run done, so its levels come first.

    No thread when nobody listens, nor on an ephemeral instance: its in-memory SQLite shares
    one cache between connections, where a write during another thread's read fails ("database
    table is locked") instead of waiting. There, levels are reported as each run ends."""
    watch = LevelWatch(instance, build_id, on_progress)
    if on_progress is None or instance.is_ephemeral:
        yield watch
        return
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


# In a run's worker process: the instance, opened before the run's turn comes.
_worker_instance: dg.DagsterInstance | None = None


def _open_instance(instance_ref: object, env: dict) -> None:
    global _worker_instance
    # A fork server's worker has the environment the server started with, not the caller's now;
    # Dagster (the API key's EnvVar) and the libraries a run loads read this process's own.
    set_process_environment(settings_from_env(env))
    _worker_instance = dg.DagsterInstance.from_ref(instance_ref)


def _run_in_worker(plan: PartitionPlan, build_id: str, verbose: bool) -> PartitionSummary:
    return run_partition(_worker_instance, plan, build_id=build_id, verbose=verbose)


class RunSlots:
    """A parallel build's `workers` slots for runs building their levels. A run takes one to
    start and gives it back once only its last level is left (or, with one level, once it
    has landed) or when it ends. The last level only waits for the endpoint, whose requests
    the build's semaphore bounds, or is a step with no LLM; the next partition's narrow
    first levels go on beside it, and its checks after it, where the endpoint would
    otherwise idle while the last partitions start."""

    def __init__(self, workers: int, plans: Sequence[PartitionPlan]):
        self._free = threading.BoundedSemaphore(workers)
        self._left = Counter()  # levels to land before the slot is given back, by partition
        for plan in plans:
            self._left[plan.key] += max(len(plan.levels) - 1, 1)
        self._held = Counter()
        self._lock = threading.Lock()

    @contextmanager
    def slot(self, partition: str) -> Iterator[None]:
        self._free.acquire()
        with self._lock:
            self._held[partition] += 1
        try:
            yield
        finally:
            self._give_back(partition)

    def landed(self, progress: LevelProgress) -> None:
        with self._lock:
            self._left[progress.partition] -= 1
            last = self._left[progress.partition] == 0
        if last:
            self._give_back(progress.partition)

    def _give_back(self, partition: str) -> None:
        with self._lock:
            if self._held[partition] <= 0:
                return  # given back when its last level landed
            self._held[partition] -= 1
        self._free.release()


def _run_in_own_process(
    instance: dg.DagsterInstance, plan: PartitionPlan, build_id: str, verbose: bool, env: Mapping[str, str],
    semaphore: object, slots: RunSlots,
) -> PartitionSummary:
    """One run in a process of its own, so a run whose process is killed fails alone. The
    process starts and opens the instance first, then waits for one of the build's run
    `slots`; its steps take their requests in flight from the build's `semaphore`."""
    start = time.monotonic()
    shared = inflight.Shared(semaphore, shared_int())
    # Imported once in the fork server, not in each of a build's workers at once: DuckDB imports
    # pandas at a process's first query with parameters (to check their types), and opening the
    # instance imports its storage's modules (SQLAlchemy and Alembic for SQLite: 1.4 s).
    storage = [type(s).__module__ for s in (instance.run_storage, instance.event_log_storage, instance.schedule_storage)]
    with worker_pool(1, preload=[__name__, "pandas", *storage], setup=inflight.install,
                     setup_args=(semaphore, shared.held)) as pool:
        try:
            pool.submit(_open_instance, instance.get_ref(), dict(env)).result()
            with slots.slot(plan.key):
                return pool.submit(_run_in_worker, plan, build_id, verbose).result()
        except BrokenProcessPool:
            shared.give_back_held()  # the other runs go on with the whole total
            return PartitionSummary(plan.key, False, time.monotonic() - start, "",
                                    error="the run's process died (killed?); `glan build` again resumes it")


def build(
    instance: dg.DagsterInstance,
    plans: Sequence[PartitionPlan],
    workers: int = WORKERS,
    on_done: Callable[[PartitionSummary], None] = lambda s: None,
    on_progress: Callable[[LevelProgress], None] | None = None,
    build_id: str | None = None,
    verbose: bool = False,
    composition: Composition = COMPOSED,
) -> list[PartitionSummary]:
    """Run the plans, `workers` runs at a time building their levels and as many more on
    their last (in-process when workers is 1), reporting each level as it lands and each
    partition when its run is done. A worker process imports the root's composition;
    another runs in-process only."""
    if composition is not COMPOSED and workers > 1 and len(plans) > 1:
        raise ValueError("a composition other than the root's builds in-process: workers=1")
    build_id = build_id or uuid.uuid4().hex
    summaries = []
    parallel = workers > 1 and len(plans) > 1
    slots = RunSlots(workers, plans) if parallel else None

    def landed(progress: LevelProgress) -> None:
        slots.landed(progress)
        if on_progress is not None:
            on_progress(progress)

    with (
        watching(instance, build_id, landed if parallel else on_progress) as watch,
        ExitStack() as stack,
    ):
        if not parallel:
            finished = (run_partition(instance, p, build_id=build_id, verbose=verbose, composition=composition)
                        for p in plans)
        else:
            # Up to `workers` runs before their last level and as many on it, each in a process
            # that starts ahead, while the runs go on, and waits for a slot (a process starting
            # on a busy machine took 2-5 s).
            pool = stack.enter_context(ThreadPoolExecutor(2 * workers))
            settings = settings_from_env()
            env = settings.process_environment()  # once, for every worker
            # The runs' steps take their requests in flight from GLAN_MAX_CONCURRENCY × workers
            # together, so a run between levels leaves its share to the others.
            semaphore = shared_semaphore(settings.llm().max_concurrency * workers)
            futures = [pool.submit(_run_in_own_process, instance, p, build_id, verbose, env, semaphore, slots)
                       for p in plans]
            finished = (future.result() for future in as_completed(futures))
        for summary in finished:
            watch.poll()  # the run's last levels before its summary
            summaries.append(summary)
            on_done(summary)
    return summaries


def train(
    instance: dg.DagsterInstance,
    steps: Sequence[TrainingStep],
    recipe: tuple[str, object] | None,
    *,
    build_id: str,
    verbose: bool = False,
    composition: Composition = COMPOSED,
) -> list[tuple[TrainingStep, dg.ExecuteInProcessResult | None]]:
    """Run the planned training steps whose inputs really changed, re-deciding each after
    the generation runs; a step that is up to date by then comes back with no result."""
    done: list[tuple[TrainingStep, dg.ExecuteInProcessResult | None]] = []
    resources = Settings.from_env(None, composition).resources()
    training = composition.training
    assets = with_input_versions(training.assets, [training.level], resources)
    for step in steps:
        history = History.read(instance, [lv.name for m in composition.methods for lv in m.levels] + training.names)
        fresh = training_steps(instance, resources, history, step.asset, recipe, generating=False,
                               composition=composition)
        current = next((s for s in fresh if s.asset == step.asset), None)
        if current is None and step.reason != FORCED:
            done.append((TrainingStep(step.asset, step.partition, "up to date"), None))
            continue
        result = dg.materialize(
            assets,
            selection=[step.asset],
            partition_key=step.partition,
            instance=instance,
            resources=resources,
            run_config=VERBOSE if verbose else QUIET,
            raise_on_error=False,
            tags={"glan/launched_by": "glan build", **process_tags(), BUILD_TAG: build_id,
                  "glan/reason": current.reason if current else step.reason},
        )
        done.append((current or step, result))
        if not result.success:
            break
    return done


def write_log(instance: dg.DagsterInstance, build_id: str, path: Path) -> Path:
    """Dagster's log of every run of the build, in one file, for when something failed."""
    path.parent.mkdir(parents=True, exist_ok=True)
    with path.open("w") as out:
        for record in instance.get_run_records(dg.RunsFilter(tags={BUILD_TAG: build_id}), ascending=True):
            out.write(f"=== run {record.dagster_run.run_id} {dict(record.dagster_run.tags)}\n")
            for entry in instance.all_logs(record.dagster_run.run_id):
                stamp = time.strftime("%H:%M:%S", time.localtime(entry.timestamp))
                message = entry.dagster_event.message if entry.dagster_event and entry.dagster_event.message else entry.user_message
                out.write(f"{stamp} {entry.level if isinstance(entry.level, str) else entry.level} {entry.step_key or ''} {message}\n")
                if entry.dagster_event and entry.dagster_event.is_step_failure and entry.dagster_event.step_failure_data.error:
                    out.write(entry.dagster_event.step_failure_data.error.to_string() + "\n")
    return path
