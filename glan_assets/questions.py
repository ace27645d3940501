"""Level 6: homework questions, each with the whole syllabus as context.

Basic questions cover one session and 1-5 of its key concepts; harder ones two sessions
and 2-5 key concepts across them (see `sampling.plan_questions`).
"""

import dagster as dg

from glan_assets.ids import stable_id
from glan_assets.partitions import discipline_partitions
from glan_assets.prompts import QUESTION_BASIC, QUESTION_HARDER, code_version
from glan_assets.results import store_partition
from glan_assets.sampling import QuestionPlan, plan_questions
from glan_assets.schemas import QuestionRow, SessionRow, SyllabusRow
from glan_assets.sessions import sessions
from resources.llm import LLMResource, Request
from resources.settings import GenerationSettings
from resources.storage import DuckDBStore


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
    return stable_id("qst", syllabus.syllabus_id, plan.question_index)


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


@dg.asset(
    partitions_def=discipline_partitions,
    deps=[sessions],
    group_name="generation",
    code_version=code_version(QUESTION_BASIC, QUESTION_HARDER),
    kinds={"openai", "duckdb"},
    owners=["team:data"],
    description="Homework questions: basic (one session) and harder (two sessions), "
    "seeded per question, the syllabus as context.",
)
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
    batch = llm.generate("questions", [question_request(s, p) for s, p in planned])
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
            model=llm.model_for("questions"),
        )
        for (syllabus, plan), reply in zip(planned, batch.replies)
        if reply.ok
    ]
    return store_partition(context, store, QuestionRow, rows, {"questions": batch.replies}, batch.stats)
