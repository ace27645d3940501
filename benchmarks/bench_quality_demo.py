"""The quality levels in a demo build: per quality partition, its rows, judge calls and step time,
read from the Dagster instance (DAGSTER_HOME) after `glan build --until training_set`; prints JSON
(benchmarks/results/quality_demo.json)."""

import json

import dagster as dg
from glan_assets.plan import latest_by_partition

instance = dg.DagsterInstance.get()
out = {"partitions": [], "totals": {}}
for asset in ("glan_quality", "uit_quality", "dynosaur_quality"):
    for key, latest in latest_by_partition(instance, asset).items():
        m = latest.metadata
        out["partitions"].append({"asset": asset, "partition": key, **{k: m.get(k) for k in (
            "rows", "judged", "llm_calls", "cache_hits", "rejects", "flagged", "scoring_seconds", "ifd_median", "judge_mean")}})
durations = {}
for record in instance.get_run_records():
    starts = {}
    for e in instance.all_logs(record.dagster_run.run_id):
        ev = e.dagster_event
        if ev is None or not (e.step_key or "").endswith("_quality"):
            continue
        if ev.event_type_value == "STEP_START":
            starts[e.step_key] = e.timestamp
        elif ev.event_type_value in ("STEP_SUCCESS", "STEP_FAILURE") and e.step_key in starts:
            durations[f"{e.step_key}[{record.dagster_run.tags.get('dagster/partition')}]"] = round(e.timestamp - starts[e.step_key], 1)
out["step_seconds"] = durations
out["totals"] = {"judge_calls": sum(int(p["llm_calls"] or 0) for p in out["partitions"]),
                 "pairs_scored": sum(int(p["rows"] or 0) for p in out["partitions"]),
                 "judged": sum(int(p["judged"] or 0) for p in out["partitions"]),
                 "quality_step_seconds_sum": round(sum(durations.values()), 1)}
print(json.dumps(out, indent=1))
