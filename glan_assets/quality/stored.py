"""The quality levels' rows as the training set's selection reads them: one `<method>_quality`
table per method, one row per pair keyed by the pair's origin id (`source_id`)."""

import json
from collections.abc import Sequence

from glan_assets.quality.rules import Flag
from glan_assets.quality.selection import PairQuality
from resources.storage import DuckDBStore

SUFFIX = "_quality"


def level_name(method: str) -> str:
    """The quality level (and table) of a method's pairs."""
    return f"{method}{SUFFIX}"


def flags_json(flags: Sequence[Flag]) -> str:
    return json.dumps([{"rule": f.rule, "value": f.value, "reason": f.reason} for f in flags], ensure_ascii=False)


def read_scores(store: DuckDBStore, methods: Sequence[str]) -> dict[str, PairQuality]:
    """Origin id -> the pair's stored signals, over the methods whose quality table exists."""
    tables = store.relations()
    found: dict[str, PairQuality] = {}
    for method in methods:
        if level_name(method) not in tables:
            continue
        for r in store.query(
            f"SELECT source_id, pair_id, flags, ifd, judge_score, judge_sampled FROM {level_name(method)}"
        ):
            found[r["source_id"]] = PairQuality(
                r["pair_id"],
                method,
                tuple(Flag(f["rule"], f["value"], f["reason"]) for f in json.loads(r["flags"])),
                r["ifd"],
                r["judge_score"],
                r["judge_sampled"],
            )
    return found
