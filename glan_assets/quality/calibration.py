"""The labelled calibration set and the measures the quality benchmark reports on it: each
rule's precision and recall, and a score's ROC AUC with a bootstrap interval.

The set (tests/data/quality_calibration.jsonl) is written by hand: good pairs of each method,
and bad ones, each with the one defect it was written to show. A rule's recall is over the
pairs with the defect it targets; its precision over every pair it flags (a flag on a bad
pair with another defect is still a right flag).
"""

import json
import random
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

from glan_assets.quality.rules import PairContext, example_strings

DEFAULT_PATH = Path(__file__).resolve().parents[2] / "tests" / "data" / "quality_calibration.jsonl"

# The defect each rule is written to catch. Off-topic answers and plain wrong labels have
# no rule: only IFD and the judge can see them.
TARGETS = {
    "empty_response": "empty",
    "too_short": "too_short",
    "too_long": "too_long",
    "repetition": "repetition",
    "copies_instruction": "copy",
    "copies_example": "example_copy",
    "asks_nothing": "non_question",
    "refusal": "refusal",
    "cut_off": "cut",
    "contradicting_demonstrations": "wrong_label",
    "output_in_inputs": "output_leak",
}


@dataclass(frozen=True)
class LabelledPair:
    pair_id: str
    source: str
    instruction: str
    response: str
    bad: bool
    defect: str  # empty for a good pair
    context: PairContext


def load(worked_examples: Mapping[str, Sequence[str]], path: Path = DEFAULT_PATH) -> list[LabelledPair]:
    """The labelled pairs; `worked_examples`: per source, its method's (`Method.worked_examples`)."""
    pairs = []
    for number, line in enumerate(path.read_text(encoding="utf-8").splitlines(), start=1):
        if not line.strip():
            continue
        try:
            row = json.loads(line)
            raw = row.get("context") or {}
            context = PairContext(
                source=row["source"],
                input=raw.get("input", ""),
                worked_examples=example_strings(worked_examples.get(row["source"], ()), raw.get("own", "")),
                gold=tuple((a, b) for a, b in raw.get("gold", [])),
                input_fields=tuple(raw.get("input_fields", [])),
                output_field=raw.get("output_field", ""),
                input_values=raw.get("input_values", {}),
            )
            pairs.append(LabelledPair(row["id"], row["source"], row["instruction"], row["response"],
                                      row["label"] == "bad", row["defect"], context))
        except (ValueError, KeyError, TypeError) as exc:
            raise ValueError(f"{path}:{number}: not a labelled pair ({exc})") from exc
    return pairs


def precision_recall(flagged: set[str], bad: set[str], targeted: set[str]) -> dict[str, float | int | None]:
    """A rule's precision (flagged pairs that are bad) and recall (pairs with its defect it flagged)."""
    return {
        "flagged": len(flagged),
        "precision": round(len(flagged & bad) / len(flagged), 3) if flagged else None,
        "recall": round(len(flagged & targeted) / len(targeted), 3) if targeted else None,
    }


def auc(scores: Sequence[float], bad: Sequence[bool]) -> float:
    """ROC AUC of `scores` as a detector of bad pairs (higher = more likely bad); ties count half."""
    pos = [s for s, b in zip(scores, bad) if b]
    neg = [s for s, b in zip(scores, bad) if not b]
    if not pos or not neg:
        return float("nan")
    wins = sum((p > n) + 0.5 * (p == n) for p in pos for n in neg)
    return wins / (len(pos) * len(neg))


def auc_interval(scores: Sequence[float], bad: Sequence[bool], resamples: int = 2000, seed: int = 0) -> tuple[float, float]:
    """A 95% percentile-bootstrap interval of the AUC, resampling pairs with replacement."""
    rng = random.Random(seed)
    n, values = len(scores), []
    for _ in range(resamples):
        idx = [rng.randrange(n) for _ in range(n)]
        value = auc([scores[i] for i in idx], [bad[i] for i in idx])
        if value == value:  # a resample with one class only has no AUC
            values.append(value)
    values.sort()
    return values[int(0.025 * len(values))], values[int(0.975 * len(values)) - 1]
