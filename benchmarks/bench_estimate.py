"""How far the plan's estimate (`glan_assets.estimate`) is from what the build then does,
against the local stub endpoint the tests use, for the demo profile and a scaled paper profile.

Each profile builds in two phases on a fresh project: `cold` builds the first disciplines with
an empty cache (tokens per call are the stated defaults, latency the default); `measured` then
adds as many disciplines again, so its plan reads the token lengths the cache measured and the
latency of the first build. Each level's materialization records the estimate beside its
actual figures; this sums both over the phase's disciplines. Run by hand:

    .venv/bin/python benchmarks/bench_estimate.py

Prints a table and writes benchmarks/results/estimate.json.
"""

import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import dagster as dg

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
from glan_assets.glan import method as glan  # noqa: E402
from tests.fake_llm import FakeLLM  # noqa: E402

RESULTS = Path(__file__).resolve().parent / "results" / "estimate.json"
PROFILES = {
    # The demo profile as shipped: 2 subjects, 2 questions per syllabus.
    "demo": ({}, 10),
    # The paper's profile with its fan-out shrunk to fit the machine: 10 subject queries, as
    # the paper, but 3 subjects per discipline and 20 questions per syllabus, not ~150 and 500.
    "paper (scaled)": ({"GLAN_PROFILE": "paper", "GLAN_MAX_SUBJECTS_PER_DISCIPLINE": "3",
                        "GLAN_QUESTIONS_PER_SYLLABUS": "20"}, 7),
}
FIGURES = ("calls", "prompt_tokens", "completion_tokens")


def taxonomy(names: list[str]) -> str:
    lines = ["fields:", "  - name: Sciences", "    sub_fields:", "      - name: All", "        disciplines:"]
    return "\n".join(lines + [f"          - name: {n}" for n in names]) + "\n"


def recorded(home: Path, partitions: list[str]) -> dict[str, dict[str, int]]:
    """Estimate and actual figures summed over the partitions' last materializations."""
    instance = dg.DagsterInstance.from_config(str(home))
    sums = {"estimate": dict.fromkeys(FIGURES, 0), "actual": dict.fromkeys(FIGURES, 0)}
    for level in glan.METHOD.levels:
        for key in partitions:
            records = instance.fetch_materializations(
                dg.AssetRecordsFilter(dg.AssetKey(level.name), asset_partitions=[key]), limit=1
            ).records
            md = records[0].asset_materialization.metadata
            if "estimate" not in md:
                continue
            est = md["estimate"].value
            for side, values in (("estimate", est), ("actual", {k: v.value for k, v in md.items()})):
                sums[side]["calls"] += values.get("llm_calls", 0) + values.get("cache_hits", 0)
                sums[side]["prompt_tokens"] += values.get("prompt_tokens", 0)
                sums[side]["completion_tokens"] += values.get("completion_tokens", 0)
    return sums


def run_profile(name: str, settings: dict, n: int, fake: FakeLLM) -> list[dict]:
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        (root / "home").mkdir()
        (root / "datasets.yaml").write_text("datasets: []\n")
        (root / "collections.yaml").write_text("collections: []\n")
        env = {**os.environ, **settings, "DAGSTER_HOME": str(root / "home"), "OPENAI_BASE_URL": fake.base_url,
               "GLAN_TAXONOMY": str(root / "taxonomy.yaml"), "GLAN_DB": str(root / "glan.duckdb"),
               "GLAN_DATASETS": str(root / "datasets.yaml"), "GLAN_COLLECTIONS": str(root / "collections.yaml"),
               "GLAN_PRICE": "1,2"}
        names: list[str] = []
        for phase in ("cold", "measured"):
            new = [f"Discipline {len(names) + i:02d}" for i in range(n)]
            names += new
            (root / "taxonomy.yaml").write_text(taxonomy(names))
            start = time.monotonic()
            out = subprocess.run([sys.executable, "-m", "glan_assets.cli", "build", "--until", "answers"], env=env,
                                 capture_output=True, text=True, check=True).stdout
            seconds = time.monotonic() - start
            plan = [line.strip() for line in out.splitlines() if line.startswith("  estimate at")]
            sums = recorded(root / "home", new)
            error = {f: round(sums["estimate"][f] / sums["actual"][f] - 1, 4) if sums["actual"][f] else None
                     for f in FIGURES}
            rows.append({"profile": name, "phase": phase, "disciplines": n, "plan": plan[0] if plan else "",
                         **sums, "relative_error": error, "build_seconds": round(seconds, 1)})
            print(f"{name:<15} {phase:<9} " + "  ".join(
                f"{f} {sums['estimate'][f]:>8,} est / {sums['actual'][f]:>8,} actual ({error[f]:+.1%})" for f in FIGURES))
    return rows


def main() -> None:
    rows = []
    with FakeLLM() as fake:
        fake.delay_s = 0.02
        for name, (settings, n) in PROFILES.items():
            rows += run_profile(name, settings, n, fake)
    RESULTS.parent.mkdir(exist_ok=True)
    RESULTS.write_text(json.dumps({"date": time.strftime("%Y-%m-%d"), "endpoint": "tests/fake_llm.py, 20 ms a reply",
                                   "rows": rows}, indent=2) + "\n")
    print(f"wrote {RESULTS}")


if __name__ == "__main__":
    main()
