"""Stable ids: a row's id is a hash of its parent's id and what makes it unique.

The prefix names the level (each level declares its own), so `glan lineage ID` knows
where to look.
"""

import hashlib
import json


def stable_id(prefix: str, *parts: object) -> str:
    """`prefix_` + 16 hex chars of sha256 over the parts, in order."""
    payload = json.dumps(parts, ensure_ascii=False, separators=(",", ":"), default=str)
    return f"{prefix}_{hashlib.sha256(payload.encode()).hexdigest()[:16]}"


def content_hash(obj: object) -> str:
    """sha256 of canonical JSON: used for data versions."""
    payload = json.dumps(obj, ensure_ascii=False, sort_keys=True, separators=(",", ":"), default=str)
    return hashlib.sha256(payload.encode()).hexdigest()
