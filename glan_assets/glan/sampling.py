"""Which sessions and key concepts each homework question covers (GLAN, section 2.4).

Basic questions take one session and 1-5 of its key concepts; harder ones take two
sessions and 2-5 key concepts across both. Each question has its own seeded generator,
so a rebuild asks the same prompts and adding questions leaves the earlier ones alone.
"""

import random
from dataclasses import dataclass

from glan_assets.ids import content_hash
from glan_assets.glan.schemas import QuestionKind, SessionRow


@dataclass(frozen=True)
class QuestionPlan:
    question_index: int
    kind: QuestionKind
    sessions: tuple[SessionRow, ...]  # in syllabus order; the last is how far the student got
    key_concepts: tuple[str, ...]


def item_rng(seed: int, *parts: object) -> random.Random:
    return random.Random(content_hash([seed, *parts]))


def plan_questions(
    syllabus_id: str,
    sessions: list[SessionRow],
    count: int,
    harder_fraction: float,
    seed: int,
    basic_concepts: tuple[int, int] = (1, 5),
    harder_concepts: tuple[int, int] = (2, 5),
) -> list[QuestionPlan]:
    sessions = sorted(sessions, key=lambda s: s.session_index)
    if not sessions:
        return []
    plans: list[QuestionPlan] = []
    seen: set[tuple] = set()
    for index in range(count):
        rng = item_rng(seed, syllabus_id, index)
        # Redraw a plan that repeats an earlier one's sessions and concepts (a few tries: a
        # short syllabus may have fewer distinct plans than questions asked for).
        for _ in range(10):
            plan = _draw(rng, index, sessions, harder_fraction, basic_concepts, harder_concepts)
            key = (tuple(s.session_id for s in plan.sessions), frozenset(plan.key_concepts))
            if key not in seen:
                break
        seen.add(key)
        plans.append(plan)
    return plans


def _draw(
    rng: random.Random,
    index: int,
    sessions: list[SessionRow],
    harder_fraction: float,
    basic_concepts: tuple[int, int],
    harder_concepts: tuple[int, int],
) -> QuestionPlan:
    if len(sessions) >= 2 and rng.random() < harder_fraction:
        first, last = sorted(rng.sample(range(len(sessions)), 2))
        picked = (sessions[first], sessions[last])
        # At least one concept from each session, so the question really spans both.
        concepts = [rng.choice(picked[0].key_concepts), rng.choice(picked[1].key_concepts)]
        rest = [c for s in picked for c in s.key_concepts if c not in concepts]
        low, high = harder_concepts
        extra = rng.randint(max(low, 2), max(min(high, len(rest) + 2), 2)) - 2
        concepts += rng.sample(rest, min(extra, len(rest)))
        return QuestionPlan(index, "harder", picked, tuple(concepts))
    session = rng.choice(sessions)
    low, high = basic_concepts
    k = rng.randint(min(low, len(session.key_concepts)), min(high, len(session.key_concepts)))
    return QuestionPlan(index, "basic", (session,), tuple(rng.sample(session.key_concepts, k)))
