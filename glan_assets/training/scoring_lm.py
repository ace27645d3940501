"""lm-eval's Hugging Face model, scoring log-likelihood requests without the work it throws away.

lm-eval's HFLM computes the logits of every position and log-softmaxes them over the whole
vocabulary (262k for Gemma 3), then keeps the continuation's few positions; and it pads a batch
to its longest sequence. On the demo's CPU, 20 MMLU items took 36.6 s at batch 8, 14.6 s one
sequence at a time, and 8.0 s with logits kept only for the continuation, the same scores
(benchmarks/README.md, "Evaluation"). Generation keeps the configured batch size: it gains
from batching (5 GSM8K items: 9.9 s at 8 against 20.3 s at 1).
"""

import torch
from lm_eval.models.huggingface import HFLM


class ScoringLM(HFLM):
    _keep = 0  # logits per sequence the model returns while scoring; 0 = all

    def _loglikelihood_tokens(self, requests, disable_tqdm: bool = False, override_bs: int | None = None):
        # Each request is ((context, continuation), context_tokens, continuation_tokens).
        batch = self.batch_size_per_gpu
        self._keep = max((len(continuation) for _, _, continuation in requests), default=0)
        if self.device.type == "cpu":
            self.batch_size_per_gpu = 1  # no padding: a batch costs as much as its longest sequence
        try:
            return super()._loglikelihood_tokens(requests, disable_tqdm, override_bs)
        finally:
            self.batch_size_per_gpu, self._keep = batch, 0

    def _model_call(self, inps: torch.Tensor, attn_mask: torch.Tensor | None = None,
                    labels: torch.Tensor | None = None) -> torch.Tensor:
        if not self._keep or attn_mask is not None or labels is not None:
            return super()._model_call(inps, attn_mask, labels)
        # Right-padded rows: the continuation of the shortest row sits furthest from the end.
        # Padding is zeros, so a real trailing zero only makes `keep` larger, never too small.
        real = inps != 0
        lengths = torch.where(real.any(1), inps.shape[1] - real.flip(1).int().argmax(1), 0)
        keep = min(inps.shape[1], inps.shape[1] - int(lengths.min()) + self._keep)
        # lm-eval counts logits missing at the front as prefix positions and indexes from the end.
        with torch.no_grad():
            return self.model(inps, logits_to_keep=keep).logits
