"""Training: the curation settings, the recipes, and the LoRA trainer behind `model_checkpoint`.

Every Dagster process imports this module for `TrainingSettings`, so torch, transformers
and peft are imported inside the functions that need them.

The trainer tunes LoRA adapters with the loss on response tokens only: the prompt's
labels are -100, and logits are projected only at the positions that predict a response
token (`logits_to_keep`), which spares most of the vocabulary projection on CPU.
"""

import math
import os
import random
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Literal

import dagster as dg
import yaml
from pydantic import BaseModel, ConfigDict, Field

from glan_assets.training_schemas import TrainingPairRow
from resources.local_models import PACKAGED_MODELS, local_model_dir
from resources.storage import db_path

if TYPE_CHECKING:
    import torch
    from transformers import PreTrainedModel, PreTrainedTokenizerBase

DATA_DIR = Path(__file__).resolve().parent.parent / "glan_assets" / "data"
DEFAULT_BENCHMARKS = DATA_DIR / "benchmark_sample.jsonl"
DEFAULT_RECIPES = DATA_DIR / "recipes.yaml"

# Held-out pairs per discipline: (demo, paper). GLAN-Test holds out 50 per discipline.
HELDOUT_PER_DISCIPLINE = (1, 50)

# Base models without a chat template get this one (the Alpaca layout).
PLAIN_TEMPLATE = "### Instruction:\n{instruction}\n\n### Response:\n"


# --- Recipes --------------------------------------------------------------------------


class TrainingRecipe(BaseModel):
    """How to tune one base model. `epochs` passes over the train split, cut at `max_steps`."""

    model_config = ConfigDict(extra="forbid")
    name: str
    description: str = ""
    base_model: str  # a packaged model name, a local model directory, or a hub name
    dtype: Literal["float32", "bfloat16", "float16"] = "float32"
    lora_r: int = 8
    lora_alpha: int = 16
    lora_dropout: float = 0.05
    target_modules: list[str] | Literal["all-linear"] = "all-linear"
    epochs: int = Field(3, ge=1)
    learning_rate: float
    lr_scheduler: Literal["cosine", "linear", "constant"] = "cosine"
    warmup_steps: int = 0
    max_length: int = 512
    batch_size: int = Field(8, ge=1)  # pairs per forward pass
    gradient_accumulation_steps: int = Field(1, ge=1)  # forward passes per optimizer step
    max_steps: int | None = None
    seed: int = 0


def load_recipes(path: str | Path) -> dict[str, TrainingRecipe]:
    """Recipes by name from a YAML file `{recipes: [{name: ..., ...}, ...]}`."""
    raw = yaml.safe_load(Path(path).read_text()) or {}
    recipes: dict[str, TrainingRecipe] = {}
    for i, entry in enumerate(raw.get("recipes") or []):
        try:
            recipe = TrainingRecipe.model_validate(entry)
        except ValueError as exc:
            name = entry.get("name", "?") if isinstance(entry, dict) else "?"
            raise ValueError(f"{path}: recipe #{i + 1} ({name}): {exc}") from exc
        if recipe.name in recipes:
            raise ValueError(f"{path}: recipe {recipe.name!r} is defined twice")
        recipes[recipe.name] = recipe
    if not recipes:
        raise ValueError(f"{path}: no recipes (expected a top-level `recipes:` list)")
    return recipes


def recipes_path(env: dict[str, str] | None = None) -> Path:
    """`GLAN_RECIPES`, else the packaged recipes file."""
    env = os.environ if env is None else env
    return Path(env.get("GLAN_RECIPES") or DEFAULT_RECIPES)


# --- Settings -------------------------------------------------------------------------


class TrainingSettings(dg.ConfigurableResource):
    """Curation of the training set and where recipes and checkpoints live.

    An empty `benchmarks` list skips decontamination.
    """

    benchmarks: list[str] = [str(DEFAULT_BENCHMARKS)]
    heldout_per_discipline: int = HELDOUT_PER_DISCIPLINE[0]
    near_dup_threshold: float = 0.8
    minhash_permutations: int = 128
    shingle_words: int = 5
    contamination_ngram: int = 13
    split_seed: int = 0
    recipes: str = str(DEFAULT_RECIPES)
    checkpoints: str = "data/checkpoints"

    def recipe(self, name: str) -> TrainingRecipe:
        recipes = load_recipes(self.recipes)
        if name not in recipes:
            raise KeyError(f"no recipe {name!r} in {self.recipes}; it has {', '.join(recipes)}")
        return recipes[name]

    def checkpoint_dir(self, recipe_name: str) -> Path:
        return Path(self.checkpoints) / recipe_name

    @classmethod
    def from_env(cls, env: dict[str, str] | None = None) -> "TrainingSettings":
        """`GLAN_<FIELD>` for each field (`GLAN_BENCHMARKS` separated by commas or the path
        separator); checkpoints default to `checkpoints/` beside `GLAN_DB`; `GLAN_PROFILE=paper`
        holds out the paper's 50 pairs per discipline."""
        env = dict(os.environ if env is None else env)
        values: dict = {
            "heldout_per_discipline": HELDOUT_PER_DISCIPLINE[env.get("GLAN_PROFILE") == "paper"],
            "recipes": str(recipes_path(env)),
            "checkpoints": env.get("GLAN_CHECKPOINTS") or str(db_path(env).parent / "checkpoints"),
        }
        if "GLAN_BENCHMARKS" in env:
            raw = env["GLAN_BENCHMARKS"].replace(os.pathsep, ",")
            values["benchmarks"] = [p.strip() for p in raw.split(",") if p.strip()]
        for name, f in cls.model_fields.items():
            raw = env.get(f"GLAN_{name.upper()}")
            if raw is not None and f.annotation in (int, float):
                values[name] = f.annotation(raw)
        return cls(**values)


# --- Trainer --------------------------------------------------------------------------


class TrainingStep(BaseModel):
    """Progress after one optimizer step, for the caller's log."""

    step: int
    total_steps: int
    epoch: int
    loss: float
    learning_rate: float
    tokens: int  # input tokens seen so far, padding excluded
    tokens_per_s: float

    def __str__(self) -> str:
        return (
            f"step {self.step}/{self.total_steps} (epoch {self.epoch}) loss {self.loss:.4f} "
            f"lr {self.learning_rate:.2e} {self.tokens_per_s:.0f} tokens/s"
        )


class LossReport(BaseModel):
    """Mean loss per response token on a set of pairs, overall and per discipline."""

    mean_loss: float
    tokens: int
    per_discipline: dict[str, float]


class TrainingRun(BaseModel):
    steps: list[TrainingStep]
    examples: int
    truncated_away: int  # pairs whose prompt alone fills max_length: nothing left to learn
    tokens: int
    seconds: float
    tokens_per_s: float
    base: LossReport | None  # held-out loss before and after; None without a test split
    tuned: LossReport | None
    device: str


class Example(BaseModel):
    """A tokenized pair: prompt labels are -100, so only the response is learned."""

    input_ids: list[int]
    labels: list[int]
    discipline: str


def resolve_model(name: str) -> str:
    """A packaged model's converted directory; anything else is given to `from_pretrained`."""
    return str(local_model_dir(name)) if name in PACKAGED_MODELS else name


def device() -> str:
    import torch

    return "cuda" if torch.cuda.is_available() else "cpu"


def load_base(recipe: TrainingRecipe) -> tuple["PreTrainedModel", "PreTrainedTokenizerBase"]:
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    path = resolve_model(recipe.base_model)
    tokenizer = AutoTokenizer.from_pretrained(path)
    if tokenizer.pad_token_id is None:
        tokenizer.pad_token = tokenizer.eos_token
    model = AutoModelForCausalLM.from_pretrained(path, dtype=getattr(torch, recipe.dtype)).to(device())
    return model, tokenizer


def prompt_and_response(
    tokenizer: "PreTrainedTokenizerBase", instruction: str, response: str | None = None
) -> tuple[list[int], list[int]]:
    """Token ids of the prompt and of the response (with its end-of-turn token).

    The tokenizer's chat template when it has one, else PLAIN_TEMPLATE. The two are
    tokenized apart, exactly as `chat` sees a prompt and the model continues it.
    """
    if tokenizer.chat_template:
        user = [{"role": "user", "content": instruction}]
        prompt = tokenizer.apply_chat_template(user, add_generation_prompt=True, tokenize=False)
        prompt_ids = tokenizer(prompt, add_special_tokens=False).input_ids
        if response is None:
            return prompt_ids, []
        full = tokenizer.apply_chat_template(
            user + [{"role": "assistant", "content": response}], tokenize=False
        )
        if not full.startswith(prompt):
            raise ValueError("the chat template renders the prompt differently once a reply follows")
        return prompt_ids, tokenizer(full[len(prompt) :], add_special_tokens=False).input_ids
    prompt_ids = tokenizer(PLAIN_TEMPLATE.format(instruction=instruction)).input_ids
    if response is None:
        return prompt_ids, []
    return prompt_ids, tokenizer(response, add_special_tokens=False).input_ids + [tokenizer.eos_token_id]


def encode(
    tokenizer: "PreTrainedTokenizerBase", pairs: Sequence[TrainingPairRow], max_length: int
) -> tuple[list[Example], int]:
    """(examples, how many pairs were dropped because truncation left no response token).

    A long instruction is cut from its start, keeping its end and the response marker, so
    that at least half the window is left for the response: a rambling question would
    otherwise truncate every response token away.
    """
    examples, dropped = [], 0
    for pair in pairs:
        prompt, response = prompt_and_response(tokenizer, pair.instruction, pair.response)
        prompt = prompt[-max(max_length - len(response), max_length // 2) :]
        ids = (prompt + response)[:max_length]
        labels = ([-100] * len(prompt) + response)[:max_length]
        if all(label == -100 for label in labels):
            dropped += 1
            continue
        examples.append(Example(input_ids=ids, labels=labels, discipline=pair.discipline))
    return examples, dropped


def collate(examples: Sequence[Example], pad_id: int) -> dict[str, "torch.Tensor"]:
    """Right-padded input_ids, attention_mask and labels."""
    import torch

    width = max(len(e.input_ids) for e in examples)
    pad = [width - len(e.input_ids) for e in examples]
    return {
        "input_ids": torch.tensor([e.input_ids + [pad_id] * p for e, p in zip(examples, pad)]),
        "attention_mask": torch.tensor([[1] * len(e.input_ids) + [0] * p for e, p in zip(examples, pad)]),
        "labels": torch.tensor([e.labels + [-100] * p for e, p in zip(examples, pad)]),
    }


def length_grouped_batches(n: int, lengths: Sequence[int], batch_size: int, seed: int) -> list[list[int]]:
    """Shuffled batches of indices whose members have similar lengths, so little is padding.

    Sorting within windows of 16 batches keeps the order random at the scale of an epoch.
    """
    rng = random.Random(seed)
    order = list(range(n))
    rng.shuffle(order)
    window = batch_size * 16
    batches = []
    for start in range(0, n, window):
        chunk = sorted(order[start : start + window], key=lambda i: -lengths[i])
        batches += [chunk[i : i + batch_size] for i in range(0, len(chunk), batch_size)]
    rng.shuffle(batches)
    return batches


def response_loss(model: "PreTrainedModel", batch: dict[str, "torch.Tensor"]) -> tuple["torch.Tensor", int]:
    """(summed cross-entropy over the response tokens, how many there are)."""
    import torch.nn.functional as F

    targets = batch["labels"][:, 1:]
    keep = targets != -100
    # Position p predicts token p+1: project only the positions whose next token is learned.
    positions = F.pad(keep, (0, 1), value=False)
    logits = model(
        input_ids=batch["input_ids"], attention_mask=batch["attention_mask"], logits_to_keep=positions
    ).logits
    loss = F.cross_entropy(logits.float(), targets[keep], reduction="sum")
    return loss, int(keep.sum())


def evaluate(
    model: "PreTrainedModel", tokenizer: "PreTrainedTokenizerBase", pairs: Sequence[TrainingPairRow],
    recipe: TrainingRecipe,
) -> LossReport | None:
    """Held-out mean loss per response token, overall and per discipline; None for no pairs."""
    import torch

    examples, _ = encode(tokenizer, pairs, recipe.max_length)
    if not examples:
        return None
    by_discipline: dict[str, list[Example]] = {}
    for e in examples:
        by_discipline.setdefault(e.discipline, []).append(e)
    sums: dict[str, float] = {}
    counts: dict[str, int] = {}
    model.eval()
    with torch.no_grad():
        for discipline, group in sorted(by_discipline.items()):
            group.sort(key=lambda e: len(e.input_ids))  # similar lengths: little padding
            for i in range(0, len(group), recipe.batch_size):
                chunk = collate(group[i : i + recipe.batch_size], tokenizer.pad_token_id)
                loss, n = response_loss(model, {k: v.to(model.device) for k, v in chunk.items()})
                sums[discipline] = sums.get(discipline, 0.0) + loss.item()
                counts[discipline] = counts.get(discipline, 0) + n
    total = sum(counts.values())
    return LossReport(
        mean_loss=sum(sums.values()) / total,
        tokens=total,
        per_discipline={d: sums[d] / counts[d] for d in sorted(sums)},
    )


def add_lora(model: "PreTrainedModel", recipe: TrainingRecipe) -> "PreTrainedModel":
    import torch
    from peft import LoraConfig, get_peft_model

    torch.manual_seed(recipe.seed)  # LoRA's A matrices start random
    config = LoraConfig(
        r=recipe.lora_r,
        lora_alpha=recipe.lora_alpha,
        lora_dropout=recipe.lora_dropout,
        target_modules=recipe.target_modules,
        task_type="CAUSAL_LM",
    )
    return get_peft_model(model, config)


def forward_passes(recipe: TrainingRecipe, examples: int) -> int:
    return math.ceil(examples / recipe.batch_size) * recipe.epochs


def optimizer_steps(recipe: TrainingRecipe, examples: int) -> int:
    """Accumulation windows run across epoch ends; the run's last window may be shorter."""
    total = math.ceil(forward_passes(recipe, examples) / recipe.gradient_accumulation_steps)
    return min(total, recipe.max_steps) if recipe.max_steps else total


def train_lora(
    model: "PreTrainedModel",
    tokenizer: "PreTrainedTokenizerBase",
    examples: Sequence[Example],
    recipe: TrainingRecipe,
    on_step: Callable[[TrainingStep], None] | None = None,
) -> tuple[list[TrainingStep], int, float]:
    """Tunes the model's LoRA weights in place: (steps, input tokens seen, seconds)."""
    import torch
    from transformers import get_scheduler

    total = optimizer_steps(recipe, len(examples))
    last_pass = forward_passes(recipe, len(examples))
    params = [p for p in model.parameters() if p.requires_grad]
    optimizer = torch.optim.AdamW(params, lr=recipe.learning_rate)
    scheduler = get_scheduler(recipe.lr_scheduler, optimizer, recipe.warmup_steps, total)
    lengths = [len(e.input_ids) for e in examples]
    steps: list[TrainingStep] = []
    tokens, micro, window_loss = 0, 0, 0.0
    model.train()
    start = time.perf_counter()
    for epoch in range(recipe.epochs):
        for idx in length_grouped_batches(len(examples), lengths, recipe.batch_size, recipe.seed + epoch):
            batch = {k: v.to(model.device) for k, v in collate([examples[i] for i in idx], tokenizer.pad_token_id).items()}
            loss_sum, n = response_loss(model, batch)
            loss = loss_sum / n / recipe.gradient_accumulation_steps
            loss.backward()
            window_loss += loss.item()
            tokens += int(batch["attention_mask"].sum())
            micro += 1
            if micro % recipe.gradient_accumulation_steps and micro < last_pass:
                continue
            optimizer.step()
            scheduler.step()
            optimizer.zero_grad(set_to_none=True)
            step = TrainingStep(
                step=len(steps) + 1,
                total_steps=total,
                epoch=epoch + 1,
                loss=window_loss,
                learning_rate=scheduler.get_last_lr()[0],
                tokens=tokens,
                tokens_per_s=tokens / (time.perf_counter() - start),
            )
            steps.append(step)
            window_loss = 0.0
            if on_step:
                on_step(step)
            if step.step >= total:
                return steps, tokens, time.perf_counter() - start
    return steps, tokens, time.perf_counter() - start


def fine_tune(
    recipe: TrainingRecipe,
    train_pairs: Sequence[TrainingPairRow],
    test_pairs: Sequence[TrainingPairRow],
    out_dir: str | Path,
    on_step: Callable[[TrainingStep], None] | None = None,
) -> TrainingRun:
    """Held-out loss of the base model, LoRA training, held-out loss of the tuned model;
    saves the adapter, the tokenizer and `recipe.json` into `out_dir`."""
    model, tokenizer = load_base(recipe)
    examples, dropped = encode(tokenizer, train_pairs, recipe.max_length)
    if not examples:
        raise ValueError(f"no training examples: {len(train_pairs)} train pairs, {dropped} truncated away")
    base = evaluate(model, tokenizer, test_pairs, recipe)
    model = add_lora(model, recipe)
    steps, tokens, seconds = train_lora(model, tokenizer, examples, recipe, on_step)
    tuned = evaluate(model, tokenizer, test_pairs, recipe)
    save_checkpoint(model, tokenizer, recipe, out_dir)
    return TrainingRun(
        steps=steps,
        examples=len(examples),
        truncated_away=dropped,
        tokens=tokens,
        seconds=seconds,
        tokens_per_s=tokens / seconds,
        base=base,
        tuned=tuned,
        device=str(model.device),
    )


def save_checkpoint(
    model: "PreTrainedModel", tokenizer: "PreTrainedTokenizerBase", recipe: TrainingRecipe, out_dir: str | Path
) -> None:
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    model.save_pretrained(out)  # the adapter only: the base model is named by recipe.json
    tokenizer.save_pretrained(out)
    (out / "recipe.json").write_text(recipe.model_dump_json(indent=2))


def load_for_chat(checkpoint_dir: str | Path) -> tuple["PreTrainedModel", "PreTrainedTokenizerBase"]:
    """The recipe's base model with the checkpoint's adapter, ready for `chat`."""
    from peft import PeftModel
    from transformers import AutoTokenizer

    checkpoint = Path(checkpoint_dir)
    if not (checkpoint / "recipe.json").is_file():
        raise FileNotFoundError(f"{checkpoint} is not a checkpoint: it has no recipe.json")
    recipe = TrainingRecipe.model_validate_json((checkpoint / "recipe.json").read_text())
    base, _ = load_base(recipe)
    model = PeftModel.from_pretrained(base, checkpoint)
    model.eval()
    return model, AutoTokenizer.from_pretrained(checkpoint)


def chat(
    model: "PreTrainedModel", tokenizer: "PreTrainedTokenizerBase", prompt: str, max_new_tokens: int = 256
) -> str:
    """The model's reply to one instruction, in the template it was trained with."""
    import torch

    prompt_ids, _ = prompt_and_response(tokenizer, prompt)
    inputs = torch.tensor([prompt_ids], device=model.device)
    with torch.no_grad():
        output = model.generate(
            input_ids=inputs,
            attention_mask=torch.ones_like(inputs),
            max_new_tokens=max_new_tokens,
            pad_token_id=tokenizer.pad_token_id,
        )
    return tokenizer.decode(output[0, len(prompt_ids) :], skip_special_tokens=True).strip()

