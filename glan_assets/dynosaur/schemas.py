"""Dynosaur's pydantic models: its table rows and the structured output of its task call.

Every table carries `dataset`, the partition key.
"""

import json
from typing import Annotated, ClassVar

from pydantic import BaseModel, Field, TypeAdapter, WithJsonSchema, create_model

from glan_assets.rows import TableRow

MAX_TASKS = 3  # the paper asks for "up to three different tasks" per dataset


class Column(BaseModel):
    name: str
    type: str  # the DuckDB type it is read as
    labels: list[str] = []  # a `ClassLabel`'s names, in label order


class DatasetTableRow(TableRow):
    partition_column: ClassVar[str | None] = "dataset"


class DatasetMetadataRow(DatasetTableRow):
    table: ClassVar[str] = "dataset_metadata"
    id_column: ClassVar[str] = "dataset_id"
    dataset_id: str
    dataset: str
    path: str
    format: str
    description: str
    license: str
    source_url: str
    citation: str
    row_count: int
    columns: str  # JSON list of `Column`: the columns that read as text
    skipped_columns: list[str]  # "name (TYPE)" of columns that cannot be text (structs, binary)
    sample_rows: str  # JSON list of up to 3 rows, each value cut short
    source_version: str  # changes when the source file changes, so the levels below rebuild

    def text_columns(self) -> list[Column]:
        return TypeAdapter(list[Column]).validate_json(self.columns)

    def samples(self) -> list[dict[str, str]]:
        return json.loads(self.sample_rows)


class TaskRow(DatasetTableRow):
    table: ClassVar[str] = "dynosaur_tasks"
    id_column: ClassVar[str] = "task_id"
    parent_column: ClassVar[str | None] = "dataset_id"
    task_id: str
    dataset_id: str
    dataset: str
    task_index: int  # its place in the model's reply, from 1
    instruction: str
    input_fields: list[str]
    output_field: str
    llm_calls: int  # calls the dataset's one task request took (re-asks included)
    model: str


class InstanceRow(DatasetTableRow):
    table: ClassVar[str] = "dynosaur_instances"
    id_column: ClassVar[str] = "instance_id"
    parent_column: ClassVar[str | None] = "task_id"
    instance_id: str
    task_id: str
    dataset: str
    instruction: str
    input: str  # `field: value` lines
    output: str
    source_row: int  # the row's 0-based index in the source file
    license: str
    source_url: str


class ProposedTask(BaseModel):
    """One task as the model wrote it. Fields are plain strings here so that the filter
    (`tasks.filter_tasks`) names what is wrong; the schema sent to the endpoint has enums."""

    instruction: str = ""
    input_fields: list[str] = []
    output_field: str = ""


class ProposedTasks(BaseModel):
    tasks: list[ProposedTask]


# Up to this many columns, the schema spells out one variant per output column, whose inputs
# are the other columns: a constrained decoder then cannot use the output as an input (the
# small embedded model did so in 2 of 3 demo datasets). Past it the variants grow as n².
ONE_OF_COLUMNS = 16


def tasks_schema(columns: list[str]) -> type[ProposedTasks]:
    """The reply schema for one dataset: `input_fields` and `output_field` are JSON-schema
    enums of its column names, so an endpoint with structured outputs cannot name another."""
    if 2 <= len(columns) <= ONE_OF_COLUMNS:
        schema = _one_of_schema(columns)
        return type("DynosaurTasks", (ProposedTasks,), {"model_json_schema": classmethod(lambda cls, *a, **k: schema)})
    name = Annotated[str, WithJsonSchema({"type": "string", "enum": columns})]
    task = create_model(
        "DynosaurTask",
        __base__=ProposedTask,
        instruction=(str, ...),
        input_fields=(list[name], ...),
        output_field=(name, ...),
    )
    # maxItems only in the schema: a fourth task is dropped by the filter, not the whole reply.
    return create_model(
        "DynosaurTasks", __base__=ProposedTasks, tasks=(list[task], Field(json_schema_extra={"maxItems": MAX_TASKS}))
    )


def _one_of_schema(columns: list[str]) -> dict:
    """Tasks whose output is one column and whose inputs are some of the others."""

    def variant(output: str) -> dict:
        return {
            "type": "object",
            "properties": {
                "instruction": {"type": "string", "minLength": 1},
                "output_field": {"const": output},
                "input_fields": {
                    "type": "array",
                    "items": {"enum": [c for c in columns if c != output]},
                    "minItems": 1,  # (no uniqueItems: llguidance cannot follow it; the filter drops repeats)
                },
            },
            "required": ["instruction", "output_field", "input_fields"],
            "additionalProperties": False,
        }

    return {
        "title": "DynosaurTasks",
        "type": "object",
        "properties": {
            "tasks": {"type": "array", "items": {"oneOf": [variant(c) for c in columns]}, "minItems": 1, "maxItems": MAX_TASKS}
        },
        "required": ["tasks"],
        "additionalProperties": False,
    }
