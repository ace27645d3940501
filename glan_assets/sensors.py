"""One job and one sensor per method, keeping its partitions in step with its file and
building what the plan says is missing or stale: the decision `glan build` makes
(`glan_assets.plan`).

A new partition gets a run of exactly its levels; an edited entry or prompt gets a run from
its first stale level down. A partition that left the file keeps its rows unless the
method's prune setting is on (`GLAN_SENSOR_PRUNES=1` for GLAN): deleting data is a decision
for `glan build --prune`. Failed partitions are not retried here; `glan build` or the UI does.
"""

import dagster as dg

from glan_assets.ids import content_hash
from glan_assets.methods import Method
from glan_assets.plan import FAILED, History, PartitionPlan, plan_partitions


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
    @dg.sensor(
        name=name,
        jobs=[job],
        minimum_interval_seconds=15,
        default_status=dg.DefaultSensorStatus.RUNNING,
        required_resource_keys={"store", "llm", *method.resource_keys},
        description=f"Adds {method.noun} partitions when {method.name}'s file changes and builds what is missing or stale.",
    )
    def _sensor(context: dg.SensorEvaluationContext, **given: object) -> dg.SensorResult:
        # Called directly, a sensor is handed its resources; the daemon puts them on the context.
        res = {key: given.get(key) or getattr(context.resources, key) for key in {"store", "llm", *method.resource_keys}}
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
        return dg.SensorResult(
            run_requests=[
                dg.RunRequest(
                    # One run per state of the partition: a later tick that sees the same state
                    # (the run still queued or going) does not ask again.
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
