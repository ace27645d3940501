"""Tolerant parsing of structured LLM output into pydantic models.

Endpoints that ignore `response_format` (small local models do) wrap JSON in prose or
code fences, drop a bracket, emit JSON lines, or return the bare list the schema wraps.
A list whose items are partly broken keeps the items that validate; the others come back
as `dropped`, with their reasons, for the rejects table. So do items copied from the
prompt's worked example, which small models repeat instead of reading their input.

**A value that only a repair closes is not data.** json-repair mends almost-JSON (trailing
commas, single quotes, prose around it) and also JSON cut off mid-reply, whose last value it
closes where the text stopped: a key concept 'Stub method history law 7f3a…' was stored as
'Stub method history'.
The two are told apart by where the text ends, not by whether json-repair changed it: a
scan of the text (`_open_at_end`) follows its strings (double-quoted, or single-quoted where
a value starts), arrays and objects, and lists those still open where the text ends. None
open: the text is complete, and json-repair's value is kept (strict JSON skips the scan).
Some open: the reply was cut (`Parsed.cut`). Then the text is cut again at the start of the
first list item still open (or of any open string above the items), the containers above the
items are closed there, and that prefix is what is parsed: every value the repair would have
closed is left out, the complete items are kept. The cut item is `dropped` with its text as
written (in JSON lines, the cut last line); a list cut between items gets a `dropped` entry
saying later items may be missing. With no complete item left, the reply is `Cut`. The stage
asks a cut reply again. What the scan cannot see: JSON lines cut exactly at a line's end, and
a string whose unescaped inner quotes are odd in number (it may read as open: asked again).
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
CUT = "truncated: the reply ended inside a value; only a repair would close it"
CUT_BETWEEN = "truncated: the reply ended before its list did; items after this one may be missing"
# Bumped when the same text may parse to other values; part of every structured stage's code
# version, so stored rows are parsed again from the cache. 2: values a repair closed are dropped.
RULES_VERSION = "2"


class ParseError(ValueError):
    """The text holds nothing the schema accepts; the message says why."""


class Cut(ParseError):
    """The reply ended before any item (or the value) was complete: ask it again."""


class ExampleCopied(ParseError):
    """Every item repeats the prompt's worked example rather than drawing on the input."""


@dataclass(frozen=True)
class Dropped:
    """One item of a listed output that did not validate."""

    index: int  # 1-based position in the list the model wrote
    raw: str  # the item as JSON; a cut item, its text as written
    reason: str


@dataclass
class Parsed(Generic[M]):
    value: M
    dropped: list[Dropped] = field(default_factory=list)
    cut: bool = False  # the reply ended inside a value: some of it is missing


_SPECIAL = re.compile(r"[\\\"'{}\[\]]")


def _open_at_end(text: str) -> tuple[list[tuple[str, int]], int]:
    """The strings, arrays and objects still open where the JSON in `text` ends, outermost
    first, each as (its opening character, its offset), empty when it closed every one it
    opened; and where that JSON ends: the end of the text, or the end of its first value when
    prose, not more JSON, follows it.

    Quotes outside any array or object are prose; a single quote opens a string only where a
    value or key starts (after `{`, `[`, `,` or `:`), so an apostrophe in a value is text."""
    stack: list[tuple[str, int]] = []
    skip = -1
    for m in _SPECIAL.finditer(text):
        i, c = m.start(), m.group()
        if i <= skip:
            continue
        top = stack[-1][0] if stack else ""
        if top in ('"', "'"):
            if c == "\\":
                skip = i + 1  # the escaped character
            elif c == top:
                stack.pop()
        elif c in "{[":
            stack.append((c, i))
        elif c in "}]":
            if stack:
                stack.pop()
                if not stack and text[i + 1 :].lstrip()[:1] not in ("{", "[", ","):
                    return [], i + 1  # "Hope this helps [...]" is not JSON
        elif stack and (c == '"' or c == "'" and text[:i].rstrip()[-1:] in ("{", "[", ",", ":")):
            stack.append((c, i))
    return stack, len(text)


@dataclass
class _Candidate:
    """A JSON value the text may hold."""

    value: object  # json-repair's (or the strict parser's) value of `text`
    text: str = ""  # the JSON text, from its first bracket
    open: list[tuple[str, int]] = field(default_factory=list)  # see `_open_at_end`
    cut_lines: list[str] = field(default_factory=list)  # JSON lines: the last line, when cut


def _loads(text: str) -> _Candidate | None:
    try:
        return _Candidate(json.loads(text), text)
    except ValueError:
        pass
    opened, end = _open_at_end(text)
    try:
        return _Candidate(json_repair.loads(text[:end]), text[:end], opened)
    except Exception:  # json_repair raises on inputs it cannot mend
        return None


def _json_lines(block: str) -> _Candidate | None:
    """One item per line, when every line that starts an object but the last is complete on
    its own (pretty-printed JSON starts objects it closes lines later)."""
    lines = [ln.strip() for ln in block.splitlines() if ln.strip().startswith("{")]
    if len(lines) < 2 or any(_open_at_end(ln)[0] for ln in lines[:-1]):
        return None
    parsed = [_loads(ln) for ln in lines]
    items = [c.value for c in parsed if c and not c.open and isinstance(c.value, dict)]
    last = parsed[-1]
    return _Candidate(items, cut_lines=[lines[-1]] if last is None or last.open else [])


def _candidates(text: str) -> list[_Candidate]:
    """JSON values the text may hold, most likely first."""
    blocks = _FENCE.findall(text) or [text]
    found: list[_Candidate] = []
    for block in blocks:
        block = block.strip()
        start = min((i for i in (block.find("{"), block.find("[")) if i >= 0), default=-1)
        if start < 0:
            continue
        if lines := _json_lines(block):
            found.append(lines)
        if whole := _loads(block[start:]):
            found.append(whole)
    return found


def _complete_part(candidate: _Candidate, schema: type[BaseModel]) -> tuple[object, list[str], bool]:
    """The candidate's value without what a repair closed; the text of each list item so left
    out; whether its list was left open where the text ended (later items may be missing).

    The value is None when nothing was complete: the cut was in the value itself, or in the
    one item a model wrote instead of the list."""
    if candidate.cut_lines:
        return candidate.value, candidate.cut_lines, False
    if not candidate.open:
        return candidate.value, [], False
    listed = _list_field(schema)
    value, opened = candidate.value, candidate.open
    if listed and isinstance(value, dict) and listed[0] in value:
        depth = 2  # {"items": [ item
    elif listed and isinstance(value, list):
        depth = 1  # [ item
    else:
        return None, [], False
    # Keep the containers above the items open in the text; leave out the first value below
    # them (the open item) or any open string, and close the kept containers where it starts.
    keep = 0
    while keep < min(depth, len(opened)) and opened[keep][0] in "{[":
        keep += 1
    cut = opened[keep][1] if keep < len(opened) else len(candidate.text)
    closing = "".join("}" if c == "{" else "]" for c, _ in reversed(opened[:keep]))
    try:  # json-repair mends what the cut leaves at the end of the head: a comma, a key
        value = json_repair.loads(candidate.text[:cut] + closing)
    except Exception:
        return None, [], False
    items = [candidate.text[cut:]] if keep == depth and keep < len(opened) else []
    return value, items, keep == depth


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
    shown = [
        s
        for m in messages[:-1]
        if m["role"] == "assistant"
        for c in _candidates(m["content"])
        for s in _strings(c.value)
    ]
    return frozenset(s for s in shown if s not in request)


def _keep_valid_items(
    candidate: _Candidate, schema: type[BaseModel], echoes: frozenset[str], truncated: bool = False
) -> tuple[object, list[Dropped], bool]:
    """Split the schema's list into the items that validate and those that do not, and say
    whether the reply was cut. The items a repair would have closed are dropped. In a reply
    that hit the token cap but closed its JSON, the last item is the one cut: it is dropped too."""
    value, cut_items, list_open = _complete_part(candidate, schema)
    cut = bool(candidate.open or candidate.cut_lines)
    reason = TRUNCATED if truncated else CUT
    if value is None:
        raise Cut(reason)
    value = _wrap(value, schema)
    listed = _list_field(schema)
    if listed is None or not isinstance(value, dict) or not isinstance(value.get(listed[0]), list):
        if truncated or cut:
            raise Cut(reason)
        return value, [], False
    name, item_model = listed
    kept: list[object] = []
    dropped: list[Dropped] = []
    copies = 0
    items = list(value[name])
    if cut:
        if cut_items:
            dropped += [Dropped(len(items) + n, raw, reason) for n, raw in enumerate(cut_items, start=1)]
        elif list_open:
            dropped.append(Dropped(len(items) + 1, "", CUT_BETWEEN))
    elif truncated and items:
        last = items.pop()
        dropped.append(Dropped(len(items) + 1, json.dumps(last, ensure_ascii=False), TRUNCATED))
    cuts = len(dropped)
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
    if not kept and copies and copies == len(dropped) - cuts:
        raise ExampleCopied(f"every item repeats the worked example: {dropped[-1].reason}")
    if not kept and (truncated or cut):
        raise Cut(reason)
    dropped.sort(key=lambda d: d.index)
    # With no valid item, validate the whole so the error says what was wrong.
    return ({**value, name: kept}, dropped, cut) if kept else (value, [], cut)


def parse_structured(
    text: str, schema: type[M], echoes: frozenset[str] = frozenset(), truncated: bool = False
) -> Parsed[M]:
    """The schema's value in `text`; listed items made mostly of `echoes` are dropped, and
    so are the items a cut reply left incomplete (`Parsed.cut`). When the reply hit the token
    cap (`truncated`) but closed its JSON, its last item is dropped. `Cut`: nothing complete."""
    if not text or not text.strip():
        raise ParseError("empty completion")
    errors: list[ParseError] = []
    candidates = _candidates(text)
    # A schema with a plain-text form tries it last; it answers None when the text has none.
    if (plain := getattr(schema, "from_plain_text", None)) and (value := plain(text)) is not None:
        candidates.append(_Candidate(value))
    for candidate in candidates:
        try:
            value, dropped, cut = _keep_valid_items(candidate, schema, echoes, truncated)
            return Parsed(schema.model_validate(value), dropped, cut)
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
