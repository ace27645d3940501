"""Question sampling: basic covers one session, harder two, seeded per question."""

from glan_assets.ids import stable_id
from glan_assets.glan.sampling import plan_questions
from glan_assets.glan.schemas import SessionRow


def sessions(n: int) -> list[SessionRow]:
    return [
        SessionRow(
            session_id=stable_id("ses", "syl", i), syllabus_id="syl_x", discipline="D", session_index=i,
            title=f"S{i}", key_concepts=[f"c{i}.{k}" for k in range(6)], extracted_by="outline",
        )
        for i in range(1, n + 1)
    ]


def test_basic_and_harder_questions_follow_the_paper():
    plans = plan_questions("syl_x", sessions(8), count=200, harder_fraction=0.5, seed=1)
    basic = [p for p in plans if p.kind == "basic"]
    harder = [p for p in plans if p.kind == "harder"]
    assert 60 < len(basic) < 140 and len(harder) == 200 - len(basic)
    for p in basic:
        (s,) = p.sessions
        assert 1 <= len(p.key_concepts) <= 5 and set(p.key_concepts) <= set(s.key_concepts)
    for p in harder:
        first, last = p.sessions
        assert first.session_index < last.session_index
        assert 2 <= len(p.key_concepts) <= 5
        assert set(p.key_concepts) & set(first.key_concepts) and set(p.key_concepts) & set(last.key_concepts)


def test_sampling_is_seeded_per_question():
    a = plan_questions("syl_x", sessions(5), count=10, harder_fraction=0.5, seed=7)
    more = plan_questions("syl_x", sessions(5), count=20, harder_fraction=0.5, seed=7)
    other_seed = plan_questions("syl_x", sessions(5), count=10, harder_fraction=0.5, seed=8)
    assert more[:10] == a
    assert other_seed != a


def test_one_session_gives_only_basic_questions():
    plans = plan_questions("syl_x", sessions(1), count=10, harder_fraction=1.0, seed=0)
    assert {p.kind for p in plans} == {"basic"}


def test_questions_of_a_syllabus_do_not_repeat_a_plan():
    plans = plan_questions("syl_x", sessions(4), count=30, harder_fraction=0.5, seed=3)
    keys = [(tuple(s.session_id for s in p.sessions), frozenset(p.key_concepts)) for p in plans]
    assert len(set(keys)) == len(keys)
