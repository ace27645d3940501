"""Instruction-following difficulty (Li et al., NAACL 2024, "From Quantity to Quality"):
the response's mean loss given its instruction divided by its mean loss alone, under a
small local causal LM. Near 0: the instruction all but dictates the response (a copy, a
template). Near 1: it hardly helps. Above 1: it makes the response harder to predict, a
sign of a mismatched pair. Both losses come from one batched pass of the scorer
(`resources.scorer.CausalLMScorer.score_with_and_without`); the response's "alone" loss is
taken after the same chat template with an empty instruction, so the ratio measures the
instruction's text and not the template (the paper scores the bare answer).
"""

from collections.abc import Callable, Sequence
from dataclasses import dataclass

from resources.scorer import PairLoss


@dataclass(frozen=True)
class IFDScore:
    loss_given_instruction: float  # mean cross-entropy of the response's tokens, nats per token
    loss_alone: float
    tokens: int  # response tokens scored (the scorer caps a long response)

    @property
    def ifd(self) -> float | None:
        """None for a response with no tokens: it has no loss to compare."""
        if not self.tokens or self.loss_alone <= 0:
            return None
        return self.loss_given_instruction / self.loss_alone


def ifd_scores(
    score: Callable[[list[tuple[str, str]]], list[tuple[PairLoss, PairLoss]]],
    pairs: Sequence[tuple[str, str]],
) -> list[IFDScore]:
    """Each (instruction, response)'s losses, in order, from one call of `score` (a scorer's
    `score_with_and_without`, with its batch size bound)."""
    return [IFDScore(given.mean if given.tokens else 0.0, alone.mean if alone.tokens else 0.0, given.tokens)
            for given, alone in score(list(pairs))]
