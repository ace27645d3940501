"""A stage is one kind of LLM call, as a value: its prompts, its output schema (none for
free text), its default sampling and the version of its parser.

`run` hands a stage's requests to the transport (`resources.llm`) and turns the replies
into values: free text must not be empty or cut off; structured output is parsed tolerantly
(`glan_assets.parsing`) and re-asked a bounded number of times; what still fails comes
back as an error for the rejects table. A reply that was cut off (at max_tokens, or JSON that
ends inside a value) is asked again with the same messages, each attempt cached under its own
key. A prompt over the resource's `max_prompt_chars` is an error at once, never sent or
re-asked. In batch mode a round's misses go as one batch (`resources.batch`) and the step
ends; its next run asks from the cache, and a re-ask goes in the next batch. Prompt and
parser are versioned apart, so a parser fix re-parses cached responses without new calls.
"""

import asyncio
from dataclasses import dataclass, field

from pydantic import BaseModel

from glan_assets.parsing import (
    CUT,
    RULES_VERSION,
    TRUNCATED,
    Cut,
    Dropped,
    ExampleCopied,
    Parsed,
    ParseError,
    example_echoes,
    parse_structured,
    schema_hint,
)
from glan_assets.prompting import Prompt
from resources.budget import BudgetExhausted
from resources.llm import (
    BatchLineFailed,
    CallStats,
    Deferred,
    EndpointError,
    EndpointTimeout,
    EndpointUnreachable,
    LLMResource,
    LLMSession,
    PromptTooLong,
    Sampling,
)

@dataclass(frozen=True)
class Stage:
    name: str  # names its settings: GLAN_<NAME>_MODEL, _TEMPERATURE, _TOP_P, _PRICE
    prompts: tuple[Prompt, ...]
    sampling: Sampling  # the method's defaults (the paper's)
    schema: type[BaseModel] | None = None  # structured output; None for free text
    parser_version: str = "1"
    # Free text cut off at max_tokens is a reject, unless it is a list the next level reads
    # line by line (subjects, a syllabus): then it is kept up to its last complete line.
    keeps_cut_lines: bool = False


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
class Batch:
    replies: list[Reply]
    stats: CallStats = field(default_factory=CallStats)


def code_version(*stages: Stage, logic: str = "1") -> str:
    """An asset's code version: its own logic's version, then each stage's parser and prompts."""
    parts = [f"p{logic}"]
    for stage in stages:
        if stage.parser_version != "1":
            parts.append(f"s{stage.parser_version}")
        if stage.schema is not None and RULES_VERSION != "1":
            parts.append(f"j{RULES_VERSION}")
        parts += [p.version for p in stage.prompts]
    return "-".join(parts)


def run(llm: LLMResource, stage: Stage, requests: list[Request]) -> Batch:
    """Every request's reply, in order, and the batch's call counts."""
    return asyncio.run(_run(llm, stage, requests))


async def _run(llm: LLMResource, stage: Stage, requests: list[Request]) -> Batch:
    async with llm.session() as session:
        try:
            async with asyncio.TaskGroup() as tg:
                tasks = [tg.create_task(_reply(session, llm, stage, r)) for r in requests]
        except* (EndpointUnreachable, BudgetExhausted) as group:  # no call can go on: the step fails
            raise group.exceptions[0] from None
        if session.pending:  # batch mode: the level is built once its batch has ended
            raise session.submit_batch()
        return Batch([t.result() for t in tasks], session.stats)


async def _reply(session: LLMSession, llm: LLMResource, stage: Stage, request: Request) -> Reply:
    sampling = llm.sampling(stage.name, stage.sampling)
    schema = (stage.schema.__name__, stage.schema.model_json_schema()) if stage.schema else None
    structured = stage.schema is not None
    attempts = llm.parse_attempts
    echoes = example_echoes(request.messages) if structured else frozenset()
    # A re-ask shows the model its own output. A prompt with a worked example points back to
    # it: small models echo a JSON schema instead of following it.
    shown = any(m["role"] == "assistant" for m in request.messages)
    stated = f"matching this schema: {schema_hint(stage.schema)}" if structured else ""
    form = "in the form of the example above" if shown or not structured else stated
    messages, error, text = list(request.messages), "", ""
    # Which sample of the same messages an attempt is: a re-ask that repeats its messages (a
    # cut reply, free text) keys itself with the attempt; one that changes them needs no key.
    resample = 0
    cut = False  # the last attempt's reply was cut off
    partial: tuple[str, Parsed] | None = None  # the latest cut reply with complete items, parsed
    for attempt in range(1, attempts + 1):
        # A greedy re-ask of a model stuck copying its input copies again; re-asks sample.
        asked = sampling if attempt == 1 else sampling.model_copy(update={"temperature": max(sampling.temperature, 0.8)})
        try:
            body = session.body(messages, asked, request.sample_index, schema, resample)
            done = await session.complete(body, asked, stage.name)
        except PromptTooLong as exc:  # not sent; asking again would only make it longer
            return Reply(request, error=str(exc), attempts=attempt - 1)
        except (EndpointTimeout, EndpointError, BatchLineFailed) as exc:
            return Reply(request, error=str(exc), attempts=attempt)
        except Deferred:  # in the step's batch; this reply is never used
            return Reply(request, error="deferred to a batch", attempts=attempt)
        text = done.text
        if not structured:
            resample = attempt
            if done.finish_reason == "length":
                complete = text.rsplit("\n", 1)[0] if stage.keeps_cut_lines and "\n" in text else ""
                if complete.strip():
                    return Reply(request, text=complete.strip(), attempts=attempt)
                # A small model that rambles past max_tokens (most of the demo's rejects) often
                # ends in time on another sample; the same messages again, sampled anew.
                error = TRUNCATED
            elif text.strip():
                return Reply(request, text=text.strip(), attempts=attempt)
            else:
                error = "empty completion"
            continue
        try:
            parsed = parse_structured(text, stage.schema, echoes, truncated=done.finish_reason == "length")
        except Cut as exc:
            # Cut off before any item was complete: the same messages again, as for free text.
            error, cut, resample = str(exc), True, attempt
            continue
        except ExampleCopied as exc:
            error, cut, resample = str(exc), False, 0
            # Shown the example (or its copy) again, a small model copies it again: the embedded
            # model did so on all 3 attempts for a thin subject list. Asked without it, it has
            # only the input to draw on; the schema, constrained or stated, gives the form.
            messages = without_examples(request.messages, f"Reply with only the JSON, {stated}")
            continue
        except ParseError as exc:
            error, cut, resample = str(exc), False, 0
            messages = [
                *request.messages,
                {"role": "assistant", "content": text},
                {"role": "user", "content": f"That could not be used ({error}). Reply with only the JSON, {form}."},
            ]
            continue
        if parsed.cut and attempt < attempts:
            # Its complete items are kept if no uncut reply comes in the attempts left.
            error, cut, resample, partial = CUT, True, attempt, (text, parsed)
            continue
        return Reply(request, text=text, value=parsed.value, dropped=parsed.dropped, attempts=attempt)
    if partial is not None:
        text, parsed = partial
        return Reply(request, text=text, value=parsed.value, dropped=parsed.dropped, attempts=attempts)
    if not structured or cut:
        return Reply(request, text=text, error=error, attempts=attempts)
    return Reply(request, text=text, error=f"unparseable after {attempts} attempts: {error}", attempts=attempts)


def without_examples(messages: list[dict], note: str) -> list[dict]:
    """The request without its worked-example turns, with `note` added to its last message."""
    *head, last = messages
    return [*(m for m in head if m["role"] == "system"), {**last, "content": f"{last['content']}\n\n{note}"}]


def model_of(llm: LLMResource, stage: Stage) -> str:
    """The model that answers the stage's requests, as rows record it."""
    return llm.model_for(llm.sampling(stage.name, stage.sampling))
