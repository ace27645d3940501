"""Storage throughput: the DuckDB file against DuckLake on a PostgreSQL catalog. Run by hand:

    .venv/bin/python benchmarks/bench_storage.py [--rows 1000000] [--partition-rows 10000]
        [--file-rows 10000000]

1. Writes `--rows` answer rows (AnswerRow, partitions of `--partition-rows`) through
   `DuckDBStore.replace`, once per backend: rows/s and peak RSS.
2. 16 partitions written by 4 writer processes at once, through each backend: rows/s, and
   whether a writer waited (the file's lock) or retried (DuckLake commit conflicts), how often.
3. Exports the stored rows to Parquet and to JSONL with `COPY`, in stored order and sorted by
   id as `glan export` does (DuckDB streams them; nothing is materialized in Python; its
   memory capped at the store's `export_memory_limit`, past which the sort spills to disk):
   rows/s and peak RSS.
4. With `--file-rows`, step 1 again on the file backend with that many rows.

Every measurement runs in its own process, so its peak RSS is its own. The catalog is a
throwaway PostgreSQL (Debian's, `make db-deps`) on 127.0.0.1, a new database per store, as in
the tests; the data path is a local folder (not an object store).
Prints a table and writes benchmarks/results/storage.json.
"""

import argparse
import itertools
import json
import os
import platform
import resource
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

ANSWER = (
    "The work-energy theorem states that the net work done on a body equals the change in its "
    "kinetic energy. Start from Newton's second law along the path, integrate the force over the "
    "displacement, and the integral of m dv/dt dx becomes the integral of m v dv, which is the "
    "change in one half m v squared. For a conservative force the work is minus the change in "
    "potential energy, so the sum of kinetic and potential energy is conserved. "
)  # ~450 characters, about a short answer's length


def rows_for(partition: int, n: int):
    from glan_assets.glan.schemas import AnswerRow

    d = f"discipline_{partition:04d}"
    return [
        AnswerRow(answer_id=f"ans_{partition:04d}_{i:07d}", question_id=f"qst_{partition:04d}_{i:07d}",
                  discipline=d, answer=f"{i}: {ANSWER}", model="bench-model")
        for i in range(n)
    ]


def make_store(backend: str, work: Path, dsn: str):
    from resources.storage import DuckDBStore

    if backend == "duckdb":
        return DuckDBStore(path=str(work / "glan.duckdb"), lock_timeout_s=600)
    return DuckDBStore(backend="ducklake", catalog_dsn=dsn, data_path=str(work / "lake"), lock_timeout_s=600)


def peak_rss_mib() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def phase_write(args) -> dict:
    """One process writes partitions `first .. first+count-1`; times only `replace`."""
    from glan_assets.glan.schemas import AnswerRow
    from resources import storage
    from resources.storage import Slice, write_stats

    converting = [0.0]  # of the write time, the rows' conversion to Arrow (Python)
    to_arrow = storage.to_arrow

    def timed_to_arrow(row_type, rows):
        t = time.perf_counter()
        try:
            return to_arrow(row_type, rows)
        finally:
            converting[0] += time.perf_counter() - t

    storage.to_arrow = timed_to_arrow
    store = make_store(args.backend, Path(args.work), args.dsn)
    with store.connect() as con:  # connect (and attach the lake) before the clock starts
        con.execute("SELECT 1")
    partitions = range(args.first, args.first + args.count)
    # Concurrent writers make their rows first, so the clock measures the writes alone, and
    # start together.
    ready = {p: rows_for(p, args.partition_rows) for p in partitions} if args.start_at else {}
    if args.start_at:
        time.sleep(max(0.0, args.start_at - time.time()))
    written, busy = 0, 0.0
    began = time.perf_counter()
    for p in partitions:
        rows = ready.pop(p) if ready else rows_for(p, args.partition_rows)
        t = time.perf_counter()
        store.replace([Slice(AnswerRow, rows, {"discipline": rows[0].discipline})])
        busy += time.perf_counter() - t
        written += len(rows)
    return {"rows": written, "write_s": busy, "arrow_s": converting[0], "wall_s": time.perf_counter() - began,
            "peak_rss_mib": peak_rss_mib(), **write_stats()}


def phase_export(args) -> dict:
    store = make_store(args.backend, Path(args.work), args.dsn)
    target = Path(args.target)
    fmt = "FORMAT PARQUET" if target.suffix == ".parquet" else "FORMAT JSON"
    order = " ORDER BY answer_id" if args.ordered else ""
    # Connected (the lake attached) before the clock starts; DuckDB's memory capped as `glan export` caps it.
    with store.connect(memory_limit=store.export_memory_limit) as con:
        t = time.perf_counter()
        n = con.execute(f"COPY (SELECT * FROM answers{order}) TO '{target}' ({fmt})").fetchone()[0]
        seconds = time.perf_counter() - t
    return {"rows": n, "seconds": seconds, "peak_rss_mib": peak_rss_mib(),
            "bytes": target.stat().st_size}


def run_phase(*argv: str) -> subprocess.Popen:
    return subprocess.Popen([sys.executable, __file__, *argv], stdout=subprocess.PIPE, text=True, cwd=REPO)


def result_of(proc: subprocess.Popen) -> dict:
    out, _ = proc.communicate()
    if proc.returncode:
        raise RuntimeError(f"phase failed ({proc.returncode}): {out}")
    return json.loads(out.strip().splitlines()[-1])


def size_mib(path: Path) -> float:
    if path.is_file():
        return path.stat().st_size / 2**20
    return sum(f.stat().st_size for f in path.rglob("*") if f.is_file()) / 2**20


def fresh(backend: str, work: Path, server, name: str) -> tuple[Path, str]:
    """An empty store: a new folder, and for DuckLake a new catalog database."""
    folder = work / name
    shutil.rmtree(folder, ignore_errors=True)
    folder.mkdir(parents=True)
    dsn = server.create_database(name) if backend == "ducklake" else ""
    return folder, dsn


def bulk(backend: str, rows: int, partition_rows: int, work: Path, server, name: str) -> dict:
    folder, dsn = fresh(backend, work, server, name)
    count = rows // partition_rows
    r = result_of(run_phase("--phase", "write", "--backend", backend, "--work", str(folder), "--dsn", dsn,
                            "--first", "0", "--count", str(count), "--partition-rows", str(partition_rows)))
    store_path = folder / ("glan.duckdb" if backend == "duckdb" else "lake")
    return {"backend": backend, "rows": r["rows"], "partitions": count, "write_s": round(r["write_s"], 2),
            "rows_per_s": round(r["rows"] / r["write_s"]),
            "of_which_arrow_s": round(r["arrow_s"], 2), "peak_rss_mib": round(r["peak_rss_mib"]),
            "stored_mib": round(size_mib(store_path), 1), "commit_retries": r["commit_retries"],
            "_folder": str(folder), "_dsn": dsn}


def concurrent(backend: str, writers: int, partitions: int, partition_rows: int, work: Path, server, name: str) -> dict:
    folder, dsn = fresh(backend, work, server, name)
    per = partitions // writers
    start_at = time.time() + 15.0  # after every writer has imported, connected and made its rows
    procs = [
        run_phase("--phase", "write", "--backend", backend, "--work", str(folder), "--dsn", dsn,
                  "--first", str(w * per), "--count", str(per), "--partition-rows", str(partition_rows),
                  "--start-at", str(start_at))
        for w in range(writers)
    ]
    results = [result_of(p) for p in procs]
    total = sum(r["rows"] for r in results)
    longest = max(r["wall_s"] for r in results)
    check = make_store(backend, folder, dsn).query(
        "SELECT count(*) AS n, count(DISTINCT discipline) AS p FROM answers")[0]
    return {
        "backend": backend, "writers": writers, "partitions": partitions, "rows": total,
        "wall_s": round(longest, 2), "rows_per_s": round(total / longest),
        "stored_rows": check["n"], "stored_partitions": check["p"],
        "lock_waits": [r["lock_waits"] for r in results],
        "commit_retries": [r["commit_retries"] for r in results],
        "writers_that_waited_or_retried": sum(1 for r in results if r["lock_waits"] or r["commit_retries"]),
        "peak_rss_mib_per_writer": round(max(r["peak_rss_mib"] for r in results)),
    }


def export(backend: str, folder: str, dsn: str, work: Path) -> list[dict]:
    found = []
    for suffix, ordered in itertools.product((".parquet", ".jsonl"), (False, True)):
        target = work / f"export_{backend}{suffix}"
        target.unlink(missing_ok=True)
        r = result_of(run_phase("--phase", "export", "--backend", backend, "--work", folder, "--dsn", dsn,
                                "--target", str(target), *(["--ordered"] if ordered else [])))
        found.append({"backend": backend, "format": suffix[1:], "order": "answer_id" if ordered else "stored",
                      "rows": r["rows"], "seconds": round(r["seconds"], 2),
                      "rows_per_s": round(r["rows"] / r["seconds"]), "peak_rss_mib": round(r["peak_rss_mib"]),
                      "file_mib": round(r["bytes"] / 2**20, 1)})
        target.unlink()
    return found


def table(title: str, records: list[dict]) -> str:
    keys = [k for k in records[0] if not k.startswith("_")]
    lines = [title, "  " + " | ".join(keys)]
    lines += ["  " + " | ".join(str(r[k]) for k in keys) for r in records]
    return "\n".join(lines)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--rows", type=int, default=1_000_000)
    ap.add_argument("--partition-rows", type=int, default=10_000)
    ap.add_argument("--file-rows", type=int, default=0, help="also write this many rows to the file backend")
    ap.add_argument("--writers", type=int, default=4)
    ap.add_argument("--concurrent-partitions", type=int, default=16)
    ap.add_argument("--work", default=str(Path(tempfile.gettempdir()) / "glan-bench-storage"))
    ap.add_argument("--out", default=str(REPO / "benchmarks" / "results" / "storage.json"))
    # One measurement, in its own process (used by the benchmark itself).
    ap.add_argument("--phase", choices=["write", "export"], help=argparse.SUPPRESS)
    ap.add_argument("--backend", help=argparse.SUPPRESS)
    ap.add_argument("--dsn", default="", help=argparse.SUPPRESS)
    ap.add_argument("--first", type=int, default=0, help=argparse.SUPPRESS)
    ap.add_argument("--count", type=int, default=0, help=argparse.SUPPRESS)
    ap.add_argument("--start-at", type=float, default=0.0, help=argparse.SUPPRESS)
    ap.add_argument("--target", help=argparse.SUPPRESS)
    ap.add_argument("--ordered", action="store_true", help=argparse.SUPPRESS)
    args = ap.parse_args()

    if args.phase:
        print(json.dumps(phase_write(args) if args.phase == "write" else phase_export(args)))
        return

    from tests.postgres import PostgresServer

    work = Path(args.work)
    shutil.rmtree(work, ignore_errors=True)
    work.mkdir(parents=True)

    server_cm = PostgresServer()
    server = server_cm.__enter__()
    results: dict = {
        "machine": f"{platform.node()}: {os.cpu_count()} cores, {platform.machine()}, Python {platform.python_version()}",
        "duckdb": __import__("duckdb").__version__,
        "postgresql": str(server.bin),
        "answer_chars": len(rows_for(0, 1)[0].answer),
        "partition_rows": args.partition_rows,
    }
    try:
        write = [bulk(b, args.rows, args.partition_rows, work, server, f"bulk_{b}") for b in ("duckdb", "ducklake")]
        results["write"] = write
        print(table(f"write {args.rows:,} rows in partitions of {args.partition_rows:,} (one process)", write))

        results["concurrent"] = [
            concurrent(b, args.writers, args.concurrent_partitions, args.partition_rows, work, server, f"conc_{b}")
            for b in ("duckdb", "ducklake")
        ]
        print(table(f"{args.concurrent_partitions} partitions of {args.partition_rows:,} rows, "
                    f"{args.writers} writer processes at once", results["concurrent"]))

        results["export"] = [e for w in write for e in export(w["backend"], w["_folder"], w["_dsn"], work)]
        print(table(f"export {args.rows:,} rows with COPY, in stored order and ORDER BY answer_id (as `glan export`)",
                    results["export"]))

        if args.file_rows:
            big = bulk("duckdb", args.file_rows, args.partition_rows, work, server, "bulk_duckdb_big")
            results["write_file_big"] = big
            print(table(f"write {args.file_rows:,} rows, file backend", [big]))
            results["export_file_big"] = export("duckdb", big["_folder"], "", work)
            print(table(f"export {args.file_rows:,} rows, file backend", results["export_file_big"]))
    finally:
        server_cm.__exit__(None, None, None)
        shutil.rmtree(work, ignore_errors=True)

    def public(value):
        if isinstance(value, dict):
            return {k: public(v) for k, v in value.items() if not k.startswith("_")}
        if isinstance(value, list):
            return [public(v) for v in value]
        return value

    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(public(results), indent=2) + "\n")
    print(f"wrote {out}")


if __name__ == "__main__":
    main()
