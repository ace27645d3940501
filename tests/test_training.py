"""From answers to a tuned model: settings, recipes, the trainer, and both assets run through Dagster."""

import os
from pathlib import Path

import dagster as dg
import pytest

from glan_assets.answers import answers
from glan_assets.curation import load_benchmarks
from glan_assets.lineage import chain
from glan_assets.model_checkpoint import model_checkpoint
from glan_assets.training_schemas import ContaminationRow, RemovedPairRow, TrainingPairRow
from glan_assets.training_set import training_set
from resources.settings import resources_from_env
from resources.storage import DuckDBStore
from resources.training import (
    DEFAULT_BENCHMARKS,
    DEFAULT_RECIPES,
    TrainingSettings,
    add_lora,
    chat,
    encode,
    evaluate,
    load_base,
    load_for_chat,
    load_recipes,
    prompt_and_response,
    resolve_model,
    train_lora,
)
from tests.training_rows import teaching_pairs, write_answered_questions

os.environ.setdefault("HF_HUB_OFFLINE", "1")

# The demo recipe cut down to seconds: the same model and template, fewer and shorter steps.
TINY_RECIPES = """\
recipes:
  - name: demo
    base_model: gemma3-270m
    lora_dropout: 0.0
    epochs: 4
    learning_rate: 1.0e-3
    lr_scheduler: constant
    max_length: 64
    batch_size: 4
    max_steps: 4
"""


@pytest.fixture(autouse=True, scope="module")
def one_torch_thread():
    """These tests share two cores with other processes, and two OpenMP threads then wait on
    each other: a training step measured 4-6x slower than on one thread."""
    import torch

    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


@pytest.fixture
def store(tmp_path) -> DuckDBStore:
    return DuckDBStore(path=str(tmp_path / "data" / "glan.duckdb"))


@pytest.fixture
def training(tmp_path) -> TrainingSettings:
    recipes = tmp_path / "recipes.yaml"
    recipes.write_text(TINY_RECIPES)
    return TrainingSettings(heldout_per_discipline=2, recipes=str(recipes), checkpoints=str(tmp_path / "checkpoints"))


def materialize(assets, store, training, instance, **kwargs) -> dg.ExecuteInProcessResult:
    return dg.materialize(assets, instance=instance, resources={"store": store, "training": training}, **kwargs)


def metadata_of(result: dg.ExecuteInProcessResult, key: str) -> dict:
    (event,) = [e for e in result.get_asset_materialization_events() if e.asset_key.to_user_string() == key]
    return {k: v.value for k, v in event.materialization.metadata.items()}


def data_version_of(instance: dg.DagsterInstance) -> str:
    """The data version the training set's latest materialization recorded."""
    return instance.get_latest_materialization_event(training_set.key).asset_materialization.tags["dagster/data_version"]


def test_settings_come_from_the_environment():
    settings = TrainingSettings.from_env(
        {
            "GLAN_DB": "/srv/glan/glan.duckdb",
            "GLAN_BENCHMARKS": f"/b/gsm8k.jsonl,/b/mmlu.jsonl{os.pathsep}/b/arc.jsonl",
            "GLAN_HELDOUT_PER_DISCIPLINE": "5",
            "GLAN_NEAR_DUP_THRESHOLD": "0.9",
        }
    )
    assert settings.benchmarks == ["/b/gsm8k.jsonl", "/b/mmlu.jsonl", "/b/arc.jsonl"]
    assert (settings.heldout_per_discipline, settings.near_dup_threshold) == (5, 0.9)
    assert settings.checkpoint_dir("demo") == Path("/srv/glan/checkpoints/demo")
    assert TrainingSettings.from_env({"GLAN_PROFILE": "paper"}).heldout_per_discipline == 50
    assert TrainingSettings.from_env({"GLAN_BENCHMARKS": ""}).benchmarks == []


def test_the_shipped_recipes_load_and_a_bad_one_is_named(tmp_path):
    recipes = load_recipes(DEFAULT_RECIPES)
    assert recipes["demo"].base_model == "gemma3-270m"
    paper = recipes["mistral-7b"]
    assert (paper.learning_rate, paper.lr_scheduler, paper.epochs) == (3e-6, "cosine", 3)
    assert paper.batch_size * paper.gradient_accumulation_steps == 512
    bad = tmp_path / "recipes.yaml"
    bad.write_text("recipes:\n  - name: fast\n    base_model: gemma3-270m\n    learning_rate: high\n")
    with pytest.raises(ValueError, match="recipe #1 \\(fast\\)"):
        load_recipes(bad)


@pytest.mark.parametrize("model", ["gemma3-270m", "smollm2-135m-instruct"])
def test_only_response_tokens_are_learned(model):
    from transformers import AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(resolve_model(model))
    pair = TrainingPairRow(pair_id="p", answer_id="a", discipline="Physics", field_name="f", subject_name="s",
                           instruction="What is inertia?", response="Resistance to changes in motion.")
    (example,), dropped = encode(tokenizer, [pair], max_length=512)
    prompt, response = prompt_and_response(tokenizer, pair.instruction, pair.response)
    assert dropped == 0 and example.input_ids == prompt + response
    assert example.labels == [-100] * len(prompt) + response
    learned = tokenizer.decode([t for t in example.labels if t != -100])
    assert "Resistance to changes in motion." in learned and "inertia" not in learned
    # The end of the reply is learned too, so the tuned model stops.
    assert tokenizer.eos_token in tokenizer.decode(response)


def test_a_few_lora_steps_lower_the_loss_on_their_own_batch(training):
    recipe = training.recipe("demo")
    model, tokenizer = load_base(recipe)
    pairs = [
        TrainingPairRow(pair_id=f"p{i}", answer_id=f"a{i}", discipline="Physics", field_name="f", subject_name="s",
                        instruction=q, response=a)
        for i, (q, a) in enumerate(teaching_pairs("Physics")[:2])
    ]
    before = evaluate(model, tokenizer, pairs, recipe)
    model = add_lora(model, recipe)
    examples, _ = encode(tokenizer, pairs, recipe.max_length)
    steps, tokens, _ = train_lora(model, tokenizer, examples, recipe)
    after = evaluate(model, tokenizer, pairs, recipe)
    assert len(steps) == recipe.max_steps and tokens > 0
    assert after.mean_loss < 0.8 * before.mean_loss


def test_accumulated_batches_make_one_optimizer_step_per_window_and_none_are_lost():
    from types import SimpleNamespace

    from transformers import LlamaConfig, LlamaForCausalLM

    from resources.training import Example

    tiny = LlamaForCausalLM(LlamaConfig(vocab_size=64, hidden_size=16, intermediate_size=32, num_hidden_layers=1,
                                        num_attention_heads=2, num_key_value_heads=2))
    recipe = load_recipes(DEFAULT_RECIPES)["mistral-7b"].model_copy(
        update={"dtype": "float32", "batch_size": 2, "gradient_accumulation_steps": 4, "epochs": 2, "lora_r": 2}
    )
    examples = [Example(input_ids=[1, 2, 3, 4 + i], labels=[-100, -100, 3, 4 + i], discipline="Physics") for i in range(9)]
    seen: list[int] = []
    steps, tokens, _ = train_lora(add_lora(tiny, recipe), SimpleNamespace(pad_token_id=0), examples, recipe,
                                  on_step=lambda s: seen.append(s.step))
    # 9 pairs in batches of 2 for 2 epochs: 10 forward passes, windows of 4, 4 and 2.
    assert seen == [1, 2, 3] and [s.total_steps for s in steps] == [3, 3, 3]
    assert tokens == 2 * 9 * 4


def fill_two_disciplines(store: DuckDBStore) -> None:
    """Physics and Algebra, with an exact duplicate and a benchmark question planted in Physics."""
    leaked = load_benchmarks([DEFAULT_BENCHMARKS])[0].text
    physics = teaching_pairs("Physics") + [teaching_pairs("Physics")[0], (f"Homework: {leaked}", "The answer is 14.")]
    write_answered_questions(store, "Physics", physics)
    write_answered_questions(store, "Algebra", teaching_pairs("Algebra"), field="Formal Sciences")


def test_training_set_is_built_through_dagster_and_keeps_its_split_when_a_discipline_arrives(store, training):
    fill_two_disciplines(store)
    instance = dg.DagsterInstance.ephemeral()
    result = materialize([training_set], store, training, instance)
    meta = metadata_of(result, "training_set")
    assert {k: meta[k] for k in ("input_pairs", "exact_duplicates_removed", "contaminated_removed", "train", "test")} == {
        "input_pairs": 18, "exact_duplicates_removed": 1, "contaminated_removed": 1, "train": 12, "test": 4,
    }
    assert "| Physics | Natural Sciences | 10 | 1 | 0 | 1 | 6 | 2 |" in meta["per_discipline"]
    removed = store.read(RemovedPairRow)
    assert sorted(r.reason for r in removed) == ["contaminated", "exact_duplicate"]
    assert [type(r).table for r in chain(store, removed[0].pair_id)] == [  # a removed pair traces back too
        "training_removed", "answers", "questions", "sessions", "syllabi", "subjects", "disciplines", "fields"
    ]
    (contamination,) = store.read(ContaminationRow)
    assert contamination.benchmark_item == "gsm8k-style-001" and contamination.benchmark_file == str(DEFAULT_BENCHMARKS)
    held_out = {p.pair_id for p in store.read(TrainingPairRow, where="split = 'test'")}
    version = data_version_of(instance)

    materialize([training_set], store, training, instance)  # a rebuild changes nothing
    assert {p.pair_id for p in store.read(TrainingPairRow, where="split = 'test'")} == held_out
    assert data_version_of(instance) == version

    write_answered_questions(store, "Astronomy", teaching_pairs("Astronomy"))
    materialize([training_set], store, training, instance)
    after = store.read(TrainingPairRow, where="split = 'test'")
    assert {p.pair_id for p in after if p.discipline != "Astronomy"} == held_out
    assert sum(p.discipline == "Astronomy" for p in after) == 2


def test_training_set_follows_new_answers_partitions(store, training):
    instance = dg.DagsterInstance.ephemeral()
    instance.add_dynamic_partitions("discipline", ["Physics"])
    resources = {**resources_from_env({"GLAN_DB": store.path}), "training": training}
    defs = dg.Definitions(assets=[answers, training_set], resources=resources)
    before = dg.evaluate_automation_conditions(defs=defs, instance=instance)
    assert before.get_num_requested(training_set.key) == 0
    instance.report_runless_asset_event(dg.AssetMaterialization("answers", partition="Physics"))
    after = dg.evaluate_automation_conditions(defs=defs, instance=instance, cursor=before.cursor)
    assert after.get_num_requested(training_set.key) == 1


def test_model_checkpoint_trains_evaluates_saves_and_chats(store, training, tmp_path):
    fill_two_disciplines(store)
    instance = dg.DagsterInstance.ephemeral()
    materialize([training_set], store, training, instance)
    result = materialize([model_checkpoint], store, training, instance, partition_key="demo")
    meta = metadata_of(result, "model_checkpoint")
    assert meta["heldout_loss_tuned"] < meta["heldout_loss_base"]
    assert "| Physics |" in meta["heldout_loss_per_discipline"] and "data:image/png;base64," in meta["loss_curve"]
    checkpoint = tmp_path / "checkpoints" / "demo"
    assert meta["checkpoint"] == str(checkpoint)
    for name in ("adapter_model.safetensors", "adapter_config.json", "tokenizer.json", "recipe.json", "loss_curve.png"):
        assert (checkpoint / name).is_file(), name
    version = data_version_of(instance)
    assert (checkpoint / "training_data_version.txt").read_text().strip() == version

    model, tokenizer = load_for_chat(checkpoint)
    trained = [p for n, p in model.named_parameters() if "lora_B" in n]
    assert trained and any(p.abs().sum() > 0 for p in trained)  # the saved adapter, not a fresh one
    reply = chat(model, tokenizer, "In Introduction to Physics, explain inertia in simple terms.", max_new_tokens=12)
    assert isinstance(reply, str) and reply.strip()
