"""A method is registered once: the small method here (one level that copies the rows of a
file into a table, its own partitions and settings) is composed with the real methods as the
root composes them (`compose`), with no module list patched, and it is configured, planned,
built, checked and traced, and its pairs join the training set and the release.
"""

import ast
import dataclasses
import gc
import json
import os
import subprocess
import sys
from pathlib import Path
from typing import ClassVar
from unittest import mock

import dagster as dg
import pytest

from glan_assets import registry
from glan_assets.glan import method as glan
from glan_assets.build import build, plan_build, train
from glan_assets.checks import all_checks
from glan_assets.composition import compose
from glan_assets.ids import content_hash, stable_id
from glan_assets.levels import Level, level_asset
from glan_assets.lineage import chain
from glan_assets.methods import Method, MethodSettings
from glan_assets.results import store_partition
from glan_assets.rows import TableRow
from glan_assets.settings import Settings, SettingsError
from glan_assets.training.release import export_dataset
from glan_assets.training.schemas import TrainingPairRow
from resources.storage import DuckDBStore
from tests.training_rows import HalfLossScorer


class SheetSettings(dg.ConfigurableResource):
    """The file whose rows the method copies (`GLAN_SHEETS`): one JSON object a line, with its
    sheet (the partition), an instruction and a response."""

    sheet_path: str = ""


def read_sheets(path: str) -> dict[str, list[dict]]:
    sheets: dict[str, list[dict]] = {}
    for line in Path(path).read_text().splitlines():
        record = json.loads(line)
        sheets.setdefault(record["sheet"], []).append(record)
    return sheets


sheet_partitions = dg.DynamicPartitionsDefinition(name="sheet")


class SheetRow(TableRow):
    table: ClassVar[str] = "sheet_rows"
    id_column: ClassVar[str] = "sheet_row_id"
    partition_column: ClassVar[str | None] = "sheet"
    sheet_row_id: str
    sheet: str
    instruction: str
    response: str


LEVEL = Level(
    "sheet_rows", SheetRow, id_prefix="srow", method="sheets", group="sheets",
    description="The rows of a sheet, copied.", label="sheet row", partitions_def=sheet_partitions,
    training_pairs="SELECT sheet_row_id AS source_id, sheet AS group_name, sheet AS task_id, instruction, response "
    "FROM sheet_rows",
)


@level_asset(LEVEL)
def sheet_rows(context: dg.AssetExecutionContext, store: DuckDBStore, sheets: SheetSettings) -> dg.MaterializeResult:
    key = context.partition_key
    rows = [SheetRow(sheet_row_id=stable_id(LEVEL.id_prefix, key, i), sheet=key, instruction=r["instruction"],
                     response=r["response"]) for i, r in enumerate(read_sheets(sheets.sheet_path)[key])]
    return store_partition(context, store, LEVEL, rows)


METHOD = Method(
    "sheets", (LEVEL,), (sys.modules[__name__],), sheet_partitions,
    wanted=lambda res: {name: content_hash(rows) for name, rows in read_sheets(res["sheets"].sheet_path).items()},
    source_file=lambda res: res["sheets"].sheet_path,
    settings=MethodSettings(SheetSettings, "sheets", "GLAN_SHEETS", "sheet_path"),
    note="rows copied from a file",
)
# The root's line, with one more method: nothing else names it.
COMPOSED = compose([*registry.REGISTERED, METHOD])

SHEETS = {
    "greetings": [("How do people greet each other in Japan?",
                   "People in Japan usually greet each other with a bow, deeper for someone of higher standing."),
                  ("How do people greet each other in France?",
                   "Friends in France often greet each other with light kisses on the cheeks, the number "
                   "varying by region.")],
    "capitals": [("What is the capital city of Kenya?",
                  "The capital city of Kenya is Nairobi, which is also its largest city and its commercial centre."),
                 ("What is the capital city of Peru?",
                  "The capital city of Peru is Lima, which lies on the Pacific coast in the centre of the country.")],
}


@pytest.fixture
def sheets(project, monkeypatch) -> Path:
    path = project.root / "sheets.jsonl"
    path.write_text("".join(json.dumps({"sheet": s, "instruction": i, "response": r}) + "\n"
                            for s, rows in SHEETS.items() for i, r in rows))
    project.env["GLAN_SHEETS"] = str(path)
    monkeypatch.setenv("GLAN_SHEETS", str(path))  # a run resolves its settings from the environment
    return path


def test_a_method_composed_at_the_root_is_configured_built_traced_and_trained_on(project, sheets, fake_llm,
                                                                                  tmp_path):
    # Its settings come from its Method: the class, the variable, the resource key.
    settings = Settings.from_env(project.env, COMPOSED)
    assert settings.resources()["sheets"].sheet_path == str(sheets)
    with pytest.raises(SettingsError, match="unknown setting GLAN_SHEETS"):
        Settings.from_env(project.env, registry.COMPOSED)  # the root's composition does not know it
    defs = COMPOSED.definitions(settings.resources())
    assert "build_sheet" in {j.name for j in defs.jobs} and "sheet_sensor" in {s.name for s in defs.sensors}
    assert "sheet_rows_checks" in {c.node_def.name for c in all_checks(COMPOSED.levels)}

    resources, only = settings.resources(), {"sheet": list(SHEETS)}
    plan = plan_build(project.instance, resources, only=only, until="training_set", composition=COMPOSED)
    assert {p.key: p.levels for p in plan.partitions} == {
        "greetings": ("sheet_rows", "sheets_quality"), "capitals": ("sheet_rows", "sheets_quality")}
    with mock.patch("glan_assets.quality.levels.load_scorer", lambda model: HalfLossScorer()):
        assert all(s.success for s in build(project.instance, plan.partitions, workers=1, composition=COMPOSED))
    assert all(r.success for _, r in train(project.instance, plan.training, None, build_id="b", composition=COMPOSED)
               if r)

    again = plan_build(project.instance, resources, only=only, until="training_set", composition=COMPOSED)
    assert again.partitions == [] and again.training == []

    store = DuckDBStore(path=str(project.db))
    pairs = [p for p in store.read(TrainingPairRow) if p.source == "sheets"]
    assert {p.group_name for p in pairs} == set(SHEETS)
    tables = [type(r).table for r in chain(store, pairs[0].pair_id, COMPOSED.levels)]
    assert tables == ["training_set", "sheet_rows"]
    card = export_dataset(store, tmp_path / "release", levels=COMPOSED.levels,
                          sources=COMPOSED.training.sources)["card"].read_text()
    assert "- `sheets`: rows copied from a file" in card


def test_a_levels_step_leaves_the_older_objects_out_of_its_garbage_collections():
    """Python's full collections scan every object a process holds; a step freezes those it
    found (Dagster's, the definitions') and unfreezes them when it ends."""
    during = []

    @level_asset(dataclasses.replace(LEVEL, partitions_def=None))
    def sheet_rows() -> None:
        during.append(gc.get_freeze_count())

    assert dg.materialize([sheet_rows]).success
    assert during[0] > 10_000
    assert gc.get_freeze_count() == 0  # nothing is kept that a collection would free


def test_openmp_threads_wait_passively_unless_the_user_says_otherwise():
    """Set by the settings when a command starts (and when Dagster loads the definitions),
    before anything imports torch: spinning OpenMP threads took the embedded model's CPU in
    the demo build."""
    env = {k: v for k, v in os.environ.items() if k != "OMP_WAIT_POLICY"}

    def policy(extra: dict) -> str:
        probe = ("import os, sys; from glan_assets.cli import main; main(['diagram'], standalone_mode=False); "
                 "print(os.environ['OMP_WAIT_POLICY'], 'torch' in sys.modules)")
        return subprocess.run([sys.executable, "-c", probe], env=env | extra, capture_output=True, text=True,
                              check=True).stdout.splitlines()[-1]

    assert policy({}) == "PASSIVE False"
    assert policy({"OMP_WAIT_POLICY": "ACTIVE"}) == "ACTIVE False"


def test_the_command_line_starts_without_torch():
    """`glan build` and each of its runs' processes import the CLI's modules; torch, imported
    with them, had been a second of every build's start. Steps that need it import it."""
    probe = "import sys, glan_assets.cli, glan_assets.definitions; print(sorted({'torch', 'transformers', 'peft'} & set(sys.modules)))"
    loaded = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True, check=True).stdout.strip()
    assert loaded == "[]"


def test_level_modules_do_not_import_each_other():
    """Upstream levels are named by key, so a level module imports no other level."""
    package = Path(glan.__file__).parent
    names = {m.__name__.rsplit(".", 1)[1] for m in (*glan.MODULES, *glan.METHOD.on_demand)}
    for name in names:
        tree = ast.parse((package / f"{name}.py").read_text())
        imported = {n.module for n in ast.walk(tree) if isinstance(n, ast.ImportFrom) and n.module}
        assert not {f"glan_assets.glan.{other}" for other in names} & imported, name


def test_resources_never_import_the_assets():
    for path in (Path(__file__).parent.parent / "resources").glob("*.py"):
        tree = ast.parse(path.read_text())
        imported = {n.module or "" for n in ast.walk(tree) if isinstance(n, ast.ImportFrom)}
        imported |= {a.name for n in ast.walk(tree) if isinstance(n, ast.Import) for a in n.names}
        assert not [m for m in imported if m.startswith("glan_assets")], path.name
