"""Which pairs the training set keeps, from their rule flags and scores, as a pure function:
changing a threshold re-selects from stored scores, with no model and no LLM call.

A pair is kept when no rule flags it (unless drop_flagged is off), its IFD lies within
[ifd_min, ifd_max], its judge score reaches judge_min, and (with ifd_top_fraction < 1) it is
among its source's highest IFD pairs of those left. Each dropped pair names the first signal
it failed, in that order, and its value; its detail lists every failing signal.

A pair outside the judge's sample (`judge_sample`) has no score and fails no judge threshold
while there is no floor (judge_min 1); with a floor, it cannot show it reaches it and is
dropped unless keep_unjudged. A pair the judge was asked about but whose reply was unusable
is dropped unless keep_unjudged, as before.
"""

from collections import defaultdict
from collections.abc import Sequence
from dataclasses import dataclass, field

from glan_assets.quality.rules import Flag
from glan_assets.quality.settings import QualitySettings


@dataclass(frozen=True)
class PairQuality:
    pair_id: str
    source: str  # glan, dynosaur, uit: the top IFD share is taken per source
    flags: tuple[Flag, ...] = ()
    ifd: float | None = None
    judge_score: float | None = None
    judge_asked: bool = True  # False: outside the judge's sample


@dataclass(frozen=True)
class Dropped:
    pair_id: str
    signal: str  # the rule's name, "ifd" or "judge"
    value: float | None  # what the signal measured; None when the pair has no score
    detail: str


@dataclass
class Selection:
    kept: list[str] = field(default_factory=list)
    dropped: list[Dropped] = field(default_factory=list)


def failures(q: PairQuality, t: QualitySettings) -> list[tuple[str, float | None, str]]:
    """(signal, value, why) for each threshold the pair fails, rules first."""
    failed = [(f.rule, f.value, f"{f.rule}: {f.reason}") for f in q.flags] if t.drop_flagged else []
    if q.ifd is None:
        failed.append(("ifd", None, "no IFD score (a response with no tokens)"))
    elif q.ifd > t.ifd_max:
        failed.append(("ifd", q.ifd, f"IFD {q.ifd:.3f} above {t.ifd_max:g}: the instruction does not help predict the response"))
    elif q.ifd < t.ifd_min:
        failed.append(("ifd", q.ifd, f"IFD {q.ifd:.3f} below {t.ifd_min:g}"))
    if q.judge_score is None:
        if q.judge_asked and not t.keep_unjudged:
            failed.append(("judge", None, "no judge score (its reply is in the rejects table)"))
        elif not q.judge_asked and t.judge_min > 1 and not t.keep_unjudged:
            failed.append(("judge", None, f"not judged (outside the judge's sample) and the judge floor is {t.judge_min}"))
    elif q.judge_score < t.judge_min:
        failed.append(("judge", q.judge_score, f"judge score {q.judge_score:g} below {t.judge_min}"))
    return failed


def select(scored: Sequence[PairQuality], thresholds: QualitySettings) -> Selection:
    """The pairs kept, in id order, and each dropped one with the signal it failed."""
    if not 0.0 < thresholds.ifd_top_fraction <= 1.0:
        raise ValueError(f"GLAN_IFD_TOP_FRACTION={thresholds.ifd_top_fraction}: expected a share above 0, at most 1")
    result = Selection()
    passing: dict[str, list[PairQuality]] = defaultdict(list)
    for q in sorted(scored, key=lambda q: q.pair_id):
        if failed := failures(q, thresholds):
            signal, value, _ = failed[0]
            result.dropped.append(Dropped(q.pair_id, signal, value, "; ".join(why for _, _, why in failed)))
        else:
            passing[q.source].append(q)
    for source, group in sorted(passing.items()):
        # Highest IFD first; a tie goes to the lower id, so a rebuild keeps the same pairs.
        ranked = sorted(group, key=lambda q: (-q.ifd, q.pair_id))
        keep = max(1, round(len(ranked) * thresholds.ifd_top_fraction))
        cut = ranked[keep - 1].ifd
        result.kept += [q.pair_id for q in ranked[:keep]]
        result.dropped += [
            Dropped(q.pair_id, "ifd", q.ifd,
                    f"IFD {q.ifd:.3f} below the top {thresholds.ifd_top_fraction:.0%} of {source} (which ends at {cut:.3f})")
            for q in ranked[keep:]
        ]
    result.kept.sort()
    result.dropped.sort(key=lambda d: d.pair_id)
    return result
