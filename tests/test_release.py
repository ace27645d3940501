"""Exporting the curated training set as a Hugging Face dataset folder with its card."""

import json

import dagster as dg
import pyarrow.parquet as pq
import pytest
import yaml

from glan_assets import prompts
from glan_assets.release import export_dataset
from glan_assets.training_set import training_set
from resources.storage import DuckDBStore
from resources.training import TrainingSettings
from tests.training_rows import MODEL, teaching_pairs, write_answered_questions


@pytest.fixture
def store(tmp_path) -> DuckDBStore:
    """A project whose training set was built: two disciplines, one duplicate removed."""
    store = DuckDBStore(path=str(tmp_path / "glan.duckdb"))
    write_answered_questions(store, "Physics", teaching_pairs("Physics") + teaching_pairs("Physics")[:1])
    write_answered_questions(store, "Algebra", teaching_pairs("Algebra"), field="Formal Sciences")
    result = dg.materialize(
        [training_set],
        instance=dg.DagsterInstance.ephemeral(),
        resources={"store": store, "training": TrainingSettings(heldout_per_discipline=2)},
    )
    assert result.success
    return store


def front_matter(card: str) -> dict:
    _, header, _ = card.split("---\n", 2)
    return yaml.safe_load(header)


def test_jsonl_export_is_a_dataset_folder_with_splits_and_a_card(store, tmp_path):
    out = tmp_path / "release"
    paths = export_dataset(store, out, sampling={"answers": {"temperature": 0.7, "top_p": 0.95}})
    assert paths == {"train": out / "data/train.jsonl", "test": out / "data/test.jsonl", "card": out / "README.md"}
    train = [json.loads(line) for line in paths["train"].read_text().splitlines()]
    test = [json.loads(line) for line in paths["test"].read_text().splitlines()]
    assert (len(train), len(test)) == (12, 4)
    assert list(train[0]) == ["pair_id", "answer_id", "discipline", "field_name", "subject_name", "instruction", "response"]
    assert not {r["pair_id"] for r in train} & {r["pair_id"] for r in test}

    card = paths["card"].read_text()
    (config,) = front_matter(card)["configs"]
    assert {f["split"]: f["path"] for f in config["data_files"]} == {"train": "data/train.jsonl", "test": "data/test.jsonl"}
    assert "| Formal Sciences | Algebra | 6 | 2 |" in card and "| Natural Sciences | Physics | 6 | 2 |" in card
    assert f"| answers | {MODEL} | 0.7 | 0.95 |" in card and f"| syllabus | {MODEL} |" in card
    assert f"| {prompts.ANSWER.name} | {prompts.ANSWER.version} |" in card
    assert "| exact duplicates removed | 1 |" in card and "| pairs generated | 17 |" in card


def test_parquet_export_holds_the_same_rows(store, tmp_path):
    jsonl = export_dataset(store, tmp_path / "a")
    parquet = export_dataset(store, tmp_path / "b", fmt="parquet")
    assert parquet["train"].name == "train.parquet"
    assert pq.read_table(parquet["train"]).to_pylist() == [json.loads(x) for x in jsonl["train"].read_text().splitlines()]
    assert front_matter(parquet["card"].read_text())["configs"][0]["data_files"][1]["path"] == "data/test.parquet"


def test_exporting_before_the_training_set_is_built_says_what_to_do(tmp_path):
    with pytest.raises(ValueError, match="materialize the training_set asset first"):
        export_dataset(DuckDBStore(path=str(tmp_path / "empty.duckdb")), tmp_path / "out")
