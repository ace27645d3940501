"""model_eval: benchmark task files, lm-eval's results read back, what the card says, when the
evaluation reruns, and one real run of lm-eval on the packaged base and a tuned adapter."""

import json
import os
import shutil
from pathlib import Path

import dagster as dg
import pytest
import yaml

from glan_assets.plan import ADAPTER_VERSION, EVAL_VERSION, History, Latest, eval_reason
from glan_assets.registry import TRAINING, resources_from_env
from glan_assets.training.curation import load_benchmarks
from glan_assets.training.evaluation import (
    CARD_START,
    BenchmarkResult,
    Score,
    TaskFileError,
    check_data,
    compare,
    find_tasks,
    parse_score,
    read_task,
    verdict,
    with_section,
    card_section,
    write_tasks,
)
from glan_assets.training.model_eval import adapter_version, eval_version, model_eval, read_results
from glan_assets.training.resources import BENCHMARKS_DIR, DEFAULT_BENCHMARKS, DEFAULT_RECIPES, EvalSettings, TrainingSettings
from glan_assets.training.schemas import ContaminationRow, RemovedPairRow
from resources.storage import DuckDBStore
from tests.test_training import fill_two_disciplines, materialize, metadata_of, tiny_training
from glan_assets.quality.settings import QualitySettings
from tests.training_rows import materialize_training, teaching_pairs, write_answered_questions

training_set, model_checkpoint = TRAINING.training_set, TRAINING.checkpoint

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("HF_DATASETS_OFFLINE", "1")


def test_the_shipped_benchmarks_are_task_files_with_their_provenance_and_the_decontamination_set():
    tasks, errors = find_tasks(BENCHMARKS_DIR)
    assert errors == {}
    assert {t.name: t.generative for t in tasks} == {"glan_gsm8k": True, "glan_mmlu": False}
    for folder in ("gsm8k", "mmlu"):
        readme = (BENCHMARKS_DIR / folder / "README.md").read_text()
        assert "MIT" in readme and "commit" in readme and "draw_samples.py" in readme
    # What is evaluated on is what training is decontaminated against.
    tested = {str(f) for t in tasks for f in t.data_files if f.name == "test.jsonl"}
    assert tested == set(TrainingSettings().benchmarks) == {str(p) for p in DEFAULT_BENCHMARKS}
    items = load_benchmarks(DEFAULT_BENCHMARKS)
    assert len(items) == 200 and len({i.item_id for i in items}) == 200
    # A multiple-choice item's options are part of what a copied question must contain.
    mmlu = json.loads((BENCHMARKS_DIR / "mmlu" / "test.jsonl").read_text().splitlines()[0])
    assert next(i.text for i in items if i.item_id == mmlu["id"]).endswith(mmlu["choices"][-1])


def user_task(folder: Path, body: str, data: str = '{"q": "2+2?", "a": "4"}\n') -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "mine.jsonl").write_text(data)
    path = folder / "mine.yaml"
    path.write_text(body)
    return path


MINE = """\
task: mine
dataset_path: json
dataset_kwargs:
  data_files:
    test: mine.jsonl
test_split: test
output_type: generate_until
doc_to_text: !function helpers.prompt
doc_to_target: "{{a}}"
metric_list:
  - metric: exact_match
"""


def test_a_user_task_file_is_rewritten_with_absolute_data_and_its_function_helpers(tmp_path):
    folder = tmp_path / "tasks"
    user_task(folder / "custom", MINE)
    (folder / "custom" / "helpers.py").write_text("def prompt(doc):\n    return doc['q']\n")

    (task,) = find_tasks(folder)[0]
    out = write_tasks([task], folder, tmp_path / "run")

    written = (out / "custom" / "mine.yaml").read_text()
    assert "!function 'helpers.prompt'" in written or "!function helpers.prompt" in written
    assert yaml.safe_load(written.replace("!function", ""))["dataset_kwargs"]["data_files"]["test"] == str(
        (folder / "custom" / "mine.jsonl").resolve()
    )
    assert (out / "custom" / "helpers.py").is_file() and not (out / "custom" / "mine.jsonl").exists()


@pytest.mark.parametrize(
    ("body", "message"),
    [
        ("task: x\n  bad: [\n", r"mine\.yaml:\d+: not valid YAML"),
        ("dataset_path: json\n", r"mine\.yaml: not an lm-eval task file"),
        ("task: x\ndataset_path: hellaswag\n", r"mine\.yaml: needs `dataset_path: json`"),
        ("task: x\ndataset_path: json\ndataset_kwargs: {data_files: {test: gone.jsonl}}\n", r"gone\.jsonl \(test\) does not exist"),
    ],
)
def test_a_bad_task_file_is_named_and_the_others_still_load(tmp_path, body, message):
    folder = tmp_path / "tasks"
    user_task(folder, body)
    shutil.copytree(BENCHMARKS_DIR / "gsm8k", folder / "gsm8k")

    tasks, errors = find_tasks(folder)

    assert [t.name for t in tasks] == ["glan_gsm8k"]
    (error,) = errors.values()
    assert __import__("re").search(message, error) and "\n" not in error


def test_a_malformed_data_line_is_named_by_file_and_line(tmp_path):
    path = user_task(tmp_path, MINE.replace("!function helpers.prompt", "'{{q}}'"), '{"q": "a", "a": "b"}\n{"q": oops\n')
    with pytest.raises(TaskFileError, match=r"mine\.jsonl:2: not valid JSON .*\[task mine\]"):
        check_data(read_task(path))


def lm_eval_result(task: str, metrics: dict, n: int, output_type: str = "multiple_choice", samples=()) -> dict:
    """The shape `lm_eval.simple_evaluate` returns (as 0.4.13 does), for the parts read here."""
    return {
        "results": {task: {"name": task, "alias": task, "sample_len": n, **metrics}},
        "n-samples": {task: {"original": 100, "effective": n}},
        "configs": {task: {"output_type": output_type}},
        "samples": {task: list(samples)},
    }


def test_the_first_metric_with_a_standard_error_is_the_score():
    gsm = lm_eval_result(
        "glan_gsm8k",
        {"exact_match,flexible-extract": 0.2, "exact_match_stderr,flexible-extract": 0.1,
         "exact_match,strict-match": 0.0, "exact_match_stderr,strict-match": 0.0},
        5, "generate_until", [{"resps": [["12 apples"]], "arguments": [["q", {}]]}] * 5,
    )
    score = parse_score(gsm, "glan_gsm8k", 10.0, count_tokens=lambda text: len(text.split()))
    assert (score.metric, score.value, score.stderr, score.items) == ("exact_match,flexible-extract", 0.2, 0.1, 5)
    assert (score.requests, score.generated_tokens) == (5, 10)

    one = lm_eval_result("glan_mmlu", {"acc,none": 1.0, "acc_stderr,none": "N/A"}, 1)
    assert parse_score(one, "glan_mmlu", 1.0).stderr is None


def scores(base: float, tuned: float, se: float | None, items: int = 20) -> tuple[Score, Score]:
    return (Score(metric="acc,none", value=base, stderr=se, items=items, seconds=3.0),
            Score(metric="acc,none", value=tuned, stderr=se, items=items, seconds=4.0, requests=80))


@pytest.mark.parametrize(
    ("base", "tuned", "se", "significant", "words"),
    [
        (0.30, 0.35, 0.10, False, "cannot tell the two models apart"),
        (0.30, 0.60, 0.05, True, "the tuned model is better"),
        (0.60, 0.30, 0.05, True, "the training data made the model worse"),
        (0.30, 0.35, None, False, "nothing can be concluded"),
    ],
)
def test_the_card_says_what_the_difference_supports(base, tuned, se, significant, words):
    task = find_tasks(BENCHMARKS_DIR)[0][1]
    result = compare(task, *scores(base, tuned, se), base_cached=False)
    assert result.significant is significant
    assert result.diff == pytest.approx(tuned - base)
    if se:
        assert result.diff_stderr == pytest.approx((2 * se * se) ** 0.5)
    assert words in verdict(result)
    assert result.requests_per_s == 20.0


def test_the_card_section_is_replaced_on_a_rerun_not_repeated():
    task = find_tasks(BENCHMARKS_DIR)[0][0]
    first = card_section([compare(task, *scores(0.1, 0.2, 0.1), False)], "demo", "20 items")
    failed = BenchmarkResult(benchmark="mine", task_file="mine.yaml", error="mine.yaml: UndefinedError: 'x' is undefined")
    second = card_section([compare(task, *scores(0.1, 0.5, 0.01), True), failed], "demo", "20 items")
    card = with_section(with_section("# demo\n\nintro\n", first), second)
    assert card.count(CARD_START) == 1 and card.startswith("# demo\n\nintro\n")
    assert "+0.400" in card and "+0.100" not in card and "(base cached)" in card
    assert "**mine** was not scored: mine.yaml: UndefinedError" in card


def test_evaluation_settings_come_from_the_profile_and_the_environment(tmp_path):
    demo = resources_from_env({})["evaluation"]
    assert (demo.eval_mc_items, demo.eval_gen_items, demo.eval_max_new_tokens, demo.eval_fewshot) == (20, 5, 32, 1)
    paper = resources_from_env({"GLAN_PROFILE": "paper"})["evaluation"]
    assert (paper.eval_mc_items, paper.eval_gen_items, paper.eval_max_new_tokens, paper.eval_fewshot) == (0, 0, 0, -1)
    mine = resources_from_env({"GLAN_EVAL_TASKS": str(tmp_path), "GLAN_EVAL_MC_ITEMS": "7"})["evaluation"]
    assert (mine.eval_tasks, mine.eval_mc_items, mine.eval_gen_items) == (str(tmp_path), 7, 5)


def test_the_evaluation_version_follows_benchmark_files_and_settings(tmp_path):
    folder = tmp_path / "tasks"
    shutil.copytree(BENCHMARKS_DIR, folder)
    settings = EvalSettings(eval_tasks=str(folder), eval_mc_items=20)
    version = eval_version(settings)
    assert eval_version(settings.model_copy(update={"eval_batch_size": 2})) == version  # batch size: same scores
    assert eval_version(settings.model_copy(update={"eval_mc_items": 30})) != version
    with (folder / "gsm8k" / "test.jsonl").open("a") as f:
        f.write(json.dumps({"id": "new", "question": "What is 1 + 1?", "answer": "#### 2"}) + "\n")
    assert eval_version(settings) != version


def history_with(metadata: dict | None, code: str = "1") -> History:
    latest = {} if metadata is None else {"demo": Latest(1, code, None, {}, metadata)}
    return History({"model_eval": latest}, {"model_eval": set()})


def test_the_evaluation_reruns_only_when_the_adapter_benchmarks_settings_or_code_change():
    recorded = {ADAPTER_VERSION: "a1", EVAL_VERSION: "e1"}
    assert eval_reason("model_eval", "1", "demo", "a1", "e1", history_with(None)) == "new"
    assert eval_reason("model_eval", "1", "demo", "a1", "e1", history_with(recorded)) is None
    assert eval_reason("model_eval", "1", "demo", "a2", "e1", history_with(recorded)) == "checkpoint changed"
    assert eval_reason("model_eval", "1", "demo", "a1", "e2", history_with(recorded)) == "benchmarks or evaluation settings changed"
    assert eval_reason("model_eval", "2", "demo", "a1", "e1", history_with(recorded)) == "code changed"


def test_a_planted_benchmark_question_leaves_the_training_set_and_the_evaluation_is_unchanged(tmp_path):
    store = DuckDBStore(path=str(tmp_path / "glan.duckdb"))
    training = TrainingSettings(checkpoints=str(tmp_path / "checkpoints"))  # the default benchmarks
    evaluation = EvalSettings()
    before = eval_version(evaluation)
    question = json.loads((BENCHMARKS_DIR / "mmlu" / "test.jsonl").read_text().splitlines()[3])
    planted = f"{question['question']} " + " ".join(question["choices"])
    write_answered_questions(store, "Physics", teaching_pairs("Physics") + [(f"Quiz: {planted}", "The answer is B.")])

    materialize_training([training_set], store, training, dg.DagsterInstance.ephemeral())

    (removed,) = store.read(RemovedPairRow)
    assert removed.reason == "contaminated"
    (match,) = store.read(ContaminationRow)
    assert (match.pair_id, match.benchmark_item) == (removed.pair_id, question["id"])
    assert eval_version(evaluation) == before  # the question is still evaluated on


@pytest.fixture(scope="module")
def evaluated(tmp_path_factory):
    """The tiny recipe trained on the real packaged base, then evaluated on two items of MMLU,
    one of GSM8K and a user's task that names a missing field, through Dagster."""
    import torch

    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    root = tmp_path_factory.mktemp("evaluated")
    store = DuckDBStore(path=str(root / "data" / "glan.duckdb"))
    training = tiny_training(root)
    fill_two_disciplines(store)
    instance = dg.DagsterInstance.ephemeral()
    instance.add_dynamic_partitions("recipe", training.recipe_names())
    materialize([training_set], store, training, instance)
    materialize([model_checkpoint], store, training, instance, partition_key="demo")
    tasks = root / "tasks"
    shutil.copytree(BENCHMARKS_DIR, tasks)
    user_task(tasks / "mine", MINE.replace("!function helpers.prompt", "'{{question}}'"))
    evaluation = EvalSettings(eval_tasks=str(tasks), eval_mc_items=2, eval_gen_items=1, eval_max_new_tokens=4,
                              eval_fewshot=0, eval_batch_size=2)

    def run() -> dg.ExecuteInProcessResult:
        return dg.materialize([model_eval], instance=instance, partition_key="demo",
                              resources={"training": training, "evaluation": evaluation})

    first, second = run(), run()
    # An adapter that does not load: the same settings, so the base's scores come from its cache.
    broken = root / "broken"
    shutil.copytree(training.checkpoints, broken)
    (broken / "demo" / "adapter_model.safetensors").write_bytes(b"not a safetensors file")
    failed = dg.materialize([model_eval], instance=instance, partition_key="demo", raise_on_error=False,
                            resources={"training": TrainingSettings(**{**training.model_dump(), "checkpoints": str(broken)}),
                                       "evaluation": evaluation})
    torch.set_num_threads(threads)
    return training.checkpoint_dir("demo"), first, second, failed


def test_model_eval_scores_base_and_tuned_with_lm_eval_and_writes_the_card(evaluated):
    checkpoint, result, _, _ = evaluated
    assert result.success
    meta = metadata_of(result, "model_eval")
    results = {r.benchmark: r for r in read_results(meta)}
    mmlu, gsm8k = results["glan_mmlu"], results["glan_gsm8k"]
    assert (mmlu.metric, mmlu.items, gsm8k.metric, gsm8k.items) == ("acc,none", 2, "exact_match,flexible-extract", 1)
    for r in (mmlu, gsm8k):
        assert 0 <= r.base <= 1 and 0 <= r.tuned <= 1 and r.diff == pytest.approx(r.tuned - r.base)
        assert r.tuned_seconds > 0 and not r.base_cached
    assert mmlu.base_stderr is not None and mmlu.requests_per_s > 0  # 2 items x 4 choices
    assert gsm8k.tokens_per_s > 0
    # The user's task names a field its data lacks: named, and the others still scored.
    assert "mine.yaml" in results["mine"].error and "question" in results["mine"].error
    assert meta[ADAPTER_VERSION] == adapter_version(checkpoint) and meta["failed_benchmarks"] == 1
    card = (checkpoint / "README.md").read_text()
    assert "## Benchmarks" in card and "| glan_mmlu | acc,none | 2 |" in card and "## Held-out loss" in card
    assert (checkpoint / "eval_scores.png").read_bytes().startswith(b"\x89PNG")
    (check,) = result.get_asset_check_evaluations()
    assert check.passed == (not any(r.significant and r.diff < 0 for r in results.values() if not r.error))


def test_the_base_model_is_scored_once_per_base_and_benchmark_version(evaluated):
    _, first, second, _ = evaluated
    again = {r.benchmark: r for r in read_results(metadata_of(second, "model_eval"))}
    before = {r.benchmark: r for r in read_results(metadata_of(first, "model_eval"))}
    assert again["glan_mmlu"].base_cached and again["glan_mmlu"].base == before["glan_mmlu"].base
    assert again["glan_mmlu"].tuned == before["glan_mmlu"].tuned  # the same adapter scores the same


def test_a_changed_benchmark_file_makes_the_training_set_stale(tmp_path):
    from glan_assets.plan import training_set_reason
    from glan_assets.registry import level

    bench = tmp_path / "test.jsonl"
    shutil.copy(DEFAULT_BENCHMARKS[0], bench)
    store = DuckDBStore(path=str(tmp_path / "glan.duckdb"))
    write_answered_questions(store, "Physics", teaching_pairs("Physics"))
    training = TrainingSettings(checkpoints=str(tmp_path / "checkpoints"), benchmarks=[str(bench)])
    instance = dg.DagsterInstance.ephemeral()
    quality = QualitySettings(judge_sample=0.0)
    materialize_training([training_set], store, training, instance, quality)
    sources = [level(name) for name in TRAINING.level.deps]

    def reason() -> str | None:
        history = History.read(instance, ["training_set", *TRAINING.level.deps])
        resources = {"store": store, "training": training, "quality": quality}
        return training_set_reason(instance, TRAINING.level, sources, history, resources)

    assert reason() is None
    with bench.open("a") as f:
        f.write(json.dumps({"id": "new", "question": "What is the capital of France, in one word?"}) + "\n")
    assert reason() == "settings changed"  # the benchmark files are in its version, by content


def test_an_adapter_that_does_not_load_is_named_by_its_recipe(evaluated):
    *_, failed = evaluated
    assert not failed.success
    (failure,) = [e for e in failed.all_events if e.is_step_failure]
    message = failure.step_failure_data.user_failure_data.description
    assert message.startswith("recipe demo: the adapter in ") and "does not load" in message and "\n" not in message


def test_glan_eval_says_when_a_recipe_has_not_been_evaluated(tmp_path, monkeypatch):
    from click.testing import CliRunner

    from glan_assets.cli import main

    monkeypatch.setenv("DAGSTER_HOME", str(tmp_path))
    result = CliRunner().invoke(main, ["eval", "--recipe", "nope"])
    assert result.exit_code == 1
    assert "recipe nope has not been evaluated; build it with `glan build --recipe nope`" in result.output


def test_the_scoring_model_gives_lm_eval_s_own_log_likelihoods():
    """ScoringLM skips the logits and padding lm-eval would throw away; the numbers must not
    move. Multi-token continuations, contexts of different lengths, and a rolling (whole-text)
    log-likelihood, on the packaged base."""
    from lm_eval.api.instance import Instance
    from lm_eval.models.huggingface import HFLM

    from glan_assets.training.recipes import load_recipes
    from glan_assets.training.scoring_lm import ScoringLM
    from resources.trainer import load_base

    model, tokenizer = load_base(load_recipes(DEFAULT_RECIPES)["demo"].base_model)
    pairs = [("The capital of France is", " Paris"), ("Question: 2 + 2 = ?\nAnswer:", " 4, because two and two make four"),
             ("A long context. " * 40 + "The last word is", " word"), ("Hi", " there")]
    requests = [Instance("loglikelihood", {}, pair, i) for i, pair in enumerate(pairs)]
    rolling = [Instance("loglikelihood_rolling", {}, ("Homework: explain why the sky is blue.",), 0)]
    plain = HFLM(pretrained=model, tokenizer=tokenizer, batch_size=4)
    scoring = ScoringLM(pretrained=model, tokenizer=tokenizer, batch_size=4)
    expected, expected_rolling = plain.loglikelihood(requests), plain.loglikelihood_rolling(rolling)

    kept = []
    forward = model.forward
    model.forward = lambda inps, **k: kept.append((inps.shape, k.get("logits_to_keep", 0))) or forward(inps, **k)
    try:
        got = scoring.loglikelihood(requests)
    finally:
        model.forward = forward
    assert [lp for lp, _ in got] == pytest.approx([lp for lp, _ in expected], abs=1e-3)
    assert [greedy for _, greedy in got] == [greedy for _, greedy in expected]
    # One sequence per forward on a CPU, keeping the longest continuation's logits (or all of a shorter one).
    longest = len(tokenizer(" 4, because two and two make four", add_special_tokens=False)["input_ids"])
    assert len(kept) == len(pairs) and all(shape[0] == 1 and keep == min(longest, shape[1]) for shape, keep in kept)
    assert max(shape[1] for shape, _ in kept) > 100
    assert scoring.loglikelihood_rolling(rolling) == pytest.approx(expected_rolling, abs=1e-3)
    assert scoring.batch_size_per_gpu == 4  # generation keeps its batch
