"""GLAN's fan-out for the plan's estimate (`glan_assets.estimate`): one discipline's calls per
stage from the profile's counts, and the rows stored of the levels not rebuilt."""

import math
from collections.abc import Mapping, Sequence

import dagster as dg

from glan_assets.glan import answers, questions, sessions, subjects, syllabi
from glan_assets.methods import Fanout
from glan_assets.plan import PartitionPlan
from glan_assets.quality.judge import JUDGE_STAGE
from glan_assets.quality.stored import level_name
from glan_assets.stages import Stage

# The fan-out where the profile leaves it open: the paper's 10 queries gave 100-200 subjects
# per discipline; a syllabus written without an outline needs its sessions extracted (all of
# them, at most: the estimate does not guess how many come as outlines).
SUBJECTS_PER_QUERY = 15
EXTRACTED_SHARE = 1.0
# Prompt and completion tokens per call before any are measured: the README's projection for
# the paper profile (completions are capped at the stage's max_tokens).
DEFAULT_TOKENS = {
    subjects.LIST.name: (150, 800),
    subjects.FORMAT.name: (850, 800),
    syllabi.WRITE.name: (150, 1200),
    sessions.EXTRACT.name: (1300, 900),
    questions.ASK.name: (1300, 120),
    answers.RESPOND.name: (150, 400),
}


def fanout_glan(
    levels: Sequence[str], counts: Mapping[str, float], stored: Mapping[str, int], judge_sample: float = 0.0
) -> list[tuple[str, Stage, int]]:
    """One discipline's calls per stage, (level, stage, calls), for the `levels` built. A
    level not built has the rows `stored` holds; a built one the profile's `counts` make. The
    quality level's judge scores `judge_sample` of the pairs (one per answer)."""
    queries, cap = int(counts["subject_queries"]), int(counts["max_subjects_per_discipline"])

    def rows(level: str, expected: int) -> int:
        return expected if level in levels else stored.get(level, 0)

    made = queries * SUBJECTS_PER_QUERY
    n_subjects = rows(subjects.LEVEL.name, min(made, cap) if cap else made)
    n_syllabi = rows(syllabi.LEVEL.name, n_subjects)
    n_questions = rows(questions.LEVEL.name, n_syllabi * int(counts["questions_per_syllabus"]))
    calls = [
        (subjects.LEVEL.name, subjects.LIST, queries),
        (subjects.LEVEL.name, subjects.FORMAT, queries),
        (syllabi.LEVEL.name, syllabi.WRITE, n_subjects),
        (sessions.LEVEL.name, sessions.EXTRACT, math.ceil(n_syllabi * EXTRACTED_SHARE)),
        (questions.LEVEL.name, questions.ASK, n_questions),
        (answers.LEVEL.name, answers.RESPOND, n_questions),
        (level_name("glan"), JUDGE_STAGE, math.ceil(n_questions * judge_sample)),
    ]
    return [c for c in calls if c[0] in levels]


def partition_calls(
    plan: PartitionPlan, resources: Mapping[str, dg.ConfigurableResource], stored: Mapping[str, int]
) -> list[tuple[str, Stage, int]]:
    settings = resources["settings"]
    counts = {k: getattr(settings, k) for k in ("subject_queries", "max_subjects_per_discipline", "questions_per_syllabus")}
    return fanout_glan(plan.levels, counts, stored, resources["quality"].judge_sample)


FANOUT = Fanout(
    partition_calls,
    stored_rows={level.name: f"SELECT discipline AS k, count(*) AS n FROM {level.name} GROUP BY 1"
                 for level in (subjects.LEVEL, syllabi.LEVEL, questions.LEVEL)},
    default_tokens=DEFAULT_TOKENS,
)
