"""DuckDB storage for every pipeline level: one table per level, in one of two backends.

- `duckdb` (the default): one DuckDB file. One writer process at a time: glan's processes take
  turns at it (`resources.locks.turn`, a waiter has its turn within milliseconds), and wait
  for another program's lock.
- `ducklake`: a DuckLake catalog whose metadata lives in PostgreSQL and whose table data is
  Parquet files under a data path (a shared filesystem or an object store). Many processes, on
  many machines, write partitions at once; DuckLake commits optimistically, and a commit that
  conflicts with another writer's is run again here with backoff (logged and counted, see
  `write_stats()`), not raised, for up to `lock_timeout_s`.

Both run the same SQL: a connection's default catalog is the file or the lake (`USE lake`).

The stock dagster-duckdb IO manager deletes then inserts outside a transaction, inserts
by column position, leaks its connection on error and erases a partition on empty output.
This store replaces a partition in one transaction, inserts by name, always closes its
connection, retries the file lock (DuckDB allows one writer process), and refuses to
replace stored rows with nothing.
"""

import collections
import importlib.util
import os
import random
import tempfile
import threading
import time
import types
import typing
from collections.abc import Callable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path

from typing import ClassVar

import dagster as dg
import duckdb
import pyarrow as pa
from pydantic import BaseModel

from resources.locks import file_lock, turn
from resources.redact import redact_table

# A row model is a pydantic model with the class attributes `table` and `id_column`.
T = typing.TypeVar("T", bound=BaseModel)
R = typing.TypeVar("R")

log = dg.get_dagster_logger("glan.storage")

# What this process's writers waited for: `lock_waits` (the file backend's lock retries) and
# `commit_retries` (the DuckLake backend's retried commit conflicts). Read with `write_stats()`.
_STATS: collections.Counter = collections.Counter()

# The catalog as the lake is attached in every DuckLake connection; `USE`d, so SQL names tables bare.
LAKE = "lake"

_SCALARS: dict[type, tuple[str, pa.DataType]] = {
    str: ("VARCHAR", pa.string()),
    int: ("BIGINT", pa.int64()),
    float: ("DOUBLE", pa.float64()),
    bool: ("BOOLEAN", pa.bool_()),
}


@dataclass(frozen=True)
class Slice:
    """The rows of `row_type` matching `where` (column -> value; empty: the whole table),
    to be replaced by `rows`."""

    row_type: type[BaseModel]
    rows: Sequence[BaseModel]
    where: Mapping[str, object] = field(default_factory=dict)


def _column_type(annotation: object) -> tuple[str, pa.DataType]:
    origin = typing.get_origin(annotation)
    args = [a for a in typing.get_args(annotation) if a is not type(None)]
    if origin in (typing.Union, types.UnionType) and len(args) == 1:
        return _column_type(args[0])
    if origin is typing.Literal:
        return _SCALARS[type(args[0])]
    if origin is list:
        sql, arrow = _column_type(args[0])
        return f"{sql}[]", pa.list_(arrow)
    if annotation in _SCALARS:
        return _SCALARS[annotation]
    raise TypeError(f"no DuckDB column type for {annotation!r}")


def columns_of(row_type: type[BaseModel]) -> dict[str, tuple[str, pa.DataType]]:
    """Column name -> (DuckDB type, Arrow type), in the model's field order."""
    return {name: _column_type(f.annotation) for name, f in row_type.model_fields.items()}


def to_arrow(row_type: type[BaseModel], rows: Sequence[BaseModel]) -> pa.Table:
    """The rows as a table, secrets redacted: every row written (the tables, the rejects, a
    release's files) passes here, so no text of a row can carry a configured secret."""
    cols = columns_of(row_type)
    schema = pa.schema([(name, arrow) for name, (_, arrow) in cols.items()])
    return redact_table(pa.Table.from_pylist([r.model_dump() for r in rows], schema=schema))


def write_stats() -> dict[str, int]:
    """How often this process's writes waited: `lock_waits` (file lock retries, duckdb backend)
    and `commit_retries` (DuckLake commit conflicts retried, ducklake backend)."""
    return {"lock_waits": _STATS["lock_waits"], "commit_retries": _STATS["commit_retries"]}


def extension_path(name: str) -> str:
    """The DuckDB extension file `name` from its PyPI package (`duckdb-ext-<name>`): DuckDB
    cannot download extensions where there is no internet, and the packages pin the build."""
    spec = importlib.util.find_spec("duckdb_ext")
    version = f"v{duckdb.__version__}"
    platform = duckdb.execute("PRAGMA platform").fetchone()[0]
    for root in (spec.submodule_search_locations or []) if spec else []:
        candidate = Path(root) / "extensions" / version / platform / f"{name}.duckdb_extension"
        if candidate.exists():
            return str(candidate)
    package = {"postgres_scanner": "postgres"}.get(name, name)
    raise RuntimeError(
        f"no DuckDB {name} extension for duckdb {duckdb.__version__} on {platform}: "
        f"install duckdb-ext-{package}=={duckdb.__version__}.* (a dependency in pyproject.toml)"
    )


def _sql_string(value: str) -> str:
    return "'" + value.replace("'", "''") + "'"


@contextmanager
def _memory_limited(con: duckdb.DuckDBPyConnection, limit: str | None) -> Iterator[None]:
    """DuckDB's memory capped at `limit` (it is the database's, so reset afterwards)."""
    if limit is None:
        yield
        return
    try:
        con.execute(f"SET memory_limit = {_sql_string(limit)}")
    except duckdb.Error as exc:
        raise ValueError(f"memory limit {limit!r} (GLAN_EXPORT_MEMORY_LIMIT): {str(exc).splitlines()[0]}") from None
    try:
        yield
    finally:
        con.execute("RESET memory_limit")


def _spill_directory() -> str:
    """Where a connection that may not write beside its database spills: this process's own."""
    return str(Path(tempfile.gettempdir()) / f"glan-duckdb-{os.getpid()}")


# One in-memory DuckDB with the lake attached per (process, catalog, data path, read-only):
# attaching costs ~0.4 s (extensions, catalog round trips), a cursor on it ~5 ms.
_LAKES: dict[tuple[int, str, str, bool], duckdb.DuckDBPyConnection] = {}
_LAKES_LOCK = threading.Lock()
_INHERITED: list[duckdb.DuckDBPyConnection] = []


def _after_fork_in_child() -> None:
    """A forked child attaches its own lake. Its copies of the parent's are kept, never closed:
    closing them would end the parent's PostgreSQL sessions, whose sockets the child shares."""
    global _LAKES_LOCK
    _INHERITED.extend(_LAKES.values())
    _LAKES.clear()
    _LAKES_LOCK = threading.Lock()


os.register_at_fork(after_in_child=_after_fork_in_child)


def close_lakes() -> None:
    """Close this process's attached DuckLake catalogs (they are reopened on the next connect)."""
    with _LAKES_LOCK:
        for key in [k for k in _LAKES if k[0] == os.getpid()]:
            _LAKES.pop(key).close()


def _is_conflict(exc: BaseException) -> bool:
    """A DuckLake commit that lost a race with another writer's: retrying it can succeed.

    Besides the "Transaction conflict" messages, a commit that took ids (snapshot, table, file)
    another writer took first fails with "Failed to commit DuckLake transaction"; the next
    attempt starts from the newest snapshot."""
    text = str(exc).lower()
    return isinstance(exc, duckdb.TransactionException) and (
        "conflict" in text or "failed to commit ducklake transaction" in text
    )


class _Backoff:
    """Retries of one write: exponential backoff with jitter until `timeout_s` has passed; each
    retry is logged (the Dagster step's log when in one) and counted in `write_stats()`."""

    def __init__(self, timeout_s: float) -> None:
        self.deadline = time.monotonic() + timeout_s
        self.delay, self.attempt = 0.05, 0

    def again(self, exc: BaseException, what: str) -> bool:
        """Whether to retry after `exc` (slept already); False: out of time, raise it."""
        if time.monotonic() > self.deadline:
            return False
        self.attempt += 1
        _STATS["commit_retries"] += 1
        wait = self.delay * random.uniform(0.5, 1.5)
        reason = str(exc).strip().splitlines()[-1]
        log.warning(f"DuckLake commit conflict writing {what}; retry {self.attempt} in {wait:.2f}s: {reason}")
        time.sleep(wait)
        self.delay = min(self.delay * 2, 2.0)
        return True


class _LakeConnection:
    """A connection to the lake: a DuckDB connection, except that a statement committed on its
    own (autocommit) whose commit conflicts with another writer's, as two builds replacing the
    lineage view at once do, is run again. In an explicit transaction a conflict surfaces at
    COMMIT, where `DuckDBStore._write` runs the whole transaction again."""

    def __init__(self, con: duckdb.DuckDBPyConnection, timeout_s: float) -> None:
        self._con, self._timeout_s = con, timeout_s

    def __getattr__(self, name: str) -> object:
        return getattr(self._con, name)

    def execute(self, query: object, *args: object, **kwargs: object) -> "_LakeConnection":
        backoff = None
        while True:
            try:
                self._con.execute(query, *args, **kwargs)
                return self
            except duckdb.TransactionException as exc:
                text = str(query).strip().rstrip(";").upper()
                # Only an implicit commit fails this way outside COMMIT; an explicit one is _write's.
                if text in ("COMMIT", "END") or "failed to commit" not in str(exc).lower() or not _is_conflict(exc):
                    raise
                backoff = backoff or _Backoff(self._timeout_s)
                if not backoff.again(exc, " ".join(str(query).split())[:60]):
                    raise


def _rollback(con: duckdb.DuckDBPyConnection) -> None:
    """Roll back if a transaction is still open; a failed COMMIT has already ended it."""
    try:
        con.execute("ROLLBACK")
    except duckdb.TransactionException:
        pass


CREATION_WAIT_S = 5.0  # how long a file another process is creating may lack its headers


class StoreUnavailable(RuntimeError):
    """A read-only store that cannot be opened: no file yet, or one that cannot be read. Its
    message is one line naming the file and the cause."""


def _cause(exc: BaseException) -> str:
    """DuckDB's reason for an error, without its class prefix ("IO Error: ...")."""
    return str(exc).strip().splitlines()[0].split(" Error: ", 1)[-1]


class DuckDBStore(dg.ConfigurableResource):
    """The storage that holds every level's table: the DuckDB file `path` (`GLAN_DB`), or with
    `backend="ducklake"` a DuckLake catalog in PostgreSQL (`catalog_dsn`) over Parquet files
    under `data_path` (`GLAN_STORAGE`, `GLAN_CATALOG_DSN`, `GLAN_DATA_PATH`)."""

    # Where rows are stored is not what they are (`resources.versioning`).
    VERSIONED: ClassVar[bool] = False

    path: str = "data/glan.duckdb"
    # How long a write waits: for the file lock (duckdb), or retrying commit conflicts (ducklake).
    lock_timeout_s: float = 180.0
    backend: typing.Literal["duckdb", "ducklake"] = "duckdb"
    # libpq connection string of the PostgreSQL database that holds the DuckLake catalog, e.g.
    # "host=db.internal port=5432 dbname=glan user=glan" (a password from PGPASSWORD or ~/.pgpass).
    catalog_dsn: str = ""
    # Where DuckLake writes the tables' Parquet files: a folder every writer sees, or s3://...
    data_path: str = ""
    # DuckDB's memory for an export (`GLAN_EXPORT_MEMORY_LIMIT`); its sort spills to disk past
    # it. With DuckDB's default, 80% of RAM, one 10M-row export reached 9.9 GiB. Writes keep
    # the default: a partition is written in one transaction, and under a low cap one can fail.
    export_memory_limit: str = "2GB"
    # Open read-only (`reader()`): the file is never created or written, and a file or
    # folder without write permission is read; DuckLake's catalog is attached READ_ONLY.
    read_only: bool = False

    def reader(self) -> "DuckDBStore":
        """This store, opened read-only: for commands that only read."""
        return DuckDBStore(**{name: getattr(self, name) for name in type(self).model_fields} | {"read_only": True})

    @property
    def location(self) -> str:
        """Where the rows are, for messages."""
        if self.backend == "ducklake":
            return f"DuckLake catalog {self.catalog_dsn!r}, data at {self.data_path}"
        return self.path

    @contextmanager
    def connect(self, memory_limit: str | None = None) -> Iterator[duckdb.DuckDBPyConnection]:
        """A short-lived connection whose default catalog holds the tables. The file backend
        waits for another process's lock instead of failing. With `memory_limit`, DuckDB
        spills to disk past it while the connection is open."""
        if self.backend == "ducklake":
            con = self._lake().cursor()
            try:
                con.execute(f"USE {LAKE}")
                with _memory_limited(con, memory_limit):
                    yield _LakeConnection(con, self.lock_timeout_s)
            finally:
                con.close()
            return
        if self.read_only:
            if not Path(self.path).exists():
                raise StoreUnavailable(f"no data at {self.path} yet: run `glan build`")
        else:
            self._create()
        # glan's processes take turns at the file (`turn`): the loop below then waits only for
        # another program's lock.
        with turn(self._lock_path(), self.read_only, self.lock_timeout_s):
            yield from self._connect_file(memory_limit)

    def _lock_path(self) -> Path:
        path = Path(self.path)
        return path.with_name(f".{path.name}.lock")

    def _connect_file(self, memory_limit: str | None) -> Iterator[duckdb.DuckDBPyConnection]:
        # Read-only, DuckDB would spill beside the file, where it may not write.
        config = {"temp_directory": _spill_directory()} if self.read_only else {}
        deadline = time.monotonic() + self.lock_timeout_s
        # A file being created exists for a moment without all of DuckDB's headers. Past this,
        # an invalid file is an error.
        created_by = time.monotonic() + CREATION_WAIT_S
        delay = 0.05
        while True:
            try:
                con = duckdb.connect(self.path, read_only=self.read_only, config=config)
                break
            except duckdb.IOException as exc:
                text = str(exc)
                incomplete = "not a valid DuckDB database file" in text or "Could not read enough bytes" in text
                if incomplete and time.monotonic() < created_by:
                    time.sleep(0.05)
                    continue
                if "version number" in text:
                    raise RuntimeError(
                        f"{self.path} was written by another DuckDB version ({text.split(': ', 1)[-1]}); "
                        f"this glan reads DuckDB {duckdb.__version__} files. Move it aside and run "
                        "`glan build --force`: every LLM response is cached, so the rebuild makes no calls."
                    ) from None
                if "lock" not in text.lower() or time.monotonic() > deadline:
                    if self.read_only:
                        raise StoreUnavailable(f"cannot read {self.path}: {_cause(exc)}") from None
                    raise
                _STATS["lock_waits"] += 1
                time.sleep(delay)
                delay = min(delay * 2, 1.0)
        try:
            with _memory_limited(con, memory_limit):  # spills beside the file, in `<path>.tmp`
                yield con
        finally:
            con.close()

    def _create(self) -> None:
        """Create the database file, one process at a time. Runs starting at once on a new
        database had raced: one created the file, another opened it and took DuckDB's lock to
        read its headers, the creator then failed to lock it, and no process ever wrote them;
        every run failed on an empty "not a valid DuckDB database" file."""
        path = Path(self.path)
        if path.is_file() and path.stat().st_size > 0:
            return
        with file_lock(self._lock_path()):
            if path.is_file() and path.stat().st_size == 0:
                path.unlink()  # left by such a race: it holds nothing, and no process is writing it
            if not path.exists():
                duckdb.connect(self.path).close()

    def _lake(self) -> duckdb.DuckDBPyConnection:
        """This process's in-memory DuckDB with the DuckLake catalog attached."""
        if not self.catalog_dsn or not self.data_path:
            raise ValueError(
                "the ducklake backend needs catalog_dsn (GLAN_CATALOG_DSN) and data_path (GLAN_DATA_PATH)"
            )
        key = (os.getpid(), self.catalog_dsn, self.data_path, self.read_only)
        with _LAKES_LOCK:
            if key in _LAKES:
                return _LAKES[key]
            if "://" not in self.data_path and not self.read_only:
                Path(self.data_path).mkdir(parents=True, exist_ok=True)
            deadline = time.monotonic() + self.lock_timeout_s
            delay = 0.1
            while True:
                con = duckdb.connect()
                try:
                    # An in-memory database would spill into the working directory.
                    con.execute(f"SET temp_directory = {_sql_string(_spill_directory())}")
                    for name in ("postgres_scanner", "ducklake"):
                        con.execute(f"LOAD {_sql_string(extension_path(name))}")
                    # The extension's own commit retry reads the changes of the snapshots
                    # committed meanwhile run together without a separator, so it misses a table
                    # created in any but the first (fixed upstream after the 1.4.4 build,
                    # duckdb/ducklake cb30c0d): two writers both created a table, and the first
                    # one's rows disappeared. A lost race comes to `_write` instead, which runs
                    # the whole transaction again on the newest snapshot.
                    con.execute("SET GLOBAL ducklake_max_retry_count = 0")
                    con.execute(
                        f"ATTACH {_sql_string('ducklake:postgres:' + self.catalog_dsn)} AS {LAKE} "
                        f"(DATA_PATH {_sql_string(self.data_path)}{', READ_ONLY' if self.read_only else ''})"
                    )
                    break
                except duckdb.Error as exc:
                    con.close()
                    # Writers attaching a new catalog at once race to create its metadata tables.
                    text = str(exc).lower()
                    racing = any(w in text for w in ("already exists", "duplicate key", "conflict"))
                    if self.read_only and "creating a new ducklake" in text:  # READ_ONLY creates no catalog
                        raise StoreUnavailable(f"no data in {self.location} yet: run `glan build`") from None
                    if self.read_only and not racing:
                        raise StoreUnavailable(f"cannot read {self.location}: {_cause(exc)}") from None
                    if not racing or time.monotonic() > deadline:
                        raise
                    _STATS["commit_retries"] += 1
                    log.warning(f"DuckLake catalog being created by another writer; retrying: {exc}")
                    time.sleep(delay * random.uniform(0.5, 1.5))
                    delay = min(delay * 2, 2.0)
            _LAKES[key] = con
            return con

    def replace(self, slices: Sequence[Slice]) -> None:
        """Replace every slice in one transaction: all of them change, or none does."""

        def write(con: duckdb.DuckDBPyConnection) -> None:
            for part in slices:
                self._ensure_table(con, part.row_type)
                clauses = " AND ".join(f'"{c}" = ?' for c in part.where)
                con.execute(
                    f"DELETE FROM {part.row_type.table}" + (f" WHERE {clauses}" if clauses else ""),
                    list(part.where.values()),
                )
                self._insert(con, part.row_type, part.rows)

        self._write(write, ", ".join(sorted({p.row_type.table for p in slices})))

    def read(
        self, row_type: type[T], partition: str | None = None, where: str = "", params: Sequence = ()
    ) -> list[T]:
        """Rows of a table, ordered by id; one partition's when given."""
        clauses, args = [], list(params)
        if partition is not None:
            clauses.append(f"{row_type.partition_column} = ?")
            args.insert(0, partition)
        if where:
            clauses.append(f"({where})")
        sql = f"SELECT * FROM {row_type.table}"
        if clauses:
            sql += " WHERE " + " AND ".join(clauses)
        sql += f" ORDER BY {row_type.id_column}"
        with self.connect() as con:
            if not self._has_table(con, row_type.table):
                return []
            cur = con.execute(sql, args)
            names = [d[0] for d in cur.description]
            known = set(row_type.model_fields)
            return [
                row_type(**{k: v for k, v in zip(names, rec) if k in known}) for rec in cur.fetchall()
            ]

    def query(self, sql: str, params: Sequence | dict = ()) -> list[dict]:
        with self.connect() as con:
            cur = con.execute(sql, params if isinstance(params, dict) else list(params))
            names = [d[0] for d in cur.description]
            return [dict(zip(names, rec)) for rec in cur.fetchall()]

    def delete_partition(self, column: str, key: str, rejects_table: str = "rejects") -> dict[str, int]:
        """Remove one partition's rows from every table with the column `column`, and their
        rejects, in one transaction. Returns rows removed per table."""
        return self._write(lambda con: self._partition_rows(con, column, key, rejects_table, "DELETE"),
                           f"partition {column}={key}")

    def partition_rows(self, column: str, key: str, rejects_table: str = "rejects") -> dict[str, int]:
        """What `delete_partition` would remove, per table (tables with no such rows left out)."""
        with self.connect() as con:
            found = self._partition_rows(con, column, key, rejects_table, "SELECT count(*)")
        return {table: n for table, n in found.items() if n}

    def _partition_rows(
        self, con: duckdb.DuckDBPyConnection, column: str, key: str, rejects_table: str, verb: str
    ) -> dict[str, int]:
        """`verb` ("DELETE" or "SELECT count(*)") over one partition's rows of every table with
        the column `column`, and their rejects; rows per table."""
        found: dict[str, int] = {}
        tables = [
            t
            for (t,) in con.execute(
                "SELECT table_name FROM duckdb_columns() "
                "JOIN duckdb_tables() USING (database_name, schema_name, table_name) "
                "WHERE column_name = ? AND database_name = current_database() AND schema_name = current_schema()",
                [column],
            ).fetchall()
        ]
        for table in tables:
            found[table] = con.execute(f'{verb} FROM "{table}" WHERE "{column}" = ?', [key]).fetchone()[0]
        if tables and self._has_table(con, rejects_table):
            marks = ", ".join("?" for _ in tables)
            found[rejects_table] = con.execute(
                f"{verb} FROM {rejects_table} WHERE partition_key = ? AND asset IN ({marks})", [key, *tables]
            ).fetchone()[0]
        return found

    @contextmanager
    def _transaction(self) -> Iterator[duckdb.DuckDBPyConnection]:
        """A connection in one transaction: committed when the block ends, rolled back if it raises.
        One attempt: `_write` retries DuckLake commit conflicts."""
        with self.connect() as con:
            con.begin()
            try:
                yield con
            except BaseException:
                _rollback(con)
                raise
            con.execute("COMMIT")

    def _write(self, body: Callable[[duckdb.DuckDBPyConnection], R], what: str) -> R:
        """`body` in one transaction. On DuckLake, a commit that conflicts with another
        writer's (both created a table, or changed the same rows) is rolled back and the whole
        transaction run again, with exponential backoff and jitter, for up to `lock_timeout_s`;
        each retry is logged and counted (`write_stats()`)."""
        backoff = _Backoff(self.lock_timeout_s)
        while True:
            try:
                with self._transaction() as con:
                    return body(con)
            except duckdb.TransactionException as exc:
                if self.backend != "ducklake" or not _is_conflict(exc) or not backoff.again(exc, what):
                    raise

    def relations(self) -> set[str]:
        """The tables and views of the store's own catalog (the file, or the lake)."""
        own = "database_name = current_database() AND schema_name = current_schema()"
        rows = self.query(
            f"SELECT table_name AS name FROM duckdb_tables() WHERE {own} "
            f"UNION SELECT view_name FROM duckdb_views() WHERE {own} AND NOT internal"
        )
        return {r["name"] for r in rows}

    @staticmethod
    def _has_table(con: duckdb.DuckDBPyConnection, table: str) -> bool:
        """Whether the connection's own catalog (the file, or the lake) has the table."""
        return bool(
            con.execute(
                "SELECT 1 FROM duckdb_tables() WHERE table_name = ? "
                "AND database_name = current_database() AND schema_name = current_schema()",
                [table],
            ).fetchone()
        )

    def _ensure_table(self, con: duckdb.DuckDBPyConnection, row_type: type[BaseModel]) -> None:
        """Create the table from the model, or add the columns a newer model has."""
        cols = columns_of(row_type)
        if not self._has_table(con, row_type.table):
            ddl = ", ".join(f'"{n}" {sql}' for n, (sql, _) in cols.items())
            con.execute(f"CREATE TABLE {row_type.table} ({ddl})")
            return
        existing = {
            r[0]
            for r in con.execute(
                "SELECT column_name FROM duckdb_columns() WHERE table_name = ? "
                "AND database_name = current_database() AND schema_name = current_schema()",
                [row_type.table],
            ).fetchall()
        }
        for name, (sql, _) in cols.items():
            if name not in existing:
                con.execute(f'ALTER TABLE {row_type.table} ADD COLUMN "{name}" {sql}')

    @staticmethod
    def _insert(con: duckdb.DuckDBPyConnection, row_type: type[BaseModel], rows: Sequence[BaseModel]) -> None:
        if not rows:
            return
        con.register("incoming", to_arrow(row_type, rows))
        # Not in a `finally`: after a failed insert the transaction is aborted, unregister would
        # raise over the real error, and closing the connection drops the view anyway.
        con.execute(f"INSERT INTO {row_type.table} BY NAME SELECT * FROM incoming")
        con.unregister("incoming")
