"""Level 7: an answer to each question, from a separate call with its own model and sampling."""

import dagster as dg

from glan_assets.ids import stable_id
from glan_assets.lineage import preview_pairs
from glan_assets.partitions import discipline_partitions
from glan_assets.prompts import ANSWER, code_version
from glan_assets.questions import questions
from glan_assets.results import store_partition
from glan_assets.schemas import AnswerRow, QuestionRow
from resources.llm import LLMResource, Request
from resources.storage import DuckDBStore


@dg.asset(
    partitions_def=discipline_partitions,
    deps=[questions],
    group_name="generation",
    code_version=code_version(ANSWER),
    kinds={"openai", "duckdb"},
    owners=["team:data"],
    description="Answers: one call per question, with the answers stage's own model and "
    "sampling (the paper: a cheaper model, temperature 0.7, top-p 0.95).",
)
def answers(context: dg.AssetExecutionContext, llm: LLMResource, store: DuckDBStore) -> dg.MaterializeResult:
    batch = llm.generate(
        "answers",
        [
            Request(q.question_id, ANSWER.messages(question=q.question))
            for q in store.read(QuestionRow, context.partition_key)
        ],
    )
    rows = [
        AnswerRow(
            answer_id=stable_id("ans", r.request.item_id),
            question_id=r.request.item_id,
            discipline=context.partition_key,
            answer=r.text,
            model=llm.model_for("answers"),
        )
        for r in batch.replies
        if r.ok
    ]
    return store_partition(
        context,
        store,
        AnswerRow,
        rows,
        {"answers": batch.replies},
        batch.stats,
        preview=lambda: preview_pairs(store, context.partition_key),
    )
