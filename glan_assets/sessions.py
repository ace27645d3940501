"""Level 5: the class sessions of each syllabus and their key concepts.

A syllabus written as an outline ("Session 2: Forces / Key concepts: ...") is read
directly; only the others are sent to the LLM to extract as JSON. On the embedded model
this measured both faithful and cheaper: its JSON extraction invented sessions the
outline did not have (benchmarks/bench_sessions.py).
"""

import dagster as dg

from glan_assets.ids import stable_id
from glan_assets.partitions import discipline_partitions
from glan_assets.prompts import SESSIONS, code_version
from glan_assets.results import store_partition
from glan_assets.schemas import ClassSession, SessionList, SessionRow, SyllabusRow
from glan_assets.syllabi import syllabi
from resources.llm import LLMResource, Request
from resources.settings import GenerationSettings
from resources.storage import DuckDBStore

OUTLINE = "outline"  # `extracted_by` of sessions read from the syllabus text itself


def session_rows(
    syllabus_id: str, discipline: str, sessions: list[ClassSession], extracted_by: str
) -> list[SessionRow]:
    return [
        SessionRow(
            session_id=stable_id("ses", syllabus_id, i),
            syllabus_id=syllabus_id,
            discipline=discipline,
            session_index=i,
            title=s.title.strip(),
            key_concepts=s.key_concepts,
            extracted_by=extracted_by,
        )
        for i, s in enumerate(sessions, start=1)
    ]


def read_outline(syllabus: str) -> list[ClassSession]:
    """The sessions a syllabus outline lists with key concepts; empty when it lists none."""
    found = SessionList.from_plain_text(syllabus)
    return SessionList.model_validate(found).sessions if found else []


@dg.asset(
    partitions_def=discipline_partitions,
    deps=[syllabi],
    group_name="generation",
    code_version=code_version(SESSIONS, parser="2"),
    kinds={"openai", "duckdb"},
    owners=["team:data"],
    description="Class sessions with their key concepts (at most `sessions_max` per syllabus): "
    "read from each syllabus outline, or extracted by the LLM where the syllabus has none.",
)
def sessions(
    context: dg.AssetExecutionContext, llm: LLMResource, store: DuckDBStore, settings: GenerationSettings
) -> dg.MaterializeResult:
    discipline = context.partition_key
    # A small model asked for 2-3 sessions may loop on to its token limit; the sessions past
    # the number asked for are that loop, so only the first `sessions_max` are kept.
    keep = settings.sessions_max
    rows: list[SessionRow] = []
    requests: list[Request] = []
    for s in store.read(SyllabusRow, discipline):
        if outlined := read_outline(s.syllabus):
            rows += session_rows(s.syllabus_id, discipline, outlined[:keep], OUTLINE)
        else:
            requests.append(Request(s.syllabus_id, SESSIONS.messages(syllabus=s.syllabus)))
    batch = llm.generate_structured("sessions", requests, SessionList)
    for r in batch.replies:
        if r.ok:
            rows += session_rows(r.request.item_id, discipline, r.value.sessions[:keep], llm.model_for("sessions"))
    context.log.info(f"{len(rows)} sessions; {len(requests)} syllabi needed the LLM to extract them")
    return store_partition(context, store, SessionRow, rows, {"sessions": batch.replies}, batch.stats)
