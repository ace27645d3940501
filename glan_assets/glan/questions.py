"""Level 6: homework questions, each with the whole syllabus as context.

Basic questions cover one session and 1-5 of its key concepts; harder ones two sessions
and 2-5 key concepts across them (see `sampling.plan_questions`).
"""

import dagster as dg

from glan_assets import stages
from glan_assets.glan.partitions import discipline_partitions
from glan_assets.glan.prompts import QUESTION_BASIC, QUESTION_HARDER
from glan_assets.glan.resources import GenerationSettings
from glan_assets.glan.sampling import QuestionPlan, plan_questions
from glan_assets.glan.schemas import QuestionRow, SessionRow, SyllabusRow
from glan_assets.ids import stable_id
from glan_assets.levels import Level, level_asset
from glan_assets.results import store_partition
from glan_assets.stages import Request, Stage
from resources.llm import LLMResource, Sampling
from resources.storage import DuckDBStore

ASK = Stage("questions", (QUESTION_BASIC, QUESTION_HARDER), Sampling(temperature=1.0, top_p=0.95, max_tokens=512))

LEVEL = Level(
    "questions",
    QuestionRow,
    id_prefix="qst",
    method="glan",
    group="generation",
    description="Homework questions: basic (one session) and harder (two sessions), "
    "seeded per question, the syllabus as context.",
    parent="sessions",
    stages=(ASK,),
    dedup_column="question",
    label="question",
    lineage_columns={"kind": "question_kind", "key_concepts": "key_concepts", "question": "question",
                     "model": "question_model"},
    partitions_def=discipline_partitions,
)


def question_request(syllabus: SyllabusRow, plan: QuestionPlan) -> Request:
    """Keyed on the question's own id so a reject names the question it was meant to be."""
    last = plan.sessions[-1]
    values = dict(
        subject_name=syllabus.subject_name,
        syllabus=syllabus.syllabus,
        session_number=last.session_index,
        session_title=last.title,
        concepts="; ".join(plan.key_concepts),
    )
    if plan.kind == "harder":
        first = plan.sessions[0]
        messages = QUESTION_HARDER.messages(first_number=first.session_index, first_title=first.title, **values)
    else:
        messages = QUESTION_BASIC.messages(**values)
    return Request(question_id(syllabus, plan), messages, sample_index=plan.question_index)


def question_id(syllabus: SyllabusRow, plan: QuestionPlan) -> str:
    return stable_id(LEVEL.id_prefix, syllabus.syllabus_id, plan.question_index)


def plans_for(syllabus: SyllabusRow, sessions_: list[SessionRow], settings: GenerationSettings) -> list[QuestionPlan]:
    return plan_questions(
        syllabus.syllabus_id,
        sessions_,
        count=settings.questions_per_syllabus,
        harder_fraction=settings.harder_question_fraction,
        seed=settings.seed,
        basic_concepts=(1, settings.basic_concepts_max),
        harder_concepts=(settings.harder_concepts_min, settings.harder_concepts_max),
    )


@level_asset(LEVEL)
def questions(
    context: dg.AssetExecutionContext, llm: LLMResource, store: DuckDBStore, settings: GenerationSettings
) -> dg.MaterializeResult:
    key = context.partition_key
    by_syllabus: dict[str, list[SessionRow]] = {}
    for s in store.read(SessionRow, key):
        by_syllabus.setdefault(s.syllabus_id, []).append(s)
    planned = [
        (syllabus, plan)
        for syllabus in store.read(SyllabusRow, key)
        for plan in plans_for(syllabus, by_syllabus.get(syllabus.syllabus_id, []), settings)
    ]
    batch = stages.run(llm, ASK, [question_request(s, p) for s, p in planned])
    model = stages.model_of(llm, ASK)
    rows = [
        QuestionRow(
            question_id=reply.request.item_id,
            session_id=plan.sessions[-1].session_id,
            discipline=key,
            syllabus_id=syllabus.syllabus_id,
            question_index=plan.question_index,
            kind=plan.kind,
            session_ids=[s.session_id for s in plan.sessions],
            key_concepts=list(plan.key_concepts),
            question=reply.text,
            model=model,
        )
        for (syllabus, plan), reply in zip(planned, batch.replies)
        if reply.ok
    ]
    return store_partition(context, store, LEVEL, rows, {ASK.name: batch})
