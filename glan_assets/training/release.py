"""Exporting the training set as a dataset that `datasets.load_dataset(out_dir)` loads as is.

Layout: `data/train.<fmt>`, `data/test.<fmt>` and a `README.md` dataset card whose YAML
front matter maps the files to splits, and whose body says how the data was made and how
many rows each source gave. Each row carries its pair as `messages` too, the form TRL's
`SFTTrainer` and chat templates take: a multi-turn UIT chat as every one of its turns.
"""

import json
from collections import Counter
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Literal

import pyarrow as pa
import pyarrow.parquet as pq
import yaml
from pydantic import BaseModel

from glan_assets.levels import Level
from glan_assets.quality.stored import read_rows, summary
from glan_assets.results import markdown_table
from glan_assets.training.schemas import ContaminationRow, RemovedPairRow, TrainingPairRow
from glan_assets.training.sources import Sources
from resources.storage import DuckDBStore, to_arrow

# The file names the split; a chat's turns are in `messages`.
COLUMNS = [name for name in TrainingPairRow.model_fields if name not in ("split", "turns")]


class Message(BaseModel):
    """One turn of a chat, as chat templates and TRL take it."""

    role: Literal["system", "user", "assistant"]
    content: str


MESSAGES = pa.list_(pa.struct([("role", pa.string()), ("content", pa.string())]))


def messages(pair: TrainingPairRow) -> list[dict]:
    """The pair as a conversation: a multi-turn chat's every turn, else the instruction from
    the user and the response from the assistant."""
    chat = json.loads(pair.turns) if pair.turns and pair.turns != "[]" else []
    turns = [Message.model_validate(t) for t in chat] or [
        Message(role="user", content=pair.instruction),
        Message(role="assistant", content=pair.response),
    ]
    return [t.model_dump() for t in turns]


def size_category(n: int) -> str:
    """The Hugging Face hub's size bucket for n rows."""
    for bound, label in ((1_000, "n<1K"), (10_000, "1K<n<10K"), (100_000, "10K<n<100K"),
                         (1_000_000, "100K<n<1M"), (10_000_000, "1M<n<10M")):
        if n < bound:
            return label
    return "10M<n<100M"


def stage_models(store: DuckDBStore, levels: Sequence[Level]) -> dict[str, list[str]]:
    """Stage -> the models that wrote its rows, read from the tables themselves: a level whose
    rows record their `model` was written by its free-text stage."""
    existing = {r["table_name"] for r in store.query("SELECT table_name FROM duckdb_tables()")}
    return {
        stage.name: [r["model"] for r in store.query(f"SELECT DISTINCT model FROM {lv.name} ORDER BY model")]
        for lv in levels
        if lv.name in existing and "model" in lv.row_type.model_fields
        for stage in lv.stages
        if stage.schema is None
    }


def dataset_card(
    splits: Mapping[str, list[TrainingPairRow]],
    files: Mapping[str, str],
    removed: list[RemovedPairRow],
    contamination: list[ContaminationRow],
    models: Mapping[str, list[str]],
    sampling: Mapping[str, Mapping[str, object]],
    levels: Sequence[Level],
    training_sources: Sources,
    quality: Mapping[str, dict] | None = None,
) -> str:
    """`training_sources`: what each source is and what its groups are; `quality`: per source,
    `glan_assets.quality.stored.summary` of its quality rows."""
    total = sum(len(rows) for rows in splits.values())
    sources = sorted({p.source for rows in splits.values() for p in rows})
    removed_by_source = Counter(r.source for r in removed)
    front = {
        "configs": [
            {"config_name": "default", "data_files": [{"split": s, "path": p} for s, p in files.items()]}
        ],
        "task_categories": ["text-generation"],
        "language": ["en"],
        "tags": ["instruction-tuning", "synthetic", *sources],
        "size_categories": [size_category(total)],
        "pretty_name": "GLAN instruction-tuning pairs" if sources == ["glan"] else "Instruction-tuning mixture",
    }
    per_source = Counter((p.source, split) for split, rows in splits.items() for p in rows)
    per_group = Counter((p.source, p.field_name, p.group_name, split) for split, rows in splits.items() for p in rows)
    groups = sorted({(s, f, g) for s, f, g, _ in per_group})
    reasons = Counter(r.reason for r in removed)
    stages = sorted(set(models) | set(sampling))
    knobs = list(dict.fromkeys(k for values in sampling.values() for k in values))
    prompt_list = list({p.name: p for lv in levels for stage in lv.stages for p in stage.prompts}.values())
    sections = [
        "# " + front["pretty_name"],
        "Instruction/response pairs from "
        + ("one source" if len(sources) == 1 else f"{len(sources)} sources")
        + ":\n"
        + "\n".join(f"- `{s}`: {training_sources.notes.get(s, s)}" for s in sources)
        + "\n\nEvery pair names its `source` and keeps the id of the row it came from (`source_id`: an "
        "answer, a Dynosaur instance, a UIT unified instance), which `glan lineage` follows to its origin.",
        "## Splits",
        markdown_table(
            [{"split": s, "pairs": len(rows), "file": files[s]} for s, rows in splits.items()], limit=len(splits)
        ),
        "The test split holds out a fixed number of pairs per group: a GLAN discipline (GLAN-Test), "
        "a Dynosaur dataset, a UIT collection.",
        "## Rows per source",
        markdown_table(
            [
                {"source": src, **{s: per_source[src, s] for s in splits}, "removed": removed_by_source[src]}
                for src in sources
            ],
            limit=len(sources),
        ),
        "## Pairs per source and group",
        markdown_table(
            [
                {"source": src, "field": f or "-", "group": f"{g} ({training_sources.group_nouns.get(src, 'group')})",
                 **{s: per_group[src, f, g, s] for s in splits}}
                for src, f, g in groups
            ],
            limit=len(groups),
        ),
        "## Columns",
        ", ".join(f"`{c}`" for c in COLUMNS)
        + ", and `messages`: the pair as `[{role: user, content: instruction}, {role: assistant, content: "
        "response}]` (a multi-turn chat as every one of its turns), which TRL's `SFTTrainer` and chat "
        "templates take as is.",
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
                {"step": "pairs in (after the source caps)", "pairs": total + len(removed)},
                {"step": "exact duplicates removed", "pairs": reasons["exact_duplicate"]},
                {"step": "near duplicates removed (MinHash)", "pairs": reasons["near_duplicate"]},
                {"step": "contaminated removed (13-gram overlap with a benchmark)", "pairs": reasons["contaminated"]},
                {"step": "removed by quality (see Quality)", "pairs": reasons["quality"]},
                {"step": "released", "pairs": total},
            ],
            limit=6,
        ),
        f"Benchmark items matched: {len({(c.benchmark_file, c.benchmark_item) for c in contamination})}"
        + "".join(f"\n- `{f}`" for f in sorted({c.benchmark_file for c in contamination})),
    ]
    judges = sorted({m for q in (quality or {}).values() for m in q["judge_models"]})
    sections += quality_section(quality or {}, removed, judges)
    return "---\n" + yaml.safe_dump(front, sort_keys=False) + "---\n\n" + "\n\n".join(sections) + "\n"


def quality_section(quality: Mapping[str, dict], removed: list[RemovedPairRow], judges: Sequence[str]) -> list[str]:
    """What was scored per source, and what each quality signal removed."""
    by_signal = Counter((r.source, r.signal) for r in removed if r.reason == "quality")
    return [
        "## Quality",
        "Before curation every pair was scored by three signals, each a column of the release: deterministic "
        "rules (`quality_flags`, the rules that flagged it), instruction-following difficulty (`ifd`: the "
        "response's loss given its instruction over its loss alone, under a small local model; Li et al., "
        "NAACL 2024) and an LLM judge's 1-10 score (`judge_score`, MT-Bench's rubric; empty for a pair "
        "outside the judge's sample). Pairs a rule flagged, or whose IFD or judge score missed its threshold, "
        "were removed.",
        markdown_table(
            [{"source": s, "scored": q["pairs"], "flagged": q["flagged"],
              "flags by rule": ", ".join(f"{k} {v}" for k, v in q["flags_by_rule"].items()) or "-",
              "IFD median": q["ifd_median"], "judged": q["judged"], "judge mean": q["judge_mean"]}
             for s, q in sorted(quality.items())],
            limit=len(quality),
        ),
        "Removed by signal (the first one each pair failed):",
        markdown_table([{"source": s, "signal": g, "pairs": n} for (s, g), n in sorted(by_signal.items())],
                       limit=len(by_signal)),
        f"Judge model: {', '.join(judges) or '-'}. The embedded default judge (SmolLM2-135M) is no better than "
        "chance on the labelled calibration set (AUC 0.46, 95% interval 0.35-0.58), so no judge floor is set "
        "by default (`GLAN_JUDGE_MIN=1`): its scores are released to look at, not to select by.",
    ]


def export_dataset(
    store: DuckDBStore,
    out_dir: str | Path,
    fmt: Literal["jsonl", "parquet"] = "jsonl",
    sampling: Mapping[str, Mapping[str, object]] | None = None,
    *,
    levels: Sequence[Level],
    sources: Sources,
) -> dict[str, Path]:
    """Writes the train and test splits, the dataset card and its pictures; returns the paths:
    "train", "test", "card" and "image_<name>".

    The card names each generating stage's models (read from the levels' tables) and prompt
    versions (from `levels`, the root's; `sources`: its generation methods); `sampling` (stage
    -> e.g. {"temperature": 0.7, "top_p": 0.95}) goes beside them, as the tables do not record it.
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
            records = (r.model_dump(include=set(COLUMNS)) | {"messages": messages(r)} for r in rows)
            path.write_text("".join(json.dumps(record, ensure_ascii=False) + "\n" for record in records))
        else:
            table = to_arrow(TrainingPairRow, rows).select(COLUMNS)
            pq.write_table(table.append_column("messages", pa.array([messages(r) for r in rows], MESSAGES)), path)
        paths[split] = path
    card = dataset_card(
        splits,
        {s: p.relative_to(out).as_posix() for s, p in paths.items()},
        store.read(RemovedPairRow),
        store.read(ContaminationRow),
        stage_models(store, levels),
        sampling or {},
        levels,
        sources,
        {s: summary(rows) for s in sorted({p.source for p in pairs}) if (rows := read_rows(store, s))},
    )
    # Imported here: matplotlib is a second of every `glan` command's start, and of each build worker's.
    from glan_assets.training.pictures import draw

    pictures = draw(out / "images", pairs, store.read(RemovedPairRow))
    card += "\n## Pictures\n\n" + "\n\n".join(
        f"![{caption}]({path.relative_to(out).as_posix()})" for caption, path in pictures.items()
    ) + "\n"
    paths |= {f"image_{p.stem}": p for p in pictures.values()}
    paths["card"] = out / "README.md"
    paths["card"].write_text(card)
    return paths
