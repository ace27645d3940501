"""What part of a settings resource is in a level's version.

By default every field of every resource a level's asset reads is in the level's version, so a
new setting is tracked without anyone listing it. A field says otherwise beside its own
declaration, with one of these markers in its `Annotated[...]` type:

- `Unversioned("why")`: it cannot change the rows (an output path, a batch size, a flag for
  the sensor), or something finer-grained versions it (a taxonomy node's fingerprint);
- `ReadBy("level", ...)`: only those levels read it, so only they go stale when it changes;
- `InputFiles()`: its value names files or folders; their content is versioned, not the path.

A resource class with `VERSIONED = False` (the store, the LLM client, whose stages version their
own sampling) is left out whole.
"""

import hashlib
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path

from pydantic import BaseModel


@dataclass(frozen=True)
class Unversioned:
    why: str


class ReadBy:
    def __init__(self, *levels: str) -> None:
        self.levels = frozenset(levels)


@dataclass(frozen=True)
class InputFiles:
    pass


def file_digest(paths: str | Iterable[str]) -> str:
    """Content hash of the files named, a folder by all the files under it (by relative path).
    A missing path hashes as missing, so creating it later makes the reader stale."""
    digest = hashlib.sha256()
    for path in sorted([paths] if isinstance(paths, str) else paths):
        root = Path(path)
        files = sorted(p for p in root.rglob("*") if p.is_file()) if root.is_dir() else [root]
        for file in files:
            digest.update(str(file.relative_to(root) if root.is_dir() else file.name).encode())
            digest.update(file.read_bytes() if file.is_file() else b"\0missing")
    return digest.hexdigest()[:16]


def settings_version(resource: BaseModel, level: str) -> dict[str, object] | None:
    """The fields of `resource` that are in `level`'s version, files by content; None when the
    resource is not versioned at all."""
    if not getattr(type(resource), "VERSIONED", True):
        return None
    values: dict[str, object] = {}
    for name, info in type(resource).model_fields.items():
        marks = info.metadata
        if any(isinstance(m, Unversioned) for m in marks):
            continue
        if any(isinstance(m, ReadBy) and level not in m.levels for m in marks):
            continue
        value = getattr(resource, name)
        if any(isinstance(m, InputFiles) for m in marks) and value:
            value = file_digest(value)
        values[name] = value
    return values
