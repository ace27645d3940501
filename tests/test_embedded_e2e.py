"""The real path: no endpoint configured, `glan build` serves the packaged SmolLM2 over HTTP
and builds a one-discipline taxonomy from its field to its answers."""

import os
import subprocess
import sys

import pytest

from glan_assets.glan.method import LEVELS
from glan_assets.glan.schemas import AnswerRow
from resources.storage import DuckDBStore

pytestmark = [pytest.mark.embedded, pytest.mark.timeout(1200)]


def test_glan_build_runs_end_to_end_on_the_embedded_model(tmp_path):
    taxonomy = tmp_path / "taxonomy.yaml"
    taxonomy.write_text(
        "fields:\n  - name: Natural Sciences\n    sub_fields:\n      - name: Physical Sciences\n"
        "        disciplines:\n          - name: Physics\n"
    )
    (tmp_path / "dagster_home").mkdir()
    env = {k: v for k, v in os.environ.items() if k not in ("OPENAI_BASE_URL", "OPENAI_API_KEY")}
    env |= {
        "GLAN_TAXONOMY": str(taxonomy),
        "GLAN_DB": str(tmp_path / "glan.duckdb"),
        "DAGSTER_HOME": str(tmp_path / "dagster_home"),
        "GLAN_EMBEDDED_STATE": str(tmp_path / "embedded"),
    }

    proc = subprocess.run([sys.executable, "-m", "glan_assets.cli", "build", "--until", "answers"], env=env, capture_output=True,
                          text=True, timeout=1100)

    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert "starting the embedded model" in proc.stdout and "built 1/1 partitions" in proc.stdout
    store = DuckDBStore(path=env["GLAN_DB"])
    counts = {lv.name: len(store.read(lv.row_type, "Physics")) for lv in LEVELS}
    assert all(n > 0 for n in counts.values()), counts
    answer = store.read(AnswerRow, "Physics")[0]
    assert answer.answer.strip() and answer.model == "smollm2-135m-instruct"
    # the server was stopped at the end of the build
    assert not (tmp_path / "embedded" / "server.json").exists()
