"""Dynosaur: the registry, the task filter, instance construction in SQL, and builds per
dataset through `glan build`'s plan with the fake endpoint."""

import json
import shutil
from pathlib import Path

import datasets
import dagster as dg
import duckdb
import pytest
from click.testing import CliRunner

from glan_assets import cli
from glan_assets.build import build, plan_build
from glan_assets.definitions import defs
from glan_assets.dynosaur.method import METHOD
from glan_assets.dynosaur.instances import LEVEL as INSTANCES
from glan_assets.dynosaur.instances import answer_labels, task_instances
from glan_assets.dynosaur.metadata import metadata_row
from glan_assets.dynosaur.prompts import shown_columns, task_messages
from glan_assets.dynosaur.registry_file import DEFAULT_REGISTRY, RegistryError, load_registry
from glan_assets.dynosaur.schemas import Column, DatasetMetadataRow, InstanceRow, ProposedTask, TaskRow, tasks_schema
from glan_assets.dynosaur.sources import DatasetError, open_source
from glan_assets.dynosaur.tasks import filter_tasks
from glan_assets.ids import stable_id
from glan_assets.lineage import chain, ensure_lineage_views
from glan_assets.rows import RejectRow
from glan_assets.registry import LEVELS, resources_from_env
from resources.storage import DuckDBStore

DEMO = DEFAULT_REGISTRY.parent


def write_registry(path: Path, entries: list[dict]) -> Path:
    lines = ["datasets:"]
    for e in entries:
        lines.append(f"  - name: {e['name']}")
        lines += [f"    {k}: {json.dumps(v)}" for k, v in e.items() if k != "name"]
    path.write_text("\n".join(lines) + "\n")
    return path


def entry_for(tmp_path: Path, name: str, filename: str, **fields):
    registry = write_registry(tmp_path / f"{name}.yaml", [{"name": name, "path": filename, **fields}])
    return load_registry(registry).entry(name)


def metadata_of(entry) -> DatasetMetadataRow:
    with open_source(entry) as source:
        return metadata_row(entry, source)


def task(meta: DatasetMetadataRow, inputs: list[str], output: str, instruction: str = "Do it.") -> TaskRow:
    return TaskRow(
        task_id=stable_id("dtask", meta.dataset_id, instruction, inputs, output), dataset_id=meta.dataset_id,
        dataset=meta.dataset, task_index=1, instruction=instruction, input_fields=inputs, output_field=output,
        llm_calls=1, model="m",
    )


def instances_of(entry, meta, t, max_chars=2000, cap=0):
    with open_source(entry) as source:
        return task_instances(source.con, meta, t, max_chars, cap)


# --- the registry ---------------------------------------------------------------------


def test_the_demo_registry_reads_three_shapes():
    registry = load_registry(DEFAULT_REGISTRY)
    assert {n: e.format for n, e in registry.entries.items()} == {
        "product_reviews": "hf", "capitals_qa": "jsonl", "headlines": "csv"
    }
    reviews = metadata_of(registry.entry("product_reviews"))
    # dataset_info.json supplies what the registry does not
    assert reviews.description.startswith("Short product reviews") and reviews.license == "CC0-1.0"
    assert reviews.source_url.startswith("https://") and reviews.citation
    assert {c.name: c.labels for c in reviews.text_columns()} == {"text": [], "label": ["negative", "positive"]}
    assert reviews.samples()[0]["label"] == "positive"  # a ClassLabel reads as its name
    assert metadata_of(registry.entry("headlines")).description == ""


@pytest.mark.parametrize(
    "text, message",
    [
        ("datasets:\n  - name: a\n", "(entry 1, 'a'): missing `path`"),
        ("datasets:\n  - name: a\n    path: x.csv\n  - name: a\n    path: y.csv\n", ":4 (entry 2, 'a'): duplicate name"),
        ("datasets:\n  - path: x.csv\n", "(entry 1): missing `name`"),
        ("datasets: {}\n", "key `datasets` holds a list"),
        ("datasets:\n  - name: a\n    path: x.txt\n", "cannot tell the format of 'x.txt'"),
        ("datasets:\n  - name: a\n    path: x.csv\n    licence: MIT\n", "unknown keys licence"),
        ("datasets:\n  - name: \"a\\tb\"\n    path: x.csv\n", "partition key"),
        ("datasets:\n  - name: a\n    path: x.csv\n    path: y.csv\n", ':4: YAML does not parse: found duplicate key "path"'),
    ],
)
def test_a_bad_registry_is_refused_naming_the_entry(tmp_path, text, message):
    path = tmp_path / "registry.yaml"
    path.write_text(text)
    with pytest.raises(RegistryError) as err:
        load_registry(path)
    assert str(path) in str(err.value) and message in str(err.value)


def test_a_missing_registry_file_is_a_clear_error(tmp_path):
    with pytest.raises(RegistryError, match="cannot read the dataset registry"):
        load_registry(tmp_path / "nope.yaml")


# --- reading sources ------------------------------------------------------------------


def test_bad_sources_name_the_dataset_and_entry(tmp_path):
    (tmp_path / "broken.parquet").write_bytes(b"not parquet at all")
    (tmp_path / "empty.csv").write_text("question,answer\n")
    (tmp_path / "single.jsonl").write_text('{"text": "a"}\n{"text": "b"}\n')
    cases = {
        "missing.csv": "does not exist",
        "broken.parquet": "cannot be read as parquet",
        "empty.csv": "has no rows",
        "single.jsonl": "has 1 text column(s) (text)",
    }
    for filename, message in cases.items():
        entry = entry_for(tmp_path, "bad", filename)
        with pytest.raises(DatasetError) as err:
            metadata_of(entry)
        assert "dataset 'bad'" in str(err.value) and "(entry 1, 'bad')" in str(err.value)
        assert message in str(err.value)


def test_nested_and_binary_columns_are_skipped_and_listed(tmp_path):
    duckdb.execute(
        f"COPY (SELECT 'q' || i AS question, 'a' || i AS answer, {{'x': i}} AS meta, 'abc'::BLOB AS raw, [i] AS ids "
        f"FROM range(3) t(i)) TO '{tmp_path / 'nested.parquet'}'"
    )
    meta = metadata_of(entry_for(tmp_path, "nested", "nested.parquet"))
    assert [c.name for c in meta.text_columns()] == ["question", "answer"]
    assert meta.skipped_columns == ["meta (STRUCT(x BIGINT))", "raw (BLOB)", "ids (BIGINT[])"]


def test_a_wide_long_dataset_keeps_the_prompt_bounded(tmp_path):
    cols = ", ".join(f"repeat('v', 3000) AS c{i}" for i in range(500))
    duckdb.execute(f"COPY (SELECT {cols} FROM range(2000)) TO '{tmp_path / 'wide.parquet'}'")
    meta = metadata_of(entry_for(tmp_path, "wide", "wide.parquet", description="x" * 100_000))
    assert meta.row_count == 2000 and len(meta.text_columns()) == 500
    prompt = "\n".join(m["content"] for m in task_messages(meta))
    assert len(prompt) < 9_000 and "(460 more columns not shown)" in prompt
    assert len(shown_columns(meta)) == 40


# --- the task call ----------------------------------------------------------------------


def test_the_reply_schema_enumerates_the_dataset_columns():
    """Per output column one variant whose inputs are the other columns: a constrained
    decoder can neither name a missing column nor use the output as an input."""
    columns = ["context", "the question", "answer"]
    schema = tasks_schema(columns).model_json_schema()
    variants = schema["properties"]["tasks"]["items"]["oneOf"]
    assert [v["properties"]["output_field"]["const"] for v in variants] == columns
    assert variants[2]["properties"]["input_fields"]["items"]["enum"] == ["context", "the question"]
    assert schema["properties"]["tasks"]["maxItems"] == 3


def test_a_wide_dataset_gets_plain_column_enums():
    columns = [f"c{i}" for i in range(40)]
    schema = tasks_schema(columns).model_json_schema()
    item = schema["$defs"]["DynosaurTask"]["properties"]
    assert item["output_field"]["enum"] == columns and item["input_fields"]["items"]["enum"] == columns


def test_the_filter_drops_planted_bad_tasks_with_their_reasons():
    def t(instruction, inputs, output):
        return ProposedTask(instruction=instruction, input_fields=inputs, output_field=output)

    proposed = [
        t("Answer the question from the context.", ["context", "question"], "answer"),  # kept
        t("   ", ["context"], "answer"),
        t("Guess the colour.", ["context"], "colour"),
        t("Repeat the answer.", ["answer", "question"], "answer"),
        t("answer the question  from the CONTEXT.", ["question"], "context"),
        t("Find the answer in the text.", ["question", "context"], "answer"),
        t("Write a question for this answer.", ["answer"], "question"),  # kept
        t("Write the context of this question.", ["question"], "context"),  # kept
        t("Write a question about the context.", ["context"], "question"),  # valid, but a 4th
    ]
    judged = filter_tasks(proposed, ["context", "question", "answer"])
    reasons = [r for _, r in judged]
    assert reasons[0] is None
    assert reasons[1] == "empty instruction"
    assert reasons[2].startswith("unknown field 'colour'")
    assert reasons[3] == "output field 'answer' is also an input"
    assert reasons[4] == "repeats the instruction of task 1"
    assert reasons[5] == "repeats the field choice of task 1"
    assert reasons[6:] == [None, None, "more than 3 valid tasks"]
    assert filter_tasks([t("Ask.", [], "question"), t("Ask.", ["answer"], "")], ["question", "answer"])[0][1] == "no input field"


# --- instances ------------------------------------------------------------------------


def test_instances_list_labels_cap_text_and_skip_missing_values(tmp_path):
    rows = [
        {"review text": "great " * 500, "select": "pos", "größe": "L"},
        {"review text": "bad", "select": "neg", "größe": None},
        {"review text": "", "select": "neg", "größe": "M"},
        {"review text": "fine", "select": None, "größe": "S"},
        {"review text": "ok", "select": "pos", "größe": "M"},
        {"review text": 'say "hi"', "select": "neg", "größe": "S"},
        {"review text": "meh", "select": "neg", "größe": "XL"},
    ]
    (tmp_path / "odd.jsonl").write_text("".join(json.dumps(r | {'the "note"': f"n{i}"}) + "\n" for i, r in enumerate(rows)))
    entry = entry_for(tmp_path, "odd", "odd.jsonl", license="MIT", source_url="https://example.org/odd")
    meta = metadata_of(entry)
    assert [c.name for c in meta.text_columns()] == ["review text", "select", "größe", 'the "note"']

    built = instances_of(entry, meta, task(meta, ["review text", "größe"], "select", "Classify."), max_chars=300)

    assert built.skipped == 3  # a NULL size, an empty review, a NULL label
    assert built.labels == ["neg", "pos"]
    by_row = {r.source_row: r for r in built.rows}
    assert sorted(by_row) == [0, 4, 5, 6]
    assert by_row[0].instruction == "Classify. Answers must be one of: neg, pos."
    assert by_row[0].input.startswith("review text: great great") and len(by_row[0].input) == 300
    assert by_row[5].input == 'review text: say "hi"\ngröße: S' and by_row[5].output == "neg"
    assert by_row[4].license == "MIT" and by_row[4].source_url == "https://example.org/odd"
    assert by_row[4].instance_id == stable_id("dinst", by_row[4].task_id, 4)  # the SQL id is the stable id
    # free text (unique values) gets no label list
    free = instances_of(entry, meta, task(meta, ['the "note"'], "review text"))
    assert free.labels == [] and all("Answers must be" not in r.instruction for r in free.rows)
    assert {r.source_row: r.input for r in free.rows}[1] == 'the "note": n1'


def test_answer_labels_need_few_short_repeated_values():
    plain = Column(name="y", type="VARCHAR")
    assert answer_labels(plain, ["b", "a"], usable=4) == ["a", "b"]
    assert answer_labels(plain, ["a", "b", "c"], usable=3) == []  # each value once: not labels
    assert answer_labels(plain, [str(i) for i in range(11)], usable=1000) == []
    assert answer_labels(plain, ["a" * 41, "b"], usable=100) == []
    assert answer_labels(Column(name="y", type="BIGINT", labels=["no", "yes"]), ["yes"], usable=1) == ["no", "yes"]


def test_a_classlabel_output_reads_as_names_and_the_cap_takes_a_spread_sample(tmp_path):
    labels = datasets.ClassLabel(names=["sports", "politics", "science"])
    ds = datasets.Dataset.from_dict(
        {"headline": [f"headline {i}" for i in range(300)], "topic": [i // 100 for i in range(300)]},
        features=datasets.Features({"headline": datasets.Value("string"), "topic": labels}),
    )
    ds.save_to_disk(str(tmp_path / "topics"))
    entry = entry_for(tmp_path, "topics", "topics")
    meta = metadata_of(entry)

    built = instances_of(entry, meta, task(meta, ["headline"], "topic"), cap=30)

    assert len(built.rows) == 30 and built.labels == ["sports", "politics", "science"]
    assert {r.output for r in built.rows} == {"sports", "politics", "science"}  # not just the first rows
    assert all(r.output == labels.int2str(r.source_row // 100) for r in built.rows)
    assert [r.instance_id for r in instances_of(entry, meta, task(meta, ["headline"], "topic"), cap=30).rows] == [
        r.instance_id for r in built.rows
    ]


# --- building through the plan ----------------------------------------------------------


@pytest.fixture
def registry(project, monkeypatch, tmp_path):
    """A copy of the demo registry, as the project's GLAN_DATASETS."""
    root = tmp_path / "datasets"
    shutil.copytree(DEMO, root, ignore=shutil.ignore_patterns("*.py", "__pycache__"))
    path = root / "registry.yaml"
    project.env["GLAN_DATASETS"] = str(path)
    monkeypatch.setenv("GLAN_DATASETS", str(path))
    return path


def build_datasets(project, *names: str):
    plan = plan_build(project.instance, project.resources(), only={"dataset": names}, until="dynosaur_instances")
    return plan, build(project.instance, plan.partitions, workers=1)


def latest_metadata(instance, asset: str, key: str) -> dict:
    record = instance.fetch_materializations(
        dg.AssetRecordsFilter(dg.AssetKey(asset), asset_partitions=[key]), limit=1
    ).records[0]
    return {k: getattr(v, "value", v) for k, v in record.asset_materialization.metadata.items()}


def test_the_demo_datasets_build_with_one_call_each(project, registry, fake_llm):
    plan, summaries = build_datasets(project)

    assert [p.key for p in plan.partitions] == ["product_reviews", "capitals_qa", "headlines"]
    assert all(s.success for s in summaries), [s.error for s in summaries]
    assert [c for s in summaries for c in s.failed_checks] == []
    assert len(fake_llm.requests) == 3
    asked = {r["messages"][-1]["content"].split("\n")[0]: r["messages"][-1]["content"] for r in fake_llm.requests}
    assert "Description: Short product reviews" in asked["Dataset: product_reviews"]  # from dataset_info.json
    assert "Description:" not in asked["Dataset: headlines"]  # the variant without one
    assert {r["temperature"] for r in fake_llm.requests} == {0.0}
    schema = fake_llm.requests[0]["response_format"]["json_schema"]["schema"]
    outputs = {v["properties"]["output_field"]["const"] for v in schema["properties"]["tasks"]["items"]["oneOf"]}
    assert outputs <= {"text", "label", "context", "question", "answer", "news summary", "headline"}
    store = DuckDBStore(path=str(project.db))
    reviews = store.read(InstanceRow, "product_reviews")
    assert len(reviews) == 2 * 12  # every row times both tasks
    assert any(r.instruction.endswith("Answers must be one of: negative, positive.") for r in reviews)
    assert {r.license for r in reviews} == {"CC0-1.0"}
    meta = latest_metadata(project.instance, INSTANCES.name, "product_reviews")
    assert meta["instances"] == 24 and meta["task_llm_calls"] == 1 and meta["instances_per_llm_call"] == 24.0
    assert meta["tasks_kept"] == 2 and meta["tasks_dropped"] == 0 and meta["skipped_rows"] == 0
    assert len(store.read(InstanceRow, "headlines")) == 16 and len(store.read(InstanceRow, "capitals_qa")) == 16


def test_adding_a_dataset_builds_only_it_with_one_more_call(project, registry, fake_llm):
    build_datasets(project)
    store = DuckDBStore(path=str(project.db))
    before = {k: [r.model_dump() for r in store.read(InstanceRow, k)] for k in ("product_reviews", "headlines")}
    fake_llm.requests.clear()
    (registry.parent / "recipes.csv").write_text("dish,cuisine\nramen,japanese\npaella,spanish\ntacos,mexican\n")
    registry.write_text(registry.read_text() + "  - name: recipes\n    path: recipes.csv\n")

    plan, summaries = build_datasets(project)

    assert [(p.key, p.levels) for p in plan.partitions] == [("recipes", tuple(lv.name for lv in METHOD.levels))]
    assert all(s.success for s in summaries) and len(fake_llm.requests) == 1
    assert "Dataset: recipes" in fake_llm.prompts()[0]
    assert {k: [r.model_dump() for r in store.read(InstanceRow, k)] for k in before} == before
    assert len(store.read(InstanceRow, "recipes")) == 6
    assert build_datasets(project)[0].partitions == []  # up to date: nothing more


def test_lineage_leads_from_an_instance_to_its_source_row(project, registry, fake_llm):
    build_datasets(project, "capitals_qa")
    store = DuckDBStore(path=str(project.db))
    instance = store.read(InstanceRow, "capitals_qa", where="source_row = 3")[0]

    found = chain(store, instance.instance_id, LEVELS)

    assert [type(r).__name__ for r in found] == ["InstanceRow", "TaskRow", "DatasetMetadataRow"]
    source_line = (registry.parent / "capitals_qa.jsonl").read_text().splitlines()[instance.source_row]
    row = json.loads(source_line)
    assert f"{found[1].input_fields[0]}: {row[found[1].input_fields[0]]}" in instance.input
    assert instance.output == row[found[1].output_field]
    ensure_lineage_views(store, LEVELS)
    (traced,) = store.query(
        "SELECT dataset, task_instruction, source_row FROM dynosaur_lineage WHERE instance_id = ?", [instance.instance_id]
    )
    assert traced == {"dataset": "capitals_qa", "task_instruction": found[1].instruction, "source_row": 3}
    printed = CliRunner().invoke(cli.main, ["lineage", instance.instance_id]).output.splitlines()
    assert [line.split()[0] for line in printed] == ["instance", "task", "dataset"]
    assert "source_row=3" in printed[0] and "capitals_qa.jsonl" in printed[2]


def test_a_bad_dataset_fails_alone_and_keeps_what_was_stored(project, registry, fake_llm):
    build_datasets(project, "headlines")
    store = DuckDBStore(path=str(project.db))
    kept = store.read(InstanceRow, "headlines")
    registry.write_text(registry.read_text() + "  - name: gone\n    path: missing.csv\n")
    (registry.parent / "headlines.csv").write_text("")  # now unreadable

    _, summaries = build_datasets(project, "gone", "headlines")

    errors = {s.partition: s.error for s in summaries}
    assert not any(s.success for s in summaries)
    assert "dataset 'gone'" in errors["gone"] and "(entry 4, 'gone')" in errors["gone"] and "does not exist" in errors["gone"]
    assert "dataset 'headlines'" in errors["headlines"]
    assert store.read(InstanceRow, "headlines") == kept


def test_an_unusable_reply_is_a_reject_naming_the_dataset(project, registry, fake_llm):
    fake_llm.garbage_for = "Dataset: headlines"
    _, (summary,) = build_datasets(project, "headlines")

    assert not summary.success
    rejects = DuckDBStore(path=str(project.db)).read(RejectRow, where="asset = 'dynosaur_tasks'")
    assert [r.partition_key for r in rejects] == ["headlines"] and "unparseable" in rejects[0].reason
    assert rejects[0].attempts == 3 and rejects[0].parent_id == stable_id("dset", "headlines")


def test_the_dataset_sensor_registers_the_datasets_and_asks_for_their_runs(project, registry):
    with project.instance_on_disk() as instance:
        definitions = defs()
        with dg.build_sensor_context(
            instance_ref=instance.get_ref(), resources=resources_from_env(project.env), definitions=definitions
        ) as context:
            result = definitions.resolve_sensor_def("dataset_sensor").evaluate_tick(context)

    (added,) = result.dynamic_partitions_requests
    assert added.partitions_def_name == "dataset"
    assert list(added.partition_keys) == ["product_reviews", "capitals_qa", "headlines"]
    assert sorted((r.partition_key, r.job_name, len(r.asset_selection)) for r in result.run_requests) == [
        # metadata, tasks, instances and the quality level
        ("capitals_qa", "build_dataset", 4), ("headlines", "build_dataset", 4), ("product_reviews", "build_dataset", 4)
    ]


def test_pruning_a_removed_dataset_removes_its_rows_only(project, registry, fake_llm):
    build_datasets(project, "headlines", "capitals_qa")
    store = DuckDBStore(path=str(project.db))
    registry.write_text(registry.read_text().replace("  - name: headlines\n    path: headlines.csv\n    license: CC0-1.0\n", ""))

    plan = plan_build(project.instance, project.resources(), only={"dataset": ["capitals_qa"]}, prune=True,
                      until="dynosaur_instances")

    assert [m.removed for m in plan.methods if m.method.name == METHOD.name] == [["headlines"]]
    assert store.read(InstanceRow, "headlines") == [] and store.read(TaskRow, "headlines") == []
    assert len(store.read(InstanceRow, "capitals_qa")) == 16
    assert "headlines" not in project.instance.get_dynamic_partitions("dataset")
