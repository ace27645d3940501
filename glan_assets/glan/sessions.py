"""Level 5: the class sessions of each syllabus and their key concepts.

A syllabus written as an outline ("Session 2: Forces / Key concepts: ...") is read
directly; only the others are sent to the LLM to extract as JSON. On the embedded model
this measured both faithful and cheaper: its JSON extraction invented sessions the
outline did not have (benchmarks/bench_sessions.py).
"""

import dagster as dg

from glan_assets import stages
from glan_assets.glan.partitions import discipline_partitions
from glan_assets.glan.prompts import SESSIONS
from glan_assets.glan.resources import GenerationSettings
from glan_assets.glan.schemas import ClassSession, SessionList, SessionRow, SyllabusRow
from glan_assets.ids import stable_id
from glan_assets.levels import Level, level_asset
from glan_assets.results import store_partition
from glan_assets.stages import Request, Stage
from resources.llm import LLMResource, Sampling
from resources.storage import DuckDBStore

OUTLINE = "outline"  # `extracted_by` of sessions read from the syllabus text itself

# Version 2: the schema sent asks for non-blank key concepts.
EXTRACT = Stage("sessions", (SESSIONS,), Sampling(temperature=0.0, top_p=1.0, max_tokens=1536), SessionList, "2")

LEVEL = Level(
    "sessions",
    SessionRow,
    id_prefix="ses",
    method="glan",
    group="generation",
    description="Class sessions with their key concepts (at most `sessions_max` per syllabus): "
    "read from each syllabus outline, or extracted by the LLM where the syllabus has none.",
    parent="syllabi",
    stages=(EXTRACT,),
    logic_version="2",  # outlines are read without a call
    label="session",
    lineage_columns={"session_index": "session_index", "title": "session_title"},
    partitions_def=discipline_partitions,
)


def session_rows(
    syllabus_id: str, discipline: str, sessions: list[ClassSession], extracted_by: str
) -> list[SessionRow]:
    return [
        SessionRow(
            session_id=stable_id(LEVEL.id_prefix, syllabus_id, i),
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


@level_asset(LEVEL)
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
    batch = stages.run(llm, EXTRACT, requests)
    model = stages.model_of(llm, EXTRACT)
    for r in batch.replies:
        if r.ok:
            rows += session_rows(r.request.item_id, discipline, r.value.sessions[:keep], model)
    context.log.info(f"{len(rows)} sessions; {len(requests)} syllabi needed the LLM to extract them")
    return store_partition(context, store, LEVEL, rows, {EXTRACT.name: batch})
