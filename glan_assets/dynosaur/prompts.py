"""The prompts Dynosaur sends: one call per dataset proposes up to three instruction tasks
over its columns. Two variants, as in the paper: with the dataset's description, and
without one (the model then reads the task off the column names and sample rows).

Each shows one worked demonstration; the prompt's text is built from the stored metadata
row alone, with at most `SAMPLE_COLUMNS` columns and every value cut short, so a 500-column
or million-row dataset gives a prompt of the same bounded size.
"""

import json

from glan_assets.dynosaur.schemas import DatasetMetadataRow
from glan_assets.dynosaur.sources import SAMPLE_COLUMNS
from glan_assets.prompting import Prompt

# Each sample value is cut to its share of a fixed budget (at most 100 characters), so many
# columns give shorter values instead of a longer prompt.
PROMPT_SAMPLE_CHARS = 1200
PROMPT_DESCRIPTION_CHARS = 1000

SYSTEM = (
    "You design instruction-tuning tasks from annotated datasets. A task reads some columns of a "
    "row (its input fields) and asks for the value of another column (its output field)."
)
ASK = (
    "Propose up to 3 different instruction tasks over this dataset's columns. Each task has an "
    "instruction that says what to do, its input fields and one output field, all taken from the "
    "fields listed. Reply with JSON only."
)

TASKS_DESCRIBED = Prompt(
    "dynosaur_tasks_described",
    system=SYSTEM,
    user="Dataset: {name}\nDescription: {description}\n{columns}\n\n" + ASK,
    examples=(
        (
            "Dataset: film_reviews\nDescription: Short film reviews written by viewers, each with the "
            "film's title and whether the review is positive or negative.\n"
            'Fields (JSON): ["title", "review", "sentiment"]\nColumns:\n- title (VARCHAR)\n'
            "- review (VARCHAR)\n- sentiment (labels: negative, positive)\nSample rows:\n"
            '{"title": "Night Train", "review": "Slow, but the ending pays off.", "sentiment": "positive"}\n\n' + ASK,
            '{"tasks": [{"instruction": "Decide whether the film review is positive or negative.", '
            '"input_fields": ["review"], "output_field": "sentiment"}, {"instruction": "Guess which film '
            'this review is about.", "input_fields": ["review"], "output_field": "title"}, '
            '{"instruction": "Write a short review of the film with the given sentiment.", '
            '"input_fields": ["title", "sentiment"], "output_field": "review"}]}',
        ),
    ),
)

TASKS_UNDESCRIBED = Prompt(
    "dynosaur_tasks_undescribed",
    system=SYSTEM,
    user="Dataset: {name}\n{columns}\n\n" + ASK,
    examples=(
        (
            'Dataset: tickets\nFields (JSON): ["subject", "body", "team"]\nColumns:\n- subject (VARCHAR)\n'
            "- body (VARCHAR)\n- team (VARCHAR)\nSample rows:\n"
            '{"subject": "Cannot log in", "body": "My password reset link has expired.", "team": "accounts"}\n\n' + ASK,
            '{"tasks": [{"instruction": "Route the support ticket to the team that should handle it.", '
            '"input_fields": ["subject", "body"], "output_field": "team"}, {"instruction": "Write a '
            'one-line subject for this support ticket.", "input_fields": ["body"], "output_field": "subject"}]}',
        ),
    ),
)


def _cut(text: str, limit: int) -> str:
    return text if len(text) <= limit else text[: limit - 1] + "…"


def shown_columns(meta: DatasetMetadataRow) -> list[str]:
    """The columns the prompt lists, and the reply schema's enums allow."""
    return [c.name for c in meta.text_columns()[:SAMPLE_COLUMNS]]


def task_messages(meta: DatasetMetadataRow) -> list[dict]:
    """The task prompt for a dataset: the described variant when it has a description."""
    columns = meta.text_columns()
    shown = columns[:SAMPLE_COLUMNS]
    lines = [f"Fields (JSON): {json.dumps([c.name for c in shown], ensure_ascii=False)}", "Columns:"]
    lines += [f"- {c.name} ({'labels: ' + ', '.join(c.labels) if c.labels else c.type})" for c in shown]
    if len(columns) > len(shown):
        lines.append(f"({len(columns) - len(shown)} more columns not shown)")
    lines.append("Sample rows:")
    width = max(20, min(100, PROMPT_SAMPLE_CHARS // len(shown)))
    lines += [
        json.dumps({k: None if v is None else _cut(v, width) for k, v in row.items()}, ensure_ascii=False)
        for row in meta.samples()
    ]
    values = {"name": meta.dataset, "columns": "\n".join(lines)}
    if meta.description:
        return TASKS_DESCRIBED.messages(**values, description=_cut(" ".join(meta.description.split()), PROMPT_DESCRIPTION_CHARS))
    return TASKS_UNDESCRIBED.messages(**values)
