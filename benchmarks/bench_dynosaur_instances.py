"""How fast Dynosaur turns a dataset's rows into instances, over a generated 1M-row Parquet file.

One classification task (review + product -> rating, 5 labels, 1% of rows missing a
field), built the way the `dynosaur_instances` asset builds it (`task_instances`):

- sql: the instance query alone (ids, `field: value` inputs, text cap, missing rows
  skipped), every usable row fetched as Arrow: the DuckDB part;
- rows: the same, plus the count and label queries and one `InstanceRow` per instance:
  what the asset stores with no per-task cap (`GLAN_INSTANCES_PER_TASK=0`);
- capped: the default cap (2,000 instances per task), a spread sample of the rows.

Each runs in a fresh process, so its peak memory (max RSS) is its own; the baseline is
such a process after its imports. On a shared machine, `cpu_seconds` (all threads) says
more than the wall-clock `seconds`.

    .venv/bin/python benchmarks/bench_dynosaur_instances.py [--rows 1000000]

Writes benchmarks/results/dynosaur_instances.json.
"""

import argparse
import json
import multiprocessing
import os
import platform
import resource
import tempfile
import time
from pathlib import Path

import duckdb

RESULTS = Path(__file__).resolve().parent / "results" / "dynosaur_instances.json"
LABELS = ["1", "2", "3", "4", "5"]


def make_parquet(path: Path, rows: int) -> None:
    duckdb.execute(
        f"""COPY (
            SELECT 'Review ' || i || ': ' || repeat(chr(97 + (i % 26)::INT), 40 + i % 80) AS "review text",
                   CASE WHEN i % 100 = 7 THEN NULL ELSE 'product ' || (i % 5000) END AS product,
                   ((i * 7919) % 5 + 1)::VARCHAR AS rating
            FROM range({rows}) t(i)
        ) TO '{path}' (FORMAT parquet)"""
    )


def _phase(kind: str, registry: str, queue) -> None:
    from glan_assets.dynosaur.instances import instance_sql, task_instances
    from glan_assets.dynosaur.metadata import metadata_row
    from glan_assets.dynosaur.registry_file import load_registry
    from glan_assets.dynosaur.schemas import TaskRow
    from glan_assets.dynosaur.sources import open_source
    from glan_assets.ids import stable_id

    baseline = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    entry = load_registry(registry).entry("bench")
    with open_source(entry) as source:
        meta = metadata_row(entry, source)
        inputs, output = ["review text", "product"], "rating"
        task = TaskRow(
            task_id=stable_id("dtask", meta.dataset_id, "Rate.", inputs, output), dataset_id=meta.dataset_id,
            dataset="bench", task_index=1, instruction="Rate the review from 1 to 5.", input_fields=inputs,
            output_field=output, llm_calls=1, model="bench",
        )
        start, cpu = time.perf_counter(), time.process_time()
        if kind == "sql":
            columns = {c.name: c for c in meta.text_columns()}
            made = source.con.execute(instance_sql(task, columns, 2000, 0)).fetch_arrow_table().num_rows
        else:
            made = len(task_instances(source.con, meta, task, 2000, 2000 if kind == "capped" else 0).rows)
        seconds, cpu = time.perf_counter() - start, time.process_time() - cpu
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    queue.put({"phase": kind, "source_rows": meta.row_count, "instances": made, "seconds": round(seconds, 3), "cpu_seconds": round(cpu, 3),
               "source_rows_per_s": round(meta.row_count / seconds), "baseline_rss_mib": round(baseline / 1024),
               "peak_rss_mib": round(peak / 1024)})


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--rows", type=int, default=1_000_000)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        data = Path(tmp) / "bench.parquet"
        make_parquet(data, args.rows)
        registry = Path(tmp) / "registry.yaml"
        registry.write_text(f"datasets:\n  - name: bench\n    path: {data.name}\n")
        ctx = multiprocessing.get_context("spawn")
        results = []
        for kind in ("sql", "rows", "capped"):
            queue = ctx.Queue()
            proc = ctx.Process(target=_phase, args=(kind, str(registry), queue))
            proc.start()
            results.append(queue.get())
            proc.join()
            print(json.dumps(results[-1]))
        report = {
            "machine": f"{platform.machine()}, {os.cpu_count()} cores, {platform.python_version()}, duckdb {duckdb.__version__}",
            "parquet_mib": round(data.stat().st_size / 2**20, 1),
            # The machine is shared: a load above its cores slows every phase alike.
            "load_average_1min": round(os.getloadavg()[0], 1),
            "results": results,
        }
    RESULTS.parent.mkdir(exist_ok=True)
    RESULTS.write_text(json.dumps(report, indent=2) + "\n")
    print(f"wrote {RESULTS}")


if __name__ == "__main__":
    main()
