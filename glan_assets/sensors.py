"""One job and one sensor per method, keeping its partitions in step with its file and
building what the plan says is missing or stale: the decision `glan build` makes
(`glan_assets.plan`).

A new partition gets a run of exactly its levels; an edited entry or prompt gets a run from
its first stale level down, once: while a run of the partition is queued or going (the
sensor's, `glan build`'s or one launched in the UI) it is not asked for again, though the
run's first levels have landed and the plan now names the rest. A partition that left the
file keeps its rows unless the method's prune setting is on (`GLAN_SENSOR_PRUNES=1` for
GLAN): deleting data is a decision for `glan build --prune`. Failed partitions are not
retried here; `glan build` or the UI does.
"""

import dagster as dg

from glan_assets.ids import content_hash
from glan_assets.levels import resource_keys
from glan_assets.methods import Method
from glan_assets.plan import FAILED, History, PartitionPlan, plan_partitions
from resources.batch import in_flight

PARTITION_TAG = "dagster/partition"
# A run in any of these has not finished: its partition is being built.
IN_FLIGHT = [
    dg.DagsterRunStatus.QUEUED,
    dg.DagsterRunStatus.NOT_STARTED,
    dg.DagsterRunStatus.STARTING,
    dg.DagsterRunStatus.STARTED,
    dg.DagsterRunStatus.CANCELING,
]


def partition_changes(registered: list[str], wanted: list[str]) -> tuple[list[str], list[str]]:
    """(keys to add, in file order; keys to drop) to make `registered` match `wanted`."""
    have, want = set(registered), set(wanted)
    return [k for k in wanted if k not in have], [k for k in registered if k not in want]


def method_job(method: Method, name: str):
    return dg.define_asset_job(
        name,
        selection=dg.AssetSelection.assets(*(lv.name for lv in method.levels)),
        description=f"Builds one {method.noun} of {method.name}, from its first level to its last.",
    )


def method_sensor(method: Method, name: str, job) -> dg.SensorDefinition:
    # What `wanted` reads, and what its levels' versions read.
    keys = {"store", "llm", *method.resource_keys}.union(*(resource_keys(lv) for lv in method.levels))

    @dg.sensor(
        name=name,
        jobs=[job],
        minimum_interval_seconds=15,
        default_status=dg.DefaultSensorStatus.RUNNING,
        required_resource_keys=keys,
        description=f"Adds {method.noun} partitions when {method.name}'s file changes and builds what is missing or stale.",
    )
    def _sensor(context: dg.SensorEvaluationContext, **given: object) -> dg.SensorResult:
        # Called directly, a sensor is handed its resources; the daemon puts them on the context.
        res = {key: given.get(key) or getattr(context.resources, key) for key in keys}
        wanted = method.wanted(res)  # a bad file fails the tick with its file, line and entry
        registered = context.instance.get_dynamic_partitions(method.partitions.name)
        added, removed = partition_changes(registered, list(wanted))
        if removed and not method.prunes(res):
            context.log.info(f"not in {method.source_file(res)} any more, kept until `glan build --prune`: {', '.join(removed)}")
            removed = []
        for key in removed:
            deleted = res["store"].delete_partition(method.partition_column, key)
            context.log.info(f"{key}: removed; deleted rows {deleted}")
        history = History.read(context.instance, [lv.name for lv in method.levels])
        plans = plan_partitions(method.levels, list(wanted), history, wanted, resources=res)
        plans = [p for p in plans if p.reason != FAILED]
        levels = {lv.name for lv in method.levels}
        busy = busy_partitions(context.instance, job.name, levels)
        # A level waiting on its LLM batch is built by the `llm_batches` sensor when the batch ends.
        busy |= {b.partition_key for b in in_flight(res["llm"].cache_path) if b.level in levels}
        if waiting := [p.key for p in plans if p.key in busy]:
            context.log.info(f"a run of each is queued or going, not asked again: {', '.join(waiting)}")
        plans = [p for p in plans if p.key not in busy]
        return dg.SensorResult(
            run_requests=[
                dg.RunRequest(
                    # One key per state of the partition: a tick repeated before its run exists
                    # (the daemon evaluating again after a crash) asks again with the same
                    # key, and the daemon launches one run per key.
                    run_key=content_hash([p.key, p.levels, p.reason, wanted[p.key], _state(history, p)]),
                    partition_key=p.key,
                    job_name=job.name,
                    asset_selection=[dg.AssetKey(level) for level in p.levels],
                    tags={"glan/reason": p.reason},
                )
                for p in plans
            ],
            dynamic_partitions_requests=[
                *([method.partitions.build_add_request(added)] if added else []),
                *([method.partitions.build_delete_request(removed)] if removed else []),
            ],
        )

    return _sensor


def _state(history: History, plan: PartitionPlan) -> list:
    return [getattr(history.latest[name].get(plan.key), "storage_id", None) for name in plan.levels]


def busy_partitions(instance: dg.DagsterInstance, job_name: str, levels: set[str]) -> set[str]:
    """The partitions a run not yet finished builds: a run of the method's job, or another
    run that materializes one of its levels (`glan build`'s, an asset launched in the UI)."""
    busy: set[str] = set()
    for record in instance.get_run_records(dg.RunsFilter(statuses=IN_FLIGHT)):
        run = record.dagster_run
        key = run.tags.get(PARTITION_TAG)
        if key is not None and key not in busy and (run.job_name == job_name or planned(instance, run) & levels):
            busy.add(key)
    return busy


def planned(instance: dg.DagsterInstance, run: dg.DagsterRun) -> set[str]:
    """The assets a run materializes: its selection, or what it announced when it was created
    (a `dg.materialize` run, as `glan build` makes, records no selection)."""
    if run.asset_selection:
        return {key.to_user_string() for key in run.asset_selection}
    events = instance.get_records_for_run(run.run_id, of_type=dg.DagsterEventType.ASSET_MATERIALIZATION_PLANNED)
    return {record.event_log_entry.dagster_event.asset_key.to_user_string() for record in events.records}
