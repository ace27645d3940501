"""Curating instruction/response pairs into a training set: dedup, decontamination, held-out split.

Pure functions over rows, whatever source a pair came from: duplicates are found across
sources, and the split is drawn per group (a GLAN discipline, a Dynosaur dataset, a UIT
collection). Every choice is deterministic given the pairs, so a rebuild on the same data
gives the same set, and the first of a group of duplicates (by pair id) is the one kept.
"""

import hashlib
import json
import re
import unicodedata
from collections import Counter, defaultdict
from collections.abc import Iterable, Sequence
from pathlib import Path

from pydantic import BaseModel

from glan_assets.ids import content_hash
from glan_assets.training.schemas import (
    BenchmarkItem,
    ContaminationRow,
    RemovedPairRow,
    TrainingPairRow,
)

# The fields benchmarks keep their question in: GSM8K/MMLU/ARC use `question`,
# HumanEval/MBPP-style code sets `prompt`.
TEXT_FIELDS = ("question", "prompt")
ID_FIELDS = ("id", "task_id", "question_id")


def normalize(text: str) -> str:
    """Case-, width- and whitespace-insensitive form of a text."""
    return " ".join(unicodedata.normalize("NFKC", text).casefold().split())


def prompt_text(pair: TrainingPairRow) -> str:
    """What a pair asks: its instruction, and every later user turn of a multi-turn chat."""
    turns = json.loads(pair.turns) if pair.turns and pair.turns != "[]" else []
    asked = [t["content"] for t in turns if t.get("role") == "user" and t.get("content")]
    return "\n".join([pair.instruction, *(t for t in asked if t != pair.instruction)])


def words(text: str) -> list[str]:
    """The normalized words of a text, punctuation dropped."""
    return re.findall(r"\w+", normalize(text))


def exact_duplicates(pairs: Sequence[TrainingPairRow]) -> dict[str, str]:
    """Removed pair id -> kept pair id, for pairs whose normalized instruction and response
    both equal an earlier pair's."""
    first: dict[str, str] = {}
    removed: dict[str, str] = {}
    for pair in sorted(pairs, key=lambda p: p.pair_id):
        key = content_hash([normalize(pair.instruction), normalize(pair.response)])
        if key in first:
            removed[pair.pair_id] = first[key]
        else:
            first[key] = pair.pair_id
    return removed


def shingles(text: str, size: int) -> set[str]:
    """Word `size`-grams of a text; a shorter text is one shingle."""
    tokens = words(text)
    if len(tokens) <= size:
        return {" ".join(tokens)} if tokens else set()
    return {" ".join(tokens[i : i + size]) for i in range(len(tokens) - size + 1)}


_SENTENCE_END = re.compile(r"(?<=[.!?])\s+")
# A pair's own text up to this many words is compared as its words and word pairs: in a
# question with a short answer, 5-word shingles would make a one-word rewording look like a
# different pair. (Words and pairs, not words alone: "topic number 3" and "topic number 4"
# share all but one word, and the number is what tells them apart. A one-word change still
# leaves a Jaccard of 0.8 from 14 words up.) From half of it up, the text is compared as
# shingles; in between it is in both indexes, so texts of lengths on either side of a band's
# edge are still compared (a Jaccard of 0.8 needs lengths within a ratio of 0.8; 20/40 is 0.5).
SHORT_WORDS = 40


def short_grams(tokens: list[str]) -> set[str]:
    """The words of a short text and its pairs of adjacent words."""
    return {*tokens, *(f"{a} {b}" for a, b in zip(tokens, tokens[1:]))}


def segments(text: str) -> list[str]:
    """The normalized sentences of a text, line by line."""
    return [" ".join(ws) for line in text.splitlines() for s in _SENTENCE_END.split(line) if (ws := words(s))]


def _jaccard(a: set, b: set) -> float:
    return len(a & b) / len(a | b) if a or b else 1.0


def near_duplicates(
    pairs: Sequence[TrainingPairRow],
    threshold: float = 0.8,
    num_perm: int = 128,
    shingle_words: int = 5,
    seed: int = 1,
) -> dict[str, str]:
    """Removed pair id -> kept pair id, for pairs that are near-copies of an earlier kept pair:
    their response and their instruction's own sentences, with their shared context counted
    as one item, have an estimated Jaccard similarity of at least `threshold`.

    An instruction's sentences that recur across pairs are the pool's shared context (a
    passage many questions are asked about, a task definition, a template's fixed text). All
    of a pair's shared sentences together count as one item, the same context or not, so a
    long passage cannot outweigh the question and answer that make its pairs distinct: of 200
    DuoRC questions over 33 movie plots (tests/data), 171 were removed as near-duplicates of
    each other when whole pairs were compared, and none are this way. A pair's own text is compared as its
    words and word pairs up to `SHORT_WORDS` words, as `shingle_words`-word shingles from
    half of that.

    MinHashLSH proposes candidates in time proportional to the data; a long text's candidate
    is checked against its MinHash estimate, a short one's against the exact sets, so LSH's
    false positives are not removed.
    """
    # Imported here: datasketch pulls in scipy (0.7 s), and every Dagster process imports this module.
    from datasketch import MinHash, MinHashLSH

    ordered = sorted(pairs, key=lambda p: p.pair_id)
    split = {p.pair_id: segments(p.instruction) for p in ordered}
    seen = Counter(s for p in ordered for s in set(split[p.pair_id]))
    indexes = {size: MinHashLSH(threshold=threshold, num_perm=num_perm) for size in {1, shingle_words}}
    # One set of permutations for every signature: generating them is the costly part.
    template = MinHash(num_perm=num_perm, seed=seed)
    kept: dict[int, dict[str, MinHash | set[str]]] = {size: {} for size in indexes}
    removed: dict[str, str] = {}
    for pair in ordered:
        shared = [s for s in split[pair.pair_id] if seen[s] > 1]
        own = " ".join([*(s for s in split[pair.pair_id] if seen[s] == 1), " ".join(words(pair.response))])
        tokens = own.split()
        context = {f"\x00context {content_hash(shared)}"} if shared else set()
        sets: dict[int, set[str]] = {}
        if len(tokens) <= SHORT_WORDS:
            sets[1] = short_grams(tokens) | context
        if len(tokens) >= SHORT_WORDS // 2:
            sets[shingle_words] = shingles(own, shingle_words) | context
        if not any(sets.values()):
            continue
        signatures = {}
        for size, grams in sets.items():
            sig = MinHash(num_perm=num_perm, seed=seed, permutations=template.permutations, scheme="affine32")
            sig.update_batch([g.encode() for g in grams])
            signatures[size] = sig
        matches = {
            k
            for size, sig in signatures.items()
            for k in indexes[size].query(sig)
            if (_jaccard(sets[size], kept[size][k]) if size == 1 else kept[size][k].jaccard(sig)) >= threshold
        }
        if matches:
            removed[pair.pair_id] = min(matches)
            continue
        for size, sig in signatures.items():
            indexes[size].insert(pair.pair_id, sig)
            kept[size][pair.pair_id] = sets[size] if size == 1 else sig
    return removed


def load_benchmarks(paths: Iterable[str | Path]) -> list[BenchmarkItem]:
    """Benchmark items from JSONL files, one object a line with a `question` or `prompt`
    (and a multiple-choice item's `choices`, which become part of its text).

    Raises ValueError naming the file and line of a line that is not a JSON object or that
    has neither field, and FileNotFoundError for a missing file.
    """
    items: list[BenchmarkItem] = []
    for path in map(Path, paths):
        for number, line in enumerate(path.read_text(encoding="utf-8").splitlines(), start=1):
            if not line.strip():
                continue
            try:
                record = json.loads(line)
            except json.JSONDecodeError as exc:
                raise ValueError(f"{path}:{number}: not valid JSON ({exc.msg})") from exc
            if not isinstance(record, dict):
                raise ValueError(f"{path}:{number}: expected a JSON object, got {type(record).__name__}")
            text = next((record[f] for f in TEXT_FIELDS if isinstance(record.get(f), str)), None)
            if not text:
                raise ValueError(f"{path}:{number}: no {' or '.join(TEXT_FIELDS)} field with text")
            choices = record.get("choices")
            if isinstance(choices, list) and all(isinstance(c, str) for c in choices):
                # A multiple-choice item is its question and its options: "Which of the following
                # is true?" alone would match countless generated instructions.
                text = " ".join([text, *choices])
            item_id = next((str(record[f]) for f in ID_FIELDS if f in record), f"line {number}")
            items.append(BenchmarkItem(file=str(path), line=number, item_id=item_id, text=text))
    return items


def find_contamination(
    pairs: Sequence[TrainingPairRow], items: Sequence[BenchmarkItem], ngram: int = 13
) -> list[ContaminationRow]:
    """One row per (pair, benchmark item) whose instruction shares a word `ngram`-gram with
    the item's question, with the first such n-gram.

    An item shorter than `ngram` words matches when the instruction contains all of it.
    """
    index: dict[tuple[str, ...], list[int]] = defaultdict(list)
    for i, item in enumerate(items):
        tokens = words(item.text)
        size = min(ngram, len(tokens))
        for gram in {tuple(tokens[j : j + size]) for j in range(len(tokens) - size + 1)}:
            index[gram].append(i)
    sizes = sorted({len(g) for g in index})
    rows: list[ContaminationRow] = []
    for pair in sorted(pairs, key=lambda p: p.pair_id):
        tokens = words(prompt_text(pair))
        matched: dict[int, tuple[str, ...]] = {}
        for size in sizes:
            for j in range(len(tokens) - size + 1):
                gram = tuple(tokens[j : j + size])
                for i in index.get(gram, ()):
                    matched.setdefault(i, gram)
        for i, gram in sorted(matched.items()):
            item = items[i]
            rows.append(
                ContaminationRow(
                    contamination_id=f"cont_{content_hash([pair.pair_id, item.file, item.item_id])[:16]}",
                    pair_id=pair.pair_id,
                    group_name=pair.group_name,
                    benchmark_file=item.file,
                    benchmark_item=item.item_id,
                    ngram=" ".join(gram),
                )
            )
    return rows


def hold_out(pairs: Sequence[TrainingPairRow], per_group: int, seed: int = 0) -> list[TrainingPairRow]:
    """The pairs with `split` set: up to `per_group` of each group's pairs are 'test'. A
    group is a source's `group_name`: a GLAN discipline, a Dynosaur dataset, a UIT collection.

    A pair's rank is a hash of the seed and its id, within its group: a rebuild picks the
    same pairs, and adding a group (a discipline, a dataset) leaves the others' splits alone.
    Never more than half a group's pairs are held out, so a small group still trains.
    """
    by_group: dict[tuple[str, str], list[TrainingPairRow]] = defaultdict(list)
    for pair in pairs:
        by_group[pair.source, pair.group_name].append(pair)
    test: set[str] = set()
    for group in by_group.values():
        ranked = sorted(group, key=lambda p: content_hash([seed, p.pair_id]))
        test.update(p.pair_id for p in ranked[: min(per_group, len(group) // 2)])
    return [p.model_copy(update={"split": "test" if p.pair_id in test else "train"}) for p in pairs]


class Curation(BaseModel):
    """What curation kept (with splits), what it removed and why, and the benchmark matches."""

    input_pairs: int
    kept: list[TrainingPairRow]
    removed: list[RemovedPairRow]
    contamination: list[ContaminationRow]

    def counts(self) -> dict[str, int]:
        reasons = Counter(r.reason for r in self.removed)
        splits = Counter(p.split for p in self.kept)
        return {
            "input_pairs": self.input_pairs,
            "exact_duplicates_removed": reasons["exact_duplicate"],
            "near_duplicates_removed": reasons["near_duplicate"],
            "contaminated_removed": reasons["contaminated"],
            "train": splits["train"],
            "test": splits["test"],
        }


def curate(
    pairs: Sequence[TrainingPairRow],
    benchmark_items: Sequence[BenchmarkItem],
    *,
    heldout_per_group: int,
    near_dup_threshold: float = 0.8,
    num_perm: int = 128,
    shingle_words: int = 5,
    ngram: int = 13,
    seed: int = 0,
) -> Curation:
    """Exact dedup, then near dedup, then decontamination of what is left, then the split."""
    removed: list[RemovedPairRow] = []

    def drop(reason: str, pair_ids: dict[str, str], pool: list[TrainingPairRow]) -> list[TrainingPairRow]:
        for pair in pool:
            if pair.pair_id in pair_ids:
                removed.append(
                    RemovedPairRow(
                        pair_id=pair.pair_id,
                        source_id=pair.source_id,
                        source=pair.source,
                        group_name=pair.group_name,
                        reason=reason,
                        kept_pair_id=pair_ids[pair.pair_id],
                    )
                )
        return [p for p in pool if p.pair_id not in pair_ids]

    pool = sorted(pairs, key=lambda p: p.pair_id)
    pool = drop("exact_duplicate", exact_duplicates(pool), pool)
    pool = drop("near_duplicate", near_duplicates(pool, near_dup_threshold, num_perm, shingle_words), pool)
    contamination = find_contamination(pool, benchmark_items, ngram)
    pool = drop("contaminated", {c.pair_id: "" for c in contamination}, pool)
    return Curation(
        input_pairs=len(pairs),
        kept=hold_out(pool, heldout_per_group, seed),
        removed=removed,
        contamination=contamination,
    )
