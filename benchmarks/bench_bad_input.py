"""What bad lines cost a Dynosaur JSONL dataset: a generated 200,000-line file, clean and with
1% of its lines broken (every 100th line cut in half), read the way the assets read it:
`open_source`, the metadata row (with its sample rows) and one task's instances (no cap).

Each case runs in a fresh process whose code comes from `--repo` (default: this checkout),
so the same script times the code before a change (`--repo /path/to/old/checkout`) and after.
The run with the least CPU time of `--repeat` is kept: on a shared machine `cpu_seconds` (all
threads) says more than the wall-clock `seconds`.

    .venv/bin/python benchmarks/bench_bad_input.py [--lines 200000] [--repo PATH] [--label after]

Adds its cases to benchmarks/results/bad_input.json under the label.
"""

import argparse
import json
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

RESULTS = Path(__file__).resolve().parent / "results" / "bad_input.json"
HERE = Path(__file__).resolve().parent.parent


def make_files(folder: Path, lines: int) -> dict[str, Path]:
    clean, dirty = folder / "clean.jsonl", folder / "dirty.jsonl"
    with clean.open("w") as c, dirty.open("w") as d:
        for i in range(lines):
            line = json.dumps({"context": f"Passage {i}: " + "word " * (20 + i % 30), "question": f"What is item {i}?",
                               "answer": f"item {i % 997}"}) + "\n"
            c.write(line)
            d.write(line[: len(line) // 2] + "\n" if i % 100 == 50 else line)
    for name in ("clean", "dirty"):
        (folder / f"{name}.yaml").write_text(f"datasets:\n  - name: {name}\n    path: {name}.jsonl\n")
    return {"clean": clean, "dirty": dirty}


def worker(registry: Path) -> dict:
    """In the child: read the dataset as the assets do; seconds, rows, rejects or the error."""
    from glan_assets.dynosaur.instances import task_instances
    from glan_assets.dynosaur.metadata import metadata_row
    from glan_assets.dynosaur.registry_file import load_registry
    from glan_assets.dynosaur.schemas import TaskRow
    from glan_assets.dynosaur.sources import DatasetError, open_source

    entry = next(iter(load_registry(registry).entries.values()))
    start, cpu = time.perf_counter(), _cpu()
    try:
        with open_source(entry) as source:
            meta = metadata_row(entry, source)
            task = TaskRow(task_id="dtask_0123456789abcdef", dataset_id=meta.dataset_id, dataset=meta.dataset,
                           task_index=1, instruction="Answer.", input_fields=["context", "question"],
                           output_field="answer", llm_calls=1, model="m")
            built = task_instances(source.con, meta, task, 2000, 0)
            rejects = len(getattr(source, "rejected", []))
    except DatasetError as exc:
        return {"seconds": round(time.perf_counter() - start, 2), "cpu_seconds": round(_cpu() - cpu, 2),
                "refused": str(exc).split(": ", 2)[-1][:160]}
    return {"seconds": round(time.perf_counter() - start, 2), "cpu_seconds": round(_cpu() - cpu, 2),
            "rows": meta.row_count, "instances": len(built.rows), "rejects": rejects}


def _cpu() -> float:
    """User and system time of every thread of this process: DuckDB's too."""
    usage = resource.getrusage(resource.RUSAGE_SELF)
    return usage.ru_utime + usage.ru_stime


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--lines", type=int, default=200_000)
    parser.add_argument("--repo", type=Path, default=HERE, help="the checkout whose code is timed")
    parser.add_argument("--label", default="after")
    parser.add_argument("--repeat", type=int, default=3)
    parser.add_argument("--worker", type=Path, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.worker:
        print(json.dumps(worker(args.worker)))
        return
    results = json.loads(RESULTS.read_text()) if RESULTS.exists() else {}
    with tempfile.TemporaryDirectory() as tmp:
        files = make_files(Path(tmp), args.lines)
        cases = {}
        for name in files:
            runs = [
                json.loads(subprocess.run(
                    [sys.executable, __file__, "--worker", str(Path(tmp) / f"{name}.yaml")],
                    env={"PYTHONPATH": str(args.repo.resolve()), "PATH": "/usr/bin:/bin"},
                    capture_output=True, text=True, check=True, cwd=args.repo,
                ).stdout)
                for _ in range(args.repeat)
            ]
            cases[name] = min(runs, key=lambda r: r["cpu_seconds"])
            print(args.label, name, cases[name], flush=True)
    results[args.label] = {"lines": args.lines, "bad_every": 100, "cases": cases}
    RESULTS.parent.mkdir(exist_ok=True)
    RESULTS.write_text(json.dumps(results, indent=2) + "\n")


if __name__ == "__main__":
    main()
