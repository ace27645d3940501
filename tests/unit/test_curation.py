"""Curation on planted cases: duplicates, benchmark leaks and the held-out split."""

import json
import random
from pathlib import Path

import pytest

from glan_assets.training.curation import (
    curate,
    exact_duplicates,
    find_contamination,
    hold_out,
    load_benchmarks,
    near_duplicates,
    shingles,
)
from glan_assets.training.resources import DEFAULT_BENCHMARKS
from glan_assets.training.schemas import BenchmarkItem, TrainingPairRow
from glan_assets.uit.formats import Instance
from glan_assets.uit.reading import read_collection
from glan_assets.uit.tasks import prompt_text

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
    items = load_benchmarks(DEFAULT_BENCHMARKS)
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


# --- near-duplicates that keep distinct pairs ---------------------------------------------

DUORC = Path(__file__).parents[1] / "data" / "duorc_selfrc_200.json"  # see tests/data/NOTICE.md

LIGHTHOUSE = (
    "Passage: Marta keeps the lighthouse on the northern cliff of Skel Island. Her brother Tomas sails the "
    "supply boat from the mainland every second Thursday, bringing oil, flour and letters. In the winter of "
    "1911 a storm tore the roof off the keeper's cottage and jammed the lamp's clockwork, so Marta turned the "
    "lens by hand for three nights. When the sea calmed, Tomas brought a new spring from the harbour smithy "
    "and the two of them repaired the mechanism before the next convoy passed. The harbour master later "
    "sent Marta a brass medal, which she hung beside the logbook."
)
FERRY = (
    "Passage: The ferry between Orla and the mainland runs twice a day in summer and once a day in winter. "
    "Its captain, Tomas Berg, has sailed the route for twenty years and knows every sandbank of the sound. "
    "When the old diesel engine failed in March, the islanders raised money for a new one at a spring fair, "
    "and the ferry was back in service by May."
)
SKY = (
    "Sunlight contains every colour, and as it passes through the atmosphere it meets nitrogen and oxygen "
    "molecules that are much smaller than its wavelength. Such molecules scatter short wavelengths far more "
    "strongly than long ones, a process called Rayleigh scattering, whose strength grows with the inverse "
    "fourth power of the wavelength. Blue light is therefore scattered across the whole sky and reaches our "
    "eyes from every direction, while red and yellow light mostly travel straight on. Violet is scattered "
    "even more, but the sun emits less of it and our eyes are less sensitive to it, so the sky looks blue."
)
SKY_REWORDED = (
    "Sunlight contains every colour, and as it passes through the atmosphere it meets nitrogen and oxygen "
    "molecules that are much smaller than its wavelength. Such molecules scatter short wavelengths far more "
    "strongly than long ones, a process called Rayleigh scattering, whose strength grows with the inverse "
    "fourth power of the wavelength. Blue light is therefore scattered across the entire sky and reaches our "
    "eyes from every direction, while red and yellow light mostly travel straight on. Violet is scattered "
    "even more, but the sun emits less of it and our eyes are less sensitive to it, so the sky looks blue."
)
SUNSET = (
    "At sunset the sun is low, so its light crosses far more air before it reaches us than at noon. Along "
    "that long path almost all of the blue light is scattered out of the beam by Rayleigh scattering, and "
    "what arrives is mostly red and orange. Dust, smoke and water droplets low in the atmosphere scatter and "
    "absorb light as well, which is why sunsets after a volcanic eruption or a forest fire are especially red."
)
SENTIMENT = "Classify the sentiment of the review. Answers must be one of: negative, positive."


def qa(n: int, passage: str, question: str, answer: str, source: str = "uit") -> TrainingPairRow:
    return pair(n, f"Answer the question from the passage.\n\n{passage}\nQuestion: {question}", answer).model_copy(
        update={"source": source}
    )


def labelled_set() -> tuple[list[TrainingPairRow], dict[str, str]]:
    """Pairs, and the duplicates among them (removed id -> the earlier pair it repeats)."""
    pairs = [
        # Shared-context QA: distinct questions over one passage, two with the same answer.
        qa(1, LIGHTHOUSE, "Where does Marta work?", "At the lighthouse on the northern cliff of Skel Island."),
        qa(2, LIGHTHOUSE, "Who sails the supply boat?", "Tomas."),
        qa(3, LIGHTHOUSE, "Who brings a new spring for the clockwork?", "Tomas."),
        qa(4, LIGHTHOUSE, "How often does the supply boat come?", "Every second Thursday."),
        qa(5, LIGHTHOUSE, "What did the storm of 1911 damage?", "The cottage roof and the lamp's clockwork."),
        qa(6, LIGHTHOUSE, "For how many nights did Marta turn the lens by hand?", "Three nights."),
        qa(7, LIGHTHOUSE, "Where does Marta hang her medal?", "Beside the logbook."),
        # The same question and answer over another passage: a different pair.
        qa(8, FERRY, "Who sails the supply boat?", "Tomas."),
        qa(9, FERRY, "When was the ferry back in service?", "By May."),
        qa(10, FERRY, "How did the islanders pay for the new engine?", "They raised money at a spring fair."),
        # A paraphrased duplicate over the shared passage: re-cased, punctuation changed.
        qa(11, LIGHTHOUSE, "where does Marta work", "At the lighthouse on the northern cliff of Skel Island"),
        # Long answers: a reworded copy (one word changed in 110), and the answer again to a reworded question.
        pair(20, "Explain why the sky is blue.", SKY),
        pair(21, "Explain why the sky is blue!", SKY_REWORDED),
        pair(22, "Explain why sunsets are red.", SUNSET),
        pair(23, "Why is the daytime sky blue?", SKY),
        # Medium answers: one word changed in 30.
        pair(30, "What does a catalyst do?", "A catalyst speeds up a chemical reaction by offering a path with a lower "
             "activation energy, and it is not used up, so a small amount can convert a large quantity of reactants."),
        pair(31, "What does a catalyst do?", "A catalyst speeds up a chemical reaction by offering a route with a lower "
             "activation energy, and it is not used up, so a small amount can convert a large quantity of reactants."),
        pair(32, "What does an enzyme do?", "An enzyme is a protein that speeds up a chemical reaction in a living cell "
             "by binding its substrate in an active site shaped to fit it, and it is not used up."),
        # Dynosaur-style: one task, distinct inputs, three with the same label; one repeated row.
        pair(40, f"{SENTIMENT}\n\nreview: The battery lasts all day and the screen is gorgeous.", "positive"),
        pair(41, f"{SENTIMENT}\n\nreview: It broke after two days and support never answered.", "negative"),
        pair(42, f"{SENTIMENT}\n\nreview: Fast delivery, works exactly as described.", "positive"),
        pair(43, f"{SENTIMENT}\n\nreview: Comfortable, quiet and cheaper than the shop down the road.", "positive"),
        pair(44, f"{SENTIMENT}\n\nreview: fast delivery - works exactly as described!", "positive"),
        # A true copy, spacing and case aside.
        pair(50, "Name the largest planet of the solar system.", "Jupiter, a gas giant more than 300 times Earth's mass."),
        pair(51, "name the largest  planet of the solar system.", "Jupiter, a gas giant more than 300 times Earth's mass."),
    ]
    duplicates = {"pair_0011": "pair_0001", "pair_0021": "pair_0020", "pair_0023": "pair_0020",
                  "pair_0031": "pair_0030", "pair_0044": "pair_0042", "pair_0051": "pair_0050"}
    return pairs, duplicates


def precision_recall(found: dict[str, str], expected: dict[str, str]) -> tuple[float, float]:
    right = sum(expected.get(k) == v for k, v in found.items())
    return (right / len(found) if found else 1.0), right / len(expected)


def test_shared_context_pairs_look_like_duplicates_as_whole_texts():
    # What makes the labelled set hard: whole pairs over one passage are near-identical.
    pairs = {p.pair_id: p for p in labelled_set()[0]}
    whole = [shingles(f"{pairs[i].instruction}\n{pairs[i].response}", 5) for i in ("pair_0002", "pair_0006")]
    assert len(whole[0] & whole[1]) / len(whole[0] | whole[1]) > 0.8


def test_near_duplicates_on_the_labelled_set_catch_copies_and_rewordings_and_keep_distinct_pairs():
    pairs, expected = labelled_set()
    found = near_duplicates(pairs)
    assert precision_recall(found, expected) == (1.0, 1.0), found
    # The kept pair of a group is the first by id, whatever order the pairs come in.
    assert near_duplicates(pairs[::-1]) == found


def test_a_stricter_threshold_keeps_rewordings_and_still_removes_copies():
    pairs, expected = labelled_set()
    found = near_duplicates(pairs, threshold=0.95)
    assert found == {k: expected[k] for k in ("pair_0011", "pair_0044", "pair_0051")}


def duorc_pairs() -> list[TrainingPairRow]:
    """The DuoRC task file as UIT's training pairs read it: instruction and input, then the output."""
    instances = [i for i in read_collection(DUORC) if isinstance(i, Instance)]
    return [
        TrainingPairRow(pair_id=f"pair_{n:04d}", source_id=f"uni_{n:04d}", source="uit", group_name="duorc",
                        instruction=prompt_text(i.instruction, i.input), response=i.output)
        for n, i in enumerate(instances)
    ]


def test_distinct_questions_over_shared_movie_plots_are_not_near_duplicates():
    pairs = duorc_pairs()
    assert len(pairs) == 200 and len({p.instruction.split("\n")[-1] for p in pairs}) < 40  # 33 plots
    removed = near_duplicates(pairs)
    assert len(removed) <= len(pairs) // 10, removed  # issue 24's target; compared whole, 163 went
    # A true copy planted among them is still caught.
    copy = pairs[17].model_copy(update={"pair_id": "pair_9999", "response": pairs[17].response + " "})
    assert near_duplicates([*pairs, copy])["pair_9999"] == pairs[17].pair_id
