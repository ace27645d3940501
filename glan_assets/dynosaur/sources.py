"""Reading a registered dataset into DuckDB, and the SQL that reads its columns as text.

A source is an in-memory DuckDB connection with one view, `source`: the dataset's columns
and `__glan_row`, the row's 0-based index in the file. CSV, JSONL and Parquet are read by
DuckDB itself; a `save_to_disk` directory through `datasets` (its Arrow table, not a copy),
whose `dataset_info.json` gives the description, license, citation and `ClassLabel` names.
A JSONL file with bad lines is read without them (they become rejects); a bad line keeps its
place, so the rows after it keep their index.
"""

import re
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path

import duckdb

from glan_assets.bad_input import BadInput, BadLine, explain, json_lines
from glan_assets.dynosaur.registry_file import DatasetEntry
from glan_assets.dynosaur.schemas import Column

ROW = "__glan_row"
# Types that read as text; structs, maps, lists, unions and binary do not.
_TEXT_TYPE = re.compile(
    r"(VARCHAR|BOOLEAN|U?(TINYINT|SMALLINT|INTEGER|BIGINT|HUGEINT)|FLOAT|DOUBLE|DECIMAL\(\d+,\s*\d+\)"
    r"|DATE|TIME|TIMESTAMP( WITH TIME ZONE|_S|_MS|_NS)?|TIME WITH TIME ZONE|UUID|INTERVAL)"
)
SAMPLE_ROWS = 3
SAMPLE_CHARS = 200  # each sample value is cut to this many characters
SAMPLE_COLUMNS = 40  # the columns sample rows show (and the prompt lists): a 500-column dataset stays bounded


class DatasetError(ValueError):
    """A registered dataset cannot be used; the message names the dataset and its entry."""


@dataclass
class Source:
    con: duckdb.DuckDBPyConnection  # has the view `source`
    columns: list[Column]  # the columns that read as text, in file order
    skipped: list[str]  # "name (TYPE)" of the others
    row_count: int
    # From `dataset_info.json` (save_to_disk directories): description, license, citation, homepage.
    info: dict[str, str] = field(default_factory=dict)
    rejected: list[BadLine] = field(default_factory=list)  # JSONL lines left out


def ident(name: str) -> str:
    """A column name as a SQL identifier: spaces, quotes, unicode and keywords all work."""
    return '"' + name.replace('"', '""') + '"'


def literal(text: str) -> str:
    return "'" + text.replace("'", "''") + "'"


def text_expr(column: Column) -> str:
    """The column's value as text; a `ClassLabel` reads as its label name (-1, unlabeled, as NULL)."""
    if column.labels:
        names = ", ".join(literal(n) for n in column.labels)
        return f"[{names}][{ident(column.name)} + 1]"
    return f"CAST({ident(column.name)} AS VARCHAR)"


def is_text_type(duckdb_type: str) -> bool:
    return _TEXT_TYPE.fullmatch(duckdb_type) is not None


def _hf_table(entry: DatasetEntry, con: duckdb.DuckDBPyConnection) -> tuple[dict[str, str], dict[str, list[str]]]:
    """Register the directory's Arrow table as `raw`; its info and `ClassLabel` names."""
    import datasets  # imported here: it takes seconds, and only save_to_disk sources need it

    loaded = datasets.load_from_disk(str(entry.path))
    if isinstance(loaded, datasets.DatasetDict):  # the train split, or the only one there is
        loaded = loaded["train"] if "train" in loaded else loaded[next(iter(loaded))]
    con.register("raw", loaded.data.table)
    info = loaded.info
    labels = {name: list(f.names) for name, f in loaded.features.items() if isinstance(f, datasets.ClassLabel)}
    found = {"description": info.description, "license": info.license, "citation": info.citation,
             "homepage": info.homepage}
    return {k: (v or "").strip() for k, v in found.items()}, labels


@contextmanager
def open_source(entry: DatasetEntry) -> Iterator[Source]:
    """The dataset as the view `source`, with its text columns; a `DatasetError` naming the
    dataset and its registry entry when it cannot be read or has nothing to make tasks from."""
    dataset = f"dataset {entry.name!r} ({entry.where})"
    problem = f"{dataset}: {entry.path}"
    if not entry.path.exists():
        raise DatasetError(f"{problem} does not exist")
    con = duckdb.connect()
    con.execute("SET enable_progress_bar = false")  # a run's log is no terminal
    scratch = tempfile.TemporaryDirectory(prefix="glan-source-")
    try:
        info: dict[str, str] = {}
        labels: dict[str, list[str]] = {}
        rejected: list[BadLine] = []
        try:
            if entry.format == "hf":
                info, labels = _hf_table(entry, con)
                row_count = _number_rows(con)
            else:
                row_count, rejected = _read_file(con, entry, Path(scratch.name))
            described = con.execute("DESCRIBE SELECT * FROM raw").fetchall()
        except BadInput as exc:
            raise DatasetError(f"{dataset}: {exc}") from exc
        except Exception as exc:  # duckdb, pyarrow and datasets each raise their own errors
            first = (str(exc).strip().splitlines() or [type(exc).__name__])[0]
            raise DatasetError(f"{problem} cannot be read as {entry.format}: {first}") from exc
        columns = [Column(name=n, type=t, labels=labels.get(n, [])) for n, t, *_ in described if is_text_type(t) and n != ROW]
        skipped = [f"{n} ({t})" for n, t, *_ in described if not is_text_type(t)]
        if row_count == 0:
            raise DatasetError(f"{problem} has no rows")
        if len(columns) < 2:
            raise DatasetError(
                f"{problem} has {len(columns)} text column(s) ({', '.join(c.name for c in columns) or 'none'}"
                f"{'; skipped: ' + ', '.join(skipped) if skipped else ''}): a task needs an input and an output column"
            )
        yield Source(con, columns, skipped, row_count, info, rejected)
    finally:
        con.close()
        scratch.cleanup()


def _number_rows(con: duckdb.DuckDBPyConnection) -> int:
    """The view `source` over `raw`, numbered in file order; its row count, every value read
    once (a count alone converts none, and a value that does not fit its type would fail later)."""
    # A window over no order keeps the scan's order (a streaming window): the file's row index.
    con.execute(f"CREATE OR REPLACE VIEW source AS SELECT row_number() OVER () - 1 AS {ident(ROW)}, * FROM raw")
    return con.execute("SELECT count(*), count(COLUMNS(*)) FROM raw").fetchone()[0]


def _scan(con: duckdb.DuckDBPyConnection, fmt: str, path: Path) -> int:
    """`raw` and `source` over the file; its row count. DuckDB takes the types from the first
    rows: when a later value does not fit, they are taken from every row."""
    # An explicit quote: a sniffer free to drop quoting reads a broken quote as one wide column.
    reader = {"csv": "read_csv({}, quote='\"'{})", "jsonl": "read_json({}{})", "parquet": "read_parquet({}{})"}[fmt]
    try:
        con.execute(f"CREATE OR REPLACE VIEW raw AS SELECT * FROM {reader.format(literal(str(path)), '')}")
        return _number_rows(con)
    except (duckdb.ConversionException, duckdb.InvalidInputException):
        if fmt == "parquet":  # its types are written in the file
            raise
    con.execute(f"CREATE OR REPLACE VIEW raw AS SELECT * FROM {reader.format(literal(str(path)), ', sample_size=-1')}")
    return _number_rows(con)


def _read_file(con: duckdb.DuckDBPyConnection, entry: DatasetEntry, scratch: Path) -> tuple[int, list[BadLine]]:
    """The file as the view `source`; its row count and the JSONL lines left out. A file that
    cannot be read raises `BadInput` at its first bad line or byte."""
    try:
        return _scan(con, entry.format, entry.path), []
    except duckdb.Error as exc:
        if entry.format == "jsonl" and _starts_with(entry.path, b"["):  # one JSON array: no lines to skip
            raise explain("json", entry.path, exc) from exc
        try:
            read = _good_lines(con, entry.path, scratch) if entry.format == "jsonl" else None
        except duckdb.Error:  # the good lines fail too: a value DuckDB cannot read, say
            read = None
        if read is None:
            raise explain(entry.format, entry.path, exc) from exc
        return read


def _starts_with(path: Path, char: bytes) -> bool:
    with path.open("rb") as fh:
        return fh.read(4096).lstrip()[:1] == char


def _good_lines(con: duckdb.DuckDBPyConnection, path: Path, scratch: Path) -> tuple[int, list[BadLine]] | None:
    """The JSONL file without its bad lines, each row numbered by its place among the file's
    non-blank lines (DuckDB's own numbering of a clean file, which skips blank lines too).
    None when no line is bad (DuckDB failed on something else) or every line is."""
    rejected, kept = [], []
    good = scratch / "good.jsonl"
    with good.open("wb") as out:
        for index, (_, line, value) in enumerate(json_lines(path)):
            if isinstance(value, BadLine):
                rejected.append(value)
            else:
                out.write(line if line.endswith(b"\n") else line + b"\n")
                kept.append(index)
    if not rejected or not kept:
        return None
    _scan(con, "jsonl", good)
    con.execute("CREATE TEMP TABLE kept AS SELECT generate_subscripts($1, 1) AS i, unnest($1) AS k", [kept])
    con.execute(
        f"CREATE OR REPLACE VIEW source AS SELECT kept.k AS {ident(ROW)}, numbered.* EXCLUDE (__glan_i) "
        "FROM (SELECT row_number() OVER () AS __glan_i, * FROM raw) numbered JOIN kept ON kept.i = numbered.__glan_i "
        f"ORDER BY {ident(ROW)}"
    )
    return len(kept), rejected


def sample_rows(source: Source) -> list[dict[str, str | None]]:
    """The first rows, each value of the first `SAMPLE_COLUMNS` text columns cut short."""
    shown = source.columns[:SAMPLE_COLUMNS]
    cut = ", ".join(f"left({text_expr(c)}, {SAMPLE_CHARS})" for c in shown)
    rows = source.con.execute(f"SELECT {cut} FROM source ORDER BY {ident(ROW)} LIMIT {SAMPLE_ROWS}").fetchall()
    return [dict(zip((c.name for c in shown), row)) for row in rows]
