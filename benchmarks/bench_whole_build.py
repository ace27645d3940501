"""Does a whole `glan build` keep an endpoint full? A scaled paper profile (GLAN only:
`--until answers` builds no other method's partitions) over 10 disciplines, through the
real CLI with a real Dagster instance (the committed `dagster_home/dagster.yaml`: its pools)
and DuckDB file, against `latency_server.py --fake`: every completion answers after L with
the reply `tests/fake_llm.py` gives its prompt, so every level's rows are valid.

C requests in flight at latency L reach at most C/L requests/s. The build puts
`--workers` runs at once, each level's step holding up to `GLAN_MAX_CONCURRENCY`
requests; this sets `GLAN_MAX_CONCURRENCY = C / workers`, so the build's total is C.

The fan-out: 10 subject queries as the paper (two calls each: the subjects, then their JSON),
3 subjects (all the stub's replies name), one syllabus call and one session-extraction call
per subject, and `GLAN_QUESTIONS_PER_SYLLABUS` = Q questions and Q answers per syllabus, Q
chosen so that the build makes about CALLS calls (20 + 6 + 6 Q per discipline; at 20,000
calls Q = 329, and questions and answers are 99% of the calls, as at the paper's scale).

Before the build, in the same run, a plain aiohttp client drives the same server at C with
3,000 requests: the endpoint's own ceiling on this machine.

What it reports, from the server's timeline (each completion's start and end, wall clock):
- the LLM-bound window, first request's start to last request's end, its requests/s, and
  their ratio to C/L;
- the share of the window with fewer than C/2 requests in flight ("low" time);
- where the low time comes from, from the Dagster event log. Every 5 ms of low time, each of
  the `--workers` run slots is in one state: *start-up* (no run yet while a partition waits
  for one: the worker process starting; or a run created whose first step has not started),
  *in an LLM step* (by level), *between levels* (in a run, no LLM step running: the level's
  checks, a non-LLM step, the commit before the next level can start), or *no partition
  left* (every partition started: the slot idles while the last runs finish). The report
  gives the mean number of slots in each state over the low time; they sum to `--workers`,
  or more while a run on its last level, or checking its levels, has given its slot to the next run. Slots in an LLM step during low time are steps with fewer
  requests than their cap: a narrow level (`subjects`: 20 calls a partition) or a level's
  last requests draining. Level dependencies are the narrow steps and the time between
  levels; pool slots would show as steps blocked by the `llm` pool (counted from the
  engine's events, separately); run start-up is the start-up state;
- the share of the machine's CPU (all cores, /proc/stat) busy over the window: near 1, the
  low time is a machine with no CPU to spare, not the schedule.

Run by hand (minutes on 2 cores):

    .venv/bin/python benchmarks/bench_whole_build.py [--calls 20000] [--concurrency 256] [--latency 0.2] [--workers 8]

Prints a summary and writes benchmarks/results/whole_build.json (the runs of one call of
this script: earlier results are in `git log -p` of that file).
"""

import argparse
import asyncio
import bisect
import json
import os
import shutil
import socket
import subprocess
import sys
import tempfile
import threading
import time
import urllib.request
from pathlib import Path

import dagster as dg

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "benchmarks"))
from bench_orchestration import aiohttp_client, free_port  # noqa: E402
from glan_assets.glan import method as glan  # noqa: E402
from glan_assets.build import PARTITION_TAG  # noqa: E402

RESULTS = Path(__file__).resolve().parent / "results" / "whole_build.json"
DISCIPLINES = 10
# tests/fake_llm.py's subject lists name 3 subjects a discipline (the same 3 for every
# query), so the cap is 3, not the paper's ~150: the fan-out is in the questions per syllabus.
SUBJECTS = 3
QUERIES = 10  # the paper profile's subject queries
LLM_LEVELS = [lv.name for lv in glan.METHOD.levels if lv.stages]
STEP_S = 0.005  # the attribution's sampling step


def timeline(base_url: str) -> list[tuple[float, float]]:
    with urllib.request.urlopen(f"{base_url}/timeline") as resp:
        return [tuple(x) for x in json.load(resp)]


def taxonomy(names: list[str]) -> str:
    lines = ["fields:", "  - name: Sciences", "    sub_fields:", "      - name: All", "        disciplines:"]
    return "\n".join(lines + [f"          - name: {n}" for n in names]) + "\n"


def in_flight_counter(spans: list[tuple[float, float]]):
    starts = sorted(s for s, _ in spans)
    ends = sorted(e for _, e in spans)
    return lambda t: bisect.bisect_right(starts, t) - bisect.bisect_right(ends, t)


def run_timelines(home: Path) -> list[dict]:
    """Per run of the build: partition, created, first step start, end, and its steps' spans."""
    instance = dg.DagsterInstance.from_config(str(home))
    runs = []
    kinds = {dg.DagsterEventType.STEP_START, dg.DagsterEventType.STEP_SUCCESS, dg.DagsterEventType.STEP_FAILURE,
             dg.DagsterEventType.ENGINE_EVENT}
    for record in instance.get_run_records(dg.RunsFilter(tags={"glan/launched_by": "glan build"})):
        run = record.dagster_run
        steps: dict[str, list[float]] = {}
        pool_blocked = 0
        for r in instance.get_records_for_run(run.run_id, of_type=kinds, limit=100_000).records:
            entry = r.event_log_entry
            event = entry.dagster_event
            if event.event_type == dg.DagsterEventType.ENGINE_EVENT:
                pool_blocked += "concurrency" in (event.message or "").lower() and "block" in (event.message or "").lower()
                continue
            steps.setdefault(event.step_key, []).append(entry.timestamp)
        spans = {k: (min(v), max(v)) for k, v in steps.items()}
        runs.append({
            "partition": run.tags.get(PARTITION_TAG, ""),
            "status": run.status.value,
            "created": record.create_timestamp.timestamp(),
            "first_step": min((s for s, _ in spans.values()), default=None),
            "end": record.end_time,
            "steps": spans,
            "pool_blocked_events": pool_blocked,
        })
    return sorted(runs, key=lambda r: r["created"])


def attribute(spans, runs, workers: int, partitions: int, concurrency: int) -> dict:
    """Mean run slots in each state over the low time (fewer than C/2 in flight); see the docstring."""
    inflight = in_flight_counter(spans)
    lo, hi = min(s for s, _ in spans), max(e for _, e in spans)
    states = ["start-up", *(f"in {lv}" for lv in LLM_LEVELS), "between levels", "no partition left"]
    low_slots = dict.fromkeys(states, 0.0)
    low_steps = total_steps = 0
    queued_low = 0.0
    t = lo
    while t < hi:
        total_steps += 1
        if inflight(t) < concurrency / 2:
            low_steps += 1
            created = [r for r in runs if r["created"] <= t]
            live = [r for r in created if r["end"] is None or t < r["end"]]
            waiting = partitions - len(created)  # partitions with no run yet
            idle = max(0, workers - len(live))
            launching = min(idle, waiting)
            low_slots["start-up"] += launching
            low_slots["no partition left"] += idle - launching
            queued_low += waiting - launching
            for r in live:
                if r["first_step"] is None or t < r["first_step"]:
                    low_slots["start-up"] += 1
                    continue
                level = next((lv for lv in LLM_LEVELS if lv in r["steps"]
                              and r["steps"][lv][0] <= t < r["steps"][lv][1]), None)
                low_slots[f"in {level}" if level else "between levels"] += 1
        t += STEP_S
    n = max(low_steps, 1)
    return {
        "low_share": round(low_steps / total_steps, 3),
        "low_seconds": round(low_steps * STEP_S, 2),
        "mean_slots_in_low_time": {k: round(v / n, 2) for k, v in low_slots.items()},
        "mean_partitions_queued_for_a_worker_in_low_time": round(queued_low / n, 2),
    }


def level_windows(runs) -> dict:
    """Per LLM level: the first start and last end of its steps over the partitions, from the window's start."""
    out = {}
    for lv in LLM_LEVELS:
        got = [r["steps"][lv] for r in runs if lv in r["steps"]]
        if got:
            out[lv] = (min(s for s, _ in got), max(e for _, e in got))
    return out


class CpuSampler:
    """The machine's CPU use (all cores, /proc/stat) every 0.5 s while the build runs: is the
    window's low time the schedule's, or a machine with no CPU to spare?"""

    def __init__(self):
        self.samples: list[tuple[float, int, int]] = []  # (time, busy jiffies, all jiffies)
        self.stop = threading.Event()

    @staticmethod
    def read() -> tuple[int, int]:
        with open("/proc/stat") as f:
            fields = [int(x) for x in f.readline().split()[1:]]
        idle = fields[3] + fields[4]  # idle and iowait
        return sum(fields) - idle, sum(fields)

    def loop(self) -> None:
        while not self.stop.wait(0.5):
            self.samples.append((time.time(), *self.read()))

    def __enter__(self) -> "CpuSampler":
        self.samples.append((time.time(), *self.read()))
        self.thread = threading.Thread(target=self.loop, daemon=True)
        self.thread.start()
        return self

    def __exit__(self, *exc) -> None:
        self.stop.set()
        self.thread.join()

    def busy_share(self, lo: float, hi: float) -> float | None:
        """Busy share of all cores between the samples nearest `lo` and `hi`."""
        inside = [s for s in self.samples if lo - 0.25 <= s[0] <= hi + 0.25]
        if len(inside) < 2:
            return None
        (_, b0, a0), (_, b1, a1) = inside[0], inside[-1]
        return round((b1 - b0) / (a1 - a0), 3)


def whole_build(base_url: str, calls: int, concurrency: int, latency: float, workers: int) -> dict:
    per_discipline = calls / DISCIPLINES
    questions = max(1, round((per_discipline - 2 * QUERIES - 2 * SUBJECTS) / (2 * SUBJECTS)))
    with tempfile.TemporaryDirectory(prefix="glan-whole-") as tmp:
        root = Path(tmp)
        home = root / "home"
        home.mkdir()
        shutil.copy(ROOT / "dagster_home" / "dagster.yaml", home / "dagster.yaml")  # its pools and run queue
        (root / "datasets.yaml").write_text("datasets: []\n")
        (root / "collections.yaml").write_text("collections: []\n")
        (root / "taxonomy.yaml").write_text(taxonomy([f"Discipline {i:02d}" for i in range(DISCIPLINES)]))
        env = {**os.environ, "DAGSTER_HOME": str(home), "OPENAI_BASE_URL": base_url, "OPENAI_API_KEY": "x",
               "GLAN_TAXONOMY": str(root / "taxonomy.yaml"), "GLAN_DB": str(root / "glan.duckdb"),
               "GLAN_DATASETS": str(root / "datasets.yaml"), "GLAN_COLLECTIONS": str(root / "collections.yaml"),
               "GLAN_PROFILE": "paper", "GLAN_MAX_SUBJECTS_PER_DISCIPLINE": str(SUBJECTS),
               "GLAN_QUESTIONS_PER_SYLLABUS": str(questions), "GLAN_MAX_CONCURRENCY": str(concurrency // workers)}
        start = time.time()
        with CpuSampler() as cpu:
            done = subprocess.run([sys.executable, "-m", "glan_assets.cli", "build", "--until", "answers",
                                   "--workers", str(workers)], env=env, capture_output=True, text=True, cwd=ROOT)
        seconds = time.time() - start
        if done.returncode:
            print(done.stdout[-3000:], done.stderr[-3000:])
        spans = timeline(base_url)
        runs = run_timelines(home)
    lo, hi = min(s for s, _ in spans), max(e for _, e in spans)
    rps = len(spans) / (hi - lo)
    limit = concurrency / latency
    windows = level_windows(runs)
    first_step = min(r["first_step"] for r in runs if r["first_step"])
    return {
        "disciplines": DISCIPLINES, "subjects_per_discipline": SUBJECTS, "questions_per_syllabus": questions,
        "workers": workers, "max_concurrency_per_run": concurrency // workers, "build_ok": done.returncode == 0,
        "runs_ok": sum(r["status"] == "SUCCESS" for r in runs), "runs": len(runs),
        "calls": len(spans), "build_seconds": round(seconds, 1), "llm_window_s": round(hi - lo, 2),
        "build_start_to_first_request_s": round(lo - start, 2), "last_request_to_build_end_s": round(start + seconds - hi, 2),
        "first_run_created_to_first_step_s": round(first_step - min(r["created"] for r in runs), 2),
        "rps": round(rps, 1), "limit_rps": limit, "ratio": round(rps / limit, 3),
        "mean_in_flight": round(sum(e - s for s, e in spans) / (hi - lo), 1),
        "cpu_busy_share_in_window": cpu.busy_share(lo, hi),
        **attribute(spans, runs, workers, DISCIPLINES, concurrency),
        "pool_blocked_events": sum(r["pool_blocked_events"] for r in runs),
        "level_windows_s": {lv: [round(a - lo, 2), round(b - lo, 2)] for lv, (a, b) in windows.items()},
        "run_windows_s": [[r["partition"], round(r["created"] - lo, 2), round((r["first_step"] or lo) - lo, 2),
                           round((r["end"] or hi) - lo, 2)] for r in runs],
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--calls", type=int, default=20_000)
    parser.add_argument("--concurrency", type=int, default=256)
    parser.add_argument("--latency", type=float, default=0.2)
    parser.add_argument("--workers", type=int, default=8)
    parser.add_argument("--label", default="", help="what this run measures (e.g. before/after a change)")
    args = parser.parse_args()
    load_before = [round(x, 2) for x in os.getloadavg()]
    port = free_port()
    server = subprocess.Popen([sys.executable, str(Path(__file__).parent / "latency_server.py"), str(port),
                               str(args.latency), "--fake"], cwd=ROOT)
    base_url = f"http://127.0.0.1:{port}/v1"
    deadline = time.monotonic() + 60
    while True:  # up when it accepts a connection (3 s was not always enough on a busy machine)
        try:
            socket.create_connection(("127.0.0.1", port), timeout=1).close()
            break
        except OSError:
            if time.monotonic() > deadline:
                raise
            time.sleep(0.2)
    try:
        client = asyncio.run(aiohttp_client(base_url, args.concurrency, 3000))
        timeline(base_url)  # cleared
        row = whole_build(base_url, args.calls, args.concurrency, args.latency, args.workers)
    finally:
        server.kill()
    row = {"label": args.label, "measured": time.strftime("%Y-%m-%d %H:%M"), "machine": f"{os.cpu_count()} cores",
           "load_average_before": load_before,
           "load_average_after": [round(x, 2) for x in os.getloadavg()], "concurrency": args.concurrency,
           "latency_s": args.latency, "plain_client_rps": round(client, 1),
           "plain_client_ratio": round(client / (args.concurrency / args.latency), 3), **row}
    for k, v in row.items():
        print(f"{k:>42}: {v}")
    RESULTS.parent.mkdir(exist_ok=True)
    previous = json.loads(RESULTS.read_text())["runs"] if RESULTS.exists() else []
    RESULTS.write_text(json.dumps({"runs": [*previous, row]}, indent=1) + "\n")
    print(f"wrote {RESULTS}")


if __name__ == "__main__":
    main()
