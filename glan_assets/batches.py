"""Batches in flight, in Dagster's terms: the `llm_batches` sensor, and what `glan build` says.

A level in batch mode ends its step once its misses are in a batch (`resources.batch`), so
the wait holds no run worker and no `llm` pool slot. This sensor polls the batches not yet
downloaded, shows each one's progress in the UI as an observation of its level's partition
(`batch_status`, `completed`, `failed`, `total`), downloads those that have ended into the
response cache, and asks for a run of the level and the levels below it in its partition:
that run finds its answers cached and materializes, or sends what failed in the next batch.
A batch cancelled by hand, or refused as a whole, is downloaded (its answered lines are kept)
but not followed by a run: `glan build` sends the rest when asked.
"""

from collections.abc import Sequence

import dagster as dg

from glan_assets.methods import Method
from resources import batch
from resources.batch import BatchRecord, in_flight

# A batch cancelled by hand, or refused as a whole, is downloaded but not followed by a run:
# `glan build` sends what it left unanswered when asked.
STOPPED = ("cancelled", "failed")
from resources.llm import LLMResource


def poll_batches(llm: LLMResource) -> list[BatchRecord]:
    """Retrieve the batches not yet downloaded and download those that have ended."""
    if not in_flight(llm.cache_path):
        return []
    llm = llm.process_config_and_initialize()  # the key, an EnvVar until then
    api = batch.client(llm.base_url, llm.api_key, llm.request_timeout_s, llm.max_retries)
    try:
        return batch.poll(api, llm.cache_path)
    finally:
        api.close()


def describe_batch(b: BatchRecord) -> str:
    where = f"{b.level}[{b.partition_key}]" if b.partition_key else b.level
    line = f"batch {b.batch_id} for {where}: {b.status}, {b.completed}/{b.requests} done, {b.failed} failed"
    return f"{line} ({b.error})" if b.error else line


def levels_from(methods: Sequence[Method], level: str) -> tuple[str, list[str]]:
    """The job of the level's method, and the level with the levels below it in the method."""
    for method in methods:
        names = [lv.name for lv in method.levels]
        if level in names:
            return method.job_name, names[names.index(level):]
    raise KeyError(f"no method builds level {level!r}")


def batch_sensor(methods: Sequence[Method], jobs: Sequence) -> dg.SensorDefinition:
    """The sensor, asking for runs of the methods' `jobs`."""
    @dg.sensor(
        name="llm_batches",
        jobs=jobs,
        minimum_interval_seconds=60,
        default_status=dg.DefaultSensorStatus.RUNNING,
        description="Polls the LLM batches in flight, shows their progress, downloads the finished ones "
        "into the response cache and builds their levels.",
    )
    def llm_batches(context: dg.SensorEvaluationContext, llm: LLMResource) -> dg.SensorResult:
        polled = poll_batches(llm)
        waiting = {(b.level, b.partition_key) for b in in_flight(llm.cache_path)}
        ended: dict[tuple[str, str | None], list[BatchRecord]] = {}
        for b in polled:
            context.log.info(describe_batch(b))
            if b.downloaded and b.status not in STOPPED:
                ended.setdefault((b.level, b.partition_key), []).append(b)
        requests = []
        # One run per level and partition, once none of its batches (a level may need several) is going.
        for (level, key), batches in ended.items():
            if (level, key) in waiting:
                continue
            job, levels = levels_from(methods, level)
            ids = sorted(b.batch_id for b in batches)
            requests.append(dg.RunRequest(
                run_key=f"batch-{'-'.join(ids)}", job_name=job, partition_key=key,
                asset_selection=[dg.AssetKey(name) for name in levels], tags={"glan/reason": f"batch {ids[0]} ended"},
            ))
        observations = [
            dg.AssetObservation(
                asset_key=b.level, partition=b.partition_key,
                metadata={"batch_id": b.batch_id, "batch_status": b.status, "completed": b.completed,
                          "failed": b.failed, "total": b.requests},
            )
            for b in polled
        ]
        return dg.SensorResult(run_requests=requests, asset_events=observations)

    return llm_batches
