"""Every input of the training set is in its version: each change below makes the plan say
"settings changed", and `glan build` applies it from stored rows, with no LLM call."""

import json

import dagster as dg

from glan_assets.build import build, plan_build, train
from glan_assets.definitions import defs
from glan_assets.plan import CONFIG
from glan_assets.training.schemas import RemovedPairRow, TrainingPairRow
from resources.storage import DuckDBStore


def _set(project, monkeypatch, var: str, value: str) -> None:
    project.env[var] = value
    monkeypatch.setenv(var, value)  # `train` resolves the settings from the environment


def _rebuild_training_set(project, fake_llm, expect: str = CONFIG, rescored: bool = False) -> None:
    plan = plan_build(project.instance, project.resources(), until="training_set")
    # Nothing generated is stale; the caps also re-score (the quality levels score what they let through).
    assert {(p.levels, p.reason) for p in plan.partitions} == ({(("glan_quality",), CONFIG)} if rescored else set())
    assert [(s.asset, s.reason) for s in plan.training] == [("training_set", expect)]
    calls = len(fake_llm.requests)
    assert all(s.success for s in build(project.instance, plan.partitions, workers=1))
    assert all(r.success for _, r in train(project.instance, plan.training, None, build_id="again") if r)
    assert len(fake_llm.requests) == calls  # curated again from stored rows
    assert plan_build(project.instance, project.resources(), until="training_set").training == []


def test_each_training_input_makes_the_training_set_stale_and_is_applied(project, fake_llm, monkeypatch):
    _set(project, monkeypatch, "GLAN_HELDOUT_PER_DISCIPLINE", "1")
    first = plan_build(project.instance, project.resources(), until="training_set")
    assert all(s.success for s in build(project.instance, first.partitions, workers=1))
    assert all(r.success for _, r in train(project.instance, first.training, None, build_id="first") if r)
    store = DuckDBStore(path=str(project.db))
    pairs = store.read(TrainingPairRow)
    assert {p.split for p in pairs} == {"train", "test"}

    # A benchmark file the user adds: the planted question leaves the release.
    planted = next(p for p in pairs if p.split == "train")
    bench = project.root / "benchmarks.jsonl"
    bench.write_text(json.dumps({"id": "planted-1", "question": planted.instruction}) + "\n")
    _set(project, monkeypatch, "GLAN_BENCHMARKS", str(bench))
    _rebuild_training_set(project, fake_llm)
    assert planted.pair_id not in {p.pair_id for p in store.read(TrainingPairRow)}
    assert (planted.pair_id, "contaminated") in {(r.pair_id, r.reason) for r in store.read(RemovedPairRow)}

    # The same file edited in place: by content, not by path.
    bench.write_text(json.dumps({"id": "other", "question": "An unrelated benchmark question about tides."}) + "\n")
    _rebuild_training_set(project, fake_llm)
    assert planted.pair_id in {p.pair_id for p in store.read(TrainingPairRow)}

    _set(project, monkeypatch, "GLAN_HELDOUT_PER_DISCIPLINE", "0")
    _rebuild_training_set(project, fake_llm)
    assert {p.split for p in store.read(TrainingPairRow)} == {"train"}

    _set(project, monkeypatch, "GLAN_SOURCE_CAPS", "glan=1")
    _rebuild_training_set(project, fake_llm, rescored=True)
    per_subject = [p.subject_name for p in store.read(TrainingPairRow)]
    assert len(per_subject) == len(set(per_subject)) < len(pairs)

    _set(project, monkeypatch, "GLAN_NEAR_DUP_THRESHOLD", "0.95")
    _rebuild_training_set(project, fake_llm)
    _set(project, monkeypatch, "GLAN_CONTAMINATION_NGRAM", "8")
    _rebuild_training_set(project, fake_llm)


def test_a_stage_setting_makes_only_its_level_and_below_stale(project, fake_llm, monkeypatch):
    assert all(s.success for s in project.build())
    _set(project, monkeypatch, "GLAN_QUESTIONS_PER_SYLLABUS", "3")
    plan = project.plan()
    assert {(p.levels[0], p.reason) for p in plan.partitions} == {("questions", CONFIG)}
    assert all(p.levels == ("questions", "answers") for p in plan.partitions)


def _ui_view(project, monkeypatch, var: str, value: str) -> dg.Definitions:
    """The definitions `dagster dev` loads after the user sets `var` and reloads."""
    _set(project, monkeypatch, var, value)
    return defs()


def test_the_ui_and_its_automation_see_a_changed_setting_as_the_plan_does(project, fake_llm, monkeypatch):
    before = _ui_view(project, monkeypatch, "GLAN_HELDOUT_PER_DISCIPLINE", "1")
    first = plan_build(project.instance, project.resources(), until="training_set")
    assert all(s.success for s in build(project.instance, first.partitions, workers=1))
    assert all(r.success for _, r in train(project.instance, first.training, None, build_id="first") if r)
    key = dg.AssetKey("training_set")
    evaluated = dg.evaluate_automation_conditions(defs=before, instance=project.instance)
    assert evaluated.get_num_requested(key) == 0

    after = _ui_view(project, monkeypatch, "GLAN_HELDOUT_PER_DISCIPLINE", "0")
    specs = {s.key: s.code_version for s in after.resolve_all_asset_specs()}
    old = {s.key: s.code_version for s in before.resolve_all_asset_specs()}
    assert {k for k in specs if specs[k] != old[k]} == {key}  # the UI marks exactly it stale
    evaluated = dg.evaluate_automation_conditions(defs=after, instance=project.instance, cursor=evaluated.cursor)
    assert evaluated.get_num_requested(key) == 1
    assert [(s.asset, s.reason) for s in plan_build(project.instance, project.resources(), until="training_set").training] == [
        ("training_set", CONFIG)
    ]
