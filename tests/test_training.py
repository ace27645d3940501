"""From answers to a tuned model: settings, recipes, the trainer, both assets run through
Dagster, and a checkpoint that stock `peft` and the hub's tools read."""

import json
import os
from pathlib import Path

import dagster as dg
import pytest
import torch
import yaml

from glan_assets.dynosaur.instances import dynosaur_instances
from glan_assets.glan.answers import answers
from glan_assets.lineage import chain
from glan_assets.registry import LEVELS, TRAINING, resources_from_env
from glan_assets.training.curation import load_benchmarks
from glan_assets.training.recipes import load_recipes
from glan_assets.training.resources import DEFAULT_BENCHMARKS, DEFAULT_RECIPES, TrainingSettings
from glan_assets.training.schemas import ContaminationRow, RemovedPairRow, TrainingPairRow
from glan_assets.uit.unified import instructions_unified
from resources.local_models import local_model_dir, resolve_model
from resources.storage import DuckDBStore
from resources.trainer import (
    Example,
    Pair,
    add_lora,
    chat,
    encode,
    evaluate,
    load_base,
    load_for_chat,
    prompt_and_response,
    train_lora,
)
from tests.training_rows import QUALITY_ASSETS, materialize_training, teaching_pairs, write_answered_questions

training_set, model_checkpoint = TRAINING.training_set, TRAINING.checkpoint

os.environ.setdefault("HF_HUB_OFFLINE", "1")

# The demo recipe cut down to seconds: the same model and template, fewer and shorter steps.
TINY_RECIPES = """\
recipes:
  - name: demo
    description: The demo recipe, cut down for the tests.
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


def tiny_training(root: Path) -> TrainingSettings:
    recipes = root / "recipes.yaml"
    recipes.write_text(TINY_RECIPES)
    return TrainingSettings(heldout_per_discipline=2, recipes=str(recipes), checkpoints=str(root / "checkpoints"))


@pytest.fixture
def store(tmp_path) -> DuckDBStore:
    return DuckDBStore(path=str(tmp_path / "data" / "glan.duckdb"))


@pytest.fixture
def training(tmp_path) -> TrainingSettings:
    return tiny_training(tmp_path)


def materialize(assets, store, training, instance, **kwargs) -> dg.ExecuteInProcessResult:
    return materialize_training(assets, store, training, instance, **kwargs)


def metadata_of(result: dg.ExecuteInProcessResult, key: str) -> dict:
    (event,) = [e for e in result.get_asset_materialization_events() if e.asset_key.to_user_string() == key]
    return {k: v.value for k, v in event.materialization.metadata.items()}


def data_version_of(instance: dg.DagsterInstance) -> str:
    """The data version the training set's latest materialization recorded."""
    return instance.get_latest_materialization_event(training_set.key).asset_materialization.tags["dagster/data_version"]


def test_training_settings_come_from_the_environment():
    settings = resources_from_env(
        {
            "GLAN_DB": "/srv/glan/glan.duckdb",
            "GLAN_BENCHMARKS": f"/b/gsm8k.jsonl,/b/mmlu.jsonl{os.pathsep}/b/arc.jsonl",
            "GLAN_HELDOUT_PER_DISCIPLINE": "5",
            "GLAN_NEAR_DUP_THRESHOLD": "0.9",
        }
    )["training"]
    assert settings.benchmarks == ["/b/gsm8k.jsonl", "/b/mmlu.jsonl", "/b/arc.jsonl"]
    assert (settings.heldout_per_discipline, settings.near_dup_threshold) == (5, 0.9)
    assert settings.checkpoint_dir("demo") == Path("/srv/glan/checkpoints/demo")
    assert resources_from_env({"GLAN_PROFILE": "paper"})["training"].heldout_per_discipline == 50
    assert resources_from_env({"GLAN_BENCHMARKS": ""})["training"].benchmarks == []


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
    pair = Pair(instruction="What is inertia?", response="Resistance to changes in motion.", group="Physics")
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
    model, tokenizer = load_base(recipe.base_model, recipe.dtype)
    pairs = [Pair(instruction=q, response=a, group="Physics") for q, a in teaching_pairs("Physics")[:2]]
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

    tiny = LlamaForCausalLM(LlamaConfig(vocab_size=64, hidden_size=16, intermediate_size=32, num_hidden_layers=1,
                                        num_attention_heads=2, num_key_value_heads=2))
    recipe = load_recipes(DEFAULT_RECIPES)["mistral-7b"].model_copy(
        update={"dtype": "float32", "batch_size": 2, "gradient_accumulation_steps": 4, "epochs": 2, "lora_r": 2}
    )
    examples = [Example(input_ids=[1, 2, 3, 4 + i], labels=[-100, -100, 3, 4 + i], group="Physics") for i in range(9)]
    seen: list[int] = []
    steps, tokens, _ = train_lora(add_lora(tiny, recipe), SimpleNamespace(pad_token_id=0), examples, recipe,
                                  on_step=lambda s: seen.append(s.step))
    # 9 pairs in batches of 2 for 2 epochs: 10 forward passes, windows of 4, 4 and 2.
    assert seen == [1, 2, 3] and [s.total_steps for s in steps] == [3, 3, 3]
    assert tokens == 2 * 9 * 4


def fill_two_disciplines(store: DuckDBStore) -> None:
    """Physics and Algebra, with an exact duplicate and a benchmark question planted in Physics."""
    leaked = load_benchmarks(DEFAULT_BENCHMARKS)[0].text
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
    assert "| glan | Physics | Natural Sciences | 10 | 0 | 1 | 0 | 1 | 6 | 2 |" in meta["per_group"]
    assert meta["pairs_glan"] == 16 and meta["mixture"]["glan"]["available"] == 18
    removed = store.read(RemovedPairRow)
    assert sorted(r.reason for r in removed) == ["contaminated", "exact_duplicate"]
    assert [type(r).table for r in chain(store, removed[0].pair_id, LEVELS)] == [  # a removed pair traces back too
        "training_removed", "answers", "questions", "sessions", "syllabi", "subjects", "disciplines", "fields"
    ]
    (contamination,) = store.read(ContaminationRow)
    planted = load_benchmarks(DEFAULT_BENCHMARKS)[0]
    assert (contamination.benchmark_item, contamination.benchmark_file) == (planted.item_id, planted.file)
    held_out = {p.pair_id for p in store.read(TrainingPairRow, where="split = 'test'")}
    version = data_version_of(instance)

    materialize([training_set], store, training, instance)  # a rebuild changes nothing
    assert {p.pair_id for p in store.read(TrainingPairRow, where="split = 'test'")} == held_out
    assert data_version_of(instance) == version

    write_answered_questions(store, "Astronomy", teaching_pairs("Astronomy"))
    materialize([training_set], store, training, instance)
    after = store.read(TrainingPairRow, where="split = 'test'")
    assert {p.pair_id for p in after if p.group_name != "Astronomy"} == held_out
    assert sum(p.group_name == "Astronomy" for p in after) == 2


def test_training_set_follows_new_answers_partitions(project, training):
    instance = dg.DagsterInstance.ephemeral()
    instance.add_dynamic_partitions("discipline", ["Physics"])
    # Every source and quality level is upstream (an undefined one would count as missing and hold it back).
    defs = dg.Definitions(assets=[answers, dynosaur_instances, instructions_unified, *QUALITY_ASSETS, training_set],
                          resources={**project.resources(), "training": training})
    before = dg.evaluate_automation_conditions(defs=defs, instance=instance)
    assert before.get_num_requested(training_set.key) == 0
    instance.report_runless_asset_event(dg.AssetMaterialization("answers", partition="Physics"))
    unscored = dg.evaluate_automation_conditions(defs=defs, instance=instance, cursor=before.cursor)
    assert unscored.get_num_requested(training_set.key) == 0  # its quality level is still missing
    instance.report_runless_asset_event(dg.AssetMaterialization("glan_quality", partition="Physics"))
    after = dg.evaluate_automation_conditions(defs=defs, instance=instance, cursor=unscored.cursor)
    assert after.get_num_requested(training_set.key) == 1


@pytest.fixture(scope="module")
def trained(tmp_path_factory) -> tuple[Path, dict, str]:
    """A project that built its training set and the demo recipe's checkpoint:
    (checkpoint folder, the checkpoint's metadata, the training set's data version)."""
    root = tmp_path_factory.mktemp("trained")
    store = DuckDBStore(path=str(root / "data" / "glan.duckdb"))
    training = tiny_training(root)
    fill_two_disciplines(store)
    instance = dg.DagsterInstance.ephemeral()
    instance.add_dynamic_partitions("recipe", training.recipe_names())
    materialize([training_set], store, training, instance)
    result = materialize([model_checkpoint], store, training, instance, partition_key="demo")
    return training.checkpoint_dir("demo"), metadata_of(result, "model_checkpoint"), data_version_of(instance)


def test_model_checkpoint_trains_on_the_training_set_and_beats_the_base_model(trained):
    checkpoint, meta, version = trained
    assert meta["heldout_loss_tuned"] < meta["heldout_loss_base"]
    assert "| glan | Physics |" in meta["heldout_loss_per_group"] and "data:image/png;base64," in meta["loss_curve"]
    assert meta["checkpoint"] == str(checkpoint)
    assert meta["mixture"] == {"glan": {"train": 12, "test": 4}} and meta["train_pairs_glan"] == 12
    for name in ("adapter_model.safetensors", "adapter_config.json", "tokenizer.json", "recipe.json",
                 "loss_curve.png", "README.md"):
        assert (checkpoint / name).is_file(), name
    assert (checkpoint / "training_data_version.txt").read_text().strip() == version == meta["training_data_version"]


def test_the_adapter_names_its_base_by_hub_id_and_loads_with_stock_peft(trained):
    import torch
    from peft import PeftModel
    from transformers import AutoModelForCausalLM, AutoTokenizer

    checkpoint, _, _ = trained
    config = json.loads((checkpoint / "adapter_config.json").read_text())
    assert config["base_model_name_or_path"] == "google/gemma-3-270m"

    # What a user elsewhere does, with this machine's copy of google/gemma-3-270m as the base.
    base = AutoModelForCausalLM.from_pretrained(local_model_dir("gemma3-270m"))
    model = PeftModel.from_pretrained(base, checkpoint)
    tokenizer = AutoTokenizer.from_pretrained(checkpoint)
    inputs = tokenizer("### Instruction:\nExplain inertia.\n\n### Response:\n", return_tensors="pt")
    output = model.generate(**inputs, max_new_tokens=8, do_sample=False, pad_token_id=tokenizer.pad_token_id)
    assert output.shape[1] > inputs.input_ids.shape[1]
    with torch.no_grad():
        tuned = model(**inputs).logits
        with model.disable_adapter():
            untuned = model(**inputs).logits
    assert not torch.allclose(tuned, untuned)  # the trained adapter, not a fresh one


def test_the_model_card_names_the_base_recipe_data_and_loss(trained):
    from huggingface_hub import ModelCard

    checkpoint, meta, version = trained
    card = ModelCard.load(checkpoint / "README.md")
    assert card.data.base_model == "google/gemma-3-270m"
    assert (card.data.library_name, card.data.license) == ("peft", "gemma")
    assert "base_model:adapter:google/gemma-3-270m" in card.data.tags
    assert "More Information Needed" not in card.text  # not PEFT's empty template
    assert "# demo: a LoRA adapter for google/gemma-3-270m" in card.text
    assert f"`{version}`" in card.text and "| glan | 12 | 4 |" in card.text
    assert "- `glan`: GLAN (Li et al., 2024)" in card.text and "| glan | Physics |" in card.text
    assert f"| **all** | - | {meta['heldout_loss_base']:.4f} | {meta['heldout_loss_tuned']:.4f} |" in card.text
    assert "(loss_curve.png)" in card.text and "| learning_rate | 0.001 |" in card.text
    assert yaml.safe_load(card.content.split("---\n")[1])["base_model"] == "google/gemma-3-270m"


def test_glan_chat_loads_the_checkpoint_onto_the_packaged_base_and_replies(trained):
    checkpoint, _, _ = trained
    model, tokenizer = load_for_chat(checkpoint)
    prompt = "In Introduction to Physics, explain inertia in simple terms."
    reply = chat(model, tokenizer, prompt, max_new_tokens=12)
    assert isinstance(reply, str) and reply.strip()
    # The adapter is on and changes what the model predicts: with it disabled, the same model
    # (the packaged base) gives other logits for the same prompt.
    ids, _ = prompt_and_response(tokenizer, prompt)
    inputs = torch.tensor([ids])
    with torch.no_grad():
        tuned = model(input_ids=inputs).logits
        with model.disable_adapter():
            base = model(input_ids=inputs).logits
    assert (tuned - base).abs().max().item() > 1e-3
