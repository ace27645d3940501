"""Exporting the curated training set as a Hugging Face dataset folder with its card."""

import json
import os

import dagster as dg
import pyarrow.parquet as pq
import pytest
import yaml

from glan_assets.glan.prompts import ANSWER
from glan_assets.registry import LEVELS, TRAINING
from glan_assets.training.release import export_dataset
from glan_assets.training.resources import TrainingSettings
from resources.storage import DuckDBStore
from tests.training_rows import MODEL, materialize_training, teaching_pairs, write_answered_questions

training_set = TRAINING.training_set

os.environ.setdefault("HF_HUB_OFFLINE", "1")


@pytest.fixture
def store(tmp_path) -> DuckDBStore:
    """A project whose training set was built: two disciplines, one duplicate removed."""
    store = DuckDBStore(path=str(tmp_path / "glan.duckdb"))
    write_answered_questions(store, "Physics", teaching_pairs("Physics") + teaching_pairs("Physics")[:1])
    write_answered_questions(store, "Algebra", teaching_pairs("Algebra"), field="Formal Sciences")
    result = materialize_training(
        [training_set], store, TrainingSettings(heldout_per_discipline=2), dg.DagsterInstance.ephemeral()
    )
    assert result.success
    return store


def front_matter(card: str) -> dict:
    _, header, _ = card.split("---\n", 2)
    return yaml.safe_load(header)


def test_jsonl_export_is_a_dataset_folder_with_splits_and_a_card(store, tmp_path):
    out = tmp_path / "release"
    paths = export_dataset(store, out, sampling={"answers": {"temperature": 0.7, "top_p": 0.95}}, levels=LEVELS,
                           sources=TRAINING.sources)
    names = ("pairs_per_group", "response_lengths", "removed_by_reason", "quality_signals")
    images = {f"image_{n}": out / f"images/{n}.png" for n in names}
    assert paths == {"train": out / "data/train.jsonl", "test": out / "data/test.jsonl", "card": out / "README.md"} | images
    train = [json.loads(line) for line in paths["train"].read_text().splitlines()]
    test = [json.loads(line) for line in paths["test"].read_text().splitlines()]
    assert (len(train), len(test)) == (12, 4)
    assert list(train[0]) == [
        "pair_id", "source_id", "source", "group_name", "field_name", "subject_name", "instruction", "response",
        "ifd", "judge_score", "quality_flags", "messages",
    ]
    assert all(r["ifd"] == 0.5 and r["judge_score"] is None for r in train + test)  # the stub scorer; not judged
    assert train[0]["messages"] == [
        {"role": "user", "content": train[0]["instruction"]},
        {"role": "assistant", "content": train[0]["response"]},
    ]
    assert {r["source"] for r in train + test} == {"glan"}
    assert not {r["pair_id"] for r in train} & {r["pair_id"] for r in test}

    card = paths["card"].read_text()
    (config,) = front_matter(card)["configs"]
    assert {f["split"]: f["path"] for f in config["data_files"]} == {"train": "data/train.jsonl", "test": "data/test.jsonl"}
    assert "| glan | Formal Sciences | Algebra (discipline) | 6 | 2 |" in card
    assert "| glan | Natural Sciences | Physics (discipline) | 6 | 2 |" in card
    assert "| source | train | test | removed |\n|---|---|---|---|\n| glan | 12 | 4 | 1 |" in card
    assert all(r["source_id"].startswith("ans_") for r in train + test)
    assert f"| answers | {MODEL} | 0.7 | 0.95 |" in card and f"| syllabus | {MODEL} |" in card
    assert f"| {ANSWER.name} | {ANSWER.version} |" in card
    assert "| exact duplicates removed | 1 |" in card and "| pairs in (after the source caps) | 17 |" in card
    assert "| removed by quality (see Quality) | 0 |" in card
    quality = card.split("## Quality", 1)[1]
    assert "| glan | 17 | 0 | - | 0.5 | 0 | None |" in quality and "no better than chance" in quality


def test_the_card_shows_its_pictures_drawn_from_the_rows(store, tmp_path):
    paths = export_dataset(store, tmp_path / "a", levels=LEVELS, sources=TRAINING.sources)
    card = paths["card"].read_text()
    pictures = {k: p for k, p in paths.items() if k.startswith("image_")}
    assert len(pictures) == 4
    for path in pictures.values():
        data = path.read_bytes()
        assert data[:8] == b"\x89PNG\r\n\x1a\n" and 5_000 < len(data) < 200_000  # drawn, and small
        assert f"]({path.relative_to(tmp_path / 'a').as_posix()})" in card
    assert len({p.read_bytes() for p in pictures.values()}) == 4
    # Drawn from the rows: other rows, other pictures.
    with store.connect() as con:
        con.execute("DELETE FROM training_set WHERE split = 'test'")
    again = export_dataset(store, tmp_path / "b", levels=LEVELS, sources=TRAINING.sources)
    assert again["image_pairs_per_group"].read_bytes() != pictures["image_pairs_per_group"].read_bytes()


def test_parquet_export_holds_the_same_rows(store, tmp_path):
    jsonl = export_dataset(store, tmp_path / "a", levels=LEVELS, sources=TRAINING.sources)
    parquet = export_dataset(store, tmp_path / "b", fmt="parquet", levels=LEVELS, sources=TRAINING.sources)
    assert parquet["train"].name == "train.parquet"
    assert pq.read_table(parquet["train"]).to_pylist() == [json.loads(x) for x in jsonl["train"].read_text().splitlines()]
    assert front_matter(parquet["card"].read_text())["configs"][0]["data_files"][1]["path"] == "data/test.parquet"


@pytest.mark.parametrize("fmt", ["jsonl", "parquet"])
def test_the_release_loads_with_datasets_and_its_messages_fit_a_chat_template(store, tmp_path, fmt):
    from datasets import load_dataset
    from transformers import AutoTokenizer

    from resources.local_models import local_model_dir

    out = tmp_path / "release"
    export_dataset(store, out, fmt, levels=LEVELS, sources=TRAINING.sources)
    dataset = load_dataset(str(out), cache_dir=str(tmp_path / "hf_cache"))
    assert {split: dataset[split].num_rows for split in dataset} == {"train": 12, "test": 4}
    row = dataset["train"][0]
    assert row["messages"] == [
        {"role": "user", "content": row["instruction"]},
        {"role": "assistant", "content": row["response"]},
    ]
    # What TRL's SFTTrainer does with a `messages` column: render it with the chat template.
    tokenizer = AutoTokenizer.from_pretrained(local_model_dir("smollm2-135m-instruct"))
    rendered = tokenizer.apply_chat_template(row["messages"], tokenize=False)
    assert rendered.index(row["instruction"]) < rendered.index(row["response"])


def test_exporting_before_the_training_set_is_built_says_what_to_do(tmp_path):
    with pytest.raises(ValueError, match="materialize the training_set asset first"):
        export_dataset(DuckDBStore(path=str(tmp_path / "empty.duckdb")), tmp_path / "out", levels=LEVELS,
                       sources=TRAINING.sources)
