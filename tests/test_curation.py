"""Curation on planted cases: duplicates, benchmark leaks and the held-out split."""

import json
import random

import pytest

from glan_assets.training.curation import (
    curate,
    exact_duplicates,
    find_contamination,
    hold_out,
    load_benchmarks,
    near_duplicates,
)
from glan_assets.training.resources import DEFAULT_BENCHMARKS
from glan_assets.training.schemas import BenchmarkItem, TrainingPairRow

LONG_ANSWER = (
    "Newton's second law says that the net force on a body equals its mass times its acceleration. "
    "Suppose a cart of mass two kilograms is pushed along a smooth floor by a steady horizontal force "
    "of ten newtons. Dividing the force by the mass gives an acceleration of five meters per second "
    "squared. If the push lasts three seconds and the cart starts at rest, its final speed is fifteen "
    "meters per second, and it has covered twenty two and a half meters. Doubling the mass would halve "
    "the acceleration, which is why heavy trucks need larger engines to speed up quickly."
)
REWORDED = {"smooth floor": "level floor"}
BENCH_QUESTION = (
    "A train travels at 80 kilometers per hour for 3 hours and then at 60 kilometers per hour "
    "for 2 hours. How far does it travel in total?"
)


def pair(n: int, instruction: str, response: str = "An answer.", discipline: str = "Physics") -> TrainingPairRow:
    return TrainingPairRow(
        pair_id=f"pair_{n:04d}",
        source_id=f"ans_{n:04d}",
        source="glan",
        group_name=discipline,
        field_name="Natural Sciences",
        subject_name="Mechanics",
        instruction=instruction,
        response=response,
    )


def bench(text: str, item_id: str = "gsm-1") -> BenchmarkItem:
    return BenchmarkItem(file="bench.jsonl", line=1, item_id=item_id, text=text)


def test_exact_duplicates_ignore_case_and_spacing_and_keep_the_first():
    pairs = [
        pair(1, "What is inertia?", "Resistance to change in motion."),
        pair(2, "what  is INERTIA?", "resistance to change in\nmotion."),
        pair(3, "What is inertia?", "A different answer."),
    ]
    assert exact_duplicates(pairs) == {"pair_0002": "pair_0001"}


def reword(text: str) -> str:
    for old, new in REWORDED.items():
        text = text.replace(old, new)
    return text


def test_a_reworded_near_copy_is_removed_and_a_different_pair_is_kept():
    original = pair(1, "Explain Newton's second law with a worked example.", LONG_ANSWER)
    reworded = pair(2, "Explain Newton's second law with a worked example!", reword(LONG_ANSWER))
    other = pair(3, "What is the speed of light?", "About 300,000 kilometers per second in a vacuum.")
    assert near_duplicates([reworded, other, original], threshold=0.8) == {"pair_0002": "pair_0001"}
    # A stricter threshold keeps the reworded copy.
    assert near_duplicates([original, reworded, other], threshold=0.95) == {}


def test_an_instruction_containing_a_benchmark_question_is_reported_with_its_item_and_ngram():
    leaked = pair(1, f"Homework: {BENCH_QUESTION.upper()} Show your work.")
    clean = pair(2, "A train travels at 80 kilometers per hour. How long does a 240 kilometer trip take?")
    matches = find_contamination([leaked, clean], [bench(BENCH_QUESTION, "gsm-7")], ngram=13)
    assert [(m.pair_id, m.benchmark_file, m.benchmark_item) for m in matches] == [("pair_0001", "bench.jsonl", "gsm-7")]
    assert len(matches[0].ngram.split()) == 13
    assert matches[0].ngram in " ".join(BENCH_QUESTION.lower().replace(".", " ").replace("?", " ").split())


def test_twelve_shared_words_are_not_contamination_but_a_short_item_is_matched_whole():
    twelve = " ".join(BENCH_QUESTION.split()[:12])
    assert find_contamination([pair(1, twelve)], [bench(BENCH_QUESTION)], ngram=13) == []
    short = "Which planet has the shortest orbital period?"
    matches = find_contamination([pair(2, "Quiz: which planet has the shortest orbital period? Why?")], [bench(short)])
    assert [m.pair_id for m in matches] == ["pair_0002"]


def test_benchmarks_load_from_jsonl_with_their_ids_or_line_numbers(tmp_path):
    path = tmp_path / "mixed.jsonl"
    path.write_text(
        json.dumps({"id": "q-1", "question": "What is 2 + 2?"}) + "\n\n"
        + json.dumps({"prompt": "def add(a, b):"}) + "\n"
    )
    items = load_benchmarks([path])
    assert [(i.item_id, i.line, i.text) for i in items] == [("q-1", 1, "What is 2 + 2?"), ("line 3", 3, "def add(a, b):")]


@pytest.mark.parametrize(
    "bad_line, message",
    [("{not json", "not valid JSON"), (json.dumps({"answer": "4"}), "no question or prompt"), ("[1, 2]", "JSON object")],
)
def test_a_bad_benchmark_line_is_reported_with_file_and_line(tmp_path, bad_line, message):
    path = tmp_path / "bench.jsonl"
    path.write_text(json.dumps({"question": "What is 2 + 2?"}) + "\n" + bad_line + "\n")
    with pytest.raises(ValueError, match=rf"bench\.jsonl:2: .*{message}"):
        load_benchmarks([path])


def test_the_shipped_benchmark_sample_loads_and_catches_its_own_questions():
    items = load_benchmarks([DEFAULT_BENCHMARKS])
    assert len(items) >= 30 and len({i.item_id for i in items}) == len(items)
    pairs = [pair(n, f"Please solve: {item.text}") for n, item in enumerate(items)]
    assert {m.pair_id for m in find_contamination(pairs, items)} == {p.pair_id for p in pairs}


def test_held_out_split_takes_n_per_discipline_and_is_the_same_on_a_rebuild():
    pairs = [pair(n, f"Question {n}", discipline=d) for n, d in enumerate(["Physics"] * 10 + ["Algebra"] * 10)]
    first = hold_out(pairs, per_group=3, seed=7)
    shuffled = pairs[:]
    random.Random(1).shuffle(shuffled)
    rebuilt = hold_out(shuffled, per_group=3, seed=7)
    test_ids = {p.pair_id for p in first if p.split == "test"}
    assert test_ids == {p.pair_id for p in rebuilt if p.split == "test"}
    assert sorted(p.group_name for p in first if p.split == "test") == ["Algebra"] * 3 + ["Physics"] * 3
    assert {p.pair_id for p in hold_out(pairs, per_group=3, seed=8) if p.split == "test"} != test_ids


def test_adding_a_discipline_leaves_the_other_splits_alone():
    physics = [pair(n, f"Question {n}") for n in range(10)]
    astronomy = [pair(100 + n, f"Star question {n}", discipline="Astronomy") for n in range(10)]
    before = {p.pair_id: p.split for p in hold_out(physics, 2)}
    after = {p.pair_id: p.split for p in hold_out(physics + astronomy, 2)}
    assert {k: after[k] for k in before} == before


def test_a_small_discipline_keeps_at_least_half_its_pairs_for_training():
    splits = [p.split for p in hold_out([pair(n, f"Question {n}") for n in range(3)], per_group=50)]
    assert splits.count("test") == 1 and splits.count("train") == 2


def test_curate_counts_every_removal_once_and_splits_what_is_left():
    pairs = [pair(n, f"Explain topic number {n} of mechanics in detail.", f"Topic {n} is explained here.") for n in range(8)]
    pairs += [
        pair(20, "Explain topic number 0 of mechanics in detail.", "Topic 0 is explained here."),  # exact dup
        pair(21, "Explain Newton's second law with a worked example.", LONG_ANSWER),
        pair(22, "Explain Newton's second law with a worked example!", reword(LONG_ANSWER)),
        pair(23, f"Solve this: {BENCH_QUESTION}", "360 kilometers."),
    ]
    result = curate(pairs, [bench(BENCH_QUESTION)], heldout_per_group=2)
    assert result.counts() == {
        "input_pairs": 12,
        "exact_duplicates_removed": 1,
        "near_duplicates_removed": 1,
        "contaminated_removed": 1,
        "train": 7,
        "test": 2,
    }
    assert {(r.pair_id, r.reason, r.kept_pair_id) for r in result.removed} == {
        ("pair_0020", "exact_duplicate", "pair_0000"),
        ("pair_0022", "near_duplicate", "pair_0021"),
        ("pair_0023", "contaminated", ""),
    }
    assert [c.pair_id for c in result.contamination] == ["pair_0023"]
