"""The preview the answers level records for a discipline: rows per GLAN level, then sample
question/answer pairs from GLAN's lineage view, each with its subject and session."""

from glan_assets.glan import disciplines, fields, questions, sessions, subjects, syllabi
from glan_assets.levels import Level
from glan_assets.lineage import ensure_lineage_views
from glan_assets.quality.stored import level_name
from glan_assets.results import markdown_table
from resources.storage import DuckDBStore

# The levels above answers, root first (answers, the leaf, is handed in: it imports this module).
UPSTREAM = [m.LEVEL for m in (fields, disciplines, subjects, syllabi, sessions, questions)]


def preview_pairs(store: DuckDBStore, discipline: str, answers: Level, limit: int = 5) -> str:
    """Markdown: rows per GLAN level (and its quality level), then sample pairs; the ids lead
    to `glan lineage ANSWER_ID`."""
    levels = [*UPSTREAM, answers]
    ensure_lineage_views(store, levels)
    tables = store.relations()
    counted = [lv.name for lv in levels if lv.name in tables] + [t for t in (level_name("glan"),) if t in tables]
    counts = store.query(
        " UNION ALL ".join(
            f"SELECT '{name}' AS level, count(*) AS rows FROM {name} WHERE discipline = $d" for name in counted
        ),
        {"d": discipline},
    )
    records = (
        store.query(
            f"SELECT {answers.row_type.id_column}, subject_name, session_title, question_kind, question, answer "
            f"FROM {answers.lineage_view} WHERE discipline = ? ORDER BY {answers.row_type.id_column} LIMIT ?",
            [discipline, limit],
        )
        if answers.lineage_view in tables
        else []
    )
    return (
        f"**Rows per level**\n\n{markdown_table(counts, limit=len(counts))}\n\n"
        f"**Sample pairs** (trace one with `glan lineage ANSWER_ID`)\n\n{markdown_table(records, limit=limit)}"
    )
