"""What `glan build` materializes after adding one discipline to a taxonomy of N, how many
judge calls that takes against the new discipline's own pairs (every pair judged), how long the
taxonomy sensor's tick takes to register it, and how long a build with nothing to do takes
(Python start-up included), against a local stub endpoint. Run by hand:

    .venv/bin/python benchmarks/bench_declarative_build.py [N ...]   # default: 3 200

Prints a table and writes benchmarks/results/declarative_build.json, keeping the results of
earlier runs for other N (a first build of 1,000 disciplines takes hours on 2 cores).
"""

import json
import os
import subprocess
import sys
import tempfile
import time
from collections import Counter
from pathlib import Path

import dagster as dg

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
from glan_assets.glan import method as glan  # noqa: E402
from glan_assets.definitions import defs  # noqa: E402
from glan_assets.registry import resources_from_env  # noqa: E402
from resources.storage import DuckDBStore  # noqa: E402
from tests.fake_llm import FakeLLM  # noqa: E402  (the stub the tests use: no model, fixed answers)

ASSETS = [level.name for level in glan.METHOD.levels] + ["glan_quality", "training_set"]
ADDED = "Added Discipline"


def taxonomy(n: int) -> str:
    lines = ["fields:", "  - name: Sciences", "    sub_fields:", "      - name: All", "        disciplines:"]
    return "\n".join(lines + [f"          - name: Discipline {i:04d}" for i in range(n)]) + "\n"


def materializations(home: Path) -> Counter:
    instance = dg.DagsterInstance.from_config(str(home))
    counts: Counter = Counter()
    for name in ASSETS:
        cursor = None
        while True:
            result = instance.fetch_materializations(dg.AssetKey(name), limit=10_000, cursor=cursor)
            counts[name] += len(result.records)
            if not result.has_more:
                break
            cursor = result.cursor
    return counts


def glan(env: dict, *args: str) -> float:
    start = time.monotonic()
    subprocess.run([sys.executable, "-m", "glan_assets.cli", "build", *args], env=env, check=True,
                   stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    return time.monotonic() - start


def runs(home: Path) -> int:
    return len(dg.DagsterInstance.from_config(str(home)).get_runs())


def sensor_tick(env: dict, home: Path) -> tuple[float, int, list[str]]:
    """One taxonomy sensor evaluation as the daemon makes it: (seconds, run requests, partitions added)."""
    os.environ.update(env)  # the resources resolve their `dg.EnvVar`s from this process's environment
    definitions = defs()
    instance = dg.DagsterInstance.from_config(str(home))
    start = time.monotonic()
    with dg.build_sensor_context(instance_ref=instance.get_ref(), resources=resources_from_env(env),
                                 definitions=definitions) as context:
        result = definitions.get_sensor_def("taxonomy_sensor").evaluate_tick(context)
    took = time.monotonic() - start
    added = [k for r in result.dynamic_partitions_requests if isinstance(r, dg.AddDynamicPartitionsRequest)
             for k in r.partition_keys]
    return took, len(result.run_requests), added


def measure(n: int, stub: FakeLLM) -> dict:
    root = Path(tempfile.mkdtemp(prefix=f"glan-bench-{n}-"))
    (root / "home").mkdir()
    (root / "taxonomy.yaml").write_text(taxonomy(n))
    (root / "datasets.yaml").write_text("datasets: []\n")  # GLAN alone: no demo datasets or collections
    (root / "collections.yaml").write_text("collections: []\n")
    env = {**os.environ, "DAGSTER_HOME": str(root / "home"), "GLAN_TAXONOMY": str(root / "taxonomy.yaml"),
           "GLAN_DATASETS": str(root / "datasets.yaml"), "GLAN_COLLECTIONS": str(root / "collections.yaml"),
           "GLAN_DB": str(root / "glan.duckdb"), "OPENAI_BASE_URL": stub.base_url, "OPENAI_API_KEY": "x",
           "GLAN_JUDGE_SAMPLE": "1"}
    first = glan(env, "--until", "training_set")
    before, runs_before = materializations(root / "home"), runs(root / "home")
    (root / "taxonomy.yaml").write_text(taxonomy(n) + f"          - name: {ADDED}\n")
    tick_s, tick_runs, tick_added = sensor_tick(env, root / "home")
    calls = len(stub.requests)
    add = glan(env, "--until", "training_set")
    after = materializations(root / "home")
    added = stub.requests[calls:]
    (pairs,) = DuckDBStore(path=env["GLAN_DB"]).query(
        "SELECT count(*) AS n FROM glan_quality WHERE discipline = ?", [ADDED])
    noop_before = runs(root / "home")
    noop = glan(env, "--until", "training_set")
    return {
        "disciplines": n,
        "first_build_s": round(first, 1),
        "add_one_s": round(add, 1),
        "add_one_llm_calls": len(added),
        "add_one_judge_calls": sum("impartial judge" in r["messages"][0]["content"] for r in added),
        "add_one_pairs_scored": pairs["n"],
        "add_one_materializations": dict(after - before),
        "add_one_runs": noop_before - runs_before,
        "sensor_tick_s": round(tick_s, 2),
        "sensor_run_requests": tick_runs,
        "sensor_added": tick_added,
        "noop_s": round(noop, 2),
        "noop_runs": runs(root / "home") - noop_before,
        "noop_materializations": sum((materializations(root / "home") - after).values()),
    }


def main() -> None:
    sizes = [int(a) for a in sys.argv[1:]] or [3, 200]
    with FakeLLM() as stub:
        results = [measure(n, stub) for n in sizes]
    print(f"{'N':>5} {'first build':>12} {'sensor tick':>12} {'add one':>8} {'calls':>6} {'judged':>7} {'pairs':>6} {'runs':>5} "
          f"{'materialized on add':<60} {'no-op':>7} {'runs':>5} {'mats':>5}")
    for r in results:
        print(f"{r['disciplines']:>5} {r['first_build_s']:>11}s {r['sensor_tick_s']:>8}s/{r['sensor_run_requests']}rq "
              f"{r['add_one_s']:>7}s {r['add_one_llm_calls']:>6} {r['add_one_judge_calls']:>7} {r['add_one_pairs_scored']:>6} {r['add_one_runs']:>5} "
              f"{json.dumps(r['add_one_materializations']):<60} {r['noop_s']:>6}s {r['noop_runs']:>5} {r['noop_materializations']:>5}")
    out = Path(__file__).parent / "results" / "declarative_build.json"
    earlier = json.loads(out.read_text())["results"] if out.exists() else []
    measured = time.strftime("%Y-%m-%d")
    kept = [r for r in earlier if r["disciplines"] not in sizes]
    merged = sorted(kept + [r | {"measured": measured} for r in results], key=lambda r: r["disciplines"])
    out.write_text(json.dumps({"results": merged}, indent=2) + "\n")
    print(f"wrote {out}")


if __name__ == "__main__":
    main()
