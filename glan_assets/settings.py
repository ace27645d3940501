"""All configuration, resolved once: the profile, then `GLAN_*` variables, into typed resources.

`GLAN_PROFILE=paper` selects the GLAN paper's counts and sampling; the default `demo` profile
is small enough to build on the embedded model in minutes. A field of a settings resource is
set with `GLAN_<FIELD>` (for example `GLAN_QUESTIONS_PER_SYLLABUS=20`), a stage's model and
sampling with `GLAN_<STAGE>_MODEL|TEMPERATURE|TOP_P|PRICE`. An unknown `GLAN_*` variable or
profile is an error here, before anything runs. Nothing else reads the environment: the rest
of glan gets its values by argument, and `set_process_environment` is the one place that
writes it (for Dagster, the libraries glan loads and child processes).
"""

import os
import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from functools import cached_property
from pathlib import Path
from typing import Annotated
from urllib.parse import unquote, urlsplit

import dagster as dg
from pydantic import BaseModel

from glan_assets.checks import CheckThresholds
from glan_assets.composition import Composition
from glan_assets.methods import Method
from glan_assets.quality.settings import QualitySettings
from glan_assets.training.resources import EvalSettings, TrainingSettings
from resources import redact
from resources.embedded import DEFAULT_IDLE_TIMEOUT_S, DEFAULT_STATE_DIR
from resources.llm import LLMResource, Sampling
from resources.local_models import DEFAULT_MODEL_CACHE
from resources.storage import DuckDBStore
from resources.versioning import Unversioned


@dataclass(frozen=True)
class Profile:
    heldout_per_discipline: int
    max_tokens: int  # cap on every stage's max_tokens; 0: the stages' own
    max_temperature: float  # cap on every stage's temperature; 0: none
    rates_warn: bool = False  # reject and duplicate rates over their limits warn, not fail
    evaluation: Mapping[str, int] = field(default_factory=dict)  # EvalSettings fields
    judge_sample: float = 1.0  # the share of pairs the LLM judge scores


PROFILES = {
    # Small enough for the embedded model in minutes (each method's counts are in its package:
    # `MethodSettings.profiles`).
    "demo": Profile(
        heldout_per_discipline=1,
        max_tokens=256,
        max_temperature=0.7,
        # SmolLM2-135M misses the rate limits by design: they are worth reading, not acting on.
        rates_warn=True,
        # model_eval: ~3 minutes on 2 cores, under 2 with the base cached (benchmarks/README.md).
        evaluation={"eval_mc_items": 20, "eval_gen_items": 5, "eval_max_new_tokens": 32, "eval_fewshot": 1},
        # The embedded judge is slow (0.25 pairs/s on 2 cores) and at chance: a sample shows the stage.
        judge_sample=0.25,
    ),
    # The paper: GLAN-Test holds out 50 pairs per discipline.
    "paper": Profile(
        heldout_per_discipline=50,
        max_tokens=0,
        max_temperature=0.0,
    ),
}

# Read by name here.
PLAIN_VARIABLES = {
    "GLAN_PROFILE", "GLAN_DB", "GLAN_CACHE", "GLAN_MODEL", "GLAN_PRICE",
    "GLAN_MAX_TOKENS", "GLAN_MAX_TEMPERATURE", "GLAN_MAX_CONCURRENCY", "GLAN_PARSE_ATTEMPTS", "GLAN_MAX_PROMPT_CHARS",
    "GLAN_STRUCTURED_OUTPUTS", "GLAN_REQUEST_TIMEOUT", "GLAN_MAX_RETRIES", "GLAN_SLOW_REQUEST",
    "GLAN_BENCHMARKS", "GLAN_SOURCE_CAPS", "GLAN_RECIPES", "GLAN_CHECKPOINTS",
    "GLAN_MODEL_CACHE", "GLAN_EMBEDDED_STATE", "GLAN_EMBEDDED_IDLE_TIMEOUT",
    "GLAN_STORAGE", "GLAN_CATALOG_DSN", "GLAN_DATA_PATH", "GLAN_EXPORT_MEMORY_LIMIT",
    "GLAN_BUDGET_USD", "GLAN_BATCH", "GLAN_BATCH_PRICE_FACTOR", "GLAN_BATCH_POLL",
}
# GLAN_STORAGE: the tables' backend; ducklake also needs GLAN_CATALOG_DSN and GLAN_DATA_PATH.
STORAGE_BACKENDS = ("duckdb", "ducklake")
STAGE_SUFFIXES = ("MODEL", "TEMPERATURE", "TOP_P", "PRICE", "BATCH")
# Secrets redacted from every stored or logged text (`resources.redact`): whole values, and
# the password inside URLs (the Celery broker and backend, an endpoint with credentials).
SECRET_VARIABLES = ("OPENAI_API_KEY", "PGPASSWORD", "DAGSTER_PG_PASSWORD", "GLAN_JUDGE_API_KEY")
SECRET_URLS = ("DAGSTER_CELERY_BROKER", "DAGSTER_CELERY_BACKEND", "OPENAI_BASE_URL", "GLAN_JUDGE_BASE_URL")


class SettingsError(ValueError):
    """The environment names an unknown profile or variable, or a value of the wrong type."""


class Machine(BaseModel):
    """Where this machine keeps what glan makes besides its tables, and how long the embedded
    server idles: none of it changes a row."""

    model_cache: Annotated[Path, Unversioned("where converted models are kept, not which")]
    embedded_state: Annotated[Path, Unversioned("the embedded server's state files")]
    embedded_idle_timeout_s: Annotated[float, Unversioned("when an idle server stops")]
    dagster_home: Annotated[Path, Unversioned("where Dagster records runs")]


def _fields_from_env(
    cls: type[dg.ConfigurableResource], env: Mapping[str, str], skip: set[str] = frozenset(), prefix: str = "GLAN_"
) -> dict[str, object]:
    """`<prefix><FIELD>` for each scalar field of a settings resource, typed by the field."""
    values: dict[str, object] = {}
    for name, f in cls.model_fields.items():
        var = f"{prefix}{name.upper()}"
        if name in skip or var not in env or f.annotation not in (int, float, bool, str):
            continue
        raw = env[var]
        try:
            values[name] = raw not in ("0", "false", "no", "") if f.annotation is bool else f.annotation(raw)
        except ValueError:
            raise SettingsError(f"{var}={raw!r}: expected {f.annotation.__name__}") from None
    return values


@dataclass(frozen=True)
class Settings:
    env: Mapping[str, str]
    profile: Profile
    # What the root composed: its methods' resources and stages, the training set's sources.
    composition: Composition

    @classmethod
    def from_env(cls, env: Mapping[str, str] | None, composition: Composition) -> "Settings":
        env = dict(os.environ if env is None else env)
        name = env.get("GLAN_PROFILE", "demo")
        if name not in PROFILES:
            raise SettingsError(f"GLAN_PROFILE={name!r}: the profiles are {', '.join(PROFILES)}")
        known = PLAIN_VARIABLES | {
            f"GLAN_{field.upper()}"
            for cls_ in (TrainingSettings, CheckThresholds, EvalSettings, QualitySettings)
            for field in cls_.model_fields
        }
        for m in composition.methods:
            known |= {m.settings.file_variable}
            known |= {f"{m.settings.prefix}{field.upper()}" for field in m.settings.resource_class.model_fields}
        known |= {f"GLAN_{s.name.upper()}_{suffix}" for s in composition.stages() for suffix in STAGE_SUFFIXES}
        unknown = sorted(v for v in env if v.startswith("GLAN_") and v not in known)
        if unknown:
            raise SettingsError(
                f"unknown setting {', '.join(unknown)}; every GLAN_* variable is listed in "
                "docs/configuration.md"
            )
        settings = cls(env, PROFILES[name], composition)
        redact.register(*settings.secrets())
        return settings

    @cached_property
    def machine(self) -> Machine:
        """`GLAN_MODEL_CACHE`, `GLAN_EMBEDDED_STATE`, `GLAN_EMBEDDED_IDLE_TIMEOUT` and `DAGSTER_HOME`."""
        env = self.env
        return Machine(
            model_cache=Path(env.get("GLAN_MODEL_CACHE") or DEFAULT_MODEL_CACHE).expanduser(),
            embedded_state=Path(env.get("GLAN_EMBEDDED_STATE") or DEFAULT_STATE_DIR).expanduser(),
            embedded_idle_timeout_s=self._number("GLAN_EMBEDDED_IDLE_TIMEOUT", DEFAULT_IDLE_TIMEOUT_S),
            # Without it Dagster keeps runs and partitions in a temp dir that vanishes on exit.
            dagster_home=Path(env.get("DAGSTER_HOME") or "dagster_home").expanduser().resolve(),
        )

    def process_environment(self) -> dict[str, str]:
        """The environment this process and its children run with: the settings' own, plus the
        variables that others read (`set_process_environment` applies it)."""
        return dict(self.env) | {
            # Dagster finds its instance by this variable; glan's commands and workers use the same.
            "DAGSTER_HOME": str(self.machine.dagster_home),
            # torch's OpenMP threads otherwise spin between operations: in the demo build UIT's
            # scorer spun ~45 CPU s beside the embedded model on 2 cores. A value the user set is kept.
            "OMP_WAIT_POLICY": self.env.get("OMP_WAIT_POLICY", "PASSIVE"),
        }

    def secrets(self) -> list[str]:
        """The secret values the environment holds (`SECRET_VARIABLES`, `SECRET_URLS`)."""
        found = [self.env.get(var, "") for var in SECRET_VARIABLES]
        for var in SECRET_URLS:
            try:
                password = urlsplit(self.env.get(var, "")).password or ""
            except ValueError:  # not a URL: nothing to find in it
                continue
            found += [password, unquote(password)]
        return [v for v in found if v]

    @property
    def db_path(self) -> Path:
        """`GLAN_DB`: the DuckDB file; the cache and checkpoints default to its folder."""
        return Path(self.env.get("GLAN_DB", "data/glan.duckdb"))

    def store(self) -> DuckDBStore:
        """`GLAN_STORAGE`: the DuckDB file `GLAN_DB` (`duckdb`, the default), or a DuckLake
        catalog in the PostgreSQL database `GLAN_CATALOG_DSN` over Parquet files under
        `GLAN_DATA_PATH` (`ducklake`), which many processes and machines write at once."""
        backend = self.env.get("GLAN_STORAGE", "duckdb")
        if backend not in STORAGE_BACKENDS:
            raise SettingsError(f"GLAN_STORAGE={backend!r}: the storage backends are {', '.join(STORAGE_BACKENDS)}")
        dsn, data_path = self.env.get("GLAN_CATALOG_DSN", ""), self.env.get("GLAN_DATA_PATH", "")
        if backend == "ducklake" and not (dsn and data_path):
            raise SettingsError(
                "GLAN_STORAGE=ducklake needs GLAN_CATALOG_DSN (a PostgreSQL connection string, e.g. "
                "'host=db port=5432 dbname=glan user=glan') and GLAN_DATA_PATH (a folder every writer sees, or s3://...)"
            )
        if re.search(r"(^|\s|[?&])password\s*=", dsn) or re.search(r"://[^/@]*:[^/@]*@", dsn):
            # The DSN is resource config, which the UI shows and runs record; a password is not.
            raise SettingsError("GLAN_CATALOG_DSN holds a password: put it in PGPASSWORD or ~/.pgpass instead")
        memory = {"export_memory_limit": v} if (v := self.env.get("GLAN_EXPORT_MEMORY_LIMIT")) else {}
        return DuckDBStore(path=str(self.db_path), backend=backend, catalog_dsn=dsn, data_path=data_path, **memory)

    def _number(self, var: str, default: float) -> float:
        raw = self.env.get(var)
        try:
            return default if raw is None else float(raw)
        except ValueError:
            raise SettingsError(f"{var}={raw!r}: expected a number") from None

    def _flag(self, var: str, default: bool) -> bool:
        raw = self.env.get(var)
        if raw is None:
            return default
        if raw.lower() not in ("0", "1", "true", "false", "yes", "no"):
            raise SettingsError(f"{var}={raw!r}: expected 1 or 0")
        return raw.lower() in ("1", "true", "yes")

    def stage_sampling(self) -> dict[str, Sampling]:
        """Each stage's defaults, capped by the profile, then its own variables."""
        batch = self._flag("GLAN_BATCH", False)
        cap = int(self._number("GLAN_MAX_TOKENS", self.profile.max_tokens))
        hottest = self._number("GLAN_MAX_TEMPERATURE", self.profile.max_temperature)
        resolved = {}
        for stage in self.composition.stages():
            default, var = stage.sampling, f"GLAN_{stage.name.upper()}"
            price = self.env.get(f"{var}_PRICE", self.env.get("GLAN_PRICE", "0,0"))
            try:
                prompt_price, completion_price = (float(p) for p in price.split(","))
            except ValueError:
                raise SettingsError(f"{var}_PRICE / GLAN_PRICE={price!r}: expected 'prompt,completion' USD per million tokens") from None
            temperature = min(default.temperature, hottest) if hottest else default.temperature
            resolved[stage.name] = default.model_copy(
                update={
                    "model": self.env.get(f"{var}_MODEL", default.model),
                    "temperature": self._number(f"{var}_TEMPERATURE", temperature),
                    "top_p": self._number(f"{var}_TOP_P", default.top_p),
                    "max_tokens": min(default.max_tokens, cap) if cap else default.max_tokens,
                    "prompt_price": prompt_price,
                    "completion_price": completion_price,
                    "batch": self._flag(f"{var}_BATCH", batch),
                }
            )
        return resolved

    def llm(self) -> LLMResource:
        env = self.env
        # An EnvVar keeps the key out of the run config that the UI and event log show.
        api_key = dg.EnvVar("OPENAI_API_KEY") if env.get("OPENAI_API_KEY") else ""
        stages = self.stage_sampling()
        if not env.get("OPENAI_BASE_URL") and (batched := [name for name, s in stages.items() if s.batch]):
            raise SettingsError(
                f"batch mode (GLAN_BATCH or GLAN_<STAGE>_BATCH) for {', '.join(batched)} needs OPENAI_BASE_URL: "
                "the embedded model has no Batch API"
            )
        return LLMResource(
            base_url=env.get("OPENAI_BASE_URL", ""),
            api_key=api_key,
            default_model=env.get("GLAN_MODEL", LLMResource.model_fields["default_model"].default),
            max_concurrency=int(self._number("GLAN_MAX_CONCURRENCY", 16)),
            request_timeout_s=self._number("GLAN_REQUEST_TIMEOUT", 300.0),
            max_retries=int(self._number("GLAN_MAX_RETRIES", 6)),
            slow_request_s=self._number("GLAN_SLOW_REQUEST", 60.0),
            parse_attempts=int(self._number("GLAN_PARSE_ATTEMPTS", 3)),
            max_prompt_chars=int(
                self._number("GLAN_MAX_PROMPT_CHARS", LLMResource.model_fields["max_prompt_chars"].default)
            ),
            structured_outputs=env.get("GLAN_STRUCTURED_OUTPUTS", "1") != "0",
            cache_path=env.get("GLAN_CACHE") or str(self.db_path.with_name("llm_cache.sqlite")),
            budget_usd=self._number("GLAN_BUDGET_USD", 0.0),  # unset: no budget
            batch_price_factor=self._number("GLAN_BATCH_PRICE_FACTOR", LLMResource.model_fields["batch_price_factor"].default),
            batch_poll_s=self._number("GLAN_BATCH_POLL", LLMResource.model_fields["batch_poll_s"].default),
            stages=stages,
            embedded_state=str(self.machine.embedded_state),
            embedded_idle_timeout_s=self.machine.embedded_idle_timeout_s,
            model_cache=str(self.machine.model_cache),
        )

    def method_resource(self, method: Method) -> dg.ConfigurableResource:
        """The method's resource: the profile's values for it, then `<prefix><FIELD>`, its file
        from its file variable, and the machine's model cache where it keeps models."""
        spec = method.settings
        values = dict(spec.profiles.get(self.env.get("GLAN_PROFILE", "demo"), {}))
        values |= _fields_from_env(spec.resource_class, self.env, {spec.file_field, "model_cache"}, spec.prefix)
        if spec.file_variable in self.env:
            values[spec.file_field] = self.env[spec.file_variable]
        if "model_cache" in spec.resource_class.model_fields:
            values["model_cache"] = str(self.machine.model_cache)
        return spec.resource_class(**values)

    def source_caps(self) -> dict[str, int]:
        """`GLAN_SOURCE_CAPS`, e.g. `dynosaur=2000,uit=0`: per source, the most rows it gives
        the training set per task (0: none); it replaces the default caps, and a source it
        leaves out is not capped (an empty value caps none)."""
        raw = self.env["GLAN_SOURCE_CAPS"]
        sources = sorted(self.composition.training.sources.names)
        caps: dict[str, int] = {}
        for item in filter(None, (part.strip() for part in raw.split(","))):
            name, sep, value = (x.strip() for x in item.partition("="))
            if name not in sources:
                raise SettingsError(f"GLAN_SOURCE_CAPS={raw!r}: unknown source {name!r}; the sources are {', '.join(sources)}")
            try:
                caps[name] = int(value) if sep else -1
            except ValueError:
                caps[name] = -1
            if caps[name] < 0:
                raise SettingsError(f"GLAN_SOURCE_CAPS={raw!r}: {item!r} is not source=N with N rows per task, 0 or more")
        return caps

    def training(self) -> TrainingSettings:
        env = self.env
        values: dict[str, object] = {
            "heldout_per_discipline": self.profile.heldout_per_discipline,
            "checkpoints": env.get("GLAN_CHECKPOINTS") or str(self.db_path.parent / "checkpoints"),
            "model_cache": str(self.machine.model_cache),
        }
        if env.get("GLAN_RECIPES"):
            values["recipes"] = env["GLAN_RECIPES"]
        if "GLAN_BENCHMARKS" in env:
            raw = env["GLAN_BENCHMARKS"].replace(os.pathsep, ",")
            values["benchmarks"] = [p.strip() for p in raw.split(",") if p.strip()]
        if "GLAN_SOURCE_CAPS" in env:
            values["source_caps"] = self.source_caps()
        return TrainingSettings(**values | _fields_from_env(TrainingSettings, env, {"recipes", "checkpoints", "model_cache"}))

    def evaluation(self) -> EvalSettings:
        return EvalSettings(**dict(self.profile.evaluation) | _fields_from_env(EvalSettings, self.env))

    def quality(self) -> QualitySettings:
        values = {"judge_sample": self.profile.judge_sample, "model_cache": str(self.machine.model_cache)}
        values |= _fields_from_env(QualitySettings, self.env, {"judge_api_key", "model_cache"})
        if self.env.get("GLAN_JUDGE_API_KEY"):  # an EnvVar: the key stays out of the run config
            values["judge_api_key"] = dg.EnvVar("GLAN_JUDGE_API_KEY")
        return QualitySettings(**values)

    def resources(self) -> dict[str, dg.ConfigurableResource]:
        return {
            "llm": self.llm(),
            "store": self.store(),
            "training": self.training(),
            "evaluation": self.evaluation(),
            "quality": self.quality(),
            "check_thresholds": CheckThresholds(
                **{"rates_warn": self.profile.rates_warn} | _fields_from_env(CheckThresholds, self.env)
            ),
            **{m.settings.resource_key: self.method_resource(m) for m in self.composition.methods},
        }


def set_process_environment(settings: Settings) -> None:
    """The one place glan writes the environment: this process's becomes `settings`'s
    (`Settings.process_environment`), because Dagster, torch and child processes read it there;
    a fork server's worker, started with an earlier environment, takes its caller's this way."""
    wanted = settings.process_environment()
    for var in set(os.environ) - set(wanted):
        del os.environ[var]
    os.environ.update(wanted)
