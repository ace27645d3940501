"""GLAN's counts as a typed resource; `glan_assets.settings` fills it from the profile and
the environment, and the launchpad can override any field."""

from typing import Annotated

import dagster as dg

from glan_assets.glan.taxonomy_file import DEFAULT_TAXONOMY, Taxonomy, load_taxonomy
from resources.versioning import ReadBy, Unversioned


# The counts of each profile (`GLAN_PROFILE`), which the settings apply before `GLAN_<FIELD>`.
PROFILE_COUNTS: dict[str, dict[str, int | float]] = {
    # Small enough for the embedded model in minutes. Measured on SmolLM2-135M
    # (benchmarks/bench_sessions.py): with the syllabus prompt's worked example, sessions came
    # out of 10 of 12 syllabi at temperature 1.0 and of 12 of 12 at 0.7.
    "demo": {
        "subject_queries": 2,
        "max_subjects_per_discipline": 2,
        "sessions_min": 2,
        "sessions_max": 3,
        "key_concepts_per_session": 3,
        "questions_per_syllabus": 2,
        "harder_question_fraction": 0.5,
    },
    # The paper: 10 queries give 100-200 subjects per discipline, 10-30 sessions with ~5 key
    # concepts; ~500 questions per syllabus reach 10M pairs over 126 disciplines; GLAN-Test
    # holds out 50 pairs per discipline.
    "paper": {
        "subject_queries": 10,
        "max_subjects_per_discipline": 0,
        "sessions_min": 10,
        "sessions_max": 30,
        "key_concepts_per_session": 5,
        "questions_per_syllabus": 500,
        "harder_question_fraction": 0.5,
    },
}


class GenerationSettings(dg.ConfigurableResource):
    """How much to generate per item. Zero for `max_subjects_per_discipline` means no cap."""

    # Each level names the settings it reads (`ReadBy`), so a count changes only its own level
    # and below; the taxonomy's nodes are versioned by their own fingerprints.
    taxonomy_path: Annotated[str, Unversioned("each discipline's node is fingerprinted")] = str(DEFAULT_TAXONOMY)
    seed: Annotated[int, ReadBy("questions")] = 0
    subject_queries: Annotated[int, ReadBy("subjects")]
    max_subjects_per_discipline: Annotated[int, ReadBy("subjects")]
    sessions_min: Annotated[int, ReadBy("syllabi")]
    sessions_max: Annotated[int, ReadBy("syllabi", "sessions")]
    key_concepts_per_session: Annotated[int, ReadBy("syllabi")]
    questions_per_syllabus: Annotated[int, ReadBy("questions")]
    harder_question_fraction: Annotated[float, ReadBy("questions")]
    basic_concepts_max: Annotated[int, ReadBy("questions")] = 5
    harder_concepts_min: Annotated[int, ReadBy("questions")] = 2
    harder_concepts_max: Annotated[int, ReadBy("questions")] = 5
    proposals_per_sub_field: Annotated[int, ReadBy("taxonomy_proposals")] = 3
    # The sensor deletes a discipline removed from the taxonomy only when this is set.
    sensor_prunes: Annotated[bool, Unversioned("the sensor's choice, not the rows")] = False

    def taxonomy(self) -> Taxonomy:
        return load_taxonomy(self.taxonomy_path)
