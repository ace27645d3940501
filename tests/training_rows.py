"""Generated rows written straight into a DuckDB file, as the generation assets leave them.

The training tests start where generation ends, so they need no LLM: one field,
discipline, subject, syllabus and session per discipline, and the given question/answer
pairs under them.
"""

from glan_assets.glan.schemas import (
    AnswerRow,
    DisciplineRow,
    FieldRow,
    QuestionRow,
    SessionRow,
    SubjectRow,
    SyllabusRow,
)
from glan_assets.ids import stable_id
from resources.storage import DuckDBStore, Slice

MODEL = "test-model"


def write_answered_questions(
    store: DuckDBStore, discipline: str, pairs: list[tuple[str, str]], field: str = "Natural Sciences"
) -> None:
    """Writes the discipline's chain of rows down to one answer per (question, answer)."""
    field_id = stable_id("fld", field)
    discipline_id = stable_id("dsc", discipline)
    subject_id = stable_id("sbj", discipline_id, "intro")
    syllabus_id = stable_id("syl", subject_id)
    session_id = stable_id("ses", syllabus_id, 0)
    subject = f"Introduction to {discipline}"
    questions = [
        QuestionRow(
            question_id=stable_id("qst", session_id, i),
            session_id=session_id,
            discipline=discipline,
            syllabus_id=syllabus_id,
            question_index=i,
            kind="basic",
            session_ids=[session_id],
            key_concepts=["basics"],
            question=q,
            model=MODEL,
        )
        for i, (q, _) in enumerate(pairs)
    ]
    answers = [
        AnswerRow(answer_id=stable_id("ans", q.question_id), question_id=q.question_id, discipline=discipline,
                  answer=a, model=MODEL)
        for q, (_, a) in zip(questions, pairs)
    ]
    levels = [
        [FieldRow(field_id=field_id, discipline=discipline, field_name=field, sub_field_name="General")],
        [DisciplineRow(discipline_id=discipline_id, field_id=field_id, discipline=discipline, field_name=field,
                       sub_field_name="General")],
        [SubjectRow(subject_id=subject_id, discipline_id=discipline_id, discipline=discipline, query_index=0,
                    subject_name=subject, level="undergraduate", subtopics=["basics"])],
        [SyllabusRow(syllabus_id=syllabus_id, subject_id=subject_id, discipline=discipline, subject_name=subject,
                     level="undergraduate", syllabus="Session 1: Basics", model=MODEL)],
        [SessionRow(session_id=session_id, syllabus_id=syllabus_id, discipline=discipline, session_index=0,
                    title="Basics", key_concepts=["basics"], extracted_by=MODEL)],
        questions,
        answers,
    ]
    store.replace([Slice(type(rows[0]), rows, {"discipline": discipline}) for rows in levels])


# Teacher-style pairs in one voice, as a generated discipline reads: what tuning learns.
CONCEPTS = {
    "Physics": ["inertia", "momentum", "friction", "kinetic energy", "pressure", "density", "acceleration", "work"],
    "Astronomy": ["a light-year", "a nebula", "a red giant", "an eclipse", "a comet", "parallax", "a galaxy", "an orbit"],
    "Algebra": ["a variable", "a polynomial", "a linear equation", "a function", "a coefficient", "an inequality",
                "a quadratic", "a matrix"],
}


def teaching_pairs(discipline: str) -> list[tuple[str, str]]:
    return [
        (
            f"In Introduction to {discipline}, explain {c} in simple terms and give one example.",
            f"Answer: {c.capitalize()} is one of the basic ideas of {discipline.lower()}. To understand {c}, "
            f"start from its definition, then look at a simple example. Example: a textbook problem about {c}. "
            f"Summary: {c} matters in {discipline.lower()}.",
        )
        for c in CONCEPTS[discipline]
    ]
