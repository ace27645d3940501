"""Tolerant parsing of structured LLM output into pydantic models.

Endpoints that ignore `response_format` (small local models do) wrap JSON in prose or
code fences, drop a bracket, emit JSON lines, or return the bare list the schema wraps.
"""

import json
import re
from typing import TypeVar

import json_repair
from pydantic import BaseModel, ValidationError

M = TypeVar("M", bound=BaseModel)
_FENCE = re.compile(r"```(?:json)?\s*(.*?)```", re.DOTALL)


class ParseError(ValueError):
    """The text holds nothing the schema accepts; the message says why."""


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


def _wrap(value: object, schema: type[BaseModel]) -> object:
    """Fit a bare list (or one item) into a schema whose single field is that list."""
    fields = list(schema.model_fields)
    if len(fields) != 1 or isinstance(value, dict) and fields[0] in value:
        return value
    if isinstance(value, dict):
        value = [value]
    return {fields[0]: value} if isinstance(value, list) else value


def parse_structured(text: str, schema: type[M]) -> M:
    if not text or not text.strip():
        raise ParseError("empty completion")
    errors: list[str] = []
    for value in _candidates(text):
        try:
            return schema.model_validate(_wrap(value, schema))
        except ValidationError as exc:
            errors.append(f"{exc.error_count()} schema errors, first: {exc.errors()[0]['msg']} at "
                          f"{'.'.join(map(str, exc.errors()[0]['loc']))}")
    if not errors:
        raise ParseError("no JSON found in completion")
    raise ParseError(f"JSON does not match {schema.__name__}: {errors[0]}")


def schema_hint(schema: type[BaseModel]) -> str:
    """A compact JSON schema to show a model that missed it."""
    return json.dumps(schema.model_json_schema(), separators=(",", ":"))
