"""Quality signals: each rule on planted and real pairs, IFD on the real scorer, the judge's
parser, stage and endpoint (fake and embedded), and the selection by threshold."""

import json
from pathlib import Path

import pytest
import torch

from glan_assets import stages
from glan_assets.dynosaur import method as dynosaur
from glan_assets.glan import method as glan
from glan_assets.uit import method as uit
from glan_assets.parsing import Cut, ParseError, parse_structured
from glan_assets.dynosaur.schemas import InstanceRow, TaskRow
from glan_assets.quality import calibration, rules
from glan_assets.dynosaur.contexts import dynosaur_context, field_values
from glan_assets.uit.contexts import uit_context
from glan_assets.quality.ifd import IFDScore, ifd_scores
from glan_assets.quality.judge import JUDGE_STAGE, Verdict, judge_llm, judge_request
from glan_assets.quality.rules import Flag, PairContext, check, example_strings
from glan_assets.quality.selection import PairQuality, select
from glan_assets.quality.settings import QualitySettings
from glan_assets.training.schemas import TrainingPairRow
from glan_assets.training.training_set import removed_rows
from glan_assets.uit.collections_file import DEFAULT_REGISTRY
from glan_assets.uit.formats import Instance
from glan_assets.uit.schemas import RawInstructionRow, UnifiedRow
from glan_assets.uit.reading import read_collection
from glan_assets.uit.tasks import prompt_text
from resources.llm import LLMResource
from resources.local_models import local_model_dir
from resources.scorer import PairLoss, load_scorer
from tests.fake_llm import FakeLLM

DUORC = Path(__file__).parent / "data" / "duorc_selfrc_200.json"
DEMO_COLLECTIONS = DEFAULT_REGISTRY.parent
S = QualitySettings()
WORKED_EXAMPLES = {m.name: m.worked_examples for m in (glan.METHOD, uit.METHOD, dynosaur.METHOD)}


def rule_names(instruction: str, response: str, ctx: PairContext = PairContext()) -> list[str]:
    return [f.rule for f in check(instruction, response, ctx)]


# --- rules on planted pairs -----------------------------------------------------------------

GLAN = PairContext(source="glan")


@pytest.mark.parametrize(
    "instruction, response, ctx, rule",
    [
        ("Explain Ohm's law.", "  \n", GLAN, "empty_response"),
        ("Explain in detail how a dam makes electricity.", "With turbines.", GLAN, "too_short"),
        ("Is the review positive or negative? Answers must be one of: negative, positive.\n\nreview: Great.",
         "It is positive, because the reviewer says the product is great and that is a clearly positive word.",
         PairContext(), "too_long"),
        ("What is rain?", "Rain is water falling from clouds. " * 4, GLAN, "repetition"),
        ("List three fruits.", "- Apple\n- Apple\n- Apple\n- Pear", GLAN, "repetition"),
        ("Why do leaves change colour in autumn?", "Why do leaves change colour in autumn?", GLAN, "copies_instruction"),
        ("Definition: Write its antonym.\n\nPositive Example 1 -\nInput: hot\nOutput: cold\n\nearly",
         "Positive Example 1 - Input: hot Output: cold", PairContext(input="early"), "copies_instruction"),
        ("Definition: Give the capital.\n\nPositive Example 1 -\nInput: Premise: The sun is shining.\nOutput: yes\n\nPeru",
         "Lima", PairContext(source="uit", input="Peru", worked_examples=example_strings(uit.METHOD.worked_examples)),
         "copies_example"),
        ("Key concepts: entropy, heat engines.", "Entropy measures disorder, and heat engines turn heat into work.",
         GLAN, "asks_nothing"),
        ("Here is a sample question about tides, written for session 2.", "Tides come from the Moon.", GLAN,
         "asks_nothing"),
        ("Write a haiku about snow.", "As an AI language model, I cannot write poetry.", GLAN, "refusal"),
        ("How do I bake bread?", "I'm sorry, but I can't assist with that.", GLAN, "refusal"),
        ("Describe a volcano.", "A volcano is an opening in the crust. Magma rises through it and", GLAN, "cut_off"),
        ("Describe a volcano.", "A volcano has three main parts:", GLAN, "cut_off"),
        ("Describe a volcano.", "A volcano is an opening in the crust. Magma rises through it and erupts as lava "
         "over many", GLAN, "cut_off"),
        ("Definition: Classify the review.\n\nPositive Example 1 -\nInput: Awful.\nOutput: positive\n\n"
         "Positive Example 2 -\nInput: Awful.\nOutput: negative\n\nNice.", "positive",
         PairContext(input="Nice."), "contradicting_demonstrations"),
        ("Definition: Classify the review.\n\nPositive Example 1 -\nInput: Awful.\nOutput: positive\n\nNice.",
         "positive", PairContext(input="Nice.", gold=(("Awful.", "negative"), ("Nice.", "positive"))),
         "contradicting_demonstrations"),
        ("Answer.\n\nquestion: Capital of Peru?\nanswer: Lima", "Lima",
         PairContext(input_fields=("question", "answer"), output_field="answer"), "output_in_inputs"),
        ("Answer.\n\nquestion: Capital of Peru?\ncapital_text: Lima", "Lima",
         PairContext(input_values={"question": "Capital of Peru?", "capital_text": "Lima"}), "output_in_inputs"),
    ],
)
def test_each_rule_flags_its_planted_defect_with_a_reason(instruction, response, ctx, rule):
    flags = {f.rule: f for f in check(instruction, response, ctx)}
    assert rule in flags, flags
    assert flags[rule].reason and isinstance(flags[rule].value, float | int)


@pytest.mark.parametrize(
    "instruction, response, ctx",
    [
        # A label, a name, a number: short and without a full stop by design.
        ("Is the review positive or negative? Answers must be one of: negative, positive.\n\nreview: Great.",
         "positive", PairContext()),
        ("Explain why the sky is blue.", "Short wavelengths of sunlight scatter far more off air molecules, so blue "
         "light reaches us from every direction.", GLAN),
        # An extractive answer copies a span of a long passage: no copy of the instruction.
        ("Answer from the passage.\n\nPassage: Marta keeps the lighthouse on the northern cliff of Skel Island, "
         "and her brother sails the supply boat every second Thursday.\nQuestion: Where is the lighthouse?",
         "On the northern cliff of Skel Island",
         PairContext(input="Passage: Marta keeps the lighthouse on the northern cliff of Skel Island, and her brother "
                     "sails the supply boat every second Thursday.\nQuestion: Where is the lighthouse?")),
        # A good answer may open by restating a short question.
        ("State Newton's second law.", "Newton's second law states that the net force on a body equals its mass "
         "times its acceleration, F = ma.", GLAN),
        # A list and a code block end without a full stop.
        ("List two gases in air.", "Two of them:\n- nitrogen\n- oxygen", GLAN),
        ("Write a Python function that adds two numbers.", "```python\ndef add(a, b):\n    return a + b\n```", GLAN),
        # A "true or false?" question may be answered with reasons, and briefly.
        ("Is the claim that all metals are solid true or false?", "False: mercury is a metal and it is liquid at room "
         "temperature, so the claim does not hold for every metal.", GLAN),
        ("Explain whether the claim is true or false.", "False.", GLAN),
        # An imperative question with no question mark still asks.
        ("Calculate 12% of 250.", "12% of 250 is 0.12 × 250 = 30.", GLAN),
        # Demonstrations that agree with the gold labels.
        ("Definition: Classify the review.\n\nPositive Example 1 -\nInput: Awful.\nOutput: negative\n\nNice.",
         "positive", PairContext(input="Nice.", gold=(("Awful.", "negative"), ("Nice.", "positive"), ("Bad.", "negative"),
                                                      ("Good.", "positive")))),
        # The output's value under another field name is not among the inputs.
        ("Answer.\n\nquestion: Capital of Peru?", "Lima",
         PairContext(input_fields=("question",), output_field="answer", input_values={"question": "Capital of Peru?"})),
    ],
)
def test_good_pairs_pass_every_rule(instruction, response, ctx):
    assert check(instruction, response, ctx) == []


def test_repetition_is_measured_as_gopher_does():
    assert rules.repeated_ngram_share("one two three four five") == 0.0
    looped = "the answer is demand and " * 4
    assert rules.repeated_ngram_share(looped) == 1.0
    assert rules.repeated_line_share("a\nb\na\nb") == 0.5


def test_thresholds_are_settings():
    said = "Photosynthesis turns light into sugar. " * 2
    assert "repetition" in rule_names("What is photosynthesis?", said, GLAN)
    lax = QualitySettings(max_repeated_ngram_share=1.0)
    assert "repetition" not in [f.rule for f in check("What is photosynthesis?", said, GLAN, lax)]


def test_demonstrations_are_read_from_a_super_ni_definition():
    text = "Definition: X.\n\nPositive Example 1 -\nInput: a b\nOutput: c\n\nPositive Example 2 -\nInput: d\nOutput: e f"
    assert rules.demonstrations(text) == [("a b", "c"), ("d", "e f")]
    assert rules.label_set(["yes", "no", "yes", "no"]) == {"yes", "no"}
    assert rules.label_set(["Bonjour.", "Merci.", "Où est la gare ?"]) is None  # each output differs: no label set


def test_the_issues_garbage_pairs_are_flagged():
    # GLAN: issue 24's instruction that asks nothing, with its answer cut off.
    flags = rule_names(
        "Here's a possible answer: Attached: Session 3: Science and Physical Science / Key concepts: science, biology, "
        "chemistry ... This is a hard homework question, written using the key concepts ...",
        "The answer to this question is: Science and Physical Science Justification:", GLAN,
    )
    assert {"asks_nothing", "cut_off"} <= set(flags)
    # UIT: a rewrite whose two made-up demonstrations label one review both ways.
    demo = "It broke after two days and support never answered."
    instruction = (f"Definition: Classify the review.\n\nPositive Example 1 -\nInput: {demo}\nOutput: positive\n\n"
                   f"Positive Example 2 -\nInput: {demo}\nOutput: negative\n\nFast delivery.")
    gold = tuple((r["input"], r["output"]) for r in map(json.loads, (DEMO_COLLECTIONS / "alpaca.jsonl").read_text().splitlines()[:3]))
    assert "contradicting_demonstrations" in rule_names(instruction, "positive", PairContext(input="Fast delivery.", gold=gold))


def test_no_rule_flags_real_duorc_pairs():
    # 200 human-written QA pairs no one here wrote: short, often unpunctuated, copied spans.
    instances = [i for i in read_collection(DUORC) if isinstance(i, Instance)]
    gold = tuple((i.input, i.output) for i in instances)
    examples = example_strings(uit.METHOD.worked_examples)
    flagged = {
        n: check(prompt_text(i.instruction, i.input), i.output,
                        PairContext(source="uit", input=i.input, gold=gold, worked_examples=examples))
        for n, i in enumerate(instances)
    }
    assert len(instances) == 200
    assert {k: v for k, v in flagged.items() if v} == {}


# What the rules are known not to catch in the calibration set; a change here is a change in
# the benchmark's precision and recall, and should be a deliberate one.
KNOWN_MISSES = {"b14": "a plain wrong label: no demonstration, no gold to compare with",
                "b29": "one long sentence cut off without a sign: no earlier sentence end"}
KNOWN_FALSE_FLAGS = {"d13": "repetition: 'it was the best of times, it was the worst of times...' repeats by design"}


def test_rules_on_the_calibration_set():
    pairs = calibration.load(WORKED_EXAMPLES)
    assert len(pairs) >= 80 and sum(p.bad for p in pairs) * 2 == len(pairs)
    for p in pairs:
        flags = [f.rule for f in check(p.instruction, p.response, p.context)]
        targeted = [r for r, defect in calibration.TARGETS.items() if defect == p.defect]
        if p.pair_id in KNOWN_FALSE_FLAGS:
            assert flags, p
        elif not p.bad:
            assert flags == [], (p.pair_id, flags)
        elif targeted and p.pair_id not in KNOWN_MISSES:
            assert set(targeted) <= set(flags), (p.pair_id, p.defect, flags)
    assert {p.pair_id for p in pairs} >= set(KNOWN_MISSES) | set(KNOWN_FALSE_FLAGS)


def test_calibration_measures():
    assert calibration.auc([0.9, 0.8, 0.1, 0.2], [True, True, False, False]) == 1.0
    assert calibration.auc([0.5, 0.5], [True, False]) == 0.5
    low, high = calibration.auc_interval([0.9, 0.7, 0.6, 0.4, 0.3, 0.1] * 5, [True, False, True, False, True, False] * 5)
    assert 0.0 <= low <= calibration.auc([0.9, 0.7, 0.6, 0.4, 0.3, 0.1], [True, False] * 3) <= high <= 1.0
    assert calibration.precision_recall({"a", "b"}, {"a"}, {"a", "c"}) == {"flagged": 2, "precision": 0.5, "recall": 0.5}


def test_a_bad_calibration_line_names_its_file_and_line(tmp_path):
    path = tmp_path / "cal.jsonl"
    path.write_text('{"id": "x", "source": "glan", "label": "good", "defect": "", "instruction": "Q?", "response": "A."}\n'
                    '{"id": "y"}\n')
    with pytest.raises(ValueError, match=r"cal\.jsonl:2: not a labelled pair"):
        calibration.load(WORKED_EXAMPLES, path)


# --- IFD ------------------------------------------------------------------------------------

def test_ifd_is_the_ratio_of_the_two_mean_losses():
    fake = lambda pairs: [(PairLoss(6.0, 3), PairLoss(12.0, 3)), (PairLoss(0.0, 0), PairLoss(0.0, 0))]  # noqa: E731
    first, empty = ifd_scores(fake, [("Q", "A b c"), ("Q", "")])
    assert (first.loss_given_instruction, first.loss_alone, first.tokens, first.ifd) == (2.0, 4.0, 3, 0.5)
    assert empty.ifd is None


@pytest.fixture(scope="module")
def scorer():
    before = torch.get_num_threads()
    torch.set_num_threads(1)  # on a shared CPU two OpenMP threads stall on each other
    yield load_scorer(str(local_model_dir("smollm2-135m-instruct")))
    torch.set_num_threads(before)


MATCHED = ("Translate into French: Thank you very much.", "Merci beaucoup.")
ANSWER = ("Explain why ice floats on water.", "Ice is less dense than liquid water, because hydrogen bonds hold its "
          "molecules in an open lattice, so it floats.")


def test_a_mismatched_pair_has_a_higher_ifd_than_matched_ones_on_the_real_scorer(scorer):
    mismatched = ("What is the capital of Australia?", ANSWER[1])
    scores = ifd_scores(lambda pairs: scorer.score_with_and_without(pairs, 8), [MATCHED, ANSWER, mismatched])
    matched, answer, off = (s.ifd for s in scores)
    assert off > 1.0 > max(matched, answer), scores  # an unrelated question makes the answer harder to predict
    assert all(s.tokens > 0 and s.loss_alone > 0 for s in scores)


def test_both_losses_come_from_one_batched_pass_equal_to_scoring_apart(scorer):
    pairs = [MATCHED, ANSWER]
    both = scorer.score_with_and_without(pairs, batch_size=4)
    given, alone = scorer.score(pairs, batch_size=1), scorer.score([("", t) for _, t in pairs], batch_size=1)
    for (b_given, b_alone), g, a in zip(both, given, alone):
        assert b_given.tokens == g.tokens == b_alone.tokens == a.tokens
        assert abs(b_given.mean - g.mean) < 1e-3 and abs(b_alone.mean - a.mean) < 1e-3


# --- the judge ------------------------------------------------------------------------------

@pytest.mark.parametrize(
    "reply, score",
    [
        ('{"reason": "Correct and clear.", "score": 9}', 9),
        ('```json\n{"reason": "Off topic.", "score": 2}\n```', 2),
        ("The answer is accurate but brief.\n\nRating: [[7]]", 7),  # MT-Bench's own format
        ("Mostly right. Score: 6/10", 6),
    ],
)
def test_the_judges_parser_reads_a_score_and_reason(reply, score):
    verdict = parse_structured(reply, Verdict).value
    assert verdict.score == score and verdict.reason and "[[" not in verdict.reason


def test_a_judge_reply_cut_before_its_brace_is_cut_not_repaired():
    # json-repair would close it, but a repaired reply is re-asked like any cut one
    with pytest.raises(Cut):
        parse_structured('Sure! {"reason": "Partly right", "score": 5,', Verdict)


@pytest.mark.parametrize("reply", ['{"reason": "Great.", "score": 11}', '{"reason": "Fine."}',
                                   "The answer mentions 42 and 7 but gives no rating.", ""])
def test_a_judge_reply_without_a_valid_score_is_an_error(reply):
    with pytest.raises(ParseError):
        parse_structured(reply, Verdict)


def test_a_long_reason_is_cut_not_rejected():
    verdict = parse_structured(json.dumps({"reason": "word " * 200, "score": 4}), Verdict).value
    assert verdict.score == 4 and len(verdict.reason) <= 300


def test_the_judge_stage_asks_greedily_for_a_schema_with_the_reason_first():
    assert JUDGE_STAGE.sampling.temperature == 0.0 and JUDGE_STAGE.schema is Verdict
    assert list(Verdict.model_json_schema()["properties"]) == ["reason", "score"]
    request = judge_request("pair_1", "Q {with braces}?", "x" * 5000)
    assert request.item_id == "pair_1" and "Q {with braces}?" in request.messages[-1]["content"]
    assert "[... cut for the judge]" in request.messages[-1]["content"]


@pytest.fixture
def fake_judge_llm():
    with FakeLLM() as llm:  # its judge: 2 for a cut-off answer, 8 otherwise
        yield llm


def test_the_judge_runs_as_a_stage_through_the_transport_and_cache(fake_judge_llm, tmp_path):
    llm = LLMResource(base_url=fake_judge_llm.base_url, cache_path=str(tmp_path / "cache.sqlite"))
    requests = [judge_request("pair_1", "Describe a volcano.", "A volcano is an opening in the crust."),
                judge_request("pair_2", "Describe a volcano.", "A volcano is an opening and")]
    batch = stages.run(llm, JUDGE_STAGE, requests)
    assert [r.value.score for r in batch.replies] == [8, 2] and batch.stats.calls == 2
    sent = fake_judge_llm.requests[0]
    assert sent["temperature"] == 0.0 and sent["response_format"]["json_schema"]["name"] == "Verdict"
    again = stages.run(llm, JUDGE_STAGE, requests)  # a rebuild re-judges nothing
    assert again.stats.calls == 0 and again.stats.cache_hits == 2
    assert [r.value for r in again.replies] == [r.value for r in batch.replies]


def test_an_unusable_judge_reply_becomes_an_error_for_the_rejects(fake_judge_llm, tmp_path):
    fake_judge_llm.garbage_for = "Describe a volcano."  # prose with no score, on every attempt
    llm = LLMResource(base_url=fake_judge_llm.base_url, cache_path=str(tmp_path / "cache.sqlite"), parse_attempts=2)
    (reply,) = stages.run(llm, JUDGE_STAGE, [judge_request("pair_1", "Describe a volcano.", "Lava.")]).replies
    assert not reply.ok and "unparseable after 2 attempts" in reply.error and reply.attempts == 2


def test_a_judge_endpoint_of_its_own_takes_the_judges_requests(fake_judge_llm, tmp_path):
    with FakeLLM() as generator:
        llm = LLMResource(base_url=generator.base_url, api_key="sk-generator", cache_path=str(tmp_path / "c.sqlite"))
        judge = judge_llm(llm, fake_judge_llm.base_url, "sk-judge")
        assert judge_llm(llm) is llm  # unset: the generator's endpoint
        batch = stages.run(judge, JUDGE_STAGE, [judge_request("pair_1", "Name a gas.", "Oxygen.")])
        assert batch.replies[0].value.score == 8
        assert generator.requests == [] and len(fake_judge_llm.requests) == 1
        assert fake_judge_llm.requests[0]["authorization"] == "Bearer sk-judge"
        assert judge.cache_path == llm.cache_path and judge.max_concurrency == llm.max_concurrency


@pytest.mark.embedded
@pytest.mark.timeout(900)
def test_the_embedded_model_judges_over_http_with_constrained_output(tmp_path, monkeypatch):
    from resources import embedded

    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    # A server of its own, not the user's shared one.
    llm = LLMResource(base_url="", cache_path=str(tmp_path / "cache.sqlite"), embedded_state=str(tmp_path / "embedded"))
    try:
        batch = stages.run(llm, JUDGE_STAGE, [judge_request(f"pair_{i}", q, a) for i, (q, a) in
                                              enumerate([MATCHED, ANSWER, ("Describe a volcano.", "")])])
    finally:
        embedded.stop_server(tmp_path / "embedded")
    assert batch.stats.calls >= 3
    # Constrained decoding: every reply is the schema's JSON, first time.
    assert all(r.ok and r.attempts == 1 and 1 <= r.value.score <= 10 for r in batch.replies), batch.replies


# --- selection ------------------------------------------------------------------------------

def q(n: int, ifd: float | None = 0.5, judge: float | None = 8, source: str = "glan", flags=()) -> PairQuality:
    return PairQuality(f"pair_{n:02d}", source, tuple(flags), ifd, judge)


CUT = Flag("cut_off", 1.0, "the response ends on 'and'")


def test_selection_keeps_pairs_that_pass_every_signal_and_names_the_first_failure():
    scored = [q(1), q(2, flags=[CUT], ifd=1.4), q(3, ifd=1.2), q(4, judge=3), q(5, judge=None), q(6, ifd=None)]
    result = select(scored, QualitySettings(judge_min=4))
    assert result.kept == ["pair_01"]
    dropped = {d.pair_id: d for d in result.dropped}
    assert {k: (d.signal, d.value) for k, d in dropped.items()} == {
        "pair_02": ("cut_off", 1.0), "pair_03": ("ifd", 1.2), "pair_04": ("judge", 3),
        "pair_05": ("judge", None), "pair_06": ("ifd", None),
    }
    assert "IFD 1.400 above 1" in dropped["pair_02"].detail  # every failure is in the detail


def test_changing_a_threshold_reselects_from_the_same_scores():
    scored = [q(1, judge=3), q(2, judge=5), q(3, judge=9), q(4, judge=None)]
    assert select(scored, S).kept == ["pair_01", "pair_02", "pair_03"]  # no judge floor by default
    assert select(scored, QualitySettings(judge_min=4)).kept == ["pair_02", "pair_03"]
    assert select(scored, QualitySettings(judge_min=6)).kept == ["pair_03"]
    assert select(scored, QualitySettings(judge_min=1, keep_unjudged=True)).kept == ["pair_01", "pair_02", "pair_03", "pair_04"]


def test_a_pair_outside_the_judge_sample_fails_only_a_judge_floor():
    unasked = PairQuality("pair_01", "glan", (), 0.5, None, judge_asked=False)
    assert select([unasked], S).kept == ["pair_01"]  # no floor by default: nothing to reach
    (dropped,) = select([unasked], QualitySettings(judge_min=4)).dropped
    assert (dropped.signal, dropped.value) == ("judge", None) and "outside the judge's sample" in dropped.detail
    assert select([unasked], QualitySettings(judge_min=4, keep_unjudged=True)).kept == ["pair_01"]


def test_flags_drop_a_pair_unless_drop_flagged_is_off():
    flagged = [q(1, flags=[CUT])]
    assert select(flagged, S).kept == [] and select(flagged, QualitySettings(drop_flagged=False)).kept == ["pair_01"]


def test_the_top_ifd_share_is_taken_per_source_and_is_stable():
    scored = [q(n, ifd=n / 10) for n in range(1, 9)] + [q(10 + n, ifd=n / 100, source="uit") for n in range(1, 5)]
    result = select(scored, QualitySettings(ifd_top_fraction=0.5))
    assert result.kept == ["pair_05", "pair_06", "pair_07", "pair_08", "pair_13", "pair_14"]
    low = {d.pair_id: d for d in result.dropped}["pair_01"]
    assert low.signal == "ifd" and "top 50% of glan" in low.detail
    assert select(list(reversed(scored)), QualitySettings(ifd_top_fraction=0.5)) == result
    with pytest.raises(ValueError, match="GLAN_IFD_TOP_FRACTION"):
        select(scored, QualitySettings(ifd_top_fraction=0))


def test_dropped_pairs_become_training_removed_rows_with_their_signal():
    pair = TrainingPairRow(pair_id="pair_02", source_id="ans_2", source="glan", group_name="Physics",
                           instruction="Q?", response="A and")
    (row,) = removed_rows([pair], select([q(2, flags=[CUT])], S))
    assert (row.reason, row.signal, row.signal_value, row.source_id) == ("quality", "cut_off", 1.0, "ans_2")
    assert "ends on 'and'" in row.detail


# --- contexts from stored rows ----------------------------------------------------------------

def test_a_dynosaur_input_is_read_back_by_field():
    text = "title: Night Train\nreview: Slow,\nbut the ending pays off.\nsentiment: positive"
    assert field_values(text, ["title", "review", "sentiment"]) == {
        "title": "Night Train", "review": "Slow,\nbut the ending pays off.", "sentiment": "positive"}
    assert field_values("title: Night Tr", ["title", "review"]) == {"title": "Night Tr"}  # cut at max_chars


def test_contexts_are_built_from_the_methods_rows():
    task = TaskRow(task_id="dtask_1", dataset_id="dset_1", dataset="qa", task_index=1, instruction="Answer.",
                   input_fields=["question", "answer_text"], output_field="answer", llm_calls=1, model="m")
    instance = InstanceRow(instance_id="dinst_1", task_id="dtask_1", dataset="qa", instruction="Answer.",
                           input="question: Capital of Peru?\nanswer_text: Lima", output="Lima", source_row=0,
                           license="mit", source_url="")
    ctx = dynosaur_context(instance, task)
    assert rule_names(f"{instance.instruction}\n\n{instance.input}", instance.output, ctx) == ["output_in_inputs"]
    assert "decide whether the film review is positive or negative" in ctx.worked_examples

    raws = [RawInstructionRow(raw_id=f"raw_{i}", task_id="t1", collection="c", task="sentiment",
                              instruction="Classify the review.", input=text, output=label, source_format="alpaca",
                              source_row=str(i), turns="[]", license="x")
            for i, (text, label) in enumerate([("Awful.", "negative"), ("Nice.", "positive"), ("Bad.", "negative"),
                                               ("Good.", "positive")])]
    unified = UnifiedRow(unified_id="uni_1", raw_id="raw_1", candidate_id="ucand_1", task_id="t1", collection="c",
                         task="sentiment", instruction="Definition: Classify the review.\n\nPositive Example 1 -\n"
                         "Input: Awful.\nOutput: positive", input="Nice.", output="positive", turns="[]",
                         source_format="alpaca", license="x")
    ctx = uit_context(unified, raws)
    assert ctx.gold[0] == ("Awful.", "negative") and ctx.input == "Nice."
    assert rule_names(f"{unified.instruction}\n\n{unified.input}", unified.output, ctx) == ["contradicting_demonstrations"]
    assert glan.METHOD.pair_contexts(store=None, key="Physics")("ans_1") == PairContext(source="glan")
