"""lm-eval's HFLM against the project's ScoringLM (glan_assets/training/scoring_lm.py) on the
packaged Gemma 3 270M base, in one run: the demo profile's 20 MMLU items (log-likelihood, one
few-shot example) and 5 GSM8K items (generation, 32 new tokens). Scores must be identical.

    .venv/bin/python benchmarks/bench_scoring_lm.py

Writes benchmarks/results/scoring_lm.json.
"""

import json
import os
import platform
import sys
import tempfile
import time
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("HF_DATASETS_OFFLINE", "1")
sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from lm_eval.models.huggingface import HFLM  # noqa: E402

from glan_assets.training.evaluation import evaluate_task, find_tasks, write_tasks  # noqa: E402
from glan_assets.training.recipes import load_recipes  # noqa: E402
from glan_assets.training.resources import BENCHMARKS_DIR, DEFAULT_RECIPES  # noqa: E402
from glan_assets.training.scoring_lm import ScoringLM  # noqa: E402
from resources.trainer import load_base  # noqa: E402

RESULTS = Path(__file__).resolve().parent / "results" / "scoring_lm.json"
LIMITS = {"glan_mmlu": 20, "glan_gsm8k": 5}
MODELS = {"HFLM, batch 8 (before)": (HFLM, 8), "HFLM, batch 1": (HFLM, 1), "ScoringLM, batch 8": (ScoringLM, 8)}


def main() -> None:
    load_before = os.getloadavg()
    model, tokenizer = load_base(load_recipes(DEFAULT_RECIPES)["demo"].base_model)
    tasks, _ = find_tasks(BENCHMARKS_DIR)
    runs = {}
    with tempfile.TemporaryDirectory() as tmp:
        include = write_tasks(tasks, BENCHMARKS_DIR, Path(tmp) / "tasks")
        for name, (cls, batch) in MODELS.items():
            lm = cls(pretrained=model, tokenizer=tokenizer, batch_size=batch)
            for task in (t for t in tasks if t.name in LIMITS):
                start = time.monotonic()
                score = evaluate_task(lm, task, include, limit=LIMITS[task.name], num_fewshot=1, max_new_tokens=32)
                seconds = time.monotonic() - start
                runs.setdefault(name, {})[task.name] = {"seconds": round(seconds, 2), "score": score.value,
                                                        "stderr": score.stderr, "requests": score.requests}
                print(f"{name:24} {task.name:11} {seconds:6.1f} s  {score.value:.3f}", flush=True)
    RESULTS.write_text(json.dumps({
        "what": "seconds per benchmark on the packaged base (model loaded once, before timing), demo limits",
        "limits": LIMITS, "num_fewshot": 1, "max_new_tokens": 32,
        "machine": {"cpus": os.cpu_count(), "load_avg_before": load_before, "load_avg_after": os.getloadavg(),
                    "platform": platform.platform()},
        "date": time.strftime("%Y-%m-%d"),
        "runs": runs,
    }, indent=2) + "\n")
    print(f"wrote {RESULTS}")


if __name__ == "__main__":
    main()
