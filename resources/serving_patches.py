"""Patches to `transformers serve` under continuous batching, applied inside the embedded server.

Out of the box the server samples every request with the first request's temperature and top_p,
and ignores `response_format` and `min_tokens`. `install()` makes all three per request:

- sampling: continuous batching supports per-request temperature and top_p; the server does not
  pass them. Here each request's values reach `add_request` through a context variable.
- structure: a chat request with a json_schema (or json_object) `response_format` gets a
  `resources.grammar.Constraint`, passed the same way, and a logits processor added to the batch
  masks each constrained request's logits to the tokens its schema allows, every decoding step.
  Requests without one are left as they were; one whose schema cannot be compiled gets a 400.
- length: `min_tokens` (vLLM's field) keeps a request's end-of-sequence tokens out of reach
  until it has generated that many, passed and applied the same way. With `max_tokens` equal
  to it, a request is exactly that long: `benchmarks/bench_embedded_throughput.py` replays a
  build's free-text requests at the lengths the build got.

Importing this module needs the transformers internals it patches, which change between releases:
pyproject.toml pins the version they were written for, and `resources.embedded` refuses to serve
when they are missing.
"""

from __future__ import annotations

import contextvars
import copy
from typing import Any

import torch
from transformers.cli.serving.chat_completion import ChatCompletionHandler
from transformers.cli.serving.utils import CBGenerateManager
from transformers.generation.configuration_utils import ContinuousBatchingConfig
from transformers.generation.continuous_batching.cb_logits_processors import (
    ContinuousBatchingLogitsProcessor,
    ContinuousBatchingLogitsProcessorList,
)
from transformers.generation.continuous_batching.continuous_api import ContinuousBatchingManager
from transformers.generation.continuous_batching.requests import FutureRequestState, RequestState
from transformers.generation.logits_process import LogitsProcessorList

from resources import grammar

# The request's compiled grammar, from the handler (which sees the body) to the generate manager
# (which sees the tokenizer).
_GRAMMAR: contextvars.ContextVar[str | None] = contextvars.ContextVar("glan_grammar", default=None)
# The request's `min_tokens`, passed the same way.
_MIN_TOKENS: contextvars.ContextVar[int] = contextvars.ContextVar("glan_min_tokens", default=0)
# Extra `add_request` kwargs of the request being submitted: its sampling values, constraint and min_tokens.
_REQUEST_KWARGS: contextvars.ContextVar[dict[str, Any]] = contextvars.ContextVar("glan_request_kwargs", default={})


def install() -> None:
    """Patch the server; call before it starts. Raises AttributeError if an internal is missing."""
    cb_config, processors = ContinuousBatchingConfig(), ContinuousBatchingLogitsProcessorList(LogitsProcessorList())
    for obj, name in [
        (cb_config, "per_request_processors"),
        (cb_config, "use_async_batching"),
        *((processors, n) for n in ("logits_processor", "tensors_required", "supported_keys", "do_processing")),
        (RequestState(request_id="", initial_tokens=[]), "_true_initial_tokens"),
        (RequestState(request_id="", initial_tokens=[]), "_eos_token_ids"),
    ]:
        getattr(obj, name)  # the attributes the patches below read or set must exist

    handle_request = ChatCompletionHandler.handle_request
    init_cb = CBGenerateManager.init_cb
    generate_streaming = CBGenerateManager.generate_streaming
    generate_non_streaming = CBGenerateManager.generate_non_streaming
    add_request = ContinuousBatchingManager.add_request
    start = ContinuousBatchingManager.start

    async def patched_handle_request(self: Any, body: dict, request_id: str):
        from fastapi import HTTPException

        # Taken out of the body, which would otherwise log it as an ignored field.
        body = dict(body)
        try:
            compiled = grammar.grammar_for(body.pop("response_format", None))
            min_tokens = _min_tokens(body.pop("min_tokens", None), compiled)
        except ValueError as exc:
            raise HTTPException(status_code=400, detail=str(exc)) from exc
        grammar_set, min_tokens_set = _GRAMMAR.set(compiled), _MIN_TOKENS.set(min_tokens)
        try:
            return await handle_request(self, body, request_id)
        finally:
            _GRAMMAR.reset(grammar_set)
            _MIN_TOKENS.reset(min_tokens_set)

    def patched_init_cb(self: Any, model: Any, gen_config: Any) -> None:
        if self._cb is None:
            cb_config = copy.copy(self._cb_config or ContinuousBatchingConfig())
            cb_config.per_request_processors = True
            # A request's mask depends on the token it sampled last step; async batching prepares
            # the next batch before that token is read back (it is off on CPU anyway).
            cb_config.use_async_batching = False
            self._cb_config = cb_config
            gen_config = copy.deepcopy(gen_config)
            # Processors exist only for values set (not 1.0) at start; every request then sets its own.
            gen_config.do_sample, gen_config.temperature, gen_config.top_p = True, 0.7, 0.95
        init_cb(self, model, gen_config)

    def patched_generate_streaming(self: Any, model: Any, processor: Any, inputs: Any, gen_config: Any, **kw: Any):
        token = _REQUEST_KWARGS.set(_request_kwargs(processor, gen_config))
        try:
            return generate_streaming(self, model, processor, inputs, gen_config, **kw)
        finally:
            _REQUEST_KWARGS.reset(token)

    async def patched_generate_non_streaming(
        self: Any, model: Any, processor: Any, inputs: Any, gen_config: Any, **kw: Any
    ):
        token = _REQUEST_KWARGS.set(_request_kwargs(processor, gen_config))
        try:
            return await generate_non_streaming(self, model, processor, inputs, gen_config, **kw)
        finally:
            _REQUEST_KWARGS.reset(token)

    def patched_add_request(self: Any, *args: Any, **kwargs: Any):
        return add_request(self, *args, **{**_REQUEST_KWARGS.get(), **kwargs})

    def patched_start(self: Any) -> None:
        # Before the batch processor exists: it sizes its argument storage from this list.
        processors = self.logit_processor
        # First, so that temperature and top_p act on the allowed tokens only.
        for processor in (MinTokensLogitsProcessor, GrammarLogitsProcessor):
            if not any(isinstance(p, processor) for p in processors.logits_processor):
                processors.logits_processor.insert(0, processor())
                processors.tensors_required += 1
                processors.supported_keys.update(processor.supported_kwargs)
                processors.do_processing = True
        start(self)

    ChatCompletionHandler.handle_request = patched_handle_request
    CBGenerateManager.init_cb = patched_init_cb
    CBGenerateManager.generate_streaming = patched_generate_streaming
    CBGenerateManager.generate_non_streaming = patched_generate_non_streaming
    ContinuousBatchingManager.add_request = patched_add_request
    ContinuousBatchingManager.start = patched_start


def _request_kwargs(processor: Any, gen_config: Any) -> dict[str, Any]:
    kwargs: dict[str, Any] = _request_sampling(gen_config)
    if (compiled := _GRAMMAR.get()) is not None:
        hf_tokenizer = getattr(processor, "tokenizer", processor)  # a processor wraps its tokenizer
        eos = gen_config.eos_token_id if gen_config.eos_token_id is not None else hf_tokenizer.eos_token_id
        eos_ids = tuple(eos) if isinstance(eos, list | tuple) else (eos,)
        kwargs["grammar"] = grammar.Constraint(grammar.tokenizer_for(hf_tokenizer, eos_ids), compiled)
    if min_tokens := _MIN_TOKENS.get():
        kwargs["min_tokens"] = min_tokens
    return kwargs


def _min_tokens(raw: object, compiled: str | None) -> int:
    """A request's `min_tokens`, 0 when absent."""
    if raw is None:
        return 0
    if not isinstance(raw, int) or isinstance(raw, bool) or raw < 0:
        raise ValueError(f"min_tokens must be a whole number of tokens, not {raw!r}")
    if raw and compiled is not None:
        # The schema decides where a structured reply ends; holding its end back leaves no token allowed.
        raise ValueError("min_tokens cannot be combined with a response_format")
    return raw


def _request_sampling(gen_config: Any) -> dict[str, float]:
    if not gen_config.do_sample:  # the handler's translation of temperature 0
        return {"temperature": 1e-4, "top_p": 1.0}  # as good as greedy: one token keeps all the mass
    return {
        "temperature": float(gen_config.temperature if gen_config.temperature is not None else 1.0),
        "top_p": float(gen_config.top_p if gen_config.top_p is not None else 1.0),
    }


def _generated(state: RequestState) -> list[int]:
    """All the tokens the request has generated. A request restarted after its cache was dropped
    carries its earlier output at the end of its prompt."""
    if state._true_initial_tokens:
        return state.initial_tokens[state._true_initial_tokens :] + state.generated_tokens
    return state.generated_tokens


class _HostStateProcessor(ContinuousBatchingLogitsProcessor):
    """A processor whose per-row state stays on the host from `prepare` to `__call__`: one int32
    argument per row cannot carry it. Safe, as batches are prepared and run one at a time (no async)."""

    ignored_kwargs: tuple[str, ...] = ()

    def fill_defaults(self, int32_tensor: torch.Tensor) -> None:
        int32_tensor.fill_(0)

    def prepare_tensor_args(self, requests_with_new_token: list[FutureRequestState]) -> torch.Tensor:
        self.prepare(requests_with_new_token)
        return torch.zeros(len(requests_with_new_token), dtype=torch.int32)

    def prepare(self, requests_with_new_token: list[FutureRequestState]) -> None:
        raise NotImplementedError


class MinTokensLogitsProcessor(_HostStateProcessor):
    """Keeps each request's end-of-sequence tokens out of reach until it has `min_tokens`."""

    supported_kwargs: dict[str, type] = {"min_tokens": int}

    def __init__(self) -> None:
        self._held: list[tuple[int, list[int]]] = []  # per row, the tokens that may not end it yet

    def prepare(self, requests_with_new_token: list[FutureRequestState]) -> None:
        self._held = [
            (row, sorted(request.state._eos_token_ids))
            for row, request in enumerate(requests_with_new_token)
            if len(_generated(request.state)) < request.state.logit_processor_kwargs.get("min_tokens", 0)
        ]

    def __call__(self, scores: torch.Tensor, tensor_arg: torch.Tensor) -> torch.Tensor:
        if not self._held:
            return scores
        scores = scores.clone()
        for row, eos_ids in self._held:
            scores[row, eos_ids] = float("-inf")
        return scores


class GrammarLogitsProcessor(_HostStateProcessor):
    """Masks each constrained request's logits to the tokens its grammar allows next."""

    supported_kwargs: dict[str, type] = {"grammar": grammar.Constraint}

    def __init__(self) -> None:
        self._bitmask: torch.Tensor | None = None  # the batch's

    def prepare(self, requests_with_new_token: list[FutureRequestState]) -> None:
        constraints, remaining = [], []
        for request in requests_with_new_token:
            state = request.state
            constraint = state.logit_processor_kwargs.get("grammar")
            if constraint is not None:
                ok = constraint.error is None
                constraint.advance(_generated(state))
                if ok and constraint.error is not None:
                    print(f"[glan] {state.request_id} left its grammar: {constraint.error}", flush=True)
            constraints.append(constraint)
            # Counting the token about to be sampled (a restarted request's budget is what was left).
            budget = state.max_new_tokens if state.max_new_tokens is not None else 2**31
            remaining.append(budget - len(state.generated_tokens))
        self._bitmask = grammar.token_bitmask(constraints, remaining)

    def __call__(self, scores: torch.Tensor, tensor_arg: torch.Tensor) -> torch.Tensor:
        if self._bitmask is None:  # nothing constrained in this batch
            return scores
        # One row per request with a new token, first; rows after those belong to requests still
        # prefilling, whose samples are discarded.
        rows = self._bitmask.size(0)
        return torch.cat([grammar.mask_logits(scores[:rows], self._bitmask), scores[rows:]])
