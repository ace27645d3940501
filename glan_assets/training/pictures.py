"""The release card's pictures, drawn at each export from the rows the card describes: pairs per
source and group, response lengths, what curation removed and why, and the released pairs'
quality signals. Small PNGs (matplotlib's
Agg backend: no display, no fonts to fetch)."""

from collections import Counter
from collections.abc import Sequence
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402  (after choosing the headless backend)

from glan_assets.training.schemas import RemovedPairRow, TrainingPairRow  # noqa: E402

SIZE = (6.4, 3.2)  # inches at 100 dpi: ~640x320 px, a few tens of KB each


def draw(out: Path, pairs: Sequence[TrainingPairRow], removed: Sequence[RemovedPairRow]) -> dict[str, Path]:
    """Writes the pictures into `out`; returns {caption: path}."""
    out.mkdir(parents=True, exist_ok=True)
    pictures = {
        "Pairs per source and group": _bars(
            Counter(f"{p.source}: {p.group_name}"[:40] for p in pairs), "pairs", out / "pairs_per_group.png"
        ),
        "Response length in words, per source": _lengths(pairs, out / "response_lengths.png"),
        "Pairs curation removed, by reason": _bars(
            Counter(f"{r.source}: {r.reason}" for r in removed) or Counter({"nothing removed": 0}),
            "pairs removed",
            out / "removed_by_reason.png",
        ),
        "Quality signals of the released pairs, per source (IFD; the judge's 1-10 score)": _signals(
            pairs, out / "quality_signals.png"
        ),
    }
    return pictures


def _bars(counts: Counter, label: str, path: Path) -> Path:
    names = sorted(counts)
    fig, ax = plt.subplots(figsize=(SIZE[0], max(SIZE[1], 0.3 * len(names) + 1)))
    ax.barh(names, [counts[n] for n in names], color="#4c72b0")
    ax.set_xlabel(label)
    ax.invert_yaxis()
    return _save(fig, path)


def _lengths(pairs: Sequence[TrainingPairRow], path: Path) -> Path:
    fig, ax = plt.subplots(figsize=SIZE)
    by_source: dict[str, list[int]] = {}
    for p in pairs:
        by_source.setdefault(p.source, []).append(len(p.response.split()))
    ax.hist(list(by_source.values()), bins=20, label=list(by_source), stacked=True)
    ax.set_xlabel("words in the response")
    ax.set_ylabel("pairs")
    ax.legend()
    return _save(fig, path)


def _signals(pairs: Sequence[TrainingPairRow], path: Path) -> Path:
    fig, (ifd, judge) = plt.subplots(1, 2, figsize=SIZE)
    sources = sorted({p.source for p in pairs})
    for axis, values, label in (
        (ifd, lambda s: [p.ifd for p in pairs if p.source == s and p.ifd is not None], "IFD"),
        (judge, lambda s: [p.judge_score for p in pairs if p.source == s and p.judge_score is not None], "judge score"),
    ):
        drawn = {s: v for s in sources if (v := values(s))}
        if drawn:
            axis.hist(list(drawn.values()), bins=10, label=list(drawn), stacked=True)
            axis.legend(fontsize="small")
        else:
            axis.text(0.5, 0.5, "not scored", ha="center", va="center", transform=axis.transAxes)
        axis.set_xlabel(label)
    ifd.set_ylabel("pairs")
    return _save(fig, path)


def _save(fig: plt.Figure, path: Path) -> Path:
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)
    return path
