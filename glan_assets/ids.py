"""Stable ids: a row's id is a hash of its parent's id and what makes it unique.

The prefix names the table, so `glan lineage ID` knows where to look.
"""

import hashlib
import json

PREFIXES = {
    "fld": "fields",
    "dsc": "disciplines",
    "sbj": "subjects",
    "syl": "syllabi",
    "ses": "sessions",
    "qst": "questions",
    "ans": "answers",
    "prp": "taxonomy_proposals",
    "pair": "training_set",  # made by training_schemas.pair_id_of; a removed pair is in training_removed
}


def stable_id(prefix: str, *parts: object) -> str:
    """`prefix_` + 16 hex chars of sha256 over the parts, in order."""
    if prefix not in PREFIXES:
        raise ValueError(f"unknown id prefix {prefix!r}; known: {sorted(PREFIXES)}")
    payload = json.dumps(parts, ensure_ascii=False, separators=(",", ":"), default=str)
    return f"{prefix}_{hashlib.sha256(payload.encode()).hexdigest()[:16]}"


def table_of(item_id: str) -> str:
    """The table an id belongs to, from its prefix."""
    prefix = item_id.split("_", 1)[0]
    if prefix not in PREFIXES or "_" not in item_id:
        raise ValueError(
            f"{item_id!r} is not a glan id: ids start with one of "
            + ", ".join(f"{p}_ ({t})" for p, t in PREFIXES.items())
        )
    return PREFIXES[prefix]


def content_hash(obj: object) -> str:
    """sha256 of canonical JSON: used for data versions and cache keys."""
    payload = json.dumps(obj, ensure_ascii=False, sort_keys=True, separators=(",", ":"), default=str)
    return hashlib.sha256(payload.encode()).hexdigest()
