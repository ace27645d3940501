"""Every knob of the pipeline: typed resources, filled from environment variables.

`GLAN_PROFILE=paper` selects the GLAN paper's counts; the default `demo` profile is small
enough to build on the embedded model in minutes. Any single count can be overridden with
its own variable (for example `GLAN_QUESTIONS_PER_SYLLABUS=20`), or in the launchpad.
"""

import os
from pathlib import Path

import dagster as dg

from glan_assets.taxonomy_file import Taxonomy, load_taxonomy
from resources.llm import STAGES, LLMResource, Sampling
from resources.storage import DuckDBStore, db_path
from resources.training import TrainingSettings

DEFAULT_TAXONOMY = Path(__file__).resolve().parent.parent / "glan_assets" / "data" / "taxonomy.yaml"

# Count -> (demo, paper). Paper: 10 queries give 100-200 subjects per discipline, 10-30
# sessions with ~5 key concepts; ~500 questions per syllabus reach 10M pairs over 126
# disciplines.
PROFILES: dict[str, tuple[int | float, int | float]] = {
    "subject_queries": (2, 10),
    "max_subjects_per_discipline": (2, 0),
    "sessions_min": (2, 10),
    "sessions_max": (3, 30),
    "key_concepts_per_session": (3, 5),
    "questions_per_syllabus": (2, 500),
    "harder_question_fraction": (0.5, 0.5),
}
DEMO_MAX_TOKENS = 256
# Measured on SmolLM2-135M (benchmarks/bench_sessions.py): with the syllabus prompt's worked
# example, sessions came out of 10 of 12 syllabi at temperature 1.0 and of 12 of 12 at 0.7.
DEMO_MAX_TEMPERATURE = 0.7


class GenerationSettings(dg.ConfigurableResource):
    """How much to generate per item. Zero for `max_subjects_per_discipline` means no cap."""

    taxonomy_path: str = str(DEFAULT_TAXONOMY)
    seed: int = 0
    subject_queries: int = 2
    max_subjects_per_discipline: int = 2
    sessions_min: int = 2
    sessions_max: int = 3
    key_concepts_per_session: int = 3
    questions_per_syllabus: int = 2
    harder_question_fraction: float = 0.5
    basic_concepts_max: int = 5
    harder_concepts_min: int = 2
    harder_concepts_max: int = 5
    proposals_per_sub_field: int = 3

    def taxonomy(self) -> Taxonomy:
        return load_taxonomy(self.taxonomy_path)

    @classmethod
    def from_env(cls, env: dict[str, str] | None = None) -> "GenerationSettings":
        env = dict(os.environ if env is None else env)
        profile = env.get("GLAN_PROFILE", "demo")
        if profile not in ("demo", "paper"):
            raise ValueError(f"GLAN_PROFILE must be 'demo' or 'paper', not {profile!r}")
        values: dict = {name: pair[profile == "paper"] for name, pair in PROFILES.items()}
        for name, f in cls.model_fields.items():
            if name == "taxonomy_path":
                continue
            raw = env.get(f"GLAN_{name.upper()}")
            if raw is not None:
                values[name] = f.annotation(raw)
        values["taxonomy_path"] = env.get("GLAN_TAXONOMY", str(DEFAULT_TAXONOMY))
        return cls(**values)


def llm_from_env(env: dict[str, str] | None = None) -> LLMResource:
    """`OPENAI_BASE_URL`, `OPENAI_API_KEY`, `GLAN_MODEL`; per stage `GLAN_<STAGE>_MODEL`,
    `GLAN_<STAGE>_TEMPERATURE`, `GLAN_<STAGE>_TOP_P` and `GLAN_<STAGE>_PRICE` ("prompt,completion"
    USD per million tokens, default `GLAN_PRICE`)."""
    env = os.environ if env is None else env
    # The demo caps length and temperature so the embedded model finishes in minutes, on topic.
    paper = env.get("GLAN_PROFILE") == "paper"
    cap = int(env.get("GLAN_MAX_TOKENS", "0" if paper else str(DEMO_MAX_TOKENS)))
    hottest = float(env.get("GLAN_MAX_TEMPERATURE", "0" if paper else str(DEMO_MAX_TEMPERATURE)))
    stages = {}
    for stage in STAGES:
        default: Sampling = LLMResource.model_fields[stage].default
        var = f"GLAN_{stage.upper()}"
        price = env.get(f"{var}_PRICE", env.get("GLAN_PRICE", "0,0"))
        prompt_price, completion_price = (float(p) for p in price.split(","))
        temperature = min(default.temperature, hottest) if hottest else default.temperature
        stages[stage] = default.model_copy(
            update={
                "model": env.get(f"{var}_MODEL", ""),
                "temperature": float(env.get(f"{var}_TEMPERATURE", temperature)),
                "top_p": float(env.get(f"{var}_TOP_P", default.top_p)),
                "max_tokens": min(default.max_tokens, cap) if cap else default.max_tokens,
                "prompt_price": prompt_price,
                "completion_price": completion_price,
            }
        )
    # An EnvVar keeps the key out of the run config that the UI and event log show.
    api_key = dg.EnvVar("OPENAI_API_KEY") if env.get("OPENAI_API_KEY") else ""
    return LLMResource(
        base_url=env.get("OPENAI_BASE_URL", ""),
        api_key=api_key,
        default_model=env.get("GLAN_MODEL", "smollm2-135m-instruct"),
        max_concurrency=int(env.get("GLAN_MAX_CONCURRENCY", "16")),
        parse_attempts=int(env.get("GLAN_PARSE_ATTEMPTS", "3")),
        structured_outputs=env.get("GLAN_STRUCTURED_OUTPUTS", "1") != "0",
        cache_path=env.get("GLAN_CACHE") or str(db_path(env).with_name("llm_cache.sqlite")),
        **stages,
    )


def resources_from_env(env: dict[str, str] | None = None) -> dict:
    return {
        "llm": llm_from_env(env),
        "store": DuckDBStore(path=str(db_path(env))),
        "settings": GenerationSettings.from_env(env),
        "training": TrainingSettings.from_env(env),
    }
