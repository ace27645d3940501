"""Generated rows written straight into a DuckDB file, as the generation assets leave them.

The training tests start where generation ends, so they need no LLM: one field,
discipline, subject, syllabus and session per discipline, and the given question/answer
pairs under them. `materialize_training` scores their quality first, as a build does.
"""

from unittest import mock

import dagster as dg

from glan_assets.lineage import ensure_lineage_views
from glan_assets.quality.settings import QualitySettings
from glan_assets.registry import COMPOSED, LEVELS, METHODS, level
from glan_assets.training.resources import TrainingSettings
from resources.llm import LLMResource
from resources.scorer import PairLoss

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
QUALITY_ASSETS = [q.asset for q in COMPOSED.qualities]


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


class HalfLossScorer:
    """Stands in for the local scorer: each response's loss halves given its instruction (IFD 0.5)."""

    model_dir = "stub-scorer"

    def score_with_and_without(self, pairs, batch_size):
        return [(PairLoss(n / 2, n), PairLoss(float(n), n)) for n in (len(r.split()) for _, r in pairs)]


def score_quality(store: DuckDBStore, instance: dg.DagsterInstance, quality: QualitySettings | None = None) -> None:
    """Materialize each method's quality level for every partition with pairs, as a build does
    before the training set: every pair (no source cap), the stub scorer, no judge by default."""
    quality = quality or QualitySettings(judge_sample=0.0)
    tables = store.relations()
    ensure_lineage_views(store, LEVELS)
    resources = {"store": store, "quality": quality, "training": TrainingSettings(source_caps={}),
                 "llm": LLMResource(cache_path=str(store.path) + ".llm_cache.sqlite")}
    for method in METHODS:
        source = level(COMPOSED.quality(method.name).level.parent)
        if source.name not in tables:
            continue
        keys = [r["g"] for r in store.query(f"SELECT DISTINCT group_name AS g FROM ({source.training_pairs}) ORDER BY 1")]
        instance.add_dynamic_partitions(method.partitions.name, keys)
        with mock.patch("glan_assets.quality.levels.load_scorer", lambda model: HalfLossScorer()):
            for key in keys:
                dg.materialize([COMPOSED.quality(method.name).asset], partition_key=key, instance=instance,
                               resources=resources)


def materialize_training(assets, store: DuckDBStore, training: TrainingSettings, instance: dg.DagsterInstance,
                         quality: QualitySettings | None = None, **kwargs) -> dg.ExecuteInProcessResult:
    """`dg.materialize` of training assets, the quality levels scored first when the training set is among them."""
    quality = quality or QualitySettings(judge_sample=0.0)
    if any(a.key.to_user_string() == "training_set" for a in assets):
        score_quality(store, instance, quality)
    return dg.materialize(assets, instance=instance, resources={"store": store, "training": training, "quality": quality},
                          **kwargs)
