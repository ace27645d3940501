"""model_eval's cost in the demo profile: the step's wall time with the base model scored and
with its scores cached (another recipe on the same base), log-likelihood requests/s and
generated tokens/s, on the packaged Gemma 3 270M base.

    OMP_NUM_THREADS=1 .venv/bin/python benchmarks/bench_eval.py [--checkpoint DIR] [--steps 4]

Without --checkpoint, the demo recipe is first trained for a few steps on bench_training's
sample pairs (the scores then mean nothing; the timing is the point). Evaluation settings come
from the environment (the demo profile by default). Writes benchmarks/results/eval.json.
"""

import argparse
import json
import os
import platform
import shutil
import sys
import tempfile
import time
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("HF_DATASETS_OFFLINE", "1")
sys.path.insert(0, str(Path(__file__).resolve().parent))

import dagster as dg  # noqa: E402

from bench_training import sample_pairs  # noqa: E402
from glan_assets.registry import resources_from_env  # noqa: E402
from glan_assets.training.curation import hold_out  # noqa: E402
from glan_assets.training.model_checkpoint import as_pairs  # noqa: E402
from glan_assets.training.model_eval import model_eval, read_results  # noqa: E402
from glan_assets.training.resources import TrainingSettings  # noqa: E402
from resources.trainer import fine_tune  # noqa: E402

RESULTS = Path(__file__).resolve().parent / "results" / "eval.json"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--checkpoint", help="a trained demo checkpoint folder")
    parser.add_argument("--steps", type=int, default=4, help="training steps when no checkpoint is given")
    args = parser.parse_args()
    load_before = os.getloadavg()
    resources = resources_from_env()
    evaluation = resources["evaluation"]
    with tempfile.TemporaryDirectory() as tmp:
        # A new resource: Dagster builds a resource from its constructor's config, not model_copy's.
        training = TrainingSettings(**{**resources["training"].model_dump(), "checkpoints": tmp})
        recipe = training.recipe("demo")
        target = training.checkpoint_dir("demo")
        if args.checkpoint:
            shutil.copytree(args.checkpoint, target)
        else:
            pairs = hold_out(sample_pairs(), per_group=1)
            fine_tune(recipe.model_copy(update={"max_steps": args.steps}), as_pairs([p for p in pairs if p.split == "train"]),
                      [], target)
            (target / "README.md").write_text("# demo\n")
        instance = dg.DagsterInstance.ephemeral()
        instance.add_dynamic_partitions("recipe", ["demo"])
        runs = {}
        for name in ("base_and_tuned", "base_cached"):
            start = time.monotonic()
            result = dg.materialize([model_eval], instance=instance, partition_key="demo",
                                    resources={"training": training, "evaluation": evaluation})
            seconds = time.monotonic() - start
            (event,) = result.get_asset_materialization_events()
            scored = read_results(dict(event.materialization.metadata))
            runs[name] = {"step_seconds": round(seconds, 1),
                          "benchmarks": {r.benchmark: r.model_dump() for r in scored}}
            print(f"{name}: {seconds:.0f} s", {r.benchmark: (r.items, r.requests_per_s, r.tokens_per_s) for r in scored})
    RESULTS.write_text(json.dumps({
        "what": "model_eval step wall time (Dagster materialize, model loading included), demo profile",
        "settings": evaluation.version(),
        "machine": {"cpus": os.cpu_count(), "load_avg_before": load_before, "platform": platform.platform(),
                    "omp_num_threads": os.environ.get("OMP_NUM_THREADS")},
        "date": time.strftime("%Y-%m-%d"),
        "runs": runs,
    }, indent=2) + "\n")
    print(f"wrote {RESULTS}")


if __name__ == "__main__":
    main()
