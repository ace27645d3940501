"""UIT scorer throughput: scored instances per second, batched against one at a time.

The pairs are the demo collections' instances under a Super-NI style instruction, as
`uit_candidates` scores them (prompt = instruction + input, target = the gold output),
repeated to `--pairs`. Each mode is timed after a warm-up call, in the order A B C C B A so a
change in the machine's load hits both alike; the batched losses are checked against the
one-at-a-time ones (padding must change nothing).

    .venv/bin/python benchmarks/bench_uit_scorer.py [--pairs 64] [--batch-sizes 8,16] [--threads 1]

Writes benchmarks/results/uit_scorer.json.
"""

import argparse
import json
import os
import platform
import time
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")

import torch  # noqa: E402

from glan_assets.uit.collections_file import DEFAULT_REGISTRY  # noqa: E402
from glan_assets.uit.formats import Instance  # noqa: E402
from glan_assets.uit.reading import read_collection  # noqa: E402
from glan_assets.uit.tasks import prompt_text  # noqa: E402
from resources.local_models import local_model_dir  # noqa: E402
from resources.scorer import CausalLMScorer  # noqa: E402

RESULT = Path(__file__).parent / "results" / "uit_scorer.json"
DEMO_FILES = ["alpaca.jsonl", "flan.jsonl", "sharegpt.json", "openai_chat.jsonl", "super_ni", "promptsource/templates.yaml"]


def demo_pairs(n: int) -> list[tuple[str, str]]:
    found = [
        i for f in DEMO_FILES for i in read_collection(DEFAULT_REGISTRY.parent / f) if isinstance(i, Instance)
    ]
    instruction = "Definition: Complete the task the input states."
    pairs = [(prompt_text(instruction, "\n".join(t for t in (i.instruction, i.input) if t)), i.output) for i in found]
    return [pairs[k % len(pairs)] for k in range(n)]


def timed(scorer: CausalLMScorer, pairs: list[tuple[str, str]], batch_size: int) -> tuple[float, float, list]:
    """(wall seconds, CPU seconds of this process, losses)."""
    wall, cpu = time.perf_counter(), time.process_time()
    losses = scorer.score(pairs, batch_size)
    return time.perf_counter() - wall, time.process_time() - cpu, losses


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--model", default="smollm2-135m-instruct")
    parser.add_argument("--pairs", type=int, default=64)
    parser.add_argument("--batch-sizes", default="8,16")
    # One thread: on a shared CPU, OpenMP threads stall on each other and timings swing 10x.
    parser.add_argument("--threads", type=int, default=1)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)

    scorer = CausalLMScorer(str(local_model_dir(args.model)))
    pairs = demo_pairs(args.pairs)
    tokens = [len(p) + len(t) for p, t in (scorer.encode(*pair) for pair in pairs)]
    scorer.score(pairs[:8], 8)  # warm-up

    sizes = [1, *(int(b) for b in args.batch_sizes.split(","))]
    runs: dict[int, list] = {}
    for size in sizes + sizes[::-1]:  # A B C C B A
        runs.setdefault(size, []).append(timed(scorer, pairs, size))
    reference = runs[1][0][2]
    worst = max(abs(a.mean - b.mean) for size in sizes[1:] for a, b in zip(reference, runs[size][0][2]))

    def label(size: int) -> str:
        return "one_at_a_time" if size == 1 else f"batch_{size}"

    wall = {label(s): round(len(pairs) / min(r[0] for r in runs[s]), 1) for s in sizes}
    cpu = {label(s): round(len(pairs) / min(r[1] for r in runs[s]), 1) for s in sizes}
    result = {
        "model": args.model,
        "pairs": len(pairs),
        "mean_tokens_per_pair": round(sum(tokens) / len(tokens), 1),
        "instances_per_s": wall,
        # Per second of this process's CPU time: what the wall clock shows on an idle machine.
        "instances_per_cpu_s": cpu,
        "speedup_best_batch_cpu": round(max(cpu.values()) / cpu["one_at_a_time"], 2),
        "max_abs_loss_diff_batched_vs_single": worst,
        "torch_threads": torch.get_num_threads(),
        "cpus": os.cpu_count(),
        # The machine is shared: the load says how busy it was while this ran.
        "load_average_1m": round(os.getloadavg()[0], 1),
        "python": platform.python_version(),
        "torch": torch.__version__,
    }
    print(json.dumps(result, indent=2))
    RESULT.parent.mkdir(parents=True, exist_ok=True)
    RESULT.write_text(json.dumps(result, indent=2) + "\n")


if __name__ == "__main__":
    main()
