"""Level 4: one syllabus per subject, written as free text by a teacher of the subject."""

import dagster as dg

from glan_assets import stages
from glan_assets.glan.partitions import discipline_partitions
from glan_assets.glan.prompts import SYLLABUS
from glan_assets.glan.resources import GenerationSettings
from glan_assets.glan.schemas import SubjectRow, SyllabusRow
from glan_assets.ids import stable_id
from glan_assets.levels import Level, level_asset
from glan_assets.results import store_partition
from glan_assets.stages import Request, Stage
from resources.llm import LLMResource, Sampling
from resources.storage import DuckDBStore

WRITE = Stage("syllabus", (SYLLABUS,), Sampling(temperature=1.0, top_p=0.95, max_tokens=1536), None, "2", keeps_cut_lines=True)

LEVEL = Level(
    "syllabi",
    SyllabusRow,
    id_prefix="syl",
    method="glan",
    group="generation",
    description="A syllabus per subject: class sessions with their key concepts, as free text.",
    parent="subjects",
    stages=(WRITE,),
    label="syllabus",
    partitions_def=discipline_partitions,
)


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


@level_asset(LEVEL)
def syllabi(
    context: dg.AssetExecutionContext, llm: LLMResource, store: DuckDBStore, settings: GenerationSettings
) -> dg.MaterializeResult:
    by_id = {s.subject_id: s for s in store.read(SubjectRow, context.partition_key)}
    batch = stages.run(llm, WRITE, [syllabus_request(s, settings) for s in by_id.values()])
    model = stages.model_of(llm, WRITE)
    rows = [
        SyllabusRow(
            syllabus_id=stable_id(LEVEL.id_prefix, r.request.item_id),
            subject_id=r.request.item_id,
            discipline=context.partition_key,
            subject_name=by_id[r.request.item_id].subject_name,
            level=by_id[r.request.item_id].level,
            syllabus=r.text,
            model=model,
        )
        for r in batch.replies
        if r.ok
    ]
    return store_partition(context, store, LEVEL, rows, {WRITE.name: batch})
