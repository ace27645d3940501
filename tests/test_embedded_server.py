"""The packaged-model resolver, grammar-constrained decoding, and the real embedded
`transformers serve` over HTTP.

The `embedded` tests start a real server in a temporary state dir, so they never touch a user's
shared server; the converted model stays in the default cache, converted once per machine.
"""

from __future__ import annotations

import asyncio
import copy
import json
import os
import subprocess
import sys
import time
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import openai
import pytest
import torch
from pydantic import BaseModel, Field

from glan_assets.glan.prompts import SESSIONS, SUBJECTS_FORMAT
from glan_assets.glan.schemas import SessionList, SubjectList
from resources import embedded, grammar
from resources.local_models import PACKAGED_MODELS, convert_in_background, local_model_dir

os.environ.setdefault("HF_HUB_OFFLINE", "1")


def test_unknown_model_name_lists_the_known_ones() -> None:
    with pytest.raises(ValueError) as excinfo:
        local_model_dir("no-such-model")
    for name in PACKAGED_MODELS:
        assert name in str(excinfo.value)


def test_existing_directory_is_used_as_is(tmp_path: Path) -> None:
    assert local_model_dir(str(tmp_path)) == tmp_path


def test_a_model_converts_in_a_background_process_once(tmp_path: Path) -> None:
    # What `glan build` starts for the checkpoint's base model while the partitions build.
    assert convert_in_background(str(tmp_path), tmp_path) is None  # the user's own weights: nothing to do
    converting = convert_in_background("smollm2-135m-instruct", tmp_path)
    assert converting is not None and converting.wait(timeout=300) == 0
    target = tmp_path / "smollm2-135m-instruct"
    assert (target / "config.json").is_file() and list(target.glob("*.safetensors"))
    assert convert_in_background("smollm2-135m-instruct", tmp_path) is None  # converted: nothing to start
    assert local_model_dir("smollm2-135m-instruct", tmp_path) == target


def test_the_server_refuses_to_start_without_its_patches(monkeypatch: pytest.MonkeyPatch) -> None:
    # A transformers release that moved an internal would otherwise serve without grammars.
    from resources import serving_patches

    def missing() -> None:
        raise AttributeError("no attribute 'per_request_processors'")

    monkeypatch.setattr(serving_patches, "install", missing)
    with pytest.raises(SystemExit) as excinfo:
        embedded.main(["transformers-serve", "--port", "1"])
    message = str(excinfo.value.code)
    assert "per_request_processors" in message and "make setup" in message


def _json_schema(model: type[BaseModel]) -> dict:
    return {"type": "json_schema", "json_schema": {"name": model.__name__, "schema": model.model_json_schema()}}


class Pet(BaseModel):
    name: str = Field(min_length=1)
    age: int
    tags: list[str]


@pytest.fixture(scope="module")
def smollm2() -> tuple[Any, Any]:
    from transformers import AutoModelForCausalLM, AutoTokenizer

    path = local_model_dir("smollm2-135m-instruct")
    return AutoTokenizer.from_pretrained(path), AutoModelForCausalLM.from_pretrained(path).eval()


def _constraint(tokenizer: Any, model: type[BaseModel]) -> grammar.Constraint:
    compiled = grammar.grammar_for(_json_schema(model))
    return grammar.Constraint(grammar.tokenizer_for(tokenizer, (tokenizer.eos_token_id,)), compiled)


def _allowed(constraint: grammar.Constraint) -> list[int]:
    bits = (grammar.token_bitmask([constraint])[0].unsqueeze(-1) >> torch.arange(32, dtype=torch.int32)) & 1
    return bits.flatten().nonzero().flatten().tolist()


def _greedy(
    smollm2: tuple[Any, Any], messages: list[dict], model: type[BaseModel], max_tokens: int
) -> tuple[str, list[int]]:
    """Greedy decoding of one request under its schema, masked as the server masks it."""
    tokenizer, lm = smollm2
    constraint = _constraint(tokenizer, model)
    ids = tokenizer.apply_chat_template(messages, add_generation_prompt=True, return_tensors="pt", return_dict=True)
    ids, past, out = ids["input_ids"], None, []
    with torch.no_grad():
        while len(out) < max_tokens and tokenizer.eos_token_id not in out:
            result = lm(input_ids=ids, past_key_values=past, use_cache=True)
            past = result.past_key_values
            constraint.advance(out)
            bitmask = grammar.token_bitmask([constraint], [max_tokens - len(out)])
            out.append(int(grammar.mask_logits(result.logits[:, -1].float(), bitmask).argmax()))
            ids = torch.tensor([out[-1:]])
    return tokenizer.decode(out, skip_special_tokens=True), out


def test_constrained_greedy_decoding_follows_the_schema(smollm2: tuple[Any, Any]) -> None:
    # Nothing in the prompt asks for JSON: the mask alone makes it.
    text, tokens = _greedy(smollm2, [{"role": "user", "content": "Tell me about your dog."}], Pet, 128)
    Pet.model_validate_json(text)
    assert tokens[-1] == smollm2[0].eos_token_id  # the grammar's end ended the generation


def test_a_reply_short_of_tokens_still_closes_its_json(smollm2: tuple[Any, Any]) -> None:
    # Unconstrained, the model writes about 70 tokens for this.
    messages = SUBJECTS_FORMAT.messages(
        text="Phonology (graduate): phonemes, syllable structure, stress\nPhonetics (undergraduate): vowels"
    )
    text, tokens = _greedy(smollm2, messages, SubjectList, max_tokens=48)
    assert len(tokens) <= 48
    SubjectList.model_validate_json(text)


def test_mask_allows_only_schema_valid_tokens(smollm2: tuple[Any, Any]) -> None:
    tokenizer = smollm2[0]
    constraint = _constraint(tokenizer, Pet)
    first = _allowed(constraint)
    assert first and all(tokenizer.decode([t]).startswith("{") for t in first)
    assert tokenizer.eos_token_id not in first

    constraint.advance(tokenizer.encode('{"name": "Rex", "age": 3, "tags": ["good"]', add_special_tokens=False))
    # A closed object: no fourth key, only its end.
    assert all(tokenizer.decode([t]).startswith("}") for t in _allowed(constraint))
    constraint.advance([*constraint.tokens, *tokenizer.encode("}", add_special_tokens=False)])
    assert _allowed(constraint) == [tokenizer.eos_token_id]  # complete: only the end

    wrong = _constraint(tokenizer, Pet)
    wrong.advance(tokenizer.encode("Sure!", add_special_tokens=False))
    assert wrong.error is not None
    assert _allowed(wrong) == [tokenizer.eos_token_id]  # off the grammar: end the reply


def test_a_constraint_copies_with_its_position(smollm2: tuple[Any, Any]) -> None:
    tokenizer = smollm2[0]
    constraint = _constraint(tokenizer, Pet)
    constraint.advance(tokenizer.encode('{"name": "Rex"', add_special_tokens=False))
    clone = copy.deepcopy(constraint)
    assert _allowed(clone) == _allowed(constraint)
    clone.advance([*clone.tokens, *tokenizer.encode(', "age": 3', add_special_tokens=False)])
    assert _allowed(clone) != _allowed(constraint)


def test_response_formats() -> None:
    assert grammar.grammar_for(None) is None
    assert grammar.grammar_for({"type": "text"}) is None
    assert grammar.grammar_for({"type": "json_object"})
    assert json.loads(grammar.grammar_for(_json_schema(SessionList)))  # llguidance's JSON grammar form
    for unusable in (
        {"type": "json_schema", "json_schema": {"name": "x"}},
        {"type": "json_schema", "json_schema": {"name": "x", "schema": {"type": "no-such-type"}}},
        {"type": "xml"},
    ):
        with pytest.raises(ValueError):
            grammar.grammar_for(unusable)


def _answers(root_url: str) -> bool:
    try:
        with urllib.request.urlopen(f"{root_url}/health", timeout=5) as resp:
            return resp.status == 200
    except OSError:
        return False


@pytest.fixture(scope="module")
def state_dir(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Path]:
    path = tmp_path_factory.mktemp("embedded")
    yield path
    embedded.stop_server(path)  # also when a test failed midway


@pytest.mark.embedded
def test_one_server_is_started_and_then_reused(state_dir: Path) -> None:
    first = embedded.ensure_server(state_dir=state_dir)
    pid = embedded._read_state(state_dir)["pid"]
    second = embedded.ensure_server(state_dir=state_dir)
    assert second == first
    assert embedded._read_state(state_dir)["pid"] == pid
    assert first.base_url.startswith("http://127.0.0.1:") and first.base_url.endswith("/v1")


@pytest.mark.embedded
def test_chat_completion_over_http(state_dir: Path) -> None:
    endpoint = embedded.ensure_server(state_dir=state_dir)
    client = openai.OpenAI(base_url=endpoint.base_url, api_key="not-needed", timeout=120)
    resp = client.chat.completions.create(
        model=endpoint.model,
        messages=[{"role": "user", "content": "Name three colors."}],
        max_tokens=16,
        temperature=0.7,
        top_p=0.95,
    )
    assert resp.choices[0].message.content.strip()
    assert resp.usage.prompt_tokens > 0
    assert 0 < resp.usage.completion_tokens <= 16


@pytest.mark.embedded
def test_temperature_zero_is_greedy(state_dir: Path) -> None:
    endpoint = embedded.ensure_server(state_dir=state_dir)
    client = openai.OpenAI(base_url=endpoint.base_url, api_key="not-needed", timeout=120)

    def reply() -> str:
        resp = client.chat.completions.create(
            model=endpoint.model,
            messages=[{"role": "user", "content": "Give me a name for a cat."}],
            max_tokens=8,
            temperature=0.0,
        )
        return resp.choices[0].message.content

    assert reply() == reply()


@pytest.mark.embedded
def test_structured_requests_follow_their_schema(state_dir: Path) -> None:
    endpoint = embedded.ensure_server(state_dir=state_dir)
    client = openai.AsyncOpenAI(base_url=endpoint.base_url, api_key="not-needed", timeout=600)
    subjects = SUBJECTS_FORMAT.messages(
        text="1. Linear Algebra (undergraduate): vectors, matrices\n2. Number Theory (graduate): primes, congruences"
    )
    sessions = SESSIONS.messages(
        syllabus="Week 1: Cells - membranes, organelles.\nWeek 2: Genetics - DNA, genes.\nWeek 3: Evolution - selection."
    )
    # Up to the demo profile's temperature cap. Hotter, the model sometimes writes `[]` or `[""]`
    # for a list: the JSON schemas allow them, only their pydantic validators refuse them.
    requests = [
        (messages, schema, temperature)
        for temperature in (0.0, 0.4, 0.7)
        for messages, schema in ((subjects, SubjectList), (sessions, SessionList))
    ]

    async def structured(messages: list[dict], schema: type[BaseModel], temperature: float) -> str:
        resp = await client.chat.completions.create(
            model=endpoint.model,
            messages=messages,
            max_tokens=256,
            temperature=temperature,
            response_format=_json_schema(schema),
        )
        return resp.choices[0].message.content

    async def free_text() -> str:
        resp = await client.chat.completions.create(
            model=endpoint.model, messages=[{"role": "user", "content": "Name three colors."}], max_tokens=24
        )
        return resp.choices[0].message.content

    async def all_at_once() -> list[str]:
        return await asyncio.gather(*(structured(*r) for r in requests), free_text())

    *replies, text = asyncio.run(all_at_once())
    for (_, schema, temperature), reply in zip(requests, replies):
        assert schema.model_validate_json(reply), (temperature, reply)
    assert text.strip() and not text.lstrip().startswith("{")  # batched with them, yet unconstrained


@pytest.mark.embedded
def test_streamed_structured_reply_follows_its_schema(state_dir: Path) -> None:
    endpoint = embedded.ensure_server(state_dir=state_dir)
    client = openai.OpenAI(base_url=endpoint.base_url, api_key="not-needed", timeout=300)
    stream = client.chat.completions.create(
        model=endpoint.model,
        messages=SESSIONS.messages(syllabus="Session 1: Limits\nKey concepts: limit, continuity"),
        max_tokens=256,
        temperature=0.7,
        response_format=_json_schema(SessionList),
        stream=True,
    )
    SessionList.model_validate_json("".join(chunk.choices[0].delta.content or "" for chunk in stream if chunk.choices))


@pytest.mark.embedded
def test_unusable_response_format_is_refused(state_dir: Path) -> None:
    endpoint = embedded.ensure_server(state_dir=state_dir)
    client = openai.OpenAI(base_url=endpoint.base_url, api_key="not-needed", timeout=120, max_retries=0)
    with pytest.raises(openai.BadRequestError):
        client.chat.completions.create(
            model=endpoint.model,
            messages=[{"role": "user", "content": "Hi"}],
            max_tokens=8,
            response_format={"type": "json_schema", "json_schema": {"name": "x", "schema": {"type": "no-such-type"}}},
        )


@pytest.mark.embedded
def test_min_tokens_holds_the_end_of_a_reply_back(state_dir: Path) -> None:
    endpoint = embedded.ensure_server(state_dir=state_dir)
    client = openai.AsyncOpenAI(base_url=endpoint.base_url, api_key="not-needed", timeout=300, max_retries=0)
    greet = [{"role": "user", "content": "Say hi."}]

    async def tokens(**extra: object) -> tuple[int, str]:
        resp = await client.chat.completions.create(
            model=endpoint.model, messages=greet, max_tokens=48, temperature=0.0, extra_body=extra or None
        )
        return resp.usage.completion_tokens, resp.choices[0].finish_reason

    async def batched() -> list[tuple[int, str]]:
        # In one batch: the request without min_tokens keeps its own, short, greedy end.
        return await asyncio.gather(tokens(), tokens(min_tokens=48), tokens(min_tokens=40))

    (free, free_end), exact, at_least = asyncio.run(batched())
    assert free < 40 and free_end == "stop"  # the greedy greeting is short...
    assert exact == (48, "length")  # ...held back, it runs to max_tokens
    assert at_least[0] >= 40

    def refused(**extra: object) -> str:
        plain = openai.OpenAI(base_url=endpoint.base_url, api_key="not-needed", timeout=120, max_retries=0)
        with pytest.raises(openai.BadRequestError) as excinfo:
            plain.chat.completions.create(model=endpoint.model, messages=greet, max_tokens=8, **extra)
        return excinfo.value.response.text

    assert "whole number" in refused(extra_body={"min_tokens": "many"})
    # A schema decides where a structured reply ends.
    assert "response_format" in refused(extra_body={"min_tokens": 4}, response_format={"type": "json_object"})


@pytest.mark.embedded
def test_stop_server_stops_it(state_dir: Path) -> None:
    embedded.ensure_server(state_dir=state_dir)
    root_url = embedded._read_state(state_dir)["root_url"]
    assert _answers(root_url)
    embedded.stop_server(state_dir)
    assert not _answers(root_url)
    assert embedded._read_state(state_dir) is None
    embedded.stop_server(state_dir)  # idempotent


def _watchdogs(state_dir: Path) -> list[int]:
    pids = []
    for proc in Path("/proc").iterdir():
        try:
            cmdline = (proc / "cmdline").read_bytes().split(b"\0")
        except OSError:
            continue
        if b"serve" in cmdline and str(state_dir).encode() in cmdline:
            pids.append(int(proc.name))
    return pids


@pytest.mark.embedded
def test_concurrent_processes_share_one_server(state_dir: Path) -> None:
    code = (
        "import sys; from pathlib import Path; from resources import embedded; "
        "print(embedded.ensure_server(state_dir=Path(sys.argv[1])).base_url)"
    )
    procs = [
        subprocess.Popen([sys.executable, "-c", code, str(state_dir)], stdout=subprocess.PIPE, text=True)
        for _ in range(3)
    ]
    urls = {proc.communicate(timeout=300)[0].strip() for proc in procs}
    assert all(proc.returncode == 0 for proc in procs)
    assert len(urls) == 1
    assert len(_watchdogs(state_dir)) == 1
    embedded.stop_server(state_dir)
    assert _watchdogs(state_dir) == []


@pytest.mark.embedded
def test_idle_server_stops_itself(tmp_path: Path) -> None:
    try:
        embedded.ensure_server(state_dir=tmp_path, idle_timeout_s=3)
        root_url = embedded._read_state(tmp_path)["root_url"]
        # Watch the processes, not the port: every request the server logs counts as use.
        deadline = time.monotonic() + 60
        while _watchdogs(tmp_path) and time.monotonic() < deadline:
            time.sleep(0.5)
        assert _watchdogs(tmp_path) == []
        assert embedded._read_state(tmp_path) is None
        assert not _answers(root_url)
    finally:
        embedded.stop_server(tmp_path)
