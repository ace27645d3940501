"""The LLM transport: any OpenAI-compatible endpoint, or the embedded model when none is set.

It knows requests and responses, not steps: what a reply means (parsing, re-asking,
rejects) is the business of the stage that sent it (`glan_assets.stages`). Every request
goes through the response cache first. Misses run concurrently under a cap, retry with
exponential backoff on 429, 5xx, resets and timeouts (honouring `Retry-After`), counted by
cause, and are cached the moment they arrive. A request still waiting after
`slow_request_s` is reported while it waits.
"""

import asyncio
import random
import threading
from collections import Counter
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from pathlib import Path

import dagster as dg
import openai

from resources.cache import ResponseCache, cache_key


# Body fields that key the cache but are not sent: which sample of the same messages it is.
CACHE_KEY_ONLY = frozenset({"sample_index", "resample"})


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


@dataclass
class CallStats:
    calls: int = 0  # requests the endpoint answered
    cache_hits: int = 0
    prompt_tokens: int = 0
    completion_tokens: int = 0
    cost_usd: float = 0.0
    retries: Counter = field(default_factory=Counter)  # cause ("HTTP 429", "timeout", ...) -> retries

    def __add__(self, other: "CallStats") -> "CallStats":
        return CallStats(*(a + b for a, b in zip(vars(self).values(), vars(other).values())))

    @property
    def requests_sent(self) -> int:
        """What the endpoint received: answered calls plus every retried attempt."""
        return self.calls + sum(self.retries.values())


@dataclass(frozen=True)
class Completion:
    text: str
    finish_reason: str  # "stop", or "length" when the token cap cut the reply off


class LLMResource(dg.ConfigurableResource):
    """OpenAI-compatible chat completions with caching, retries and a concurrency cap."""

    base_url: str = ""  # OPENAI_BASE_URL; empty runs the embedded model offline
    api_key: str = ""  # OPENAI_API_KEY; sent to the endpoint, never cached or logged
    default_model: str = "smollm2-135m-instruct"
    max_concurrency: int = 16
    request_timeout_s: float = 300.0
    max_retries: int = 6
    slow_request_s: float = 60.0  # a request waiting longer is reported (once) while it waits
    # Attempts per output before it is a reject (a structured reply that does not parse, a
    # free-text one cut off at max_tokens or empty); read by the stages.
    parse_attempts: int = 3
    structured_outputs: bool = True
    cache_path: str = "data/llm_cache.sqlite"
    # Per stage name: its model and sampling, resolved from the stages' defaults by the settings.
    stages: dict[str, Sampling] = {}

    def sampling(self, stage: str, default: Sampling) -> Sampling:
        return self.stages.get(stage, default)

    def model_for(self, sampling: Sampling) -> str:
        return sampling.model or self.default_model

    @asynccontextmanager
    async def session(self) -> AsyncIterator["LLMSession"]:
        """One batch of requests: a shared cache handle, client, cap and counters."""
        session = LLMSession(self)
        try:
            yield session
        finally:
            await session.close()


class LLMSession:
    def __init__(self, llm: LLMResource):
        self.llm = llm
        self.cache = ResponseCache(Path(llm.cache_path))
        self.stats = CallStats()
        self.sem = asyncio.Semaphore(llm.max_concurrency)
        self._client: openai.AsyncOpenAI | None = None
        self._served_model: str | None = None
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

            endpoint = await _in_daemon_thread(embedded.ensure_server, self.llm.default_model)
            base_url, self._served_model = endpoint.base_url, endpoint.model
        client = openai.AsyncOpenAI(
            base_url=base_url,
            api_key=self.llm.api_key or "not-needed",
            timeout=self.llm.request_timeout_s,
            max_retries=0,  # retried in `_send`, so every retry is counted with its cause
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

    def body(
        self,
        messages: list[dict],
        sampling: Sampling,
        sample_index: int,
        schema: tuple[str, dict] | None,
        resample: int = 0,
    ) -> dict:
        """The request as cached: everything that shapes the answer. `sample_index` and
        `resample` (the same messages asked again after an unusable reply) only key the cache."""
        body = {
            "model": self.llm.model_for(sampling),
            "messages": messages,
            "temperature": sampling.temperature,
            "top_p": sampling.top_p,
            "max_tokens": sampling.max_tokens,
            "sample_index": sample_index,
        }
        if resample:  # absent on a first ask, so the keys cached before it existed still match
            body["resample"] = resample
        if schema is not None and self.llm.structured_outputs:
            name, json_schema = schema
            body["response_format"] = {"type": "json_schema", "json_schema": {"name": name, "schema": json_schema}}
        return body

    async def complete(self, body: dict, sampling: Sampling) -> Completion:
        """The cached response to `body`, or a new one from the endpoint (cached before it returns)."""
        key = cache_key(body)
        cached = self.cache.get(key)
        if cached is not None:
            self.stats.cache_hits += 1
            return Completion(cached["text"], cached.get("finish_reason") or "stop")
        client = await self.client()
        sent = {k: v for k, v in body.items() if k not in CACHE_KEY_ONLY}
        if self._served_model:
            sent["model"] = self._served_model
        async with self.sem:
            resp = await self._send(client, sent)
        choice = resp.choices[0]
        completion = Completion(choice.message.content or "", choice.finish_reason or "stop")
        usage = resp.usage
        prompt_tokens = getattr(usage, "prompt_tokens", 0) or 0
        completion_tokens = getattr(usage, "completion_tokens", 0) or 0
        self.stats.calls += 1
        self.stats.prompt_tokens += prompt_tokens
        self.stats.completion_tokens += completion_tokens
        self.stats.cost_usd += (
            prompt_tokens * sampling.prompt_price + completion_tokens * sampling.completion_price
        ) / 1e6
        self.cache.put(key, body, {"text": completion.text, "finish_reason": completion.finish_reason})
        return completion

    async def _send(self, client: openai.AsyncOpenAI, sent: dict) -> object:
        """One completion, retried on 429, 408/409, 5xx, resets and timeouts with exponential
        backoff and jitter, or as long as `Retry-After` says."""
        for attempt in range(self.llm.max_retries + 1):
            try:
                return await self._waiting(client.chat.completions.create(**sent), sent["model"])
            except openai.APIStatusError as exc:
                if exc.status_code not in (408, 409, 429) and exc.status_code < 500 or attempt == self.llm.max_retries:
                    raise
                cause, delay = f"HTTP {exc.status_code}", _retry_after(exc.response)
            except openai.APITimeoutError:
                if attempt == self.llm.max_retries:
                    raise
                cause, delay = "timeout", None
            except openai.APIConnectionError as exc:
                if attempt == self.llm.max_retries:
                    raise EndpointUnreachable(
                        f"lost the LLM endpoint mid-run ({exc}); cached responses are kept, rerun to resume"
                    ) from exc
                cause, delay = "connection error", None
            self.stats.retries[cause] += 1
            await asyncio.sleep(delay if delay is not None else min(0.5 * 2**attempt, 30) * (0.5 + random.random()))

    async def _waiting(self, call: object, model: str) -> object:
        """Await the call, reporting it once if it waits longer than `slow_request_s`."""
        task = asyncio.ensure_future(call)
        done, _ = await asyncio.wait({task}, timeout=self.llm.slow_request_s)
        if not done:
            dg.get_dagster_logger().warning(
                f"a request to {model} has waited {self.llm.slow_request_s:.0f}s and goes on waiting "
                f"(timeout {self.llm.request_timeout_s:.0f}s, GLAN_REQUEST_TIMEOUT)"
            )
        return await task


def _retry_after(response: object) -> float | None:
    """Seconds the endpoint asked to wait, when it said (capped at a minute)."""
    raw = getattr(response, "headers", {}).get("retry-after")
    try:
        return min(float(raw), 60.0) if raw is not None else None
    except ValueError:
        return None


async def _in_daemon_thread(fn, *args):
    """`fn(*args)` in a daemon thread. `asyncio.to_thread` would make a SIGTERMed step wait
    for the whole call (the embedded server's start can take minutes) before it exits."""
    loop = asyncio.get_running_loop()
    done = loop.create_future()

    def work() -> None:
        try:
            result = fn(*args)
        except BaseException as exc:  # handed to the awaiting coroutine, whatever it is
            loop.call_soon_threadsafe(_settle, done, None, exc)
        else:
            loop.call_soon_threadsafe(_settle, done, result, None)

    threading.Thread(target=work, name="glan-embedded-start", daemon=True).start()
    return await done


def _settle(future: asyncio.Future, result: object, exc: BaseException | None) -> None:
    if not future.done():
        future.set_exception(exc) if exc is not None else future.set_result(result)
