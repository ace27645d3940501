"""Level 3: subjects per discipline. An education expert lists them in free text, then a
second call turns the text into JSON (format instructions in the first call hurt quality)."""

import dagster as dg

from glan_assets import stages
from glan_assets.glan.partitions import discipline_partitions
from glan_assets.glan.prompts import SUBJECTS, SUBJECTS_FORMAT
from glan_assets.glan.resources import GenerationSettings
from glan_assets.glan.schemas import DisciplineRow, SubjectList, SubjectRow
from glan_assets.ids import stable_id
from glan_assets.levels import Level, level_asset
from glan_assets.results import store_partition
from glan_assets.stages import Reply, Request, Stage
from resources.llm import LLMResource, Sampling
from resources.storage import DuckDBStore

LIST = Stage("subjects", (SUBJECTS,), Sampling(temperature=1.0, top_p=0.95, max_tokens=1024), None, "2", keeps_cut_lines=True)
# Version 2: the schema sent asks for non-blank subtopics.
FORMAT = Stage(
    "subjects_format", (SUBJECTS_FORMAT,), Sampling(temperature=0.0, top_p=1.0, max_tokens=1024), SubjectList, "2"
)

LEVEL = Level(
    "subjects",
    SubjectRow,
    id_prefix="sbj",
    method="glan",
    group="generation",
    description="Subjects of the discipline with `subject_name`, `level` and `subtopics` "
    "(`subject_queries` sampled queries, then one JSON-formatting call each).",
    parent="disciplines",
    stages=(LIST, FORMAT),
    dedup_column="subject_name",
    label="subject",
    lineage_columns={"subject_name": "subject_name", "level": "level"},
    partitions_def=discipline_partitions,
)


def subject_rows(discipline: DisciplineRow, replies: list[Reply], cap: int) -> list[SubjectRow]:
    """Subjects from the parsed replies, in query order, one per name, at most `cap` (0: all)."""
    rows: dict[str, SubjectRow] = {}
    for reply in replies:
        if not reply.ok:
            continue
        for spec in reply.value.subjects:
            key = " ".join(spec.subject_name.lower().split())
            if key in rows or (cap and len(rows) >= cap):
                continue
            rows[key] = SubjectRow(
                subject_id=stable_id(LEVEL.id_prefix, discipline.discipline_id, key),
                discipline_id=discipline.discipline_id,
                discipline=discipline.discipline,
                query_index=reply.request.sample_index,
                subject_name=spec.subject_name.strip(),
                level=spec.level.strip(),
                subtopics=spec.subtopics,
            )
    return list(rows.values())


@level_asset(LEVEL)
def subjects(
    context: dg.AssetExecutionContext, llm: LLMResource, store: DuckDBStore, settings: GenerationSettings
) -> dg.MaterializeResult:
    (discipline,) = store.read(DisciplineRow, context.partition_key)
    prompt = SUBJECTS.messages(
        discipline=discipline.discipline, sub_field=discipline.sub_field_name, field=discipline.field_name
    )
    free = stages.run(
        llm, LIST, [Request(discipline.discipline_id, prompt, sample_index=q) for q in range(settings.subject_queries)]
    )
    formatted = stages.run(
        llm,
        FORMAT,
        [
            Request(discipline.discipline_id, SUBJECTS_FORMAT.messages(text=r.text), r.request.sample_index)
            for r in free.replies
            if r.ok
        ],
    )
    rows = subject_rows(discipline, formatted.replies, settings.max_subjects_per_discipline)
    return store_partition(context, store, LEVEL, rows, {LIST.name: free, FORMAT.name: formatted})
