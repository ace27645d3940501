"""The LLM client: any OpenAI-compatible endpoint, or the embedded model when none is set.

Every request goes through the response cache first. Misses run concurrently under a cap,
retry with backoff on 429, 5xx and timeouts (the openai client honours `Retry-After`),
and are cached the moment they arrive. Structured outputs ask for `response_format`
json_schema, are parsed tolerantly, and are re-asked a bounded number of times; what
still fails comes back as an error for the caller's rejects table.
"""

import asyncio
from dataclasses import dataclass, field
from pathlib import Path

import dagster as dg
import openai
from pydantic import BaseModel

from glan_assets.parsing import Dropped, ParseError, example_echoes, parse_structured, schema_hint
from resources.cache import ResponseCache, cache_key


class EndpointUnreachable(RuntimeError):
    """The endpoint did not answer; nothing was written."""


class Sampling(dg.Config):
    """Model and sampling for one stage. An empty model means the resource's default."""

    model: str = ""
    temperature: float = 1.0
    top_p: float = 0.95
    max_tokens: int = 512
    # USD per million tokens; zero means unknown and no cost is reported.
    prompt_price: float = 0.0
    completion_price: float = 0.0


@dataclass(frozen=True)
class Request:
    item_id: str  # the item the call is made for; a reject names it as its parent
    messages: list[dict]
    sample_index: int = 0


@dataclass
class Reply:
    request: Request
    text: str = ""
    value: BaseModel | None = None
    error: str | None = None  # why the output cannot be used; None when it can
    attempts: int = 1
    dropped: list[Dropped] = field(default_factory=list)  # listed items that did not validate

    @property
    def ok(self) -> bool:
        return self.error is None


@dataclass
class CallStats:
    calls: int = 0
    cache_hits: int = 0
    prompt_tokens: int = 0
    completion_tokens: int = 0
    cost_usd: float = 0.0

    def __add__(self, other: "CallStats") -> "CallStats":
        return CallStats(*(a + b for a, b in zip(vars(self).values(), vars(other).values())))


@dataclass
class Batch:
    replies: list[Reply]
    stats: CallStats = field(default_factory=CallStats)


STAGES = ("taxonomy", "subjects", "subjects_format", "syllabus", "sessions", "questions", "answers")


class LLMResource(dg.ConfigurableResource):
    """OpenAI-compatible chat completions with caching, retries and a concurrency cap."""

    base_url: str = ""  # OPENAI_BASE_URL; empty runs the embedded model offline
    api_key: str = ""  # OPENAI_API_KEY; sent to the endpoint, never cached or logged
    default_model: str = "smollm2-135m-instruct"
    max_concurrency: int = 16
    request_timeout_s: float = 300.0
    max_retries: int = 6
    parse_attempts: int = 3
    structured_outputs: bool = True
    cache_path: str = "data/llm_cache.sqlite"
    # One model and sampling per stage; the paper's values are the defaults.
    taxonomy: Sampling = Sampling(temperature=1.0, max_tokens=512)
    subjects: Sampling = Sampling(temperature=1.0, top_p=0.95, max_tokens=1024)
    subjects_format: Sampling = Sampling(temperature=0.0, top_p=1.0, max_tokens=1024)
    syllabus: Sampling = Sampling(temperature=1.0, top_p=0.95, max_tokens=1536)
    sessions: Sampling = Sampling(temperature=0.0, top_p=1.0, max_tokens=1536)
    questions: Sampling = Sampling(temperature=1.0, top_p=0.95, max_tokens=512)
    answers: Sampling = Sampling(temperature=0.7, top_p=0.95, max_tokens=1024)

    def sampling(self, stage: str) -> Sampling:
        return getattr(self, stage)

    def model_for(self, stage: str) -> str:
        return self.sampling(stage).model or self.default_model

    def generate(self, stage: str, requests: list[Request]) -> Batch:
        """Free-text completions; an empty one is an error."""
        return asyncio.run(self._run(stage, requests, None))

    def generate_structured(self, stage: str, requests: list[Request], schema: type[BaseModel]) -> Batch:
        """Completions parsed into `schema`; unparseable ones are re-asked, then errors."""
        return asyncio.run(self._run(stage, requests, schema))

    async def _run(self, stage: str, requests: list[Request], schema: type[BaseModel] | None) -> Batch:
        run = _Run(self, stage, schema)
        try:
            async with asyncio.TaskGroup() as tg:
                tasks = [tg.create_task(run.reply(r)) for r in requests]
        except* EndpointUnreachable as group:
            raise group.exceptions[0] from None
        finally:
            await run.close()
        return Batch([t.result() for t in tasks], run.stats)


class _Run:
    """One batch of requests for one stage: the shared client, cache, cap and counters."""

    def __init__(self, llm: LLMResource, stage: str, schema: type[BaseModel] | None):
        self.llm, self.stage, self.schema = llm, stage, schema
        self.sampling = llm.sampling(stage)
        self.model = llm.model_for(stage)
        self.cache = ResponseCache(Path(llm.cache_path))
        self.stats = CallStats()
        self.sem = asyncio.Semaphore(llm.max_concurrency)
        self._client: openai.AsyncOpenAI | None = None
        self._served_model = self.model
        self._connect_lock = asyncio.Lock()

    async def close(self) -> None:
        self.cache.close()
        if self._client is not None:
            await self._client.close()

    async def client(self) -> openai.AsyncOpenAI:
        """Connect on the first cache miss, so a fully cached rebuild needs no endpoint."""
        async with self._connect_lock:
            if self._client is None:
                self._client = await self._connect()
        return self._client

    async def _connect(self) -> openai.AsyncOpenAI:
        base_url = self.llm.base_url
        if not base_url:
            from resources import embedded  # the embedded server is only needed offline

            endpoint = await asyncio.to_thread(embedded.ensure_server, self.llm.default_model)
            base_url, self._served_model = endpoint.base_url, endpoint.model
        client = openai.AsyncOpenAI(
            base_url=base_url,
            api_key=self.llm.api_key or "not-needed",
            timeout=self.llm.request_timeout_s,
            max_retries=self.llm.max_retries,
        )
        try:
            await client.with_options(max_retries=0, timeout=15).models.list()
        except (openai.APIConnectionError, openai.APITimeoutError) as exc:
            await client.close()
            raise EndpointUnreachable(
                f"cannot reach the LLM endpoint at {base_url} ({type(exc).__name__}); check "
                "OPENAI_BASE_URL, or unset it to run the embedded model. Nothing was written."
            ) from exc
        except openai.APIStatusError:
            pass  # some endpoints do not list models; reachable is all this checks
        return client

    def payload(self, messages: list[dict], sample_index: int, attempt: int = 1) -> dict:
        # A greedy re-ask of a model stuck copying its input copies again; re-asks sample.
        temperature = self.sampling.temperature if attempt == 1 else max(self.sampling.temperature, 0.8)
        body = {
            "model": self.model,
            "messages": messages,
            "temperature": temperature,
            "top_p": self.sampling.top_p,
            "max_tokens": self.sampling.max_tokens,
            "sample_index": sample_index,
        }
        if self.schema is not None and self.llm.structured_outputs:
            body["response_format"] = {
                "type": "json_schema",
                "json_schema": {"name": self.schema.__name__, "schema": self.schema.model_json_schema()},
            }
        return body

    async def complete(self, messages: list[dict], sample_index: int, attempt: int = 1) -> str:
        body = self.payload(messages, sample_index, attempt)
        key = cache_key(body)
        cached = self.cache.get(key)
        if cached is not None:
            self.stats.cache_hits += 1
            return cached["text"]
        client = await self.client()
        sent = {k: v for k, v in body.items() if k != "sample_index"} | {"model": self._served_model}
        async with self.sem:
            try:
                resp = await client.chat.completions.create(**sent)
            except openai.APITimeoutError:
                raise
            except openai.APIConnectionError as exc:
                raise EndpointUnreachable(
                    f"lost the LLM endpoint mid-run ({exc}); cached responses are kept, rerun to resume"
                ) from exc
        text = resp.choices[0].message.content or ""
        usage = resp.usage
        self.stats.calls += 1
        prompt_tokens = getattr(usage, "prompt_tokens", 0) or 0
        completion_tokens = getattr(usage, "completion_tokens", 0) or 0
        self.stats.prompt_tokens += prompt_tokens
        self.stats.completion_tokens += completion_tokens
        self.stats.cost_usd += (
            prompt_tokens * self.sampling.prompt_price + completion_tokens * self.sampling.completion_price
        ) / 1e6
        self.cache.put(key, body, {"text": text, "finish_reason": resp.choices[0].finish_reason})
        return text

    async def reply(self, request: Request) -> Reply:
        messages = list(request.messages)
        structured = self.schema is not None
        attempts = self.llm.parse_attempts if structured else 1
        echoes = example_echoes(messages) if structured else frozenset()
        # A re-ask shows the model its own output. A prompt with a worked example points back to
        # it: small models echo a JSON schema instead of following it.
        shown = any(m["role"] == "assistant" for m in messages)
        form = "in the form of the example above" if shown or not structured else f"matching this schema: {schema_hint(self.schema)}"
        error = ""
        text = ""
        for attempt in range(1, attempts + 1):
            try:
                text = await self.complete(messages, request.sample_index, attempt)
            except openai.APITimeoutError:
                return Reply(request, error=f"timed out after {self.llm.max_retries} retries", attempts=attempt)
            except openai.APIStatusError as exc:
                return Reply(request, error=f"endpoint answered {exc.status_code}: {exc.message}", attempts=attempt)
            if not structured:
                if text.strip():
                    return Reply(request, text=text.strip(), attempts=attempt)
                return Reply(request, text=text, error="empty completion", attempts=attempt)
            try:
                parsed = parse_structured(text, self.schema, echoes)
                return Reply(request, text=text, value=parsed.value, dropped=parsed.dropped, attempts=attempt)
            except ParseError as exc:
                error = str(exc)
            messages = [
                *request.messages,
                {"role": "assistant", "content": text},
                {"role": "user", "content": f"That could not be used ({error}). Reply with only the JSON, {form}."},
            ]
        return Reply(request, text=text, error=f"unparseable after {attempts} attempts: {error}", attempts=attempts)
