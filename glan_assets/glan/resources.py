"""GLAN's counts as a typed resource; `glan_assets.settings` fills it from the profile and
the environment, and the launchpad can override any field."""

import dagster as dg

from glan_assets.glan.taxonomy_file import DEFAULT_TAXONOMY, Taxonomy, load_taxonomy


class GenerationSettings(dg.ConfigurableResource):
    """How much to generate per item. Zero for `max_subjects_per_discipline` means no cap."""

    taxonomy_path: str = str(DEFAULT_TAXONOMY)
    seed: int = 0
    subject_queries: int
    max_subjects_per_discipline: int
    sessions_min: int
    sessions_max: int
    key_concepts_per_session: int
    questions_per_syllabus: int
    harder_question_fraction: float
    basic_concepts_max: int = 5
    harder_concepts_min: int = 2
    harder_concepts_max: int = 5
    proposals_per_sub_field: int = 3
    # The sensor deletes a discipline removed from the taxonomy only when this is set.
    sensor_prunes: bool = False

    def taxonomy(self) -> Taxonomy:
        return load_taxonomy(self.taxonomy_path)
