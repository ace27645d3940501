"""Level 7: an answer to each question, from a separate call with its own model and sampling."""

import dagster as dg

from glan_assets import stages
from glan_assets.glan.partitions import discipline_partitions
from glan_assets.glan.preview import preview_pairs
from glan_assets.glan.prompts import ANSWER
from glan_assets.glan.schemas import AnswerRow, QuestionRow
from glan_assets.ids import stable_id
from glan_assets.levels import Level, level_asset
from glan_assets.results import store_partition
from glan_assets.stages import Request, Stage
from resources.llm import LLMResource, Sampling
from resources.storage import DuckDBStore

RESPOND = Stage("answers", (ANSWER,), Sampling(temperature=0.7, top_p=0.95, max_tokens=1024))

LEVEL = Level(
    "answers",
    AnswerRow,
    id_prefix="ans",
    method="glan",
    group="generation",
    description="Answers: one call per question, with the answers stage's own model and "
    "sampling (the paper: a cheaper model, temperature 0.7, top-p 0.95).",
    parent="questions",
    stages=(RESPOND,),
    dedup_column="answer",
    label="answer",
    lineage_columns={"answer": "answer", "model": "answer_model"},
    lineage_view="lineage",
    partitions_def=discipline_partitions,
    training_pairs="SELECT answer_id AS source_id, discipline AS group_name, subject_id AS task_id, field_name, "
    "subject_name, question AS instruction, answer AS response FROM lineage",
)


@level_asset(LEVEL)
def answers(context: dg.AssetExecutionContext, llm: LLMResource, store: DuckDBStore) -> dg.MaterializeResult:
    batch = stages.run(
        llm,
        RESPOND,
        [
            Request(q.question_id, ANSWER.messages(question=q.question))
            for q in store.read(QuestionRow, context.partition_key)
        ],
    )
    model = stages.model_of(llm, RESPOND)
    rows = [
        AnswerRow(
            answer_id=stable_id(LEVEL.id_prefix, r.request.item_id),
            question_id=r.request.item_id,
            discipline=context.partition_key,
            answer=r.text,
            model=model,
        )
        for r in batch.replies
        if r.ok
    ]
    return store_partition(
        context, store, LEVEL, rows, {RESPOND.name: batch}, preview=lambda: preview_pairs(store, context.partition_key, LEVEL)
    )
