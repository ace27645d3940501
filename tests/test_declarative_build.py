"""`glan build` builds only what is missing or stale, and a build with nothing to do runs nothing.

Counted in the Dagster instance: materializations per asset partition, and runs.
"""

import shutil
import subprocess
import sys
from collections import Counter
from pathlib import Path

import dagster as dg

from glan_assets.glan.method import LEVELS
from glan_assets.glan.schemas import AnswerRow
from glan_assets.plan import CODE, CONFIG, NEW, NODE
from resources.storage import DuckDBStore

GLAN = [lv.name for lv in LEVELS]
REPO = Path(__file__).resolve().parent.parent


def materializations(instance: dg.DagsterInstance) -> Counter:
    """(asset, partition) -> how many times it was materialized."""
    counts: Counter = Counter()
    for name in GLAN:
        for record in instance.fetch_materializations(dg.AssetKey(name), limit=10_000).records:
            counts[name, record.asset_materialization.partition] += 1
    return counts


def built_since(before: Counter, after: Counter) -> set[tuple[str, str]]:
    return {key for key in after if after[key] > before.get(key, 0)}


def test_adding_a_discipline_materializes_only_its_partitions(project, fake_llm):
    project.build()
    before = materializations(project.instance)
    project.add_discipline("Optics")

    plan = project.plan()
    assert [(p.key, p.reason, p.levels) for p in plan.partitions] == [("Optics", NEW, tuple(GLAN))]
    project.build()

    assert built_since(before, materializations(project.instance)) == {(name, "Optics") for name in GLAN}


def test_a_build_with_nothing_changed_launches_no_run(project, fake_llm):
    project.build()
    runs = len(project.instance.get_runs())
    before = materializations(project.instance)
    fake_llm.requests.clear()

    assert project.plan().partitions == []
    assert project.build() == []

    assert len(project.instance.get_runs()) == runs
    assert materializations(project.instance) == before
    assert fake_llm.requests == []


def test_an_edited_node_rebuilds_that_discipline_from_its_taxonomy_levels(project, fake_llm):
    project.build()
    before = materializations(project.instance)
    project.taxonomy.write_text(
        project.taxonomy.read_text().replace("- name: Astronomy\n", "- name: Astronomy\n            description: stars\n")
    )

    plan = project.plan()
    assert [(p.key, p.reason, p.levels[0]) for p in plan.partitions] == [("Astronomy", NODE, "fields")]
    fake_llm.requests.clear()
    project.build()

    assert built_since(before, materializations(project.instance)) == {(name, "Astronomy") for name in GLAN}
    assert fake_llm.requests == []  # the description is not in any prompt: all from the cache
    assert project.plan().partitions == []


def test_a_removed_discipline_keeps_its_rows_until_pruned(project, fake_llm):
    project.build()
    store = DuckDBStore(path=str(project.db))
    before = materializations(project.instance)
    project.taxonomy.write_text(project.taxonomy.read_text().replace("          - name: Astronomy\n", ""))

    plan = project.plan()
    assert plan.partitions == [] and plan.methods[0].removed == ["Astronomy"]
    assert store.read(AnswerRow, "Astronomy"), "nothing is deleted without --prune"

    pruned = project.plan(prune=True)
    assert pruned.methods[0].removed == ["Astronomy"]
    assert store.read(AnswerRow, "Astronomy") == [] and store.read(AnswerRow, "Physics")
    assert "Astronomy" not in project.instance.get_dynamic_partitions("discipline")
    assert materializations(project.instance) == before


def test_a_changed_count_rebuilds_from_the_level_that_uses_it(project, fake_llm, monkeypatch):
    project.build()
    before = materializations(project.instance)
    project.env["GLAN_QUESTIONS_PER_SYLLABUS"] = "3"  # the plan's settings
    monkeypatch.setenv("GLAN_QUESTIONS_PER_SYLLABUS", "3")  # the runs'
    fake_llm.requests.clear()

    plan = project.plan()
    assert {(p.key, p.levels[0], p.reason) for p in plan.partitions} == {
        ("Physics", "questions", CONFIG), ("Astronomy", "questions", CONFIG)
    }
    project.build()

    built = built_since(before, materializations(project.instance))
    assert built == {(level, key) for level in ("questions", "answers") for key in ("Physics", "Astronomy")}
    asked = [p for p in fake_llm.prompts() if "homework question" in p]
    assert len(asked) == 4  # one new question per syllabus; the others came from the cache


def test_force_rebuilds_the_named_discipline_through_the_cache(project, fake_llm):
    project.build()
    before = materializations(project.instance)
    fake_llm.requests.clear()

    (summary,) = project.build("Physics", force=True)

    assert summary.success
    assert built_since(before, materializations(project.instance)) == {(name, "Physics") for name in GLAN}
    assert fake_llm.requests == []


def edited_checkout(tmp_path: Path) -> Path:
    """A copy of the code with the answer prompt edited, as a user edits it."""
    copy = tmp_path / "checkout"
    for package in ("glan_assets", "resources"):
        shutil.copytree(REPO / package, copy / package, ignore=shutil.ignore_patterns("__pycache__"))
    prompts = copy / "glan_assets" / "glan" / "prompts.py"
    text = prompts.read_text()
    old = '"You are a knowledgeable and helpful assistant. Answer the question fully."'
    assert old in text
    prompts.write_text(text.replace(old, '"You are a knowledgeable and helpful assistant. Answer the question fully and concisely."'))
    return copy


def glan_build(env: dict, code: Path, *args: str) -> str:
    return subprocess.run(
        [sys.executable, "-m", "glan_assets.cli", "build", "--until", "answers", *args],
        env=env | {"PYTHONPATH": str(code)}, cwd=code, capture_output=True, text=True, check=True,
    ).stdout


def test_a_prompt_edit_rebuilds_that_level_and_nothing_above(project, fake_llm, tmp_path):
    env = project.subprocess_env()
    glan_build(env, REPO)
    before = materializations(dg.DagsterInstance.from_config(str(project.dagster_home)))

    edited = edited_checkout(tmp_path)
    plan = glan_build(env, edited, "--dry-run")
    assert f"build  Physics: answers .. answers ({CODE})" in plan
    assert f"build  Astronomy: answers .. answers ({CODE})" in plan
    glan_build(env, edited)

    after = materializations(dg.DagsterInstance.from_config(str(project.dagster_home)))
    assert built_since(before, after) == {("answers", "Physics"), ("answers", "Astronomy")}
    assert "up to date: 2 discipline(s)" in glan_build(env, edited, "--dry-run")
