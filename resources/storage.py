"""DuckDB storage for every pipeline level: one file, one table per level.

The stock dagster-duckdb IO manager deletes then inserts outside a transaction, inserts
by column position, leaks its connection on error and erases a partition on empty output.
This store replaces a partition in one transaction, inserts by name, always closes its
connection, retries the file lock (DuckDB allows one writer process), and refuses to
replace stored rows with nothing.
"""

import os
import time
import types
import typing
from collections.abc import Iterator, Mapping, Sequence
from contextlib import contextmanager
from pathlib import Path

import dagster as dg
import duckdb
import pyarrow as pa

from glan_assets.schemas import RejectRow, TableRow

T = typing.TypeVar("T", bound=TableRow)

_SCALARS: dict[type, tuple[str, pa.DataType]] = {
    str: ("VARCHAR", pa.string()),
    int: ("BIGINT", pa.int64()),
    float: ("DOUBLE", pa.float64()),
    bool: ("BOOLEAN", pa.bool_()),
}


def db_path(env: Mapping[str, str] | None = None) -> Path:
    """`GLAN_DB`: the DuckDB file; the cache and checkpoints default to its folder."""
    env = os.environ if env is None else env
    return Path(env.get("GLAN_DB", "data/glan.duckdb"))


class EmptyOutputError(Exception):
    """A partition produced no rows; what was stored before is kept."""


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


def columns_of(row_type: type[TableRow]) -> dict[str, tuple[str, pa.DataType]]:
    """Column name -> (DuckDB type, Arrow type), in the model's field order."""
    return {name: _column_type(f.annotation) for name, f in row_type.model_fields.items()}


def to_arrow(row_type: type[TableRow], rows: Sequence[TableRow]) -> pa.Table:
    cols = columns_of(row_type)
    schema = pa.schema([(name, arrow) for name, (_, arrow) in cols.items()])
    return pa.Table.from_pylist([r.model_dump() for r in rows], schema=schema)


class DuckDBStore(dg.ConfigurableResource):
    """The DuckDB file that holds every level's table (`GLAN_DB`)."""

    path: str = "data/glan.duckdb"
    lock_timeout_s: float = 180.0

    @contextmanager
    def connect(self) -> Iterator[duckdb.DuckDBPyConnection]:
        """A short-lived connection; waits for another process's lock instead of failing."""
        Path(self.path).parent.mkdir(parents=True, exist_ok=True)
        deadline = time.monotonic() + self.lock_timeout_s
        delay = 0.05
        while True:
            try:
                con = duckdb.connect(self.path)
                break
            except duckdb.IOException as exc:
                if "lock" not in str(exc).lower() or time.monotonic() > deadline:
                    raise
                time.sleep(delay)
                delay = min(delay * 2, 1.0)
        try:
            yield con
        finally:
            con.close()

    def replace_partition(
        self,
        row_type: type[T],
        discipline: str,
        rows: Sequence[T],
        rejects: Sequence[RejectRow] = (),
    ) -> None:
        """Replace one discipline's rows (and this asset's rejects) in one transaction.

        With no rows, only the rejects are recorded and EmptyOutputError is raised,
        so the rows stored before stay.
        """
        with self._transaction() as con:
            self._ensure_table(con, RejectRow)
            con.execute("DELETE FROM rejects WHERE discipline = ? AND asset = ?", [discipline, row_type.table])
            self._insert(con, RejectRow, rejects)
            if rows:
                self._ensure_table(con, row_type)
                con.execute(f"DELETE FROM {row_type.table} WHERE discipline = ?", [discipline])
                self._insert(con, row_type, rows)
        if not rows:
            raise EmptyOutputError(
                f"{row_type.table}[{discipline}]: no usable rows ({len(rejects)} rejects, see the "
                f"rejects table); the rows stored before were kept"
            )

    def replace_rows(
        self, row_type: type[T], rows: Sequence[T], rejects: Sequence[RejectRow] | None = None
    ) -> None:
        """Replace a whole unpartitioned table in one transaction, and its asset's rejects
        when given."""
        with self._transaction() as con:
            if rejects is not None:
                self._ensure_table(con, RejectRow)
                con.execute("DELETE FROM rejects WHERE asset = ?", [row_type.table])
                self._insert(con, RejectRow, rejects)
            self._replace_table(con, row_type, rows)

    def replace_tables(self, tables: Mapping[type[TableRow], Sequence[TableRow]]) -> None:
        """Replace whole unpartitioned tables in one transaction: all of them change or none."""
        with self._transaction() as con:
            for row_type, rows in tables.items():
                self._replace_table(con, row_type, rows)

    def read(
        self, row_type: type[T], discipline: str | None = None, where: str = "", params: Sequence = ()
    ) -> list[T]:
        """Rows of a table, ordered by id; one discipline's when given."""
        clauses, args = [], list(params)
        if discipline is not None:
            clauses.append("discipline = ?")
            args.insert(0, discipline)
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

    def delete_discipline(self, discipline: str) -> dict[str, int]:
        """Remove a discipline's rows from every table, in one transaction."""
        removed: dict[str, int] = {}
        with self._transaction() as con:
            tables = con.execute(
                "SELECT table_name FROM duckdb_columns() JOIN duckdb_tables() USING (schema_name, table_name) "
                "WHERE column_name = 'discipline' AND schema_name = 'main'"
            ).fetchall()
            for (table,) in tables:
                n = con.execute(
                    f'DELETE FROM "{table}" WHERE discipline = ?', [discipline]
                ).fetchone()[0]
                removed[table] = n
        return removed

    @contextmanager
    def _transaction(self) -> Iterator[duckdb.DuckDBPyConnection]:
        """A connection in one transaction: committed when the block ends, rolled back if it raises."""
        with self.connect() as con:
            con.begin()
            try:
                yield con
                con.execute("COMMIT")
            except BaseException:
                con.execute("ROLLBACK")
                raise

    def _replace_table(
        self, con: duckdb.DuckDBPyConnection, row_type: type[TableRow], rows: Sequence[TableRow]
    ) -> None:
        self._ensure_table(con, row_type)
        con.execute(f"DELETE FROM {row_type.table}")
        self._insert(con, row_type, rows)

    @staticmethod
    def _has_table(con: duckdb.DuckDBPyConnection, table: str) -> bool:
        return bool(
            con.execute(
                "SELECT 1 FROM duckdb_tables() WHERE table_name = ? AND schema_name = 'main'", [table]
            ).fetchone()
        )

    def _ensure_table(self, con: duckdb.DuckDBPyConnection, row_type: type[TableRow]) -> None:
        """Create the table from the model, or add the columns a newer model has."""
        cols = columns_of(row_type)
        if not self._has_table(con, row_type.table):
            ddl = ", ".join(f'"{n}" {sql}' for n, (sql, _) in cols.items())
            con.execute(f"CREATE TABLE {row_type.table} ({ddl})")
            return
        existing = {
            r[0]
            for r in con.execute(
                "SELECT column_name FROM duckdb_columns() WHERE table_name = ? AND schema_name = 'main'",
                [row_type.table],
            ).fetchall()
        }
        for name, (sql, _) in cols.items():
            if name not in existing:
                con.execute(f'ALTER TABLE {row_type.table} ADD COLUMN "{name}" {sql}')

    @staticmethod
    def _insert(con: duckdb.DuckDBPyConnection, row_type: type[TableRow], rows: Sequence[TableRow]) -> None:
        if not rows:
            return
        con.register("incoming", to_arrow(row_type, rows))
        # Not in a `finally`: after a failed insert the transaction is aborted, unregister would
        # raise over the real error, and closing the connection drops the view anyway.
        con.execute(f"INSERT INTO {row_type.table} BY NAME SELECT * FROM incoming")
        con.unregister("incoming")
