"""Level 3: subjects per discipline. An education expert lists them in free text, then a
second call turns the text into JSON (format instructions in the first call hurt quality)."""

import dagster as dg

from glan_assets.disciplines import disciplines
from glan_assets.ids import stable_id
from glan_assets.partitions import discipline_partitions
from glan_assets.prompts import SUBJECTS, SUBJECTS_FORMAT, code_version
from glan_assets.results import store_partition
from glan_assets.schemas import DisciplineRow, SubjectList, SubjectRow
from resources.llm import LLMResource, Reply, Request
from resources.settings import GenerationSettings
from resources.storage import DuckDBStore


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
                subject_id=stable_id("sbj", discipline.discipline_id, key),
                discipline_id=discipline.discipline_id,
                discipline=discipline.discipline,
                query_index=reply.request.sample_index,
                subject_name=spec.subject_name.strip(),
                level=spec.level.strip(),
                subtopics=spec.subtopics,
            )
    return list(rows.values())


@dg.asset(
    partitions_def=discipline_partitions,
    deps=[disciplines],
    group_name="generation",
    code_version=code_version(SUBJECTS, SUBJECTS_FORMAT),
    kinds={"openai", "duckdb"},
    owners=["team:data"],
    description="Subjects of the discipline with `subject_name`, `level` and `subtopics` "
    "(`subject_queries` sampled queries, then one JSON-formatting call each).",
)
def subjects(
    context: dg.AssetExecutionContext, llm: LLMResource, store: DuckDBStore, settings: GenerationSettings
) -> dg.MaterializeResult:
    (discipline,) = store.read(DisciplineRow, context.partition_key)
    prompt = SUBJECTS.messages(
        discipline=discipline.discipline, sub_field=discipline.sub_field_name, field=discipline.field_name
    )
    free = llm.generate(
        "subjects",
        [Request(discipline.discipline_id, prompt, sample_index=q) for q in range(settings.subject_queries)],
    )
    formatted = llm.generate_structured(
        "subjects_format",
        [
            Request(discipline.discipline_id, SUBJECTS_FORMAT.messages(text=r.text), r.request.sample_index)
            for r in free.replies
            if r.ok
        ],
        SubjectList,
    )
    rows = subject_rows(discipline, formatted.replies, settings.max_subjects_per_discipline)
    rejected = {"subjects": free.replies, "subjects_format": formatted.replies}
    return store_partition(context, store, SubjectRow, rows, rejected, free.stats + formatted.stats)
