"""The LoRA trainer: load a base model, tune adapters on instruction/response pairs, measure
held-out loss, save a checkpoint that stock `peft` loads, and chat with it.

Every Dagster process imports this module (through `model_checkpoint`), so torch,
transformers and peft are imported inside the functions that need them.

The loss is on response tokens only: the prompt's labels are -100, and logits are projected
only at the positions that predict a response token (`logits_to_keep`), which spares most of
the vocabulary projection on CPU.
"""

import json
import math
import random
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Literal

from pydantic import BaseModel, ConfigDict, Field
from tqdm import tqdm

from resources.local_models import DEFAULT_MODEL_CACHE, hub_id, one_bar_per_step, resolve_model

if TYPE_CHECKING:
    import torch
    from transformers import PreTrainedModel, PreTrainedTokenizerBase

# Base models without a chat template get this one (the Alpaca layout).
PLAIN_TEMPLATE = "### Instruction:\n{instruction}\n\n### Response:\n"
RECIPE_FILE = "recipe.json"  # the hyperparameters, beside the adapter


class Hyperparameters(BaseModel):
    """How to tune one base model. `epochs` passes over the train split, cut at `max_steps`."""

    model_config = ConfigDict(extra="forbid")
    base_model: str  # a packaged model name, a local model directory, or a hub id
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


class Pair(BaseModel):
    """One instruction and its response; held-out loss is reported per `group`."""

    instruction: str
    response: str
    group: str = ""


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
    """Mean loss per response token on a set of pairs, overall and per group."""

    mean_loss: float
    tokens: int
    per_group: dict[str, float]


class TrainingRun(BaseModel):
    base_model: str  # as the checkpoint names it: a packaged model's hub id
    prompt_format: str  # "chat template", or PLAIN_TEMPLATE for a base without one
    steps: list[TrainingStep]
    examples: int
    truncated_away: int  # pairs whose prompt alone fills max_length: nothing left to learn
    tokens: int
    seconds: float
    tokens_per_s: float
    base: LossReport | None  # held-out loss before and after; None without held-out pairs
    tuned: LossReport | None
    device: str


class Example(BaseModel):
    """A tokenized pair: prompt labels are -100, so only the response is learned."""

    input_ids: list[int]
    labels: list[int]
    group: str


def device() -> str:
    import torch

    return "cuda" if torch.cuda.is_available() else "cpu"


def load_base(
    name: str, dtype: str = "float32", cache_root: Path = DEFAULT_MODEL_CACHE
) -> tuple["PreTrainedModel", "PreTrainedTokenizerBase"]:
    """The model and tokenizer `name` resolves to (a packaged model's local copy under
    `cache_root`, by its name or hub id; a directory; a hub id)."""
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    path = resolve_model(name, cache_root)
    with one_bar_per_step():
        tokenizer = AutoTokenizer.from_pretrained(path)
        model = AutoModelForCausalLM.from_pretrained(path, dtype=getattr(torch, dtype)).to(device())
    if tokenizer.pad_token_id is None:
        tokenizer.pad_token = tokenizer.eos_token
    return model, tokenizer


def prompt_format(tokenizer: "PreTrainedTokenizerBase") -> str:
    return "chat template" if tokenizer.chat_template else PLAIN_TEMPLATE


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
    tokenizer: "PreTrainedTokenizerBase", pairs: Sequence[Pair], max_length: int
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
        examples.append(Example(input_ids=ids, labels=labels, group=pair.group))
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
    model: "PreTrainedModel",
    tokenizer: "PreTrainedTokenizerBase",
    pairs: Sequence[Pair],
    hparams: Hyperparameters,
    desc: str = "held-out loss",
) -> LossReport | None:
    """Held-out mean loss per response token, overall and per group; None for no pairs."""
    import torch

    examples, _ = encode(tokenizer, pairs, hparams.max_length)
    if not examples:
        return None
    by_group: dict[str, list[Example]] = {}
    for e in examples:
        by_group.setdefault(e.group, []).append(e)
    batches = []
    for group, members in sorted(by_group.items()):
        members.sort(key=lambda e: len(e.input_ids))  # similar lengths: little padding
        batches += [(group, members[i : i + hparams.batch_size]) for i in range(0, len(members), hparams.batch_size)]
    sums: dict[str, float] = {}
    counts: dict[str, int] = {}
    model.eval()
    with torch.no_grad():
        # disable=None: a bar on a terminal, none in a log file.
        for group, chunk in tqdm(batches, desc=desc, unit="batch", disable=None, leave=False):
            batch = collate(chunk, tokenizer.pad_token_id)
            loss, n = response_loss(model, {k: v.to(model.device) for k, v in batch.items()})
            sums[group] = sums.get(group, 0.0) + loss.item()
            counts[group] = counts.get(group, 0) + n
    total = sum(counts.values())
    return LossReport(
        mean_loss=sum(sums.values()) / total,
        tokens=total,
        per_group={g: sums[g] / counts[g] for g in sorted(sums)},
    )


def add_lora(model: "PreTrainedModel", hparams: Hyperparameters) -> "PreTrainedModel":
    import torch
    from peft import LoraConfig, get_peft_model

    torch.manual_seed(hparams.seed)  # LoRA's A matrices start random
    config = LoraConfig(
        r=hparams.lora_r,
        lora_alpha=hparams.lora_alpha,
        lora_dropout=hparams.lora_dropout,
        target_modules=hparams.target_modules,
        task_type="CAUSAL_LM",
    )
    return get_peft_model(model, config)


def forward_passes(hparams: Hyperparameters, examples: int) -> int:
    return math.ceil(examples / hparams.batch_size) * hparams.epochs


def optimizer_steps(hparams: Hyperparameters, examples: int) -> int:
    """Accumulation windows run across epoch ends; the run's last window may be shorter."""
    total = math.ceil(forward_passes(hparams, examples) / hparams.gradient_accumulation_steps)
    return min(total, hparams.max_steps) if hparams.max_steps else total


def train_lora(
    model: "PreTrainedModel",
    tokenizer: "PreTrainedTokenizerBase",
    examples: Sequence[Example],
    hparams: Hyperparameters,
    on_step: Callable[[TrainingStep], None] | None = None,
) -> tuple[list[TrainingStep], int, float]:
    """Tunes the model's LoRA weights in place: (steps, input tokens seen, seconds)."""
    import torch
    from transformers import get_scheduler

    total = optimizer_steps(hparams, len(examples))
    last_pass = forward_passes(hparams, len(examples))
    params = [p for p in model.parameters() if p.requires_grad]
    optimizer = torch.optim.AdamW(params, lr=hparams.learning_rate)
    scheduler = get_scheduler(hparams.lr_scheduler, optimizer, hparams.warmup_steps, total)
    lengths = [len(e.input_ids) for e in examples]
    steps: list[TrainingStep] = []
    tokens, micro, window_loss = 0, 0, 0.0
    model.train()
    start = time.perf_counter()
    for epoch in range(hparams.epochs):
        for idx in length_grouped_batches(len(examples), lengths, hparams.batch_size, hparams.seed + epoch):
            batch = {k: v.to(model.device) for k, v in collate([examples[i] for i in idx], tokenizer.pad_token_id).items()}
            loss_sum, n = response_loss(model, batch)
            loss = loss_sum / n / hparams.gradient_accumulation_steps
            loss.backward()
            window_loss += loss.item()
            tokens += int(batch["attention_mask"].sum())
            micro += 1
            if micro % hparams.gradient_accumulation_steps and micro < last_pass:
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
    hparams: Hyperparameters,
    train_pairs: Sequence[Pair],
    test_pairs: Sequence[Pair],
    out_dir: str | Path,
    on_step: Callable[[TrainingStep], None] | None = None,
    cache_root: Path = DEFAULT_MODEL_CACHE,
) -> TrainingRun:
    """Held-out loss of the base model, LoRA training, held-out loss of the tuned model;
    saves the checkpoint into `out_dir` (see `save_checkpoint`).

    On a terminal each of the three shows one progress bar.
    """
    model, tokenizer = load_base(hparams.base_model, hparams.dtype, cache_root)
    examples, dropped = encode(tokenizer, train_pairs, hparams.max_length)
    if not examples:
        raise ValueError(f"no training examples: {len(train_pairs)} train pairs, {dropped} truncated away")
    base = evaluate(model, tokenizer, test_pairs, hparams, desc="held-out loss, base model")
    model = add_lora(model, hparams)
    total = optimizer_steps(hparams, len(examples))
    with tqdm(total=total, desc="training", unit="step", disable=None, leave=False) as bar:

        def step_done(step: TrainingStep) -> None:
            bar.set_postfix(loss=f"{step.loss:.3f}", refresh=False)
            bar.update()
            if on_step:
                on_step(step)

        steps, tokens, seconds = train_lora(model, tokenizer, examples, hparams, step_done)
    tuned = evaluate(model, tokenizer, test_pairs, hparams, desc="held-out loss, tuned model")
    save_checkpoint(model, tokenizer, hparams, out_dir)
    return TrainingRun(
        base_model=hub_id(hparams.base_model),
        prompt_format=prompt_format(tokenizer),
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
    model: "PreTrainedModel", tokenizer: "PreTrainedTokenizerBase", hparams: Hyperparameters, out_dir: str | Path
) -> None:
    """The adapter (only: not the base weights), the tokenizer and the hyperparameters.

    `adapter_config.json` names the base by its hub id, not by this machine's copy of it, so
    `PeftModel.from_pretrained` works on any machine that has the base model.
    """
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    for config in model.peft_config.values():
        config.base_model_name_or_path = hub_id(hparams.base_model)
    # The vocabulary is never resized, so the full embeddings stay out; "auto" would ask the
    # hub for the base's config to find out.
    model.save_pretrained(out, save_embedding_layers=False)
    tokenizer.save_pretrained(out)
    (out / RECIPE_FILE).write_text(hparams.model_dump_json(indent=2))


def load_for_chat(
    checkpoint_dir: str | Path, cache_root: Path = DEFAULT_MODEL_CACHE
) -> tuple["PreTrainedModel", "PreTrainedTokenizerBase"]:
    """The base model the adapter names, loaded from this machine's copy of it (a packaged
    model's hub id resolves to its converted local copy under `cache_root`), with the
    checkpoint's adapter."""
    from peft import PeftConfig, PeftModel
    from transformers import AutoTokenizer

    checkpoint = Path(checkpoint_dir)
    if not (checkpoint / "adapter_config.json").is_file():
        raise FileNotFoundError(f"{checkpoint} is not a checkpoint: it has no adapter_config.json")
    base_name = PeftConfig.from_pretrained(checkpoint).base_model_name_or_path
    # The dtype it was trained in; the file may hold more than the hyperparameters (a recipe's name).
    recorded = json.loads((checkpoint / RECIPE_FILE).read_text())
    hparams = Hyperparameters.model_validate({k: v for k, v in recorded.items() if k in Hyperparameters.model_fields})
    base, _ = load_base(base_name, hparams.dtype, cache_root)
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
