"""Building disciplines end to end against the fake endpoint."""

from glan_assets.lineage import chain
from glan_assets.schemas import AnswerRow, QuestionRow, SubjectRow
from resources.storage import DuckDBStore


def test_build_fills_every_level_with_linked_rows(project):
    summaries = project.build()
    assert [s.success for s in summaries] == [True, True], [s.error for s in summaries]

    store = DuckDBStore(path=str(project.db))
    answers = store.read(AnswerRow)
    # 2 subjects (demo cap) x 2 questions per syllabus x 2 disciplines
    assert len(answers) == 8
    assert {a.discipline for a in answers} == {"Physics", "Astronomy"}
    kinds = {q.kind for q in store.read(QuestionRow)}
    assert kinds <= {"basic", "harder"}
    tables = [type(r).table for r in chain(store, answers[0].answer_id)]
    assert tables == ["answers", "questions", "sessions", "syllabi", "subjects", "disciplines", "fields"]
    assert len(store.read(SubjectRow, "Physics")) == 2
