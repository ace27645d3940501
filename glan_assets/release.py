"""Exporting the training set as a dataset that `datasets.load_dataset(out_dir)` loads as is.

Layout: `data/train.<fmt>`, `data/test.<fmt>` and a `README.md` dataset card whose YAML
front matter maps the files to splits, and whose body says how the data was made.
"""

import json
from collections import Counter
from collections.abc import Mapping
from pathlib import Path
from typing import Literal

import pyarrow.parquet as pq
import yaml

from glan_assets import prompts
from glan_assets.results import markdown_table
from glan_assets.training_schemas import ContaminationRow, RemovedPairRow, TrainingPairRow
from resources.storage import DuckDBStore, to_arrow

# The generation stages whose table records the model that wrote each row.
STAGE_TABLES = {"syllabus": "syllabi", "questions": "questions", "answers": "answers"}
COLUMNS = [name for name in TrainingPairRow.model_fields if name != "split"]  # the file names the split


def size_category(n: int) -> str:
    """The Hugging Face hub's size bucket for n rows."""
    for bound, label in ((1_000, "n<1K"), (10_000, "1K<n<10K"), (100_000, "10K<n<100K"),
                         (1_000_000, "100K<n<1M"), (10_000_000, "1M<n<10M")):
        if n < bound:
            return label
    return "10M<n<100M"


def stage_models(store: DuckDBStore) -> dict[str, list[str]]:
    """Stage -> the models that wrote its rows, read from the tables themselves."""
    existing = {r["table_name"] for r in store.query("SELECT table_name FROM duckdb_tables()")}
    return {
        stage: [r["model"] for r in store.query(f"SELECT DISTINCT model FROM {table} ORDER BY model")]
        for stage, table in STAGE_TABLES.items()
        if table in existing
    }


def dataset_card(
    splits: Mapping[str, list[TrainingPairRow]],
    files: Mapping[str, str],
    removed: list[RemovedPairRow],
    contamination: list[ContaminationRow],
    models: Mapping[str, list[str]],
    sampling: Mapping[str, Mapping[str, object]],
) -> str:
    total = sum(len(rows) for rows in splits.values())
    front = {
        "configs": [
            {"config_name": "default", "data_files": [{"split": s, "path": p} for s, p in files.items()]}
        ],
        "task_categories": ["text-generation"],
        "language": ["en"],
        "tags": ["instruction-tuning", "synthetic", "glan"],
        "size_categories": [size_category(total)],
        "pretty_name": "GLAN instruction-tuning pairs",
    }
    per_discipline = Counter((p.field_name, p.discipline, split) for split, rows in splits.items() for p in rows)
    disciplines = sorted({(f, d) for f, d, _ in per_discipline})
    reasons = Counter(r.reason for r in removed)
    stages = sorted(set(models) | set(sampling))
    knobs = list(dict.fromkeys(k for values in sampling.values() for k in values))
    prompt_list = [p for p in vars(prompts).values() if isinstance(p, prompts.Prompt)]
    sections = [
        "# GLAN instruction-tuning pairs",
        "Homework questions and their answers generated from a taxonomy of human knowledge with "
        "the GLAN method (Li et al., 2024): taxonomy, subjects, syllabi, class sessions, questions, "
        "answers. Every pair keeps the ids of its answer and its discipline.",
        "## Splits",
        markdown_table(
            [{"split": s, "pairs": len(rows), "file": files[s]} for s, rows in splits.items()], limit=len(splits)
        ),
        "The test split holds out a fixed number of pairs per discipline (GLAN-Test).",
        "## Pairs per field and discipline",
        markdown_table(
            [{"field": f, "discipline": d, **{s: per_discipline[f, d, s] for s in splits}} for f, d in disciplines],
            limit=len(disciplines),
        ),
        "## Columns",
        ", ".join(f"`{c}`" for c in COLUMNS),
        "## Models and sampling per stage",
        markdown_table(
            [{"stage": s, "models": ", ".join(models.get(s, [])) or "-",
              **{k: str(sampling.get(s, {}).get(k, "-")) for k in knobs}} for s in stages],
            limit=len(stages),
        ),
        "## Prompt versions",
        "A version is a hash of the prompt's text.",
        markdown_table([{"prompt": p.name, "version": p.version} for p in prompt_list], limit=len(prompt_list)),
        "## Curation",
        markdown_table(
            [
                {"step": "pairs generated", "pairs": total + len(removed)},
                {"step": "exact duplicates removed", "pairs": reasons["exact_duplicate"]},
                {"step": "near duplicates removed (MinHash)", "pairs": reasons["near_duplicate"]},
                {"step": "contaminated removed (13-gram overlap with a benchmark)", "pairs": reasons["contaminated"]},
                {"step": "released", "pairs": total},
            ],
            limit=5,
        ),
        f"Benchmark items matched: {len({(c.benchmark_file, c.benchmark_item) for c in contamination})}"
        + "".join(f"\n- `{f}`" for f in sorted({c.benchmark_file for c in contamination})),
    ]
    return "---\n" + yaml.safe_dump(front, sort_keys=False) + "---\n\n" + "\n\n".join(sections) + "\n"


def export_dataset(
    store: DuckDBStore,
    out_dir: str | Path,
    fmt: Literal["jsonl", "parquet"] = "jsonl",
    sampling: Mapping[str, Mapping[str, object]] | None = None,
) -> dict[str, Path]:
    """Writes the train and test splits and the dataset card; returns {"train", "test", "card"} paths.

    `sampling` (stage -> e.g. {"temperature": 0.7, "top_p": 0.95}) goes into the card beside
    the models read from the tables, which do not record sampling.
    """
    if fmt not in ("jsonl", "parquet"):
        raise ValueError(f"format must be jsonl or parquet, not {fmt!r}")
    pairs = store.read(TrainingPairRow)
    if not pairs:
        raise ValueError(f"{store.path} has no training set: materialize the training_set asset first")
    out = Path(out_dir)
    (out / "data").mkdir(parents=True, exist_ok=True)
    # A split with no pairs gets no file: an empty data file fails to load.
    splits = {s: rows for s in ("train", "test") if (rows := [p for p in pairs if p.split == s])}
    paths: dict[str, Path] = {}
    for split, rows in splits.items():
        path = out / "data" / f"{split}.{fmt}"
        if fmt == "jsonl":
            path.write_text("".join(json.dumps(r.model_dump(include=set(COLUMNS)), ensure_ascii=False) + "\n" for r in rows))
        else:
            pq.write_table(to_arrow(TrainingPairRow, rows).select(COLUMNS), path)
        paths[split] = path
    card = dataset_card(
        splits,
        {s: p.relative_to(out).as_posix() for s, p in paths.items()},
        store.read(RemovedPairRow),
        store.read(ContaminationRow),
        stage_models(store),
        sampling or {},
    )
    paths["card"] = out / "README.md"
    paths["card"].write_text(card)
    return paths
