"""A data file that cannot be read as its format: one error naming the format, the file and
its first bad line or byte, found by glan itself instead of quoting the reading library.

Both methods read JSONL line by line through `json_lines`: a bad line is a `BadLine` (a
reject whose reason names the file and line) and the good lines are kept.
"""

import csv
import json
import re
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path

import yaml

IMPORT = "import"  # the rejects' stage for a file's own bad lines: no LLM call
TEXT_FORMATS = ("csv", "jsonl", "json", "yaml")
CHUNK = 1 << 20
RAW_CHARS = 2000  # of a bad line, kept in its reject
MAX_REPARSE_BYTES = 256 * 2**20  # a JSON file is parsed whole only to find its error up to this size
BROKEN_QUOTE = 'a quoted field is not closed, or text follows its closing quote (a quote inside one is written "")'
_LIBRARY_PREFIX = re.compile(r"^[A-Za-z ]*(Error|Exception): ")


class BadInput(ValueError):
    """A file that cannot be read as its format; the message names the format, the file and where."""

    def __init__(self, fmt: str, path: Path, where: str, problem: str):
        self.fmt, self.path, self.where, self.problem = fmt, path, where, problem
        super().__init__(f"{path} cannot be read as {fmt}{' at ' + where if where else ''}: {problem}")


@dataclass(frozen=True)
class BadLine:
    """A JSONL line that holds no JSON object."""

    file: str
    line: int  # 1-based
    byte: int  # the offset of the first bad byte in the file
    kind: str  # "malformed JSON line", "not UTF-8 text", "line is not a JSON object"
    detail: str
    raw: str

    @property
    def where(self) -> str:
        return at(self.line, self.byte)

    @property
    def reason(self) -> str:
        """The reject's reason: its kind first (what rejects are counted by), then file, line and byte."""
        return f"{self.kind}: {self.file}:{self.line} (byte {self.byte}){': ' + self.detail if self.detail else ''}"


def at(line: int, byte: int) -> str:
    return f"line {line} (byte {byte})"


def first_bad_text(path: Path) -> tuple[str, str] | None:
    """(where, problem) of the first byte that is not UTF-8 text: a NUL (binary data) or an
    invalid UTF-8 sequence; None for a clean file. Reads in chunks: any size."""
    pending, base, line = b"", 0, 1  # base: the file offset of data[0]
    with path.open("rb") as fh:
        while True:
            chunk = fh.read(CHUNK)
            data, pending = pending + chunk, b""
            nul = data.find(b"\0")
            try:
                data[: nul if nul >= 0 else len(data)].decode("utf-8")
                bad, problem = nul, "binary data (a NUL byte), not text"
            except UnicodeDecodeError as exc:
                if exc.reason == "unexpected end of data" and nul < 0 and chunk:
                    pending, data, bad = data[exc.start :], data[: exc.start], -1  # a character cut by the chunk
                else:
                    bad = exc.start
                    problem = f"not UTF-8 text (byte {data[bad]:#04x}): binary data, or another encoding"
            if bad >= 0:
                return at(line + data.count(b"\n", 0, bad), base + bad), problem
            if not chunk:
                return None
            line, base = line + data.count(b"\n"), base + len(data)


def json_lines(path: Path) -> Iterator[tuple[int, bytes, Mapping | BadLine]]:
    """(line number, the line's bytes, its object or a BadLine) for each non-blank line."""
    offset = 0
    with path.open("rb") as fh:
        for number, line in enumerate(fh, 1):
            start, offset = offset, offset + len(line)
            if line.strip():
                yield number, line, _json_object(path.name, number, start, line)


def _json_object(file: str, number: int, start: int, line: bytes) -> Mapping | BadLine:
    try:
        text = line.decode("utf-8")
    except UnicodeDecodeError as exc:
        raw = line.decode("utf-8", errors="replace")[:RAW_CHARS]
        return BadLine(file, number, start + exc.start, "not UTF-8 text", f"byte {line[exc.start]:#04x}", raw)
    if number == 1:
        text = text.removeprefix("\ufeff")
    try:
        value = json.loads(text.rstrip("\r\n"))  # an error at the end points at the end, not past the break
    except json.JSONDecodeError as exc:
        byte = start + len(text[: exc.pos].encode())
        return BadLine(file, number, byte, "malformed JSON line", exc.msg, text[:RAW_CHARS])
    if not isinstance(value, Mapping):
        return BadLine(file, number, start, "line is not a JSON object", "", text[:RAW_CHARS])
    return value


def explain(fmt: str, path: Path, exc: BaseException) -> BadInput:
    """Why `path` could not be read as `fmt` (csv, jsonl, json, yaml, parquet), at its first
    bad line or byte. Only where glan finds no place does the library's first line remain."""
    found = first_bad_text(path) if fmt in TEXT_FORMATS else None
    if found is None:
        finder = {"csv": _csv_problem, "jsonl": _jsonl_problem, "parquet": _parquet_problem}.get(fmt)
        if isinstance(exc, json.JSONDecodeError):
            found = _json_problem(exc)
        elif isinstance(exc, yaml.MarkedYAMLError) and exc.problem_mark is not None:
            found = f"line {exc.problem_mark.line + 1}, column {exc.problem_mark.column + 1}", str(exc.problem)
        elif fmt == "json" and path.stat().st_size <= MAX_REPARSE_BYTES:
            try:
                json.loads(path.read_bytes())
            except json.JSONDecodeError as parsed:
                found = _json_problem(parsed)
        elif finder is not None:
            found = finder(path)
    if found is None:
        first = (str(exc).strip().splitlines() or [type(exc).__name__])[0]
        found = "", _LIBRARY_PREFIX.sub("", first)
    return BadInput(fmt, path, *found)


def _json_problem(exc: json.JSONDecodeError) -> tuple[str, str]:
    return at(exc.lineno, len(exc.doc[: exc.pos].encode())), exc.msg


def _jsonl_problem(path: Path) -> tuple[str, str] | None:
    for _, _, value in json_lines(path):
        if isinstance(value, BadLine):
            return value.where, f"{value.kind}{': ' + value.detail if value.detail else ''}"
    return None


def _csv_problem(path: Path) -> tuple[str, str] | None:
    """The first row whose quoting is broken or whose field count differs from the header's."""
    with path.open(newline="", encoding="utf-8") as fh:
        header = fh.readline()
        fh.seek(0)
        reader = csv.reader(fh, delimiter=max(",\t;|", key=header.count), strict=True)
        start, width = 1, None  # start: the line the current row begins on
        try:
            for row in reader:
                if width is None:
                    width = len(row)
                elif row and len(row) != width:
                    return f"line {start}", f"{len(row)} fields where the header has {width}"
                start = reader.line_num + 1
        except csv.Error:
            return f"line {start}", BROKEN_QUOTE
    return None


def _parquet_problem(path: Path) -> tuple[str, str] | None:
    size = path.stat().st_size
    with path.open("rb") as fh:
        head = fh.read(4)
        fh.seek(max(size - 4, 0))
        tail = fh.read(4)
    if head != b"PAR1":
        return "byte 0", "not a Parquet file (it does not start with PAR1)"
    if size < 12 or tail != b"PAR1":
        return f"byte {size}", "the Parquet file is cut short (no footer)"
    return None
