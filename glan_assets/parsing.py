"""Tolerant parsing of structured LLM output into pydantic models.

Endpoints that ignore `response_format` (small local models do) wrap JSON in prose or
code fences, drop a bracket, emit JSON lines, or return the bare list the schema wraps.
A list whose items are partly broken keeps the items that validate; the others come back
as `dropped`, with their reasons, for the rejects table. So do items copied from the
prompt's worked example, which small models repeat instead of reading their input.
"""

import json
import re
from dataclasses import dataclass, field
from typing import Generic, TypeVar, get_args

import json_repair
from pydantic import BaseModel, ValidationError

M = TypeVar("M", bound=BaseModel)
_FENCE = re.compile(r"```(?:json)?\s*(.*?)```", re.DOTALL)


TRUNCATED = "truncated: the reply hit the stage's max_tokens"


class ParseError(ValueError):
    """The text holds nothing the schema accepts; the message says why."""


class ExampleCopied(ParseError):
    """Every item repeats the prompt's worked example rather than drawing on the input."""


@dataclass(frozen=True)
class Dropped:
    """One item of a listed output that did not validate."""

    index: int  # 1-based position in the list the model wrote
    raw: str  # the item as JSON
    reason: str


@dataclass
class Parsed(Generic[M]):
    value: M
    dropped: list[Dropped] = field(default_factory=list)


def _candidates(text: str) -> list[object]:
    """JSON values the text may hold, most likely first."""
    blocks = _FENCE.findall(text) or [text]
    found: list[object] = []
    for block in blocks:
        block = block.strip()
        start = min((i for i in (block.find("{"), block.find("[")) if i >= 0), default=-1)
        if start < 0:
            continue
        lines = [json_repair.loads(ln) for ln in block.splitlines() if ln.strip().startswith("{")]
        if len(lines) > 1:  # JSON lines: one item per line
            found.append([x for x in lines if isinstance(x, dict)])
        try:
            found.append(json_repair.loads(block[start:]))
        except Exception:  # json_repair raises on inputs it cannot mend
            pass
    return found


_HEADER = re.compile(
    r"^[\s#>*•-]*(?:(?:class\s+)?(?:session|class|week|lecture|lesson|unit|module|day)\s*#?\s*\d+\b"
    r"|\w+(?:st|nd|rd|th)\s+(?:class\s+)?(?:session|class|week|lecture|lesson))[\s*:.)–—-]*(.*)$",
    re.IGNORECASE,
)
# "Key concepts:", "- **Concepts**:", "Your key concepts:", "Topics:"
_CONCEPTS = re.compile(r"^[^:]{0,24}?\b(?:key\s+concepts?|concepts?|topics?)\b\W{0,4}:\s*(.+)$", re.IGNORECASE)
_TITLE = re.compile(r"^[\s*•-]*(?:title|topic)\s*\**\s*:\s*(.+)$", re.IGNORECASE)
_BULLET = re.compile(r"^\s*(?:[-*•]|\d+[.)])\s+(.+)$")
_TITLE_SPLIT = re.compile(r"\s+[–—-]\s+|:\s+")


def _clean(item: str) -> str:
    return item.strip().strip("*").strip().rstrip(".").strip()


def outline_sessions(text: str) -> list[dict]:
    """Class sessions from a plain-text syllabus outline ("Session 2: Forces", then "Key
    concepts: ..." or bullets), the form a model that ignores JSON tends to write."""
    sessions: list[dict] = []
    for line in text.splitlines():
        if header := _HEADER.match(line):
            rest = _clean(header.group(1))
            parts = _TITLE_SPLIT.split(rest, maxsplit=1)
            title, listed = (parts[0], parts[1]) if len(parts) == 2 and "," in parts[1] else (rest, "")
            sessions.append({"title": _clean(title), "key_concepts": [_clean(c) for c in re.split(r"[,;]", listed)]})
        elif not sessions:
            continue
        elif (named := _TITLE.match(line)) and not sessions[-1]["title"]:
            sessions[-1]["title"] = _clean(named.group(1))
        elif concepts := _CONCEPTS.match(line):
            sessions[-1]["key_concepts"] += [_clean(c) for c in re.split(r"[,;]", concepts.group(1))]
        elif bullet := _BULLET.match(line):
            sessions[-1]["key_concepts"].append(_clean(bullet.group(1).split(":")[0]))
    for s in sessions:
        s["key_concepts"] = [c for c in s["key_concepts"] if c]
    return [s for s in sessions if s["title"] and s["key_concepts"]]


def _list_field(schema: type[BaseModel]) -> tuple[str, type[BaseModel]] | None:
    """The name and item model of a schema whose single field is a list of models."""
    if len(schema.model_fields) != 1:
        return None
    name, info = next(iter(schema.model_fields.items()))
    args = get_args(info.annotation)
    if args and isinstance(args[0], type) and issubclass(args[0], BaseModel):
        return name, args[0]
    return None


def _wrap(value: object, schema: type[BaseModel]) -> object:
    """Fit a bare list (or one item) into a schema whose single field is that list."""
    listed = _list_field(schema)
    if listed is None or isinstance(value, dict) and listed[0] in value:
        return value
    if isinstance(value, dict):
        value = [value]
    return {listed[0]: value} if isinstance(value, list) else value


def _first_error(exc: ValidationError) -> str:
    first = exc.errors()[0]
    return f"{exc.error_count()} schema errors, first: {first['msg']} at {'.'.join(map(str, first['loc']))}"


def _strings(value: object) -> list[str]:
    """The string leaves of a JSON value, lower-cased and with whitespace collapsed."""
    if isinstance(value, str):
        return [" ".join(value.lower().split())]
    if isinstance(value, dict):
        value = list(value.values())
    return [s for v in value for s in _strings(v)] if isinstance(value, list) else []


def example_echoes(messages: list[dict]) -> frozenset[str]:
    """Strings of the worked examples' answers that the real request does not contain.

    An item made mostly of them was copied from the demonstration, not drawn from the input.
    """
    request = " ".join(messages[-1]["content"].lower().split())
    shown = [s for m in messages[:-1] if m["role"] == "assistant" for c in _candidates(m["content"]) for s in _strings(c)]
    return frozenset(s for s in shown if s not in request)


def _keep_valid_items(
    value: object, schema: type[BaseModel], echoes: frozenset[str], truncated: bool = False
) -> tuple[object, list[Dropped]]:
    """Split the schema's list into the items that validate and those that do not. In a
    reply cut off at the token cap, the last item is the one cut: it is dropped too."""
    listed = _list_field(schema)
    if listed is None or not isinstance(value, dict) or not isinstance(value.get(listed[0]), list):
        if truncated:
            raise ParseError(TRUNCATED)
        return value, []
    name, item_model = listed
    kept: list[object] = []
    dropped: list[Dropped] = []
    copies = 0
    items = list(value[name])
    if truncated and items:
        cut = items.pop()
        dropped.append(Dropped(len(items) + 1, json.dumps(cut, ensure_ascii=False), TRUNCATED))
    for i, item in enumerate(items, start=1):
        raw = json.dumps(item, ensure_ascii=False)
        try:
            valid = item_model.model_validate(item)
        except ValidationError as exc:
            dropped.append(Dropped(i, raw, _first_error(exc)))
            continue
        strings = _strings(valid.model_dump())
        copied = [s for s in strings if s in echoes]
        if 2 * len(copied) >= len(strings):
            copies += 1
            dropped.append(Dropped(i, raw, f"repeats the worked example ({', '.join(copied)})"))
        else:
            kept.append(valid)
    if not kept and dropped and copies == len(dropped) - truncated:
        raise ExampleCopied(f"every item repeats the worked example: {dropped[-1].reason}")
    if not kept and truncated:
        raise ParseError(TRUNCATED)
    # With no valid item, validate the whole so the error says what was wrong.
    return ({**value, name: kept}, dropped) if kept else (value, [])


def parse_structured(
    text: str, schema: type[M], echoes: frozenset[str] = frozenset(), truncated: bool = False
) -> Parsed[M]:
    """The schema's value in `text`; listed items made mostly of `echoes` are dropped, and
    when the reply was cut off (`truncated`), so is its last item."""
    if not text or not text.strip():
        raise ParseError("empty completion")
    errors: list[ParseError] = []
    candidates = _candidates(text)
    # A schema with a plain-text form tries it last; it answers None when the text has none.
    if (plain := getattr(schema, "from_plain_text", None)) and (value := plain(text)) is not None:
        candidates.append(value)
    for candidate in candidates:
        try:
            value, dropped = _keep_valid_items(_wrap(candidate, schema), schema, echoes, truncated)
            return Parsed(schema.model_validate(value), dropped)
        except ValidationError as exc:
            errors.append(ParseError(f"JSON does not match {schema.__name__}: {_first_error(exc)}"))
        except ParseError as exc:
            errors.append(exc)
    if not errors:
        raise ParseError("no JSON found in completion")
    raise errors[0]


def schema_hint(schema: type[BaseModel]) -> str:
    """A compact JSON schema to show a model that missed it."""
    return json.dumps(schema.model_json_schema(), separators=(",", ":"))
