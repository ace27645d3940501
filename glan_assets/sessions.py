"""Level 5: the class sessions of each syllabus and their key concepts, extracted as JSON."""

import dagster as dg

from glan_assets.ids import stable_id
from glan_assets.partitions import discipline_partitions
from glan_assets.prompts import SESSIONS, code_version
from glan_assets.results import store_partition
from glan_assets.schemas import SessionList, SessionRow, SyllabusRow
from glan_assets.syllabi import syllabi
from resources.llm import LLMResource, Reply, Request
from resources.storage import DuckDBStore


def session_rows(reply: Reply, discipline: str) -> list[SessionRow]:
    syllabus_id = reply.request.item_id
    return [
        SessionRow(
            session_id=stable_id("ses", syllabus_id, i),
            syllabus_id=syllabus_id,
            discipline=discipline,
            session_index=i,
            title=s.title.strip(),
            key_concepts=s.key_concepts,
        )
        for i, s in enumerate(reply.value.sessions, start=1)
    ]


@dg.asset(
    partitions_def=discipline_partitions,
    deps=[syllabi],
    group_name="generation",
    code_version=code_version(SESSIONS),
    kinds={"openai", "duckdb"},
    owners=["team:data"],
    description="Class sessions with their key concepts, extracted from each syllabus.",
)
def sessions(context: dg.AssetExecutionContext, llm: LLMResource, store: DuckDBStore) -> dg.MaterializeResult:
    batch = llm.generate_structured(
        "sessions",
        [
            Request(s.syllabus_id, SESSIONS.messages(syllabus=s.syllabus))
            for s in store.read(SyllabusRow, context.partition_key)
        ],
        SessionList,
    )
    rows = [row for r in batch.replies if r.ok for row in session_rows(r, context.partition_key)]
    return store_partition(context, store, SessionRow, rows, {"sessions": batch.replies}, batch.stats)
