"""Fixtures: a fake endpoint, a project with its own taxonomy, DuckDB file and Dagster
instance, and a `build` helper that materializes disciplines as `glan build` does."""

import os
from pathlib import Path

import dagster as dg
import pytest

from glan_assets.build import build, sync_partitions
from resources.settings import resources_from_env
from tests.fake_llm import FakeLLM

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
        self.env = {
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

    def resources(self) -> dict:
        return resources_from_env(self.env)

    def add_discipline(self, name: str) -> None:
        self.taxonomy.write_text(self.taxonomy.read_text() + f"          - name: {name}\n")

    def build(self, *disciplines: str):
        res = self.resources()
        sync_partitions(self.instance, res["settings"], res["store"])
        keys = list(disciplines) or list(res["settings"].taxonomy().disciplines)
        return build(self.instance, keys, workers=1)


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
