"""Reading a collection's files with bounded memory, whatever their size.

JSONL is read line by line: a malformed or non-UTF-8 line is a Bad entry and the rest is kept. A JSON
array is streamed by DuckDB in batches. A file that is one JSON object (a Super-NI task file)
or a YAML template file is read whole, so it has a size limit and a clear error past it.
"""

import itertools
import json
from collections.abc import Iterator, Mapping
from pathlib import Path

import duckdb
import yaml

from glan_assets.bad_input import BadLine, explain, json_lines
from glan_assets.uit.formats import (
    Bad,
    FormatError,
    Instance,
    detect_format,
    no_format,
    parse_record,
    render_rows,
    templates_of,
)

SUFFIXES = (".jsonl", ".ndjson", ".json", ".yaml", ".yml")
MAX_WHOLE_FILE_BYTES = 256 * 2**20  # a Super-NI task file is at most tens of MB
BATCH = 1000  # JSON array elements fetched from DuckDB at a time


def data_files(path: Path) -> list[Path]:
    """The file, or a folder's data files in name order (one Super-NI task per file)."""
    if path.is_dir():
        files = sorted(p for p in path.iterdir() if p.is_file() and p.suffix in SUFFIXES)
        if not files:
            raise FormatError(f"{path} holds no {', '.join(SUFFIXES)} files")
        return files
    if not path.exists():
        raise FormatError(f"{path} does not exist")
    return [path]


def _first_char(path: Path) -> str:
    with open(path, encoding="utf-8", errors="replace") as fh:
        while chunk := fh.read(4096):
            if stripped := chunk.lstrip():
                return stripped[0]
    return ""


def records(path: Path) -> Iterator[tuple[str, Mapping | Bad]]:
    """(source row, record) for each record of one file, or a Bad for a line that is no JSON object."""
    name = path.name
    if path.suffix in (".yaml", ".yml"):
        yield name, _whole(path, yaml.safe_load)
    elif path.suffix == ".json" and _first_char(path) == "{":
        yield name, _whole(path, json.load)
    elif path.suffix == ".json" and _first_char(path) == "[":
        yield from _json_array(path)
    else:
        yield from _json_lines(path)


def _whole(path: Path, load) -> Mapping:
    size = path.stat().st_size
    if size > MAX_WHOLE_FILE_BYTES:
        raise FormatError(
            f"{path} is one object of {size / 2**20:.0f} MiB, read whole (limit {MAX_WHOLE_FILE_BYTES // 2**20} MiB): "
            "write its records as JSONL, one per line, to stream them"
        )
    with open(path, encoding="utf-8") as fh:
        try:
            value = load(fh)
        except (UnicodeDecodeError, json.JSONDecodeError, yaml.YAMLError) as exc:
            raise FormatError(str(explain("yaml" if path.suffix in (".yaml", ".yml") else "json", path, exc))) from None
    if not isinstance(value, Mapping):
        raise FormatError(f"{path}: expected an object at the top, found {type(value).__name__}")
    return value


def _json_lines(path: Path) -> Iterator[tuple[str, Mapping | Bad]]:
    for number, _, value in json_lines(path):
        where = f"{path.name}:{number}"
        yield where, Bad(where, value.reason, value.raw) if isinstance(value, BadLine) else value


def _json_array(path: Path) -> Iterator[tuple[str, Mapping | Bad]]:
    con = duckdb.connect()
    index = 0
    try:
        cur = con.execute(
            "SELECT json FROM read_json(?, format='array', records=false, columns={'json': 'JSON'})", [str(path)]
        )
        while batch := cur.fetchmany(BATCH):
            for (text,) in batch:
                where = f"{path.name}:{index}"
                value = json.loads(text)
                yield where, value if isinstance(value, Mapping) else Bad(where, "element is not a JSON object", text[:2000])
                index += 1
    except duckdb.Error as exc:
        # An array has no lines to skip: a syntax error ends the file (JSONL keeps the rest).
        raise FormatError(f"{explain('json', path, exc)} (a JSON array, after element {index})") from None
    finally:
        con.close()


def read_collection(path: Path, fmt: str | None = None) -> Iterator[Instance | Bad]:
    """Every instance of a collection's file or folder, and a Bad for each record that has
    none. The format is `fmt`, else each file's first record's. Raises FormatError for a file
    that matches no format or cannot be read."""
    for file in data_files(path):
        stream = records(file)
        first = None
        for item in stream:  # malformed lines before the first record are rejects too
            if not isinstance(item[1], Bad):
                first = item
                break
            yield item[1]
        if first is None:
            continue  # empty, or only malformed lines
        where, record = first
        file_format = fmt or detect_format(record)
        if file_format is None:
            raise no_format(f"{file} (first record, {where})", record)
        if file_format == "promptsource":
            yield from _promptsource(file, where, record)
            continue
        for where, record in itertools.chain([first], stream):
            if isinstance(record, Bad):
                yield record
            else:
                yield from parse_record(file_format, record, where, file.stem)


def _promptsource(file: Path, where: str, record: Mapping) -> Iterator[Instance | Bad]:
    if "templates" not in record or "data" not in record:
        raise no_format(f"{file} (read as promptsource)", record)
    templates, broken = templates_of(record, where)
    yield from broken
    if templates:
        yield from render_rows(templates, (r for f in data_files(file.parent / str(record["data"])) for r in records(f)))
