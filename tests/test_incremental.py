"""Adding a discipline builds only it; unchanged partitions cost nothing to rebuild."""

import json

from glan_assets.glan.method import LEVELS
from glan_assets.glan.schemas import AnswerRow, QuestionRow
from resources.storage import DuckDBStore


def snapshot(store: DuckDBStore, discipline: str) -> str:
    """Every stored row of a discipline, serialized, for a byte-for-byte comparison."""
    return json.dumps(
        {lv.name: [r.model_dump() for r in store.read(lv.row_type, discipline)] for lv in LEVELS},
        sort_keys=True,
    )


def test_adding_a_discipline_calls_the_llm_only_for_it(project, fake_llm):
    assert all(s.success for s in project.build())
    store = DuckDBStore(path=str(project.db))
    before = {d: snapshot(store, d) for d in ("Physics", "Astronomy")}

    fake_llm.requests.clear()
    project.add_discipline("Optics")
    summaries = project.build()  # the whole taxonomy, as `glan build` does

    assert all(s.success for s in summaries)
    assert fake_llm.requests, "the new discipline must reach the endpoint"
    assert all("Optics" in p for p in fake_llm.prompts()), "only the new discipline's prompts"
    assert {d: snapshot(store, d) for d in ("Physics", "Astronomy")} == before
    assert [s.partition for s in summaries] == ["Optics"]  # the others are up to date: no run
    assert len(store.read(AnswerRow, "Optics")) == 4


def test_rebuilding_an_unchanged_partition_makes_no_calls(project, fake_llm):
    project.build("Physics")
    store = DuckDBStore(path=str(project.db))
    before = snapshot(store, "Physics")
    fake_llm.requests.clear()

    assert project.build("Physics") == []  # up to date: nothing to build, no run
    assert fake_llm.requests == []
    assert snapshot(store, "Physics") == before

    (summary,) = project.build("Physics", force=True)  # rebuilt anyway: every reply from the cache

    assert summary.success
    assert fake_llm.requests == []
    assert sum(level.cache_hits for level in summary.levels) > 0
    assert snapshot(store, "Physics") == before


def test_adding_questions_asks_only_for_the_new_ones(project, fake_llm, monkeypatch):
    project.build("Physics")
    fake_llm.requests.clear()
    monkeypatch.setenv("GLAN_QUESTIONS_PER_SYLLABUS", "3")

    # A count is a setting, not code or data: the build is asked for by name.
    (summary,) = project.build("Physics", force=True)

    assert summary.success
    asked = [p for p in fake_llm.prompts() if "homework question" in p]
    answered = [p for p in fake_llm.prompts() if "homework question" not in p]
    assert len(asked) == 2  # one new question per syllabus, nothing else regenerated
    assert 1 <= len(answered) <= 2  # answers only for new question texts
    store = DuckDBStore(path=str(project.db))
    assert len(store.read(QuestionRow, "Physics")) == 6
