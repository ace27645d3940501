"""Level 4: one syllabus per subject, written as free text by a teacher of the subject."""

import dagster as dg

from glan_assets.ids import stable_id
from glan_assets.partitions import discipline_partitions
from glan_assets.prompts import SYLLABUS, code_version
from glan_assets.results import store_partition
from glan_assets.schemas import SubjectRow, SyllabusRow
from glan_assets.subjects import subjects
from resources.llm import LLMResource, Request
from resources.settings import GenerationSettings
from resources.storage import DuckDBStore


def syllabus_request(subject: SubjectRow, settings: GenerationSettings) -> Request:
    return Request(
        subject.subject_id,
        SYLLABUS.messages(
            subject_name=subject.subject_name,
            discipline=subject.discipline,
            level=subject.level,
            subtopics=", ".join(subject.subtopics),
            sessions_min=settings.sessions_min,
            sessions_max=settings.sessions_max,
            concepts=settings.key_concepts_per_session,
        ),
    )


@dg.asset(
    partitions_def=discipline_partitions,
    deps=[subjects],
    group_name="generation",
    code_version=code_version(SYLLABUS),
    kinds={"openai", "duckdb"},
    owners=["team:data"],
    description="A syllabus per subject: class sessions with their key concepts, as free text.",
)
def syllabi(
    context: dg.AssetExecutionContext, llm: LLMResource, store: DuckDBStore, settings: GenerationSettings
) -> dg.MaterializeResult:
    by_id = {s.subject_id: s for s in store.read(SubjectRow, context.partition_key)}
    batch = llm.generate("syllabus", [syllabus_request(s, settings) for s in by_id.values()])
    rows = [
        SyllabusRow(
            syllabus_id=stable_id("syl", r.request.item_id),
            subject_id=r.request.item_id,
            discipline=context.partition_key,
            subject_name=by_id[r.request.item_id].subject_name,
            level=by_id[r.request.item_id].level,
            syllabus=r.text,
            model=llm.model_for("syllabus"),
        )
        for r in batch.replies
        if r.ok
    ]
    return store_partition(context, store, SyllabusRow, rows, {"syllabus": batch.replies}, batch.stats)
