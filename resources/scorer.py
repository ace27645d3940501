"""Teacher-forced loss of target texts under a local causal LM, in-process and batched.

`CausalLMScorer(model_dir).score([(prompt, target), ...])` returns, per pair, the summed
cross-entropy of the target's tokens given the prompt and how many tokens that was: only
target tokens count, never the prompt's or the padding's. Rows are padded on the left so that
every target ends at the last position; with explicit position ids the padding changes
nothing, and only the last positions' logits are computed (the vocabulary is most of the cost).
torch is imported when a scorer is made: the CLI and every build worker import this module,
and importing torch had been a second of their start-up.

`score_with_and_without([(prompt, target), ...])` gives each target's loss twice from one
batched pass, after its prompt and after an empty one, for instruction-following difficulty
(`glan_assets.quality.ifd`).
"""

import functools
import inspect
from collections.abc import Sequence
from dataclasses import dataclass

from resources.local_models import one_bar_per_step


@dataclass(frozen=True)
class PairLoss:
    nll: float  # summed over the target's tokens, in nats
    tokens: int

    @property
    def mean(self) -> float:
        return self.nll / self.tokens if self.tokens else float("nan")


class CausalLMScorer:
    """A causal LM directory (safetensors + tokenizer) loaded once for scoring."""

    def __init__(self, model_dir: str, max_length: int = 1024, max_target_tokens: int = 256, chat_template: bool = True):
        import torch
        from transformers import AutoModelForCausalLM, AutoTokenizer

        self.model_dir = model_dir
        self.tokenizer = AutoTokenizer.from_pretrained(model_dir)
        with one_bar_per_step():  # no bar per loaded file in a build's output
            self.model = AutoModelForCausalLM.from_pretrained(model_dir, dtype=torch.float32).eval()
        self.max_length = max_length
        self.max_target_tokens = max_target_tokens
        # An instruct model is scored on the prompt as it sees it in chat; a base model on plain text.
        self.chat_template = chat_template and bool(self.tokenizer.chat_template)
        self.pad_id = self.tokenizer.pad_token_id if self.tokenizer.pad_token_id is not None else self.tokenizer.eos_token_id
        self.keeps_logits = "logits_to_keep" in inspect.signature(self.model.forward).parameters

    def encode(self, prompt: str, target: str) -> tuple[list[int], list[int]]:
        """(prompt ids, target ids); encoded apart so the boundary never merges into one token."""
        if self.chat_template:
            text = self.tokenizer.apply_chat_template(
                [{"role": "user", "content": prompt}], add_generation_prompt=True, tokenize=False
            )
            prompt_ids = self.tokenizer(text, add_special_tokens=False).input_ids
        else:
            prompt_ids = self.tokenizer(prompt + "\n").input_ids
        target_ids = self.tokenizer(target, add_special_tokens=False).input_ids[: self.max_target_tokens]
        # A long prompt loses its beginning: the end (the input) is what the target follows.
        room = max(self.max_length - len(target_ids), 1)
        return prompt_ids[-room:], target_ids

    def score(self, pairs: Sequence[tuple[str, str]], batch_size: int = 8) -> list[PairLoss]:
        """The target's loss for each (prompt, target), in order; batches of similar length."""
        return self._score([self.encode(p, t) for p, t in pairs], batch_size)

    def score_with_and_without(
        self, pairs: Sequence[tuple[str, str]], batch_size: int = 8
    ) -> list[tuple[PairLoss, PairLoss]]:
        """(loss after the prompt, loss after an empty prompt) of each target, in order.

        The empty prompt goes through the same template (the chat template's empty user turn,
        or a bare newline for a base model), so the two differ by the prompt's text alone.
        Both rows of every pair are scored in one pass, batched by length with all the others.
        """
        rows = [row for p, t in pairs for row in (self.encode(p, t), self.encode("", t))]
        losses = self._score(rows, batch_size)
        return list(zip(losses[0::2], losses[1::2]))

    def _score(self, encoded: list[tuple[list[int], list[int]]], batch_size: int) -> list[PairLoss]:
        order = sorted(range(len(encoded)), key=lambda i: len(encoded[i][0]) + len(encoded[i][1]))
        results: list[PairLoss | None] = [None] * len(encoded)
        for start in range(0, len(order), max(batch_size, 1)):
            chunk = order[start : start + batch_size]
            for i, loss in zip(chunk, self._batch([encoded[i] for i in chunk])):
                results[i] = loss
        return results

    def _batch(self, rows: list[tuple[list[int], list[int]]]) -> list[PairLoss]:
        import torch

        width = max(len(p) + len(t) for p, t in rows)
        longest_target = max(len(t) for _, t in rows)
        if longest_target == 0:
            return [PairLoss(0.0, 0) for _ in rows]
        ids = torch.full((len(rows), width), self.pad_id, dtype=torch.long)
        mask = torch.zeros((len(rows), width), dtype=torch.long)
        for r, (p, t) in enumerate(rows):
            seq = p + t
            ids[r, width - len(seq) :] = torch.tensor(seq)
            mask[r, width - len(seq) :] = 1
        positions = (mask.cumsum(-1) - 1).clamp(min=0)
        extra = {"logits_to_keep": longest_target + 1} if self.keeps_logits else {}
        with torch.inference_mode():
            logits = self.model(input_ids=ids, attention_mask=mask, position_ids=positions, **extra).logits
        # The logits at the last `longest_target + 1` positions predict the last `longest_target` tokens.
        predicted = logits[:, -(longest_target + 1) : -1].float()
        labels = ids[:, -longest_target:].clone()
        for r, (_, t) in enumerate(rows):
            labels[r, : longest_target - len(t)] = -100  # prompt and padding: not scored
        nll = torch.nn.functional.cross_entropy(
            predicted.reshape(-1, predicted.size(-1)), labels.reshape(-1), ignore_index=-100, reduction="none"
        ).view(len(rows), -1)
        return [PairLoss(float(nll[r].sum()), len(t)) for r, (_, t) in enumerate(rows)]


@functools.lru_cache(maxsize=2)
def load_scorer(model_dir: str) -> CausalLMScorer:
    """One loaded model per directory and process: a rebuild does not load it again."""
    return CausalLMScorer(model_dir)
