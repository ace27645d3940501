"""The instruction formats UIT reads, as pure functions over parsed records: which format a
record's keys say, and the instances a record holds (or why it holds none).

- alpaca: `instruction`, `output`, optional `input`; one record, one instance.
- sharegpt: `conversations` of `from`/`value` turns, or OpenAI `messages` of `role`/`content`.
- flan: `inputs`/`targets` (the template already applied) and a task name column.
- super_ni: a task file: `Definition`, `Positive Examples`, `Negative Examples`, `Instances`;
  the instruction is the definition and two positive examples (the paper's default format).
- promptsource: `templates` (Jinja, prompt `|||` target) rendered over the rows of `data`.
"""

import json
from collections.abc import Iterable, Iterator, Mapping
from dataclasses import dataclass, field

import jinja2
from jinja2 import StrictUndefined, TemplateError
from jinja2.sandbox import SandboxedEnvironment

FORMATS = ("alpaca", "sharegpt", "flan", "super_ni", "promptsource")
EXPECTED_KEYS = {
    "alpaca": "instruction, output (input optional)",
    "sharegpt": "conversations (turns with from/value) or messages (turns with role/content)",
    "flan": "inputs, targets, and a task name column (task_name, task or _task_name)",
    "super_ni": "Definition, Positive Examples, Negative Examples, Instances",
    "promptsource": "templates (each with name and jinja: prompt ||| target) and data (a file of rows)",
}
TASK_COLUMNS = ("task_name", "task", "_task_name")
ROLES = {"human": "user", "user": "user", "gpt": "assistant", "assistant": "assistant", "chatgpt": "assistant",
         "bard": "assistant", "model": "assistant", "system": "system"}
POSITIVE_EXAMPLES = 2  # shown with a Super-NI definition, as the paper's default format


@dataclass(frozen=True)
class Instance:
    task: str
    instruction: str
    input: str
    output: str
    source_format: str
    source_row: str
    turns: tuple[Mapping[str, str], ...] = ()


@dataclass(frozen=True)
class Bad:
    """A record or line that yields no instance, and why (a reject row)."""

    source_row: str
    reason: str
    raw: str = ""


class FormatError(ValueError):
    """A file that matches no format, or one that cannot be read at all."""


def detect_format(keys: Iterable[str]) -> str | None:
    """The format a record's keys say, most specific first; None when none fits."""
    keys = set(keys)
    if {"Definition", "Instances"} <= keys:
        return "super_ni"
    if {"templates", "data"} <= keys:
        return "promptsource"
    if "conversations" in keys or "messages" in keys:
        return "sharegpt"
    if {"inputs", "targets"} <= keys:
        return "flan"
    if {"instruction", "output"} <= keys:
        return "alpaca"
    return None


def no_format(where: str, keys: Iterable[str]) -> FormatError:
    expected = "; ".join(f"{fmt}: {keys_}" for fmt, keys_ in EXPECTED_KEYS.items())
    return FormatError(
        f"{where} matches no instruction format: its keys are {', '.join(sorted(keys)) or '(none)'}; "
        f"expected {expected}. Set `format:` in the registry entry to read it as one."
    )


def _text(value: object, name: str) -> str:
    """A field as text: strings and numbers; the first of a list of references."""
    if isinstance(value, list):
        value = value[0] if value else ""
    if value is None:
        return ""
    if isinstance(value, str | int | float | bool):
        return str(value).strip()
    raise ValueError(f"field {name!r} is {type(value).__name__}, not text")


def _raw(record: object) -> str:
    return json.dumps(record, ensure_ascii=False, default=str)[:2000]


def parse_record(fmt: str, record: Mapping, where: str, default_task: str) -> Iterator[Instance | Bad]:
    """The instances of one record read as `fmt` (not promptsource: see `render_rows`)."""
    found = detect_format(record)
    if found is not None and found != fmt:
        keys = ", ".join(sorted(record))
        yield Bad(where, f"mixed formats: this record is {found} ({keys}), the file is read as {fmt}", _raw(record))
        return
    try:
        yield from PARSERS[fmt](record, where, default_task)
    except (ValueError, TypeError) as exc:
        yield Bad(where, str(exc), _raw(record))
    except KeyError as exc:
        yield Bad(where, f"{fmt} record without {exc}; expected {EXPECTED_KEYS[fmt]}", _raw(record))


def _task_name(record: Mapping, default: str) -> str:
    return next((_text(record[c], c) for c in TASK_COLUMNS if c in record and record[c]), default)


def _check(instance: Instance, record: Mapping) -> Instance | Bad:
    if not instance.instruction:
        return Bad(instance.source_row, "empty instruction", _raw(record))
    if not instance.output:
        return Bad(instance.source_row, "empty output", _raw(record))
    return instance


def _alpaca(record: Mapping, where: str, default_task: str) -> Iterator[Instance | Bad]:
    instruction = _text(record["instruction"], "instruction")
    # Without a task column, instances that share an instruction are one task.
    task = _task_name(record, instruction[:200] or default_task)
    yield _check(
        Instance(task, instruction, _text(record.get("input"), "input"), _text(record["output"], "output"), "alpaca", where),
        record,
    )


def chat_turns(record: Mapping) -> list[dict[str, str]]:
    """Every turn as {role, content}, roles mapped to system/user/assistant."""
    if "conversations" in record:
        raw, role_key, text_key = record["conversations"], "from", "value"
    else:
        raw, role_key, text_key = record["messages"], "role", "content"
    if not isinstance(raw, list):
        raise ValueError("chat turns are not a list")
    turns = []
    for i, turn in enumerate(raw):
        if not isinstance(turn, Mapping) or role_key not in turn:
            raise ValueError(f"turn {i} has no {role_key!r}")
        role = ROLES.get(str(turn[role_key]).lower())
        if role is None:
            raise ValueError(f"turn {i}: unknown role {turn[role_key]!r}; known: {', '.join(ROLES)}")
        turns.append({"role": role, "content": _text(turn.get(text_key), text_key)})
    return turns


def _chat(record: Mapping, where: str, default_task: str) -> Iterator[Instance | Bad]:
    turns = chat_turns(record)
    first_user = next((i for i, t in enumerate(turns) if t["role"] == "user"), None)
    if first_user is None:
        raise ValueError("chat has no user turn")
    reply = next((t for t in turns[first_user + 1 :] if t["role"] == "assistant" and t["content"]), None)
    if reply is None:
        raise ValueError("chat has no assistant turn after its first user turn")
    # Each chat is a task of its own: its first user turn is its instruction.
    task = _task_name(record, str(record.get("id") or where))
    instance = Instance(task, turns[first_user]["content"], "", reply["content"], "sharegpt", where, tuple(turns))
    yield _check(instance, record)


def _flan(record: Mapping, where: str, default_task: str) -> Iterator[Instance | Bad]:
    # FLAN fuses instruction and input in `inputs`: it is the instance's instruction here.
    task = _task_name(record, default_task)
    instance = Instance(task, _text(record["inputs"], "inputs"), "", _text(record["targets"], "targets"), "flan", where)
    yield _check(instance, record)


def super_ni_instruction(definition: str, examples: list[tuple[str, str]]) -> str:
    """Super-NI's instruction: the definition, then positive examples."""
    parts = [f"Definition: {definition}"]
    parts += [f"Positive Example {i} -\nInput: {inp}\nOutput: {out}" for i, (inp, out) in enumerate(examples, 1)]
    return "\n\n".join(parts)


def _super_ni(record: Mapping, where: str, default_task: str) -> Iterator[Instance | Bad]:
    raw = record["Definition"]  # a list of strings in the released task files
    definition = " ".join(_text(d, "Definition") for d in (raw if isinstance(raw, list) else [raw])).strip()
    if not definition:
        yield Bad(where, "empty instruction (Definition)", _raw({k: v for k, v in record.items() if k != "Instances"}))
        return
    examples = [
        (_text(e.get("input"), "input"), _text(e.get("output"), "output"))
        for e in (record.get("Positive Examples") or [])[:POSITIVE_EXAMPLES]
        if isinstance(e, Mapping)
    ]
    instruction = super_ni_instruction(definition, examples)
    task = _text(record.get("Task") or record.get("Name") or default_task, "Task")
    for i, inst in enumerate(record["Instances"]):
        row = f"{where}:Instances[{i}]"
        try:
            input_, output = _text(inst.get("input"), "input"), _text(inst.get("output"), "output")
            yield _check(Instance(task, instruction, input_, output, "super_ni", row), inst)
        except (ValueError, AttributeError) as exc:
            yield Bad(row, f"instance: {exc}", _raw(inst))


PARSERS = {"alpaca": _alpaca, "sharegpt": _chat, "flan": _flan, "super_ni": _super_ni}


@dataclass(frozen=True)
class Template:
    """A PromptSource template: Jinja that renders `prompt ||| target` over one row."""

    name: str
    compiled: jinja2.Template = field(repr=False)
    answer_choices: str = ""  # "a ||| b": the list `answer_choices` the template indexes


# Sandboxed: a template is data from a collection, not code this project trusts. Strict: a
# field the row lacks is an error (a reject), not an empty string in the prompt.
JINJA = SandboxedEnvironment(undefined=StrictUndefined, autoescape=False, keep_trailing_newline=False)


def templates_of(record: Mapping, where: str) -> tuple[list[Template], list[Bad]]:
    """The file's templates (a list, or PromptSource's mapping by id), compiled; broken ones as Bad."""
    raw = record["templates"]
    items = list(raw.values()) if isinstance(raw, Mapping) else list(raw or [])
    templates, bad = [], []
    for i, t in enumerate(items):
        name = str(t.get("name") or f"template_{i}") if isinstance(t, Mapping) else f"template_{i}"
        row = f"{where}:templates[{name}]"
        if not isinstance(t, Mapping) or not str(t.get("jinja") or "").strip():
            bad.append(Bad(row, "template has no jinja", _raw(t)))
            continue
        try:
            templates.append(Template(name, JINJA.from_string(str(t["jinja"])), str(t.get("answer_choices") or "")))
        except TemplateError as exc:
            bad.append(Bad(row, f"template {name!r} does not compile: {exc}", _raw(t)))
    return templates, bad


def render(template: Template, row: Mapping) -> tuple[str, str]:
    """(prompt, target) of one row; raises TemplateError or ValueError when it cannot render."""
    values = dict(row)
    if template.answer_choices:
        values["answer_choices"] = [c.strip() for c in JINJA.from_string(template.answer_choices).render(**row).split("|||")]
    text = template.compiled.render(**values)
    if "|||" not in text:
        raise ValueError(f"template {template.name!r} rendered no '|||' between prompt and target")
    prompt, target = text.split("|||", 1)
    return prompt.strip(), target.strip()


def render_rows(templates: list[Template], rows: Iterable[tuple[str, Mapping | Bad]]) -> Iterator[Instance | Bad]:
    """Every template over every row, row by row (the rows file is read once): each template is a task."""
    for where, row in rows:
        if isinstance(row, Bad):
            yield row
            continue
        for t in templates:
            at = f"{where}:{t.name}"
            try:
                prompt, target = render(t, row)
            except (TemplateError, ValueError, TypeError) as exc:
                yield Bad(at, f"template {t.name!r} failed to render: {exc}", _raw(row))
                continue
            yield _check(Instance(t.name, prompt, "", target, "promptsource", at), row)
