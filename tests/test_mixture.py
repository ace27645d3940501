"""The training set draws from every source: GLAN answers, Dynosaur instances and UIT unified
instances, each pair with its `source` and its origin row's id, under per-source caps."""

import json
import os

import dagster as dg
import pytest
from click.testing import CliRunner

from glan_assets.build import build, plan_build, train
from glan_assets.cli import main
from glan_assets.dynosaur.schemas import DatasetMetadataRow, InstanceRow, TaskRow
from glan_assets.ids import stable_id
from glan_assets.lineage import chain
from glan_assets.plan import UPSTREAM
from glan_assets.registry import LEVELS, TRAINING, resources_from_env
from glan_assets.settings import SettingsError
from glan_assets.training.release import export_dataset
from glan_assets.training.resources import TrainingSettings
from glan_assets.training.schemas import TrainingPairRow
from glan_assets.uit.schemas import RawInstructionRow, UnifiedRow
from resources.storage import DuckDBStore, Slice
from tests.training_rows import QUALITY_ASSETS, materialize_training, teaching_pairs, write_answered_questions

training_set = TRAINING.training_set

os.environ.setdefault("HF_HUB_OFFLINE", "1")

CHAT = [
    {"role": "system", "content": "You are a patient tutor."},
    {"role": "user", "content": "What is a prime number?"},
    {"role": "assistant", "content": "A whole number above one whose only divisors are one and itself."},
    {"role": "user", "content": "Is nine one of them?"},
    {"role": "assistant", "content": "No: nine is three times three."},
]


def words(prefix: str, i: int) -> str:
    """Words no other row has, so the rows of a task are not near duplicates of each other."""
    return " ".join(f"{prefix}{i}{c}" for c in "abcdef")


def write_dataset(store: DuckDBStore, dataset: str, tasks: int, rows: int) -> list[InstanceRow]:
    """A Dynosaur dataset's rows as its levels leave them: metadata, `tasks` tasks, `rows` instances each."""
    meta = DatasetMetadataRow(
        dataset_id=stable_id("dset", dataset), dataset=dataset, path=f"{dataset}.csv", format="csv",
        description="", license="CC0-1.0", source_url="", citation="", row_count=rows,
        columns=json.dumps([{"name": "text", "type": "VARCHAR"}, {"name": "label", "type": "VARCHAR"}]),
        skipped_columns=[], sample_rows="[]", source_version="1",
    )
    task_rows = [
        TaskRow(task_id=stable_id("dtask", meta.dataset_id, t), dataset_id=meta.dataset_id, dataset=dataset,
                task_index=t + 1, instruction=f"Task {t} of {dataset}: label the text.", input_fields=["text"],
                output_field="label", llm_calls=1, model="test-model")
        for t in range(tasks)
    ]
    instances = [
        InstanceRow(instance_id=stable_id("dinst", task.task_id, i), task_id=task.task_id, dataset=dataset,
                    instruction=task.instruction, input=f"text: {words(dataset[:3] + str(t), i)}",
                    output=f"label {i % 2}", source_row=i, license="CC0-1.0", source_url="")
        for t, task in enumerate(task_rows)
        for i in range(rows)
    ]
    where = {"dataset": dataset}
    store.replace([Slice(DatasetMetadataRow, [meta], where), Slice(TaskRow, task_rows, where),
                   Slice(InstanceRow, instances, where)])
    return instances


def write_collection(store: DuckDBStore, collection: str, rows: int) -> list[UnifiedRow]:
    """A UIT collection as its levels leave it: one Alpaca-style task of `rows` instances, and one chat."""
    raw, unified = [], []
    for i in range(rows + 1):
        chat = i == rows
        task_id = stable_id("utask", collection, "chat" if chat else "define")
        r = RawInstructionRow(
            raw_id=stable_id("uraw", collection, f"data.jsonl:{i}"), task_id=task_id, collection=collection,
            task="chat" if chat else "define", instruction=CHAT[1]["content"] if chat else "Define the word.",
            input="" if chat else f"word: {words('uit', i)}", output=CHAT[2]["content"] if chat else f"meaning {i}",
            source_format="sharegpt" if chat else "alpaca", source_row=f"data.jsonl:{i}",
            turns=json.dumps(CHAT) if chat else "[]", license="MIT",
        )
        raw.append(r)
        candidate_id = stable_id("ucand", task_id, "definition", 0)
        unified.append(
            UnifiedRow(unified_id=stable_id("uni", r.raw_id, candidate_id), raw_id=r.raw_id, candidate_id=candidate_id,
                       task_id=task_id, collection=collection, task=r.task,
                       instruction="Answer the question." if chat else "Give the meaning of the word.",
                       input=r.instruction if chat else r.input, output=r.output, turns=r.turns,
                       source_format=r.source_format, license="MIT")
        )
    where = {"collection": collection}
    store.replace([Slice(RawInstructionRow, raw, where), Slice(UnifiedRow, unified, where)])
    return unified


def fill_three_sources(store: DuckDBStore) -> None:
    write_answered_questions(store, "Physics", teaching_pairs("Physics"))  # 8 pairs, one subject
    write_dataset(store, "reviews", tasks=2, rows=12)
    write_collection(store, "alpaca_mini", rows=6)


def build_training_set(store: DuckDBStore, instance: dg.DagsterInstance | None = None, **settings):
    training = TrainingSettings(benchmarks=[], heldout_per_discipline=1, **settings)
    return materialize_training([training_set], store, training, instance or dg.DagsterInstance.ephemeral(),
                                raise_on_error=False)


def metadata_of(result: dg.ExecuteInProcessResult) -> dict:
    (event,) = result.get_asset_materialization_events()
    return {k: v.value for k, v in event.materialization.metadata.items()}


@pytest.fixture
def store(tmp_path) -> DuckDBStore:
    return DuckDBStore(path=str(tmp_path / "glan.duckdb"))


def test_every_level_that_declares_pairs_is_a_source_upstream_of_the_training_set():
    declared = {lv.name for lv in LEVELS if lv.training_pairs}
    assert declared == {lv.name for lv in TRAINING.sources.levels} == {"answers", "dynosaur_instances", "instructions_unified"}
    scored = {"glan_quality", "dynosaur_quality", "uit_quality"}  # each source's quality level
    assert set(TRAINING.level.deps) == declared | scored  # what `glan build` and `sources_version` follow
    for name in declared | scored:
        assert isinstance(training_set.get_partition_mapping(dg.AssetKey(name)), dg.AllPartitionMapping)


def test_the_mixture_takes_all_three_sources_each_with_its_source_and_origin(store, tmp_path):
    fill_three_sources(store)
    result = build_training_set(store, source_caps={})
    assert result.success
    pairs = store.read(TrainingPairRow)
    prefixes = {"glan": "ans_", "dynosaur": "dinst_", "uit": "uni_"}
    assert {p.source for p in pairs} == set(prefixes)
    assert all(p.source_id.startswith(prefixes[p.source]) for p in pairs)
    groups = {(p.source, p.group_name) for p in pairs}
    assert groups == {("glan", "Physics"), ("dynosaur", "reviews"), ("uit", "alpaca_mini")}
    # The split is drawn per group: one held-out pair of each discipline, dataset and collection.
    assert sorted((p.source, p.group_name) for p in pairs if p.split == "test") == sorted(groups)
    meta = metadata_of(result)
    assert (meta["pairs_glan"], meta["pairs_dynosaur"], meta["pairs_uit"]) == (8, 24, 7)
    assert meta["mixture"]["dynosaur"] == {
        "available": 24, "capped_away": 0, "taken": 24, "cap_per_task": None, "removed": 0, "train": 23, "test": 1,
    }
    assert "| dynosaur | reviews | - | 24 | 0 | 0 | 0 | 0 | 23 | 1 |" in meta["per_group"]
    # A Dynosaur pair's instruction is its task's instruction over the row's input.
    dyn = next(p for p in pairs if p.source == "dynosaur")
    (origin,) = store.read(InstanceRow, where="instance_id = ?", params=[dyn.source_id])
    assert dyn.instruction == f"{origin.instruction}\n\n{origin.input}" and dyn.response == origin.output

    paths = export_dataset(store, tmp_path / "release", levels=LEVELS, sources=TRAINING.sources)
    rows = [json.loads(line) for s in ("train", "test") for line in paths[s].read_text().splitlines()]
    chat = next(r for r in rows if r["source"] == "uit" and len(r["messages"]) > 2)
    assert chat["messages"] == CHAT  # a multi-turn chat keeps every turn
    plain = next(r for r in rows if r["source"] == "uit" and r is not chat)
    assert plain["messages"] == [{"role": "user", "content": plain["instruction"]},
                                 {"role": "assistant", "content": plain["response"]}]
    card = paths["card"].read_text()
    assert "| source | train | test | removed |" in card
    for line in ("| dynosaur | 23 | 1 | 0 |", "| glan | 7 | 1 | 0 |", "| uit | 6 | 1 | 0 |"):
        assert line in card
    assert "| dynosaur | - | reviews (dataset) | 23 | 1 |" in card and "| uit | - | alpaca_mini (collection) |" in card


def test_per_source_caps_hold_per_task_and_keep_their_picks(store):
    fill_three_sources(store)
    assert TrainingSettings().source_caps == {"dynosaur": 500}  # the default caps Dynosaur per task

    meta = metadata_of(build_training_set(store, source_caps={"dynosaur": 5, "uit": 0}))
    pairs = store.read(TrainingPairRow)
    assert (meta["pairs_glan"], meta["pairs_dynosaur"], meta["pairs_uit"]) == (8, 10, 0)
    task_of = {r.instance_id: r.task_id for r in store.read(InstanceRow)}
    per_task: dict[str, int] = {}
    for p in pairs:
        if p.source == "dynosaur":
            per_task[task_of[p.source_id]] = per_task.get(task_of[p.source_id], 0) + 1
    assert sorted(per_task.values()) == [5, 5]  # 5 of each task's 12
    assert meta["mixture"]["dynosaur"]["capped_away"] == 14 and meta["mixture"]["uit"]["capped_away"] == 7
    picked = {p.source_id for p in pairs if p.source == "dynosaur"}

    build_training_set(store, source_caps={"dynosaur": 5, "uit": 0})  # a rebuild picks the same rows
    assert {p.source_id for p in store.read(TrainingPairRow) if p.source == "dynosaur"} == picked
    build_training_set(store, source_caps={"dynosaur": 8, "glan": 3})  # a larger cap keeps them and adds more
    pairs = store.read(TrainingPairRow)
    assert picked < {p.source_id for p in pairs if p.source == "dynosaur"}
    assert sum(p.source == "glan" for p in pairs) == 3 and sum(p.source == "uit" for p in pairs) == 7

    failed = build_training_set(store, source_caps={"flan": 3})
    assert not failed.success
    assert "unknown source(s) flan" in str(failed.get_step_failure_events()[0].event_specific_data.error)


def test_source_caps_come_from_the_environment():
    assert resources_from_env({"GLAN_SOURCE_CAPS": "dynosaur=2000, uit=0"})["training"].source_caps == {
        "dynosaur": 2000, "uit": 0,
    }
    assert resources_from_env({"GLAN_SOURCE_CAPS": ""})["training"].source_caps == {}
    assert resources_from_env({})["training"].source_caps == {"dynosaur": 500}
    with pytest.raises(SettingsError, match="unknown source 'flan'; the sources are dynosaur, glan, uit"):
        resources_from_env({"GLAN_SOURCE_CAPS": "flan=10"})
    for bad in ("dynosaur", "dynosaur=many", "uit=-1"):
        with pytest.raises(SettingsError, match="GLAN_SOURCE_CAPS"):
            resources_from_env({"GLAN_SOURCE_CAPS": bad})


def test_glan_lineage_leads_a_dynosaur_pair_and_a_uit_pair_to_their_origin(project):
    store = DuckDBStore(path=str(project.db))
    fill_three_sources(store)
    assert build_training_set(store, source_caps={}).success
    pairs = store.read(TrainingPairRow)
    dyn = next(p for p in pairs if p.source == "dynosaur")
    uit = next(p for p in pairs if p.source == "uit" and p.turns == "[]")

    assert [type(r).table for r in chain(store, dyn.pair_id, LEVELS)] == [
        "training_set", "dynosaur_instances", "dynosaur_tasks", "dataset_metadata"
    ]
    uit_chain = chain(store, uit.pair_id, LEVELS)
    assert [type(r).table for r in uit_chain] == ["training_set", "instructions_unified", "instructions_raw"]
    assert uit_chain[2].collection == "alpaca_mini" and uit_chain[2].source_row.startswith("data.jsonl:")

    runner = CliRunner()
    out = runner.invoke(main, ["lineage", dyn.pair_id])
    assert out.exit_code == 0, out.output
    assert [line.split()[0] for line in out.output.splitlines()] == ["pair", "instance", "task", "dataset"]
    assert dyn.source_id in out.output.splitlines()[1] and "dataset=reviews" in out.output.splitlines()[-1]
    out = runner.invoke(main, ["lineage", uit.pair_id])
    assert out.exit_code == 0, out.output
    lines = out.output.splitlines()
    assert lines[1].split()[:3] == ["unified", "instance", uit.source_id + ":"]
    assert lines[2].split()[:2] == ["raw", "instance"] and "collection=alpaca_mini" in lines[2]


RECIPES_CSV = "dish,cuisine\nramen,japanese\npaella,spanish\ntacos,mexican\n"


def test_adding_a_dataset_makes_the_training_set_stale_and_nothing_else(project, fake_llm):
    project.taxonomy.write_text(project.taxonomy.read_text().replace("          - name: Astronomy\n", ""))
    first = plan_build(project.instance, project.resources(), until="training_set")
    assert all(s.success for s in build(project.instance, first.partitions, workers=1))
    assert all(r.success for _, r in train(project.instance, first.training, None, build_id="first") if r)
    assert plan_build(project.instance, project.resources(), until="training_set").training == []  # up to date
    store = DuckDBStore(path=str(project.db))
    glan_pairs = {p.pair_id: p.split for p in store.read(TrainingPairRow)}

    (project.root / "recipes.csv").write_text(RECIPES_CSV)
    (project.root / "datasets.yaml").write_text("datasets:\n  - name: recipes\n    path: recipes.csv\n")
    plan = plan_build(project.instance, project.resources(), until="training_set")

    assert [(m.method.name, p.key, p.reason) for m in plan.methods for p in m.partitions] == [
        ("dynosaur", "recipes", "new")
    ]
    assert [(s.asset, s.reason) for s in plan.training] == [("training_set", UPSTREAM)]

    assert all(s.success for s in build(project.instance, plan.partitions, workers=1))
    assert all(r.success for _, r in train(project.instance, plan.training, None, build_id="second") if r)
    after = store.read(TrainingPairRow)
    assert {p.source for p in after} == {"glan", "dynosaur"}
    assert {p.pair_id: p.split for p in after if p.source == "glan"} == glan_pairs  # the GLAN split is kept
    assert plan_build(project.instance, project.resources(), until="training_set").training == []


def test_the_training_set_follows_new_dataset_and_collection_partitions(project):
    from glan_assets.dynosaur.instances import dynosaur_instances
    from glan_assets.glan.answers import answers
    from glan_assets.uit.unified import instructions_unified

    instance = dg.DagsterInstance.ephemeral()
    defs = dg.Definitions(assets=[answers, dynosaur_instances, instructions_unified, *QUALITY_ASSETS, training_set],
                          resources=project.resources())
    cursor = dg.evaluate_automation_conditions(defs=defs, instance=instance).cursor
    for partitions, method, asset, key in (("dataset", "dynosaur", "dynosaur_instances", "reviews"),
                                           ("collection", "uit", "instructions_unified", "alpaca_mini")):
        instance.add_dynamic_partitions(partitions, [key])
        for level in (asset, f"{method}_quality"):  # the sensor's run: the levels, then the quality level
            instance.report_runless_asset_event(dg.AssetMaterialization(level, partition=key))
        result = dg.evaluate_automation_conditions(defs=defs, instance=instance, cursor=cursor)
        assert result.get_num_requested(training_set.key) == 1, asset
        instance.report_runless_asset_event(dg.AssetMaterialization("training_set"))  # the requested run
        cursor = dg.evaluate_automation_conditions(defs=defs, instance=instance, cursor=result.cursor).cursor


def test_a_training_table_of_the_older_layout_is_replaced(store):
    with store.connect() as con:  # as the GLAN-only training set left it: answer_id and discipline
        con.execute("CREATE TABLE training_set (pair_id VARCHAR NOT NULL, answer_id VARCHAR NOT NULL, "
                    "discipline VARCHAR NOT NULL, instruction VARCHAR, response VARCHAR, split VARCHAR)")
        con.execute("INSERT INTO training_set VALUES ('pair_old', 'ans_old', 'Physics', 'q', 'a', 'train')")
    write_dataset(store, "reviews", tasks=1, rows=4)
    assert build_training_set(store).success
    assert {p.source for p in store.read(TrainingPairRow)} == {"dynosaur"}
