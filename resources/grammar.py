"""Grammar-constrained decoding: which tokens a request's `response_format` allows next.

A chat request's `response_format` compiles to an llguidance grammar (`grammar_for`); each
request then holds one `Constraint`, which follows the tokens it has generated and gives the set
of tokens that keep its output inside the grammar. `token_bitmask` packs the sets of a batch,
one row per request, and `mask_logits` sets every other token's logit to -inf, so sampling can
only pick schema-valid continuations and, once the JSON value is complete, only EOS.

A request that is about to reach its max_tokens is steered to close its JSON value with its last
token (see `token_bitmask`): small models repeat list items until the budget runs out, and a
reply cut off mid-string parses no better than unconstrained text.

This knows llguidance and torch, not the server: `resources.serving_patches` wires it into
`transformers serve`.
"""

from __future__ import annotations

import copy
import functools
from collections.abc import Sequence
from typing import Any

import llguidance
import llguidance.hf
import llguidance.torch
import numpy as np
import torch

# Compact, fixed separators (those of the prompts' worked examples): with flexible whitespace a
# small model can spend its whole token budget on newlines inside a still-valid JSON value. A
# schema's own "x-guidance" key overrides these.
JSON_LAYOUT = {"whitespace_flexible": False, "item_separator": ", ", "key_separator": ": "}

# Within this many tokens of its max_tokens a request's closing is planned (`Constraint.closing`),
CLOSE_HORIZON = 64
# and within its closing's length plus this many, it may not start another array item: the
# item would need more tokens to close than are left. A new item of GLAN's schemas needs < 20.
CLOSE_SLACK = 24


def grammar_for(response_format: dict[str, Any] | None) -> str | None:
    """The llguidance grammar that an OpenAI `response_format` asks for; None for free text.

    Raises ValueError for a format or schema that cannot be followed, so the caller can refuse
    the request instead of answering it unconstrained.
    """
    if not response_format or response_format.get("type", "text") == "text":
        return None
    kind = response_format.get("type")
    if kind == "json_object":
        schema: Any = {"type": "object"}
    elif kind == "json_schema":
        schema = (response_format.get("json_schema") or {}).get("schema")
        if not isinstance(schema, dict):
            raise ValueError("response_format json_schema needs a `schema` object")
    else:
        raise ValueError(f"unsupported response_format type {kind!r}")
    grammar = llguidance.LLMatcher.grammar_from_json_schema(_closed_objects(schema), defaults=JSON_LAYOUT)
    is_error, messages = llguidance.LLMatcher.validate_grammar_with_warnings(grammar)
    if is_error:
        raise ValueError(f"response_format schema cannot be compiled: {messages[0]}")
    return grammar


def _closed_objects(schema: dict[str, Any]) -> dict[str, Any]:
    """The schema with `additionalProperties: false` wherever an object lists its properties
    and says nothing about others (as OpenAI's strict mode requires, and pydantic leaves out).
    Open objects let a small model invent keys, or repeat one, until the token budget runs out.
    """
    schema = copy.deepcopy(schema)

    def close(node: Any) -> None:
        if isinstance(node, dict):
            for value in node.values():
                close(value)
            if "properties" in node and "additionalProperties" not in node:
                node["additionalProperties"] = False
        elif isinstance(node, list):
            for value in node:
                close(value)

    close(schema)
    return schema


@functools.lru_cache(maxsize=4)
def tokenizer_for(hf_tokenizer: Any, eos_token_ids: tuple[int, ...]) -> GrammarTokenizer:
    """The grammar's view of a fast Hugging Face tokenizer (a fraction of a second to build, so
    cached). `eos_token_ids` are the tokens that end a request, so that the grammar's end is the
    generation's end.
    """
    return GrammarTokenizer(llguidance.hf.from_tokenizer(hf_tokenizer, eos_token=list(eos_token_ids)))


class GrammarTokenizer:
    """An llguidance tokenizer, and its tokens sorted by what they can do to close a JSON value."""

    def __init__(self, ll: llguidance.LLTokenizer) -> None:
        self.ll = ll
        self.texts = [ll.decode_bytes([t]) for t in range(ll.vocab_size)]
        # Quotes, brackets and braces only, longest first: they can end strings and containers.
        self.closers = sorted(
            (t for t, b in enumerate(self.texts) if b and not set(b) - set(b'"]}')), key=lambda t: -len(self.texts[t])
        )
        # One letter: what a string that must not be empty needs before its quote can close it.
        self.fillers = [t for t, b in enumerate(self.texts) if len(b) == 1 and b.isalpha()]
        # Any token with a comma can start another array item.
        self.with_comma = [t for t, b in enumerate(self.texts) if b"," in b]
        # Tokens that open nothing: the last resort of a closing.
        self.opens_nothing = np.array([not set(b) & set(b",{[") for b in self.texts])


class Constraint:
    """One request's position in its grammar."""

    def __init__(self, tokenizer: GrammarTokenizer, grammar: str) -> None:
        self.tokenizer = tokenizer
        self.matcher = llguidance.LLMatcher(tokenizer.ll, grammar)
        self.tokens: list[int] = []  # the request's generated tokens, as far as the matcher has seen
        self.text = b""  # and their bytes

    def advance(self, generated: Sequence[int]) -> None:
        """Catch up with the request's generated tokens (all of them, from its first)."""
        if len(generated) > len(self.tokens):
            new = list(generated[len(self.tokens) :])
            self.matcher.consume_tokens(new)
            self.tokens += new
            self.text += b"".join(self.tokenizer.texts[t] for t in new)

    @property
    def error(self) -> str | None:
        """Why the output left the grammar; None while it has not. The mask then allows only EOS."""
        return self.matcher.get_error() if self.matcher.is_error() else None

    def closing(self, limit: int) -> list[int] | None:
        """A short token sequence that completes the JSON value from here (empty when it is
        complete), or None if it takes more than `limit` tokens. Each step takes the grammar's
        forced token, else the longest allowed token that ends the open string and containers,
        else a letter (for a string that must not be empty), else any allowed token that opens
        nothing. Schema-valid, but not necessarily what the schema's validators accept: an
        array it finds empty it closes empty.
        """
        matcher, path, scan = self.matcher.deep_copy(), [], JsonScan(self.text)
        texts = self.tokenizer.texts
        while not matcher.is_accepting():
            if len(path) >= limit or matcher.is_error():
                return None
            token = next(iter(matcher.compute_ff_tokens()), None)
            if token is None:
                words = np.frombuffer(matcher.compute_bitmask(), dtype=np.uint32)
                ending = scan.ending()
                token = next(
                    (t for t in self.tokenizer.closers if _allows(words, t) and ending.startswith(texts[t])),
                    next((t for t in self.tokenizer.fillers if _allows(words, t)), None),
                )
                if token is None:
                    allowed = np.unpackbits(words.view(np.uint8), bitorder="little")[: len(texts)].astype(bool)
                    quiet = allowed & self.tokenizer.opens_nothing
                    token = int(np.flatnonzero(quiet if quiet.any() else allowed)[0])
            matcher.consume_token(token)
            path.append(token)
            scan.feed(texts[token])
        return path

    def __deepcopy__(self, memo: dict) -> Constraint:
        # Continuous batching deep-copies a request's settings when it restarts or forks one;
        # the native matcher cannot be pickled, but it can copy itself.
        clone = copy.copy(self)
        clone.matcher = self.matcher.deep_copy()
        clone.tokens = list(self.tokens)
        return clone

    def __repr__(self) -> str:  # request states are logged with their settings
        return f"Constraint(tokens={len(self.tokens)}, error={self.error!r})"


class JsonScan:
    """Where a valid JSON prefix stands: inside a string or not, and its open containers."""

    def __init__(self, prefix: bytes = b"") -> None:
        self.stack: list[int] = []  # the closing byte of each open array or object, innermost last
        self.in_string = self.escaped = False
        self.feed(prefix)

    def feed(self, data: bytes) -> bool:
        """Read more bytes; True if one of them is a comma between the items of an array."""
        item_comma = False
        for byte in data:
            if self.in_string:
                if self.escaped:
                    self.escaped = False
                elif byte == 0x5C:  # backslash
                    self.escaped = True
                elif byte == 0x22:  # quote
                    self.in_string = False
            elif byte == 0x22:
                self.in_string = True
            elif byte in b"[{":
                self.stack.append(0x5D if byte == 0x5B else 0x7D)
            elif byte in b"]}":
                self.stack.pop()
            elif byte == 0x2C and self.stack and self.stack[-1] == 0x5D:
                item_comma = True
        return item_comma

    def ending(self) -> bytes:
        """The bytes that end the open string and containers, innermost first."""
        return (b'"' if self.in_string else b"") + bytes(reversed(self.stack))


def _allows(words: np.ndarray, token: int) -> bool:
    return bool((words[token >> 5] >> (token & 31)) & 1)


_executor: llguidance.LLExecutor | None = None


def token_bitmask(
    constraints: Sequence[Constraint | None], remaining: Sequence[int] | None = None
) -> torch.Tensor | None:
    """The allowed-token bitmask of a batch, one int32 row per request (bit i of word j allows
    token 32*j + i); rows of unconstrained requests allow every token. None when no request of
    the batch is constrained.

    `remaining` is how many more tokens each request may generate, counting this one. A request
    close to it may start no new array item, and once its planned closing needs every token
    left, it writes that closing: the JSON value completes with the last token, so a reply
    cut off by max_tokens still parses (and still ends with finish_reason "length").
    """
    rows = [(c.matcher, i) for i, c in enumerate(constraints) if c is not None]
    if not rows:
        return None
    global _executor
    if _executor is None:
        _executor = llguidance.LLExecutor()
    vocab_size = next(c for c in constraints if c is not None).tokenizer.ll.vocab_size
    bitmask = torch.full(llguidance.torch.get_bitmask_shape(len(constraints), vocab_size), -1, dtype=torch.int32)
    llguidance.torch.fill_next_token_bitmask_par(_executor, rows, bitmask)
    for i, (constraint, left) in enumerate(zip(constraints, remaining or [])):
        if constraint is None or left > CLOSE_HORIZON or constraint.error is not None:
            continue
        path = constraint.closing(limit=left)
        if not path:  # complete already (the mask allows only EOS), or past saving
            continue
        words = bitmask[i].numpy().view(np.uint32)  # shares the tensor's memory
        if left <= len(path):
            words[:] = 0
            words[path[0] >> 5] = 1 << (path[0] & 31)
        elif left <= len(path) + CLOSE_SLACK:
            where, before = JsonScan(constraint.text), words.copy()
            for token in constraint.tokenizer.with_comma:
                if _allows(words, token) and copy.deepcopy(where).feed(constraint.tokenizer.texts[token]):
                    words[token >> 5] &= ~np.uint32(1 << (token & 31))
            if not words.any():  # the schema wants another item (minItems): it gets one
                words[:] = before
    return bitmask


_BIT = torch.arange(32, dtype=torch.int32)


def mask_logits(logits: torch.Tensor, bitmask: torch.Tensor) -> torch.Tensor:
    """`logits` ([batch, vocab]) with every token the bitmask disallows set to -inf.

    Not llguidance.torch's apply_token_bitmask_inplace: that one is torch.compile'd, which on a
    CPU-only machine means a C++ compiler and seconds of compilation at the first request.
    """
    allowed = ((bitmask.unsqueeze(-1) >> _BIT) & 1).view(bitmask.size(0), -1).bool()
    vocab = logits.size(-1)
    if allowed.size(1) < vocab:  # logits wider than the tokenizer: padding ids are never valid
        allowed = torch.nn.functional.pad(allowed, (0, vocab - allowed.size(1)), value=False)
    return logits.masked_fill(~allowed[:, :vocab].to(logits.device), float("-inf"))
