"""Four writers on a new DuckLake, as four machines' first builds: are any rows lost? Run by hand:

    .venv/bin/python benchmarks/bench_ducklake_writers.py [--rounds 25]

Each round is a new catalog (a fresh PostgreSQL database) and data path. Four processes, one
discipline each, replace their partition of 7 level tables one after another, as `glan build`
does (`DuckDBStore._write`: create the tables if missing, delete the partition's rejects and
rows, insert), and read it back after each write. A round loses rows when a writer reads fewer
rows than it wrote.

Two arms, alternating rounds in one run: `ducklake_max_retry_count` as glan sets it (0: a lost
commit race comes back to `_write`, which runs the transaction again) and at the extension's
default (10: the extension retries the commit itself, and in the 1.4.4 build misses a table
created two or more snapshots after the transaction began, duckdb/ducklake cb30c0d). Prints
the counts and writes benchmarks/results/ducklake_writers.json.
"""

import argparse
import json
import logging
import multiprocessing
import platform
import shutil
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from glan_assets.glan import method as glan  # noqa: E402
from resources.storage import DuckDBStore  # noqa: E402
from tests.postgres import PostgresServer  # noqa: E402

TABLES = tuple(level.row_type.table for level in glan.METHOD.levels)
WRITERS = ("Physics", "Astronomy", "Optics", "Acoustics")
ROWS = 2


def write_levels(dsn: str, data_path: str, discipline: str, retry_count: int, found: multiprocessing.Queue) -> None:
    """One writer: each table's partition replaced, then read back; the short reads."""
    logging.disable(logging.WARNING)  # the retries' log lines
    store = DuckDBStore(backend="ducklake", catalog_dsn=dsn, data_path=data_path, lock_timeout_s=120)
    store._lake().execute(f"SET GLOBAL ducklake_max_retry_count = {retry_count}")
    short = []
    for table in TABLES:

        def body(con, table=table):
            for name, column in (("rejects", "partition_key"), (table, "discipline")):  # as store_partition
                if not store._has_table(con, name):
                    con.execute(f"CREATE TABLE {name} ({column} VARCHAR, row_id VARCHAR)")
                con.execute(f"DELETE FROM {name} WHERE {column} = ?", [discipline])
            con.execute(f"INSERT INTO {table} SELECT ?, range::VARCHAR FROM range({ROWS})", [discipline])

        store._write(body, table)
        n = store.query(f"SELECT count(*) AS n FROM {table} WHERE discipline = ?", [discipline])[0]["n"]
        if n != ROWS:
            short.append({"table": table, "read": n})
    found.put((discipline, short))


def round_lost(server: PostgresServer, name: str, root: Path, retry_count: int) -> list:
    dsn = server.create_database(name)
    found = multiprocessing.Queue()
    procs = [
        multiprocessing.Process(target=write_levels, args=(dsn, str(root / name), d, retry_count, found))
        for d in WRITERS
    ]
    for p in procs:
        p.start()
    results = [found.get(timeout=300) for _ in procs]
    for p in procs:
        p.join()
    return [{"writer": d, "short_reads": short} for d, short in results if short]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=25, help="rounds per arm")
    args = parser.parse_args()
    arms = {"glan (retry count 0)": 0, "extension default (retry count 10)": 10}
    lost = {arm: [] for arm in arms}
    root = Path(tempfile.mkdtemp(prefix="glan-lake-writers-"))
    start = time.monotonic()
    try:
        with PostgresServer() as server:
            for r in range(args.rounds):
                for arm, retry_count in arms.items():
                    short = round_lost(server, f"lake_{retry_count}_{r}", root, retry_count)
                    if short:
                        lost[arm].append({"round": r, "lost": short})
                        print(f"{arm}, round {r}: {short}", flush=True)
    finally:
        shutil.rmtree(root, ignore_errors=True)
    result = {
        "machine": f"{platform.processor() or platform.machine()}, {multiprocessing.cpu_count()} cores",
        "writers": len(WRITERS), "tables": len(TABLES), "rounds_per_arm": args.rounds,
        "seconds": round(time.monotonic() - start, 1),
        "arms": {arm: {"rounds_with_lost_rows": len(lost[arm]), "rounds": lost[arm]} for arm in arms},
    }
    for arm in arms:
        print(f"{arm}: rows lost in {len(lost[arm])} of {args.rounds} rounds")
    out = ROOT / "benchmarks" / "results" / "ducklake_writers.json"
    out.write_text(json.dumps(result, indent=2) + "\n")
    print(f"wrote {out}")


if __name__ == "__main__":
    main()
