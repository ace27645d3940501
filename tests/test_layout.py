"""A level is declared once: a new one is a module and one registering line, and lineage,
checks, settings, the plan and the build pick it up from its declaration.

The toy level here summarises each answer in one LLM call; registering it is what
`glan_assets/glan/__init__.py` does with one line (`MODULES = [..., summaries]`).
"""

import ast
import dataclasses
import gc
import os
import subprocess
import sys
from pathlib import Path
from typing import ClassVar

import dagster as dg
import pytest

from glan_assets import glan, registry, stages
from glan_assets.build import build, plan_build
from glan_assets.checks import all_checks
from glan_assets.glan.partitions import discipline_partitions
from glan_assets.glan.schemas import AnswerRow, DisciplineTableRow
from glan_assets.ids import stable_id
from glan_assets.levels import Level, level_asset
from glan_assets.lineage import chain
from glan_assets.prompting import Prompt
from glan_assets.results import store_partition
from glan_assets.settings import Settings
from glan_assets.stages import Request, Stage
from resources.llm import LLMResource, Sampling
from resources.storage import DuckDBStore

SUMMARY = Prompt("summary", "You summarise answers in one sentence.", "Summarise: {answer}")
SUMMARISE = Stage("summaries", (SUMMARY,), Sampling(temperature=0.0, max_tokens=64))


class SummaryRow(DisciplineTableRow):
    table: ClassVar[str] = "summaries"
    id_column: ClassVar[str] = "summary_id"
    parent_column: ClassVar[str | None] = "answer_id"
    summary_id: str
    answer_id: str
    discipline: str
    summary: str


LEVEL = Level(
    "summaries", SummaryRow, id_prefix="sum", method="glan", group="generation",
    description="A one-sentence summary of each answer.", parent="answers", stages=(SUMMARISE,),
    dedup_column="summary", label="summary", partitions_def=discipline_partitions,
)


@level_asset(LEVEL)
def summaries(context: dg.AssetExecutionContext, llm: LLMResource, store: DuckDBStore) -> dg.MaterializeResult:
    answers = store.read(AnswerRow, context.partition_key)
    batch = stages.run(llm, SUMMARISE, [Request(a.answer_id, SUMMARY.messages(answer=a.answer)) for a in answers])
    rows = [SummaryRow(summary_id=stable_id(LEVEL.id_prefix, r.request.item_id), answer_id=r.request.item_id,
                       discipline=context.partition_key, summary=r.text) for r in batch.replies if r.ok]
    return store_partition(context, store, LEVEL, rows, {SUMMARISE.name: batch})


@pytest.fixture
def registered():
    """The one registering line, as the method's package would have it."""
    at = [m.name for m in registry.METHODS].index(glan.METHOD.name)
    method = registry.METHODS[at]
    registry.METHODS[at] = dataclasses.replace(method, levels=(*method.levels, LEVEL),
                                               modules=(*method.modules, sys.modules[__name__]))
    registry.LEVELS.append(LEVEL)
    yield
    registry.LEVELS.remove(LEVEL)
    registry.METHODS[at] = method


def test_a_new_level_is_built_checked_traced_and_configured_from_its_declaration(registered, project, fake_llm,
                                                                                  monkeypatch):
    monkeypatch.setenv("GLAN_SUMMARIES_MODEL", "summariser")  # its settings exist because it declared a stage
    assert Settings.from_env().llm().stages["summaries"].model == "summariser"
    assert "summaries_checks" in {c.node_def.name for c in all_checks(registry.LEVELS)}

    plan = plan_build(project.instance, project.resources(), only={"discipline": ["Physics", "Astronomy"]},
                      until="training_set")
    assert [p.levels[-1] for p in plan.partitions] == ["summaries", "summaries"]
    assert all(s.success for s in build(project.instance, plan.partitions, workers=1))

    store = DuckDBStore(path=str(project.db))
    (row, *_) = store.read(SummaryRow, "Physics")
    tables = [type(r).table for r in chain(store, row.summary_id, registry.LEVELS)]
    assert tables == ["summaries", "answers", "questions", "sessions", "syllabi", "subjects", "disciplines", "fields"]
    assert [r["model"] for r in fake_llm.requests if "Summarise" in r["messages"][-1]["content"]][0] == "summariser"


def test_a_levels_step_leaves_the_older_objects_out_of_its_garbage_collections():
    """Python's full collections scan every object a process holds; a step freezes those it
    found (Dagster's, the definitions') and unfreezes them when it ends."""
    during = []

    @level_asset(dataclasses.replace(LEVEL, partitions_def=None))
    def summaries() -> None:
        during.append(gc.get_freeze_count())

    assert dg.materialize([summaries]).success
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
    names = {m.__name__.rsplit(".", 1)[1] for m in (*glan.MODULES, *glan.ON_DEMAND)}
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
