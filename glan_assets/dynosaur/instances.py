"""Level 3: the dataset's own rows become the instances, every usable row times every kept
task, built by one SQL query per task over the source (never row by row in Python), so the
only LLM cost is the dataset's one task call.

A row whose input or output field is missing (NULL or blank) is skipped and counted. When
the output column holds at most 10 short labels, the instruction lists them. Every text is
cut to `max_chars`; `instances_per_task` keeps a spread sample of rows (0: all of them).
"""

from dataclasses import dataclass

import dagster as dg
import duckdb

from glan_assets.dynosaur.metadata import LEVEL as METADATA
from glan_assets.dynosaur.partitions import dataset_partitions
from glan_assets.dynosaur.resources import DynosaurSettings
from glan_assets.dynosaur.schemas import Column, DatasetMetadataRow, InstanceRow, TaskRow
from glan_assets.dynosaur.sources import ROW, DatasetError, ident, literal, open_source, text_expr
from glan_assets.dynosaur.tasks import LEVEL as TASKS
from glan_assets.levels import Level, level_asset
from glan_assets.results import markdown_table, store_partition
from glan_assets.rows import RejectRow
from resources.storage import DuckDBStore

LEVEL = Level(
    "dynosaur_instances",
    InstanceRow,
    id_prefix="dinst",
    method="dynosaur",
    group="dynosaur",
    description="Instruction/input/output triples: every usable row of the dataset times every kept task, "
    "built in DuckDB over the source, with its license, source and row index.",
    parent=TASKS.name,
    # It reads the source file itself: a changed file (new metadata) rebuilds it.
    extra_deps=(METADATA.name,),
    # No duplicate-rate check: a label-conditioned task repeats its inputs by design.
    label="instance",
    lineage_columns={"instruction": "instruction", "input": "input", "output": "output", "source_row": "source_row"},
    lineage_view="dynosaur_lineage",
    partitions_def=dataset_partitions,
    training_pairs="SELECT instance_id AS source_id, dataset AS group_name, task_id, "
    "concat_ws(chr(10) || chr(10), instruction, nullif(input, '')) AS instruction, output AS response "
    "FROM dynosaur_instances",
)

MAX_LABELS = 10
LABEL_CHARS = 40  # a longer value is an answer, not a label
# Multiplicative hashing of the row index: a stable, spread-out order to take a capped sample
# in (the first rows of a file are often all of one label). 4294967311 is prime.
_SPREAD = "(({row} * 2654435761 + {salt}) % 4294967311)"


@dataclass(frozen=True)
class TaskSql:
    """The queries of one task over the view `source`; `v0..` are the input fields as text, `out` the output."""

    values: str  # the CTE of every row's fields as text
    complete: str  # the condition for a usable row

    @classmethod
    def of(cls, task: TaskRow, columns: dict[str, Column]) -> "TaskSql":
        exprs = [f"{text_expr(columns[f])} AS v{i}" for i, f in enumerate(task.input_fields)]
        exprs.append(f"{text_expr(columns[task.output_field])} AS out")
        names = [f"v{i}" for i in range(len(task.input_fields))] + ["out"]
        values = f"WITH fielded AS (SELECT {ident(ROW)} AS source_row, {', '.join(exprs)} FROM source)"
        return cls(values, " AND ".join(f"nullif(trim({n}), '') IS NOT NULL" for n in names))

    def counts(self) -> str:
        """(usable rows, all rows)."""
        return f"{self.values} SELECT count(*) FILTER (WHERE {self.complete}), count(*) FROM fielded"

    def outputs(self) -> str:
        """Up to MAX_LABELS + 1 distinct outputs: enough to tell a label column."""
        return f"{self.values} SELECT DISTINCT out FROM fielded WHERE {self.complete} LIMIT {MAX_LABELS + 1}"


def instance_sql(task: TaskRow, columns: dict[str, Column], max_chars: int, cap: int) -> str:
    """instance_id, input (`field: value` lines), output, source_row for every usable row
    (a spread sample of `cap` of them when `cap` > 0). The id is `stable_id("dinst",
    task_id, source_row)`, computed in SQL."""
    q = TaskSql.of(task, columns)
    lines = ", ".join(f"{literal(f + ': ')} || v{i}" for i, f in enumerate(task.input_fields))
    # A task id is hex after its prefix, so the JSON of [task_id, row] needs no escaping.
    instance_id = f"'{LEVEL.id_prefix}_' || left(sha256('[\"{task.task_id}\",' || source_row || ']'), 16)"
    salt = int(task.task_id.rsplit("_", 1)[1][:8], 16)
    limit = f" ORDER BY {_SPREAD.format(row='source_row', salt=salt)} LIMIT {cap}" if cap > 0 else ""
    # Rows are picked first, so ids and inputs are computed for the kept rows only.
    return (
        f"{q.values}, picked AS (SELECT * FROM fielded WHERE {q.complete}{limit}) "
        f"SELECT {instance_id} AS instance_id, left(concat_ws(chr(10), {lines}), {max_chars}) AS input, "
        f"left(out, {max_chars}) AS output, source_row FROM picked"
    )


def answer_labels(output: Column, distinct: list[str], usable: int) -> list[str]:
    """The labels to list in the instruction: a `ClassLabel`'s names, or the output's values
    when there are at most MAX_LABELS short ones that repeat (a column of unique values is
    not a label set); none otherwise."""
    labels = output.labels or sorted(distinct)
    if output.labels or (len(distinct) <= MAX_LABELS and 2 * len(distinct) <= usable):
        if len(labels) <= MAX_LABELS and all(len(v) <= LABEL_CHARS for v in labels):
            return labels
    return []


def instruction_of(task: TaskRow, labels: list[str], max_chars: int) -> str:
    text = f"{task.instruction} Answers must be one of: {', '.join(labels)}." if labels else task.instruction
    return text[:max_chars]


@dataclass
class TaskInstances:
    task: TaskRow
    rows: list[InstanceRow]
    skipped: int  # rows with a missing input or output field
    labels: list[str]


def task_instances(
    con: duckdb.DuckDBPyConnection, meta: DatasetMetadataRow, task: TaskRow, max_chars: int, cap: int
) -> TaskInstances:
    """One task's instances from the connection's `source` view."""
    columns = {c.name: c for c in meta.text_columns()}
    q = TaskSql.of(task, columns)
    usable, total = con.execute(q.counts()).fetchone()
    distinct = [v for (v,) in con.execute(q.outputs()).fetchall()]
    labels = answer_labels(columns[task.output_field], distinct, usable)
    instruction = instruction_of(task, labels, max_chars)
    rows = [
        InstanceRow(
            instance_id=instance_id,
            task_id=task.task_id,
            dataset=meta.dataset,
            instruction=instruction,
            input=text,
            output=output,
            source_row=source_row,
            license=meta.license,
            source_url=meta.source_url,
        )
        for instance_id, text, output, source_row in con.execute(instance_sql(task, columns, max_chars, cap)).fetchall()
    ]
    return TaskInstances(task, rows, total - usable, labels)


@level_asset(LEVEL)
def dynosaur_instances(
    context: dg.AssetExecutionContext, dynosaur: DynosaurSettings, store: DuckDBStore
) -> dg.MaterializeResult:
    key = context.partition_key
    (meta,) = store.read(DatasetMetadataRow, key)
    tasks = store.read(TaskRow, key)
    try:
        with open_source(dynosaur.registry().entry(key)) as source:
            built = [task_instances(source.con, meta, t, dynosaur.max_chars, dynosaur.instances_per_task) for t in tasks]
    except DatasetError as exc:
        # `from None`: a build reports the deepest cause, which would be the library's text.
        raise dg.Failure(description=f"{exc}; the rows stored before were kept") from None
    rows = [r for b in built for r in b.rows]
    dropped = store.query(
        f"SELECT count(*) AS n FROM {RejectRow.table} WHERE asset = ? AND partition_key = ?", [TASKS.name, key]
    )[0]["n"]
    calls = max((t.llm_calls for t in tasks), default=0)
    per_task = [
        {"task_id": b.task.task_id, "output_field": b.task.output_field, "instances": len(b.rows), "skipped_rows": b.skipped,
         "labels": ", ".join(b.labels)}
        for b in built
    ]
    return store_partition(
        context, store, LEVEL, rows,
        preview=lambda: markdown_table(per_task, limit=len(per_task)) + "\n\n" + markdown_table(
            [{"instance_id": r.instance_id, "instruction": r.instruction, "input": r.input, "output": r.output} for r in rows]
        ),
        metadata={
            "instances": len(rows),
            "tasks_kept": len(tasks),
            "tasks_dropped": dropped,
            "skipped_rows": sum(b.skipped for b in built),
            # The paper's cost argument: the calls are per dataset, the instances per row.
            "task_llm_calls": calls,
            "instances_per_llm_call": round(len(rows) / calls, 1) if calls else 0.0,
            "per_task": dg.MetadataValue.json(per_task),
        },
    )
