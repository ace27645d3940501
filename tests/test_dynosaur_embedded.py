"""The real path for Dynosaur: no endpoint configured, `glan build --dataset` serves the
packaged SmolLM2 over HTTP, asks it for the demo classification set's tasks (one call,
structured output with the dataset's column enums) and builds the instances."""

import os
import shutil
import subprocess
import sys

import pytest

from glan_assets.dynosaur.registry_file import DEFAULT_REGISTRY
from glan_assets.dynosaur.schemas import InstanceRow, TaskRow
from glan_assets.rows import RejectRow
from resources.storage import DuckDBStore

pytestmark = [pytest.mark.embedded, pytest.mark.timeout(1200)]


def test_glan_build_makes_dynosaur_instances_on_the_embedded_model(tmp_path):
    shutil.copytree(DEFAULT_REGISTRY.parent, tmp_path / "datasets", ignore=shutil.ignore_patterns("*.py", "__pycache__"))
    (tmp_path / "dagster_home").mkdir()
    env = {k: v for k, v in os.environ.items() if k not in ("OPENAI_BASE_URL", "OPENAI_API_KEY")}
    env |= {
        "GLAN_DATASETS": str(tmp_path / "datasets" / "registry.yaml"),
        "GLAN_DB": str(tmp_path / "glan.duckdb"),
        "DAGSTER_HOME": str(tmp_path / "dagster_home"),
        "GLAN_EMBEDDED_STATE": str(tmp_path / "embedded"),
    }

    proc = subprocess.run(
        [sys.executable, "-m", "glan_assets.cli", "build", "--dataset", "product_reviews", "--until", "dynosaur_instances"],
        env=env, capture_output=True, text=True, timeout=1100,
    )

    assert "starting the embedded model" in proc.stdout, proc.stdout + proc.stderr
    store = DuckDBStore(path=env["GLAN_DB"])
    tasks = store.read(TaskRow, "product_reviews")
    rejects = store.read(RejectRow, where="asset = 'dynosaur_tasks'")
    # The model's one reply is judged: kept tasks, or rejects that say why not.
    assert tasks or rejects, proc.stdout + proc.stderr
    assert all(set(t.input_fields) | {t.output_field} <= {"text", "label"} for t in tasks)
    if tasks:
        assert proc.returncode == 0, proc.stdout + proc.stderr
        instances = store.read(InstanceRow, "product_reviews")
        assert len(instances) == 12 * len(tasks) and all(i.instruction and i.output for i in instances)
    assert not (tmp_path / "embedded" / "server.json").exists()
