"""The LLM transport: any OpenAI-compatible endpoint, or the embedded model when none is set.

It knows requests and responses, not steps: what a reply means (parsing, re-asking,
rejects) is the business of the stage that sent it (`glan_assets.stages`). Every request
goes through the response cache first. Misses run concurrently under a cap, retry with
exponential backoff on 429, 5xx, resets and timeouts (honouring `Retry-After`), counted by
cause, and are cached the moment they arrive. A request still waiting after
`slow_request_s` is reported while it waits.

Chat completions are POSTed with aiohttp, not the `openai` SDK: the SDK's per-request work
(typed request and response models over an httpx layer) kept a bare SDK client at 424
requests/s with 256 in flight on 2 cores, where a bare aiohttp client reached 1,009
(`benchmarks/bench_orchestration.py`). A stage sends one kind of request and reads three
fields of the reply, so the SDK's types bought nothing here.

Every text that comes back from the endpoint (completions, error bodies, connection errors) is
redacted (`resources.redact`) before it is cached, raised or returned: an endpoint that echoes
the `Authorization` header cannot put the key into a reject. A request whose messages are
longer than `max_prompt_chars` is refused before the cache or the endpoint sees it.

What each answered call cost is added to its run's spend (`resources.budget`); with a budget
set, a cache miss is not sent once the build's spend over all its runs has reached it.

A stage in batch mode (`Sampling.batch`) sends nothing online: its misses are collected
(`Deferred`) and the step sends them as one batch (`resources.batch`), which fills the cache.
"""

import asyncio
import json
import random
import threading
import time
from collections import Counter
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from pathlib import Path

import aiohttp
from typing import ClassVar

import dagster as dg

from resources import embedded, inflight
from resources.batch import BatchBook, BatchPending, Pending, submit
from resources.batch import client as batch_client
from resources.budget import BUILD_TAG, BudgetExhausted, Spend, SpendLedger
from resources.cache import ResponseCache, cache_key
from resources.local_models import DEFAULT_MODEL_CACHE
from resources.redact import redact, register


# Body fields that key the cache but are not sent: which sample of the same messages it is.
CACHE_KEY_ONLY = frozenset({"sample_index", "resample"})


class _EndpointProblem(RuntimeError):
    """A failure whose message may quote what the endpoint sent: it is redacted."""

    def __init__(self, message: str):
        super().__init__(redact(message))


class EndpointUnreachable(_EndpointProblem):
    """The endpoint did not answer; nothing was written."""


class EndpointError(_EndpointProblem):
    """The endpoint answered with an error status (or a 200 that is not a chat completion)."""

    def __init__(self, status: int, message: str, retry_after: float | None = None):
        message = redact(message)
        super().__init__(f"endpoint answered {status}: {message}")
        self.status, self.message, self.retry_after = status, message, retry_after


class EndpointTimeout(_EndpointProblem):
    """No answer within the request timeout, on every attempt."""


class BatchLineFailed(_EndpointProblem):
    """The request's line failed in a batch, with an error that sending it again would not fix,
    or in more batches than `max_retries` allows."""


class Deferred(Exception):
    """A batch-mode cache miss: collected for the step's batch, not sent."""


class PromptTooLong(RuntimeError):
    """The request's messages are longer than `max_prompt_chars`; it was not sent."""


class Sampling(dg.Config):
    """Model and sampling for one stage. An empty model means the resource's default."""

    model: str = ""
    temperature: float = 1.0
    top_p: float = 0.95
    max_tokens: int = 512
    # USD per million tokens; zero means unknown and no cost is reported.
    prompt_price: float = 0.0
    completion_price: float = 0.0
    # GLAN_BATCH / GLAN_<STAGE>_BATCH: misses go as one batch through the Batch API, at the
    # batch price; the answers are the same, so it is not in the level's version.
    batch: bool = False


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

    # Each LLM stage versions its own model and sampling (`glan_assets.plan.config_version`).
    VERSIONED: ClassVar[bool] = False

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
    # GLAN_MAX_PROMPT_CHARS: a request whose messages are longer is a reject, never sent (a
    # 1 MB UIT instruction had gone out whole, three times). glan's longest prompts are the
    # paper profile's question and session-extraction prompts, which carry a whole syllabus:
    # their own text is 205-253 and 511 characters, the syllabus at most the syllabus stage's
    # 1,536 tokens, 6,000-8,000 characters of English at 4-5 per token. 100,000 is over ten
    # times that, leaves room for a UIT task's long instruction and examples, and is about
    # 25,000 tokens, within the context of the models glan is pointed at.
    max_prompt_chars: int = 100_000
    structured_outputs: bool = True
    cache_path: str = "data/llm_cache.sqlite"
    # GLAN_BUDGET_USD: a build sends no new call once its runs together have spent this; 0: no budget.
    budget_usd: float = 0.0
    # GLAN_BATCH_PRICE_FACTOR: a batch-mode stage's prices times this (OpenAI's Batch API: half).
    batch_price_factor: float = 0.5
    # GLAN_BATCH_POLL: seconds between polls of the batches in flight by `glan build --wait`.
    batch_poll_s: float = 60.0
    # Per stage name: its model and sampling, resolved from the stages' defaults by the settings.
    stages: dict[str, Sampling] = {}
    # The embedded server's, when base_url is empty: GLAN_EMBEDDED_STATE, GLAN_EMBEDDED_IDLE_TIMEOUT,
    # GLAN_MODEL_CACHE (the settings resolve them; these defaults are theirs when unset).
    embedded_state: str = str(embedded.DEFAULT_STATE_DIR)
    embedded_idle_timeout_s: float = embedded.DEFAULT_IDLE_TIMEOUT_S
    model_cache: str = str(DEFAULT_MODEL_CACHE)

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
        register(llm.api_key)  # an endpoint may echo the key it was sent
        self.cache = ResponseCache(Path(llm.cache_path))
        self.stats = CallStats()
        self._client: aiohttp.ClientSession | None = None
        self._url = ""  # chat completions URL, set on connecting
        self._served_model: str | None = None
        self._connect_lock = asyncio.Lock()
        # The run and build the calls are paid by, and the partition they are for (the plan's
        # estimate counts cached responses per partition); none outside a step.
        try:
            context = dg.OpExecutionContext.get()
        except dg.DagsterInvariantViolationError:
            context = None
        self.run_id = context.run.run_id if context else ""
        self.build_id = context.run.tags.get(BUILD_TAG, self.run_id) if context else ""
        self.partition_key = context.partition_key if context is not None and context.has_partition_key else None
        # In a run of a parallel `glan build`, the build's total shared by its runs.
        shared = inflight.installed()
        self.sem = inflight.SharedCap(shared) if shared else asyncio.Semaphore(llm.max_concurrency)
        self.level = context.assets_def.key.to_user_string() if context is not None and context.has_assets_def else ""
        self.pending: dict[str, Pending] = {}  # batch-mode misses, by cache key
        self._book: BatchBook | None = None  # the batch records, opened at the first batch-mode miss
        self.ledger = SpendLedger(Path(llm.cache_path))
        self._unwritten = Spend()  # without a budget, written once at the end

    async def close(self) -> None:
        if self._unwritten.calls:
            self.ledger.add(self.run_id, self.build_id, self._unwritten)
        self.ledger.close()
        self.cache.close()
        if self._book is not None:
            self._book.close()
        if self._client is not None:
            await self._client.close()

    async def client(self) -> aiohttp.ClientSession:
        """Connect on the first cache miss, so a fully cached rebuild needs no endpoint."""
        async with self._connect_lock:
            if self._client is None:
                self._client = await self._connect()
        return self._client

    async def _connect(self) -> aiohttp.ClientSession:
        base_url = self.llm.base_url
        if not base_url:
            llm = self.llm
            endpoint = await _in_daemon_thread(
                lambda: embedded.ensure_server(
                    llm.default_model, Path(llm.embedded_state), idle_timeout_s=llm.embedded_idle_timeout_s,
                    model_cache=Path(llm.model_cache),
                )
            )
            base_url, self._served_model = endpoint.base_url, endpoint.model
        base_url = base_url.rstrip("/")
        client = aiohttp.ClientSession(
            headers={"Authorization": f"Bearer {self.llm.api_key or 'not-needed'}"},
            connector=aiohttp.TCPConnector(limit=0),  # the semaphore is the cap
            timeout=aiohttp.ClientTimeout(total=self.llm.request_timeout_s),
        )
        try:
            # Any status will do (some endpoints do not list models): reachable is all this checks.
            async with client.get(f"{base_url}/models", timeout=aiohttp.ClientTimeout(total=15)) as resp:
                await resp.read()
        except (TimeoutError, aiohttp.ClientError) as exc:
            await client.close()
            raise EndpointUnreachable(
                f"cannot reach the LLM endpoint at {base_url} ({type(exc).__name__}); check "
                "OPENAI_BASE_URL, or unset it to run the embedded model. Nothing was written."
            ) from exc
        self._url = f"{base_url}/chat/completions"
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

    async def complete(self, body: dict, sampling: Sampling, stage: str = "") -> Completion:
        """The cached response to `body`, or a new one from the endpoint (cached before it returns)."""
        size = sum(len(str(m.get("content") or "")) for m in body["messages"])
        if size > self.llm.max_prompt_chars:
            raise PromptTooLong(
                f"prompt too long: {size:,} characters, over the cap of {self.llm.max_prompt_chars:,} "
                "(GLAN_MAX_PROMPT_CHARS); not sent"
            )
        key = cache_key(body)
        cached = self.cache.get(key)
        if cached is not None:
            self.stats.cache_hits += 1
            return Completion(redact(cached["text"]), cached.get("finish_reason") or "stop")
        if sampling.batch:
            self._defer(key, body, sampling, stage)
        client = await self.client()
        sent = {k: v for k, v in body.items() if k not in CACHE_KEY_ONLY}
        if self._served_model:
            sent["model"] = self._served_model
        async with self.sem:
            self._within_budget()
            start = time.monotonic()
            resp = await self._send(client, sent)
            latency = time.monotonic() - start
        choice = resp["choices"][0]
        completion = Completion(redact(choice["message"].get("content") or ""), choice.get("finish_reason") or "stop")
        usage = resp.get("usage") or {}
        prompt_tokens = usage.get("prompt_tokens") or 0
        completion_tokens = usage.get("completion_tokens") or 0
        cost = (prompt_tokens * sampling.prompt_price + completion_tokens * sampling.completion_price) / 1e6
        self.stats.calls += 1
        self.stats.prompt_tokens += prompt_tokens
        self.stats.completion_tokens += completion_tokens
        self.stats.cost_usd += cost
        self.cache.put(
            key,
            body,
            {"text": completion.text, "finish_reason": completion.finish_reason},
            {"stage": stage or None, "partition_key": self.partition_key, "model": body["model"],
             "prompt_tokens": prompt_tokens, "completion_tokens": completion_tokens, "latency_s": latency},
        )
        spend = Spend(1, prompt_tokens, completion_tokens, cost, latency)
        if self.llm.budget_usd > 0:  # the other runs must see it before their next call
            self.ledger.add(self.run_id, self.build_id, spend)
        else:
            self._unwritten += spend
        return completion

    def _defer(self, key: str, body: dict, sampling: Sampling, stage: str) -> None:
        """Collect the miss for the step's batch; raise why it cannot go again when a batch
        it was in failed for good."""
        if self._book is None:
            self._book = BatchBook(self.llm.cache_path)
        failure = self._book.failure(key)
        if failure is not None and (not failure.retryable or failure.times > self.llm.max_retries):
            tries = f" in {failure.times} batches" if failure.retryable else ""
            raise BatchLineFailed(f"batch request failed{tries}: {failure.code}: {failure.message}")
        factor = self.llm.batch_price_factor
        self.pending[key] = Pending(
            key, body, {k: v for k, v in body.items() if k not in CACHE_KEY_ONLY}, stage,
            sampling.prompt_price * factor, sampling.completion_price * factor,
        )
        raise Deferred(key)

    def submit_batch(self) -> BatchPending:
        """Send the collected misses as one batch (or find the batch that has them) and
        record it before the step ends."""
        if not self.llm.base_url:
            raise EndpointUnreachable("batch mode (GLAN_BATCH) needs OPENAI_BASE_URL: the embedded model has no Batch API")
        self._within_budget()
        llm = self.llm
        api = batch_client(llm.base_url, llm.api_key, llm.request_timeout_s, llm.max_retries)
        try:
            return submit(api, self._book, self.level, self.partition_key, list(self.pending.values()), self.run_id,
                          self.build_id)
        finally:
            api.close()

    def _within_budget(self) -> None:
        """Raise `BudgetExhausted` when the build has spent its budget (over all its runs)."""
        budget = self.llm.budget_usd
        if budget > 0 and (spent := self.ledger.spent(self.build_id)) >= budget:
            raise BudgetExhausted(
                f"budget reached: this build spent ${spent:.4f} of GLAN_BUDGET_USD=${budget:g}, so no new LLM "
                "call was sent; what was built stays, and `glan build` again resumes through the cache"
            )

    async def _send(self, client: aiohttp.ClientSession, sent: dict) -> dict:
        """One completion, retried on 429, 408/409, 5xx, resets and timeouts with exponential
        backoff and jitter, or as long as `Retry-After` says."""
        for attempt in range(self.llm.max_retries + 1):
            last = attempt == self.llm.max_retries
            try:
                return await self._waiting(self._post(client, sent), sent["model"])
            except EndpointError as exc:
                if exc.status not in (408, 409, 429) and exc.status < 500 or last:
                    raise
                cause, delay = f"HTTP {exc.status}", exc.retry_after
            except TimeoutError:  # before ClientError: aiohttp's read timeouts are both
                if last:
                    raise EndpointTimeout(f"timed out after {self.llm.max_retries} retries") from None
                cause, delay = "timeout", None
            except aiohttp.ClientError as exc:  # resets, refused connections, cut-off replies
                if last:
                    raise EndpointUnreachable(
                        f"lost the LLM endpoint mid-run ({type(exc).__name__}: {exc}); cached responses "
                        "are kept, rerun to resume"
                    ) from exc
                cause, delay = "connection error", None
            self.stats.retries[cause] += 1
            await asyncio.sleep(delay if delay is not None else min(0.5 * 2**attempt, 30) * (0.5 + random.random()))

    async def _post(self, client: aiohttp.ClientSession, sent: dict) -> dict:
        async with client.post(self._url, json=sent) as resp:
            raw = await resp.read()
            status, headers = resp.status, resp.headers
        if status >= 400:
            raise EndpointError(status, _error_message(raw), _retry_after(headers.get("retry-after")))
        try:
            reply = json.loads(raw)
            reply["choices"][0]["message"]
        except (ValueError, LookupError, TypeError):
            raise EndpointError(status, f"not a chat completion: {raw[:200]!r}") from None
        return reply

    async def _waiting(self, call: object, model: str) -> object:
        """Await the call, reporting it once if it waits longer than `slow_request_s`."""
        warn = asyncio.get_running_loop().call_later(
            self.llm.slow_request_s,
            lambda: dg.get_dagster_logger().warning(
                f"a request to {model} has waited {self.llm.slow_request_s:g}s and goes on waiting "
                f"(timeout {self.llm.request_timeout_s:g}s, GLAN_REQUEST_TIMEOUT)"
            ),
        )
        try:
            return await call
        finally:
            warn.cancel()


def _error_message(raw: bytes) -> str:
    """The message of an OpenAI-style error body, else the body's start."""
    try:
        return str(json.loads(raw)["error"]["message"])
    except (ValueError, LookupError, TypeError):
        return raw[:200].decode("utf-8", "replace")


def _retry_after(raw: str | None) -> float | None:
    """Seconds the endpoint asked to wait, when it said (capped at a minute)."""
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
