"""Lineage of a record: every row names its parent, so the chain is a walk or a join."""

from glan_assets.ids import table_of
from glan_assets.results import markdown_table
from glan_assets.schemas import (
    AnswerRow,
    DisciplineRow,
    FieldRow,
    QuestionRow,
    SessionRow,
    SubjectRow,
    SyllabusRow,
    TableRow,
)
from glan_assets.training_schemas import RemovedPairRow, TrainingPairRow
from resources.storage import DuckDBStore

ROW_TYPES: dict[str, type[TableRow]] = {
    t.table: t for t in (FieldRow, DisciplineRow, SubjectRow, SyllabusRow, SessionRow, QuestionRow, AnswerRow)
}

# The row types an id's table (from its prefix) may hold it in: a pair that curation left
# out is in training_removed, with the same parent as a kept one.
LOOKUP: dict[str, tuple[type[TableRow], ...]] = {t: (rt,) for t, rt in ROW_TYPES.items()} | {
    TrainingPairRow.table: (TrainingPairRow, RemovedPairRow)
}

# One row per answer with every ancestor's id and the text a reviewer wants beside it.
LINEAGE_VIEW = """
CREATE OR REPLACE VIEW lineage AS
SELECT a.answer_id, q.question_id, q.session_id, s.syllabus_id, y.subject_id, b.discipline_id, d.field_id,
       f.field_name, d.sub_field_name, d.discipline, b.subject_name, b.level,
       s.session_index, s.title AS session_title, q.kind AS question_kind, q.key_concepts,
       q.question, a.answer, q.model AS question_model, a.model AS answer_model
FROM answers a
JOIN questions q ON q.question_id = a.question_id
JOIN sessions s ON s.session_id = q.session_id
JOIN syllabi y ON y.syllabus_id = s.syllabus_id
JOIN subjects b ON b.subject_id = y.subject_id
JOIN disciplines d ON d.discipline_id = b.discipline_id
JOIN fields f ON f.field_id = d.field_id AND f.discipline = d.discipline
"""


def ensure_lineage_view(store: DuckDBStore) -> None:
    with store.connect() as con:
        con.execute(LINEAGE_VIEW)


def chain(store: DuckDBStore, item_id: str) -> list[TableRow]:
    """The item and its ancestors, up to its field. Raises KeyError for an unknown id."""
    found: list[TableRow] = []
    current: str | None = item_id
    while current:
        row = _row(store, current)
        found.append(row)
        current = getattr(row, row.parent_column) if row.parent_column else None
    return found


def _row(store: DuckDBStore, item_id: str) -> TableRow:
    table = table_of(item_id)
    for row_type in LOOKUP[table]:
        rows = store.read(row_type, where=f"{row_type.id_column} = ?", params=[item_id])
        if rows:
            return rows[0]
    raise KeyError(f"no {table} row with id {item_id}")


def preview_pairs(store: DuckDBStore, discipline: str, limit: int = 5) -> str:
    """Markdown: rows per level, then sample question/answer pairs with their subject and
    session; the ids lead to `glan lineage ID`."""
    ensure_lineage_view(store)
    counts = store.query(
        " UNION ALL ".join(
            f"SELECT '{t}' AS level, count(*) AS rows FROM {t} WHERE discipline = $d" for t in ROW_TYPES
        ),
        {"d": discipline},
    )
    records = store.query(
        "SELECT answer_id, subject_name, session_title, question_kind, question, answer "
        "FROM lineage WHERE discipline = ? ORDER BY answer_id LIMIT ?",
        [discipline, limit],
    )
    return (
        f"**Rows per level**\n\n{markdown_table(counts, limit=len(counts))}\n\n"
        f"**Sample pairs** (trace one with `glan lineage ANSWER_ID`)\n\n{markdown_table(records, limit=limit)}"
    )
