"""The quality levels' rows as the training set's selection reads them: one `<method>_quality`
table per method, one row per pair keyed by the pair's origin id (`source_id`)."""

import json
from collections.abc import Sequence
from statistics import mean, quantiles

from glan_assets.quality.rules import RULE_NAMES, Flag
from glan_assets.quality.selection import PairQuality
from resources.storage import DuckDBStore

SUFFIX = "_quality"
# Each method's partition column, which its quality table shares.
PARTITION_COLUMNS = {"glan": "discipline", "uit": "collection", "dynosaur": "dataset"}


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


def read_rows(store: DuckDBStore, method: str, partition: str | None = None) -> list[dict]:
    """A method's quality rows (one partition's, when given); none before its level is built."""
    if level_name(method) not in store.relations():
        return []
    where = f" WHERE {PARTITION_COLUMNS[method]} = ?" if partition is not None else ""
    return store.query(f"SELECT * FROM {level_name(method)}{where} ORDER BY source_id", [partition] if where else [])


def summary(rows: list[dict]) -> dict[str, object]:
    """Flags by rule, IFD quantiles and the judge's mean over a partition's (or method's) rows."""
    ifds = sorted(r["ifd"] for r in rows if r["ifd"] is not None)
    scores = [r["judge_score"] for r in rows if r["judge_score"] is not None]
    cuts = quantiles(ifds, n=10, method="inclusive") if len(ifds) > 1 else ifds * 9
    return {
        "pairs": len(rows),
        "flagged": sum(r["flagged"] for r in rows),
        "flags_by_rule": {rule: n for rule in RULE_NAMES if (n := sum(r[f"flag_{rule}"] for r in rows))},
        "ifd_p10": round(cuts[0], 3) if ifds else None,
        "ifd_median": round(cuts[4], 3) if ifds else None,
        "ifd_p90": round(cuts[8], 3) if ifds else None,
        "judged": len(scores),
        "judge_mean": round(mean(scores), 2) if scores else None,
        "judge_models": sorted({r["judge_model"] for r in rows if r["judge_model"]}),
    }


def worst(rows: list[dict]) -> list[dict]:
    """The rows worst first (most flags, lowest judge score, highest IFD), as a short table."""
    ranked = sorted(rows, key=lambda r: (-len(r["flag_reasons"].splitlines()) if r["flagged"] else 0,
                                         r["judge_score"] if r["judge_score"] is not None else 11,
                                         -(r["ifd"] if r["ifd"] is not None else 99), r["source_id"]))
    return [{"source_id": r["source_id"], "flags": r["flag_reasons"].replace("\n", "; ") or "-",
             "ifd": None if r["ifd"] is None else round(r["ifd"], 3), "judge": r["judge_score"]} for r in ranked]
