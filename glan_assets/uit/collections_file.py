"""The collections registry (`GLAN_COLLECTIONS`): a YAML mapping whose `collections` list
names each collection, its file or folder (relative to the registry) and optionally its
format, license and source. Each collection is one partition."""

from pathlib import Path
from typing import Literal

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator

from glan_assets.ids import content_hash

DEFAULT_REGISTRY = Path(__file__).resolve().parent.parent / "data" / "collections" / "registry.yaml"

Format = Literal["alpaca", "sharegpt", "flan", "super_ni", "promptsource"]


class CollectionEntry(BaseModel):
    model_config = ConfigDict(extra="forbid")

    name: str = Field(min_length=1)
    path: str = Field(min_length=1)  # a file, or a folder of files (one Super-NI task each)
    format: Format | None = None  # None: detected from each file's keys
    license: str = ""
    source_url: str = ""

    @field_validator("name")
    @classmethod
    def _usable_key(cls, name: str) -> str:
        if name != name.strip() or "/" in name:
            raise ValueError("a collection name is a partition key: no surrounding spaces, no '/'")
        return name


class CollectionsFile(BaseModel):
    model_config = ConfigDict(extra="forbid")

    collections: list[CollectionEntry]


class RegistryError(ValueError):
    """The registry file is missing, not YAML, or an entry is invalid."""


class Collections:
    """The registry's entries by name, their files resolved against the registry's folder."""

    def __init__(self, path: str | Path, entries: list[CollectionEntry]):
        self.path = Path(path)
        self.entries = {e.name: e for e in entries}

    def entry(self, name: str) -> CollectionEntry:
        try:
            return self.entries[name]
        except KeyError:
            raise RegistryError(f"{self.path}: no collection {name!r}; it has {', '.join(self.entries)}") from None

    def data_path(self, name: str) -> Path:
        return (self.path.parent / self.entry(name).path).resolve()

    def fingerprint(self, name: str) -> str:
        """Changes when the entry or its data files (size and modification time, not read)
        change: then the collection is built again."""
        data = self.data_path(name)
        files = sorted(data.iterdir()) if data.is_dir() else [data]
        stats = [[f.name, f.stat().st_size, f.stat().st_mtime_ns] if f.exists() else [f.name, None] for f in files]
        return content_hash([self.entry(name).model_dump(), stats])[:16]


def load_collections(path: str | Path) -> Collections:
    path = Path(path)
    try:
        raw = yaml.safe_load(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise RegistryError(f"collections registry {path} does not exist (GLAN_COLLECTIONS)") from None
    except yaml.YAMLError as exc:
        raise RegistryError(f"{path}: not valid YAML: {exc}") from None
    try:
        parsed = CollectionsFile.model_validate(raw)
    except ValidationError as exc:
        problems = "; ".join(f"{'.'.join(map(str, e['loc']))}: {e['msg']}" for e in exc.errors())
        raise RegistryError(f"{path}: {problems} (expected `collections:` with name and path per entry)") from None
    names = [e.name for e in parsed.collections]
    if dupes := sorted({n for n in names if names.count(n) > 1}):
        raise RegistryError(f"{path}: collection names must be unique; repeated: {', '.join(dupes)}")
    return Collections(path, parsed.collections)
