"""Fixtures: a fake endpoint, a project with its own taxonomy, DuckDB file and Dagster
instance, and a `build` helper that materializes disciplines as `glan build` does."""

import itertools
import os
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import dagster as dg
import pytest

from glan_assets.build import build, plan_build
from glan_assets.registry import resources_from_env
from resources import storage
from tests.fake_llm import FakeLLM
from tests.postgres import PostgresServer, postgres_bin

TINY_TAXONOMY = """\
fields:
  - name: Natural Sciences
    sub_fields:
      - name: Physical Sciences
        disciplines:
          - name: Physics
          - name: Astronomy
"""


class Project:
    """A user's project directory: taxonomy file, DuckDB file, cache, Dagster instance."""

    def __init__(self, root: Path, base_url: str):
        self.root = root
        self.taxonomy = root / "taxonomy.yaml"
        self.taxonomy.write_text(TINY_TAXONOMY)
        self.db = root / "data" / "glan.duckdb"
        # GLAN alone unless a test registers datasets or collections (the package's demo
        # registries would otherwise join every build).
        (root / "datasets.yaml").write_text("datasets: []\n")
        (root / "collections.yaml").write_text("collections: []\n")
        self.env = {
            "GLAN_DATASETS": str(root / "datasets.yaml"),
            "GLAN_COLLECTIONS": str(root / "collections.yaml"),
            "GLAN_TAXONOMY": str(self.taxonomy),
            "GLAN_DB": str(self.db),
            "OPENAI_BASE_URL": base_url,
            "OPENAI_API_KEY": "sk-test-secret-key",
            "GLAN_QUESTIONS_PER_SYLLABUS": "2",
        }
        self.dagster_home = root / "dagster_home"
        self.dagster_home.mkdir()
        self.instance = dg.DagsterInstance.ephemeral()

    def subprocess_env(self) -> dict:
        """The environment for running `glan` or `dagster` as a user would."""
        return {**os.environ, **self.env, "DAGSTER_HOME": str(self.dagster_home)}

    @contextmanager
    def instance_on_disk(self) -> Iterator[dg.DagsterInstance]:
        """The project's Dagster home on disk, as `glan build` and the daemon open it: worker
        processes and sensor ticks reach it through its ref, which an ephemeral one lacks."""
        (self.dagster_home / "dagster.yaml").write_text("telemetry:\n  enabled: false\n")
        # Not `with DagsterInstance`: that installs its state storage for the whole session,
        # and later code locations would load against a disposed instance.
        instance = dg.DagsterInstance.from_config(str(self.dagster_home))
        try:
            yield instance
        finally:
            instance.dispose()

    def resources(self) -> dict:
        return resources_from_env(self.env)

    def add_discipline(self, name: str) -> None:
        self.taxonomy.write_text(self.taxonomy.read_text() + f"          - name: {name}\n")

    def plan(self, *disciplines: str, force: bool = False, prune: bool = False, until: str = "answers"):
        """What `glan build --until answers` (or `until`) would build now."""
        return plan_build(
            self.instance, self.resources(), only={"discipline": disciplines}, force=force, prune=prune,
            until=until,
        )

    def build(self, *disciplines: str, force: bool = False, until: str = "answers"):
        """Build the named disciplines (all by default) as `glan build --until answers` (or
        `until`) does: only what is missing or stale."""
        return build(self.instance, self.plan(*disciplines, force=force, until=until).partitions, workers=1)


_catalogs = itertools.count()


@pytest.fixture(scope="session")
def postgres():
    """A throwaway PostgreSQL server on 127.0.0.1 (Debian's package, `make db-deps`)."""
    if postgres_bin() is None:
        pytest.fail("PostgreSQL is not installed: `make db-deps` installs Debian's postgresql")
    with PostgresServer() as server:
        yield server
        storage.close_lakes()  # this process's catalog sessions, before the server goes


@pytest.fixture
def lake_env(postgres, tmp_path) -> dict[str, str]:
    """The settings of a new, empty DuckLake: its own catalog database and data path."""
    return {
        "GLAN_STORAGE": "ducklake",
        "GLAN_CATALOG_DSN": postgres.create_database(f"lake_{next(_catalogs)}"),
        "GLAN_DATA_PATH": str(tmp_path / "lake"),
    }


@pytest.fixture
def fake_llm():
    with FakeLLM() as llm:
        yield llm


@pytest.fixture
def project(tmp_path, fake_llm, monkeypatch) -> Project:
    p = Project(tmp_path, fake_llm.base_url)
    for k, v in p.env.items():
        monkeypatch.setenv(k, v)
    return p
