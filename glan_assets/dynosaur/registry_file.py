"""The dataset registry (`GLAN_DATASETS`): a YAML mapping whose `datasets` list names each
annotated dataset Dynosaur turns into instruction data.

Each entry has a `name` (its partition key), a `path` (relative to the registry file) and
optional `description`, `license`, `source_url` and `format`. A bad file is refused whole,
with an error naming the file, the line and the entry, before any partition is registered.
"""

import hashlib
from dataclasses import dataclass
from pathlib import Path

from ruamel.yaml import YAML
from ruamel.yaml.constructor import DuplicateKeyError
from ruamel.yaml.error import MarkedYAMLError

from glan_assets.methods import partition_key_problem
from glan_assets.ids import content_hash

DEFAULT_REGISTRY = Path(__file__).resolve().parent.parent / "data" / "datasets" / "registry.yaml"

# `format` -> how the path is read; "hf" is a directory written by `datasets` `save_to_disk`.
FORMATS = ("csv", "jsonl", "parquet", "hf")
_SUFFIXES = {".csv": "csv", ".tsv": "csv", ".jsonl": "jsonl", ".json": "jsonl", ".ndjson": "jsonl",
             ".parquet": "parquet", ".pq": "parquet"}
_OPTIONAL = ("description", "license", "source_url", "format")


class RegistryError(ValueError):
    """The registry cannot be used; the message names the file, the line and the entry."""


@dataclass(frozen=True)
class DatasetEntry:
    name: str
    path: Path  # resolved against the registry file's folder
    format: str  # one of FORMATS, given or from the path
    where: str  # "registry.yaml:12 (entry 3)", for messages
    description: str = ""
    license: str = ""
    source_url: str = ""

    @property
    def fingerprint(self) -> str:
        """Changes when the entry or its source's files change, so the dataset rebuilds."""
        return content_hash([self.name, str(self.path), self.format, self.description, self.license,
                             self.source_url, source_signature(self.path)])


@dataclass(frozen=True)
class Registry:
    path: Path
    entries: dict[str, DatasetEntry]

    def entry(self, name: str) -> DatasetEntry:
        if name not in self.entries:
            raise RegistryError(f"{self.path}: no dataset {name!r}; it was removed or renamed")
        return self.entries[name]


def _files(path: Path) -> list[Path]:
    if not path.exists():
        return []
    return sorted(p for p in path.rglob("*") if p.is_file()) if path.is_dir() else [path]


def source_signature(path: Path) -> list:
    """Size and modification time of the source's files: cheap enough for every sensor tick."""
    return [[p.name, p.stat().st_size, p.stat().st_mtime_ns] for p in _files(path)]


def source_digest(path: Path) -> str:
    """A hash of the source's bytes: a touched but unchanged file leaves it as it was."""
    digest = hashlib.sha256()
    for p in _files(path):
        digest.update(p.name.encode())
        with p.open("rb") as f:
            while chunk := f.read(1 << 20):
                digest.update(chunk)
    return digest.hexdigest()[:16]


def _line(node: object) -> int:
    lc = getattr(node, "lc", None)
    return lc.line + 1 if lc is not None else 0


def format_of(path: Path, given: str, where: str) -> str:
    if given:
        if given not in FORMATS:
            raise RegistryError(f"{where}: format {given!r} is not one of {', '.join(FORMATS)}")
        return given
    if path.is_dir():
        return "hf"
    if path.suffix.lower() in _SUFFIXES:
        return _SUFFIXES[path.suffix.lower()]
    raise RegistryError(f"{where}: cannot tell the format of {path.name!r}; add `format:` ({', '.join(FORMATS)})")


def load_registry(path: str | Path) -> Registry:
    path = Path(path)
    try:
        text = path.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as exc:
        raise RegistryError(f"{path}: cannot read the dataset registry: {getattr(exc, 'strerror', None) or exc}") from exc
    try:
        doc = YAML(typ="rt").load(text)
    except (MarkedYAMLError, DuplicateKeyError) as exc:  # a repeated key is a warning class, not an error one
        raise RegistryError(f"{path}:{exc.problem_mark.line + 1}: YAML does not parse: {exc.problem}") from exc
    if not isinstance(doc, dict) or not isinstance(doc.get("datasets"), list):
        raise RegistryError(f"{path}: expected a mapping whose key `datasets` holds a list of entries")
    entries: dict[str, DatasetEntry] = {}
    for i, node in enumerate(doc["datasets"], start=1):
        where = f"{path}:{_line(node)} (entry {i})"
        if not isinstance(node, dict):
            raise RegistryError(f"{where}: expected a mapping with `name` and `path`")
        name = node.get("name")
        if not isinstance(name, str) or not name.strip():
            raise RegistryError(f"{where}: missing `name`")
        where = f"{path}:{_line(node)} (entry {i}, {name!r})"
        if problem := partition_key_problem(name):
            raise RegistryError(f"{where}: the name {problem}")
        if name in entries:
            raise RegistryError(f"{where}: duplicate name; {entries[name].where} has it too")
        if not isinstance(node.get("path"), str) or not node["path"].strip():
            raise RegistryError(f"{where}: missing `path` (a CSV, JSONL or Parquet file, or a `save_to_disk` folder)")
        unknown = sorted(set(node) - {"name", "path", *_OPTIONAL})
        if unknown:
            raise RegistryError(f"{where}: unknown keys {', '.join(unknown)}; an entry has name, path, {', '.join(_OPTIONAL)}")
        source = (path.parent / node["path"]).resolve()
        optional = {k: str(node.get(k) or "").strip() for k in _OPTIONAL}
        entries[name] = DatasetEntry(
            name, source, format_of(source, optional.pop("format"), where), where, **optional
        )
    return Registry(path, entries)
