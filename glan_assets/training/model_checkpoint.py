"""A LoRA checkpoint per training recipe, trained on the training set's train split.

The checkpoint is a Hugging Face model folder that works elsewhere: the adapter names its
base model by hub id, and `README.md` is a model card (base model, recipe, training data,
held-out loss, loss curve).
"""

import base64
import io
import os
import shutil
from collections import Counter
from collections.abc import Mapping, Sequence
from pathlib import Path

import dagster as dg
import yaml

from glan_assets.plan import RECIPE_VERSION, TRAINING_DATA_VERSION
from glan_assets.results import data_version, markdown_table
from glan_assets.training.partitions import recipe_partitions
from glan_assets.training.recipes import TrainingRecipe
from glan_assets.training.resources import TrainingSettings
from glan_assets.training.schemas import TrainingPairRow
from resources.local_models import PACKAGED_MODELS, packaged_name
from resources.storage import DuckDBStore
from resources.trainer import PLAIN_TEMPLATE, LossReport, Pair, TrainingRun, TrainingStep, fine_tune

LOSS_CURVE = "loss_curve.png"


def as_pairs(rows: Sequence[TrainingPairRow]) -> list[Pair]:
    """The trainer's pairs; held-out loss is reported per `source/group` (a GLAN discipline,
    a Dynosaur dataset, a UIT collection)."""
    return [Pair(instruction=r.instruction, response=r.response, group=f"{r.source}/{r.group_name}") for r in rows]


def mixture(pairs: Sequence[TrainingPairRow]) -> dict[str, dict[str, int]]:
    """Source -> its train and test pairs: the mixture a checkpoint was trained on."""
    counts = Counter((p.source, p.split) for p in pairs)
    return {s: {"train": counts[s, "train"], "test": counts[s, "test"]} for s in sorted({s for s, _ in counts})}


def loss_curve_png(steps: Sequence[TrainingStep]) -> bytes:
    import matplotlib

    matplotlib.use("Agg")  # no display in a Dagster step
    from matplotlib import pyplot as plt

    fig, ax = plt.subplots(figsize=(6, 3.5), dpi=100)
    ax.plot([s.step for s in steps], [s.loss for s in steps], marker=".")
    ax.set_xlabel("optimizer step")
    ax.set_ylabel("training loss (response tokens)")
    ax.grid(alpha=0.3)
    fig.tight_layout()
    buf = io.BytesIO()
    fig.savefig(buf, format="png")
    plt.close(fig)
    return buf.getvalue()


def loss_table(base: LossReport, tuned: LossReport) -> str:
    records = [
        {"source": d.split("/", 1)[0], "group": d.split("/", 1)[-1], "base": f"{base.per_group[d]:.4f}",
         "tuned": f"{tuned.per_group[d]:.4f}", "change": f"{tuned.per_group[d] - base.per_group[d]:+.4f}"}
        for d in base.per_group
    ]
    records.append({"source": "**all**", "group": "-", "base": f"{base.mean_loss:.4f}", "tuned": f"{tuned.mean_loss:.4f}",
                    "change": f"{tuned.mean_loss - base.mean_loss:+.4f}"})
    return markdown_table(records, limit=len(records))


def model_card(
    recipe: TrainingRecipe, run: TrainingRun, pairs: Sequence[TrainingPairRow], version: str, notes: Mapping[str, str]
) -> str:
    """A Hugging Face model card: front matter the hub reads, then how the adapter was made;
    `notes`: what each source is."""
    base = run.base_model
    packaged = packaged_name(recipe.base_model)
    front: dict = {"library_name": "peft", "pipeline_tag": "text-generation"}
    tags = ["lora", "transformers", "glan", "synthetic-data"]
    if not Path(base).is_dir():  # a hub id; a directory on this machine means nothing elsewhere
        front = {"base_model": base, **front}
        tags.insert(0, f"base_model:adapter:{base}")
    if packaged:
        front["license"] = PACKAGED_MODELS[packaged].license
    front["tags"] = tags
    mix = mixture(pairs)
    prompt = (
        f"no chat template; the prompt is\n\n```\n{PLAIN_TEMPLATE}```"
        if run.prompt_format == PLAIN_TEMPLATE
        else "the tokenizer's chat template (one user turn, then the reply)"
    )
    packaged_note = (
        f"Trained on the dequantized weights of {PACKAGED_MODELS[packaged].description} that the "
        f"`{PACKAGED_MODELS[packaged].package}` package ships, not on the hub's originals; it loads onto "
        f"either, and `glan chat --checkpoint {recipe.name}` uses the packaged copy."
        if packaged
        else ""
    )
    truncated = (
        f" ({run.truncated_away} more left out: their prompt alone filled `max_length`)" if run.truncated_away else ""
    )
    sections = [
        f"# {recipe.name}: a LoRA adapter for {base}",
        recipe.description,
        "Trained with glan on instruction/response pairs, with the loss on response tokens only. "
        "The pairs come from:\n" + "\n".join(f"- `{s}`: {notes.get(s, s)}" for s in mix),
        "## Use",
        "```python\nfrom peft import PeftModel\nfrom transformers import AutoModelForCausalLM, AutoTokenizer\n\n"
        f'base = AutoModelForCausalLM.from_pretrained("{base}")\n'
        'model = PeftModel.from_pretrained(base, "path/to/this/folder")\n'
        'tokenizer = AutoTokenizer.from_pretrained("path/to/this/folder")\n```',
        f"Prompt format: {prompt}",
        packaged_note,
        "## Training data",
        f"The training set's data version: `{version}`. The mixture, pairs by source and split:",
        markdown_table([{"source": s, **m} for s, m in mix.items()], limit=len(mix)),
        "## Held-out loss",
        (
            "Mean loss per response token on the test split, of the base model and of the tuned one:\n\n"
            + loss_table(run.base, run.tuned)
            if run.base and run.tuned
            else "No held-out pairs: the test split was empty."
        ),
        "## Training",
        f"{len(run.steps)} optimizer steps over {run.examples} pairs{truncated}, {run.tokens} tokens in "
        f"{run.seconds:.0f} s on {run.device}.",
        f"![training loss per optimizer step]({LOSS_CURVE})",
        "Recipe:",
        markdown_table(
            [{"setting": k, "value": v} for k, v in recipe.model_dump(exclude={"name", "description"}).items()],
            limit=len(TrainingRecipe.model_fields),
        ),
    ]
    return "---\n" + yaml.safe_dump(front, sort_keys=False) + "---\n\n" + "\n\n".join(s for s in sections if s) + "\n"


def replace_dir(new: Path, target: Path) -> None:
    """Swap a finished checkpoint in, so a failed run never leaves half of one behind."""
    old = target.with_name(f".{target.name}.old")
    shutil.rmtree(old, ignore_errors=True)
    if target.exists():
        os.replace(target, old)
    os.replace(new, target)
    shutil.rmtree(old, ignore_errors=True)


def model_checkpoint_asset(notes: Mapping[str, str]) -> dg.AssetsDefinition:
    """The asset, its model card saying what each source is (`notes`, from the methods the root
    composes)."""

    @dg.asset(
        partitions_def=recipe_partitions,
        deps=["training_set"],
        group_name="training",
        code_version="2",
        kinds={"pytorch"},
        owners=["team:data"],
        description="LoRA adapters trained with a recipe (the partition, from `GLAN_RECIPES`) on the "
        "training set's train split, loss on response tokens only; held-out loss of the base and "
        "the tuned model. A Hugging Face model folder under `GLAN_CHECKPOINTS/<recipe>`: the adapter "
        "(naming its base model by hub id), the tokenizer, recipe.json and a model card.",
    )
    def model_checkpoint(
        context: dg.AssetExecutionContext, store: DuckDBStore, training: TrainingSettings
    ) -> dg.MaterializeResult:
        recipe = training.recipe(context.partition_key)
        pairs = store.read(TrainingPairRow)
        train = [p for p in pairs if p.split == "train"]
        test = [p for p in pairs if p.split == "test"]
        # The version of the rows read here: exactly what the adapter was trained on.
        version = data_version(pairs)
        context.log.info(f"recipe {recipe.name}: {recipe.base_model}, {len(train)} train and {len(test)} test pairs")

        target = training.checkpoint_dir(recipe.name)
        target.parent.mkdir(parents=True, exist_ok=True)
        staging = target.with_name(f".{target.name}.new")
        shutil.rmtree(staging, ignore_errors=True)

        def log_step(step: TrainingStep) -> None:
            if step.step % max(1, step.total_steps // 50) == 0 or step.step == step.total_steps:
                context.log.info(str(step))

        run = fine_tune(recipe, as_pairs(train), as_pairs(test), staging, on_step=log_step,
                        cache_root=Path(training.model_cache))
        (staging / "training_data_version.txt").write_text(version + "\n")
        png = loss_curve_png(run.steps)
        (staging / LOSS_CURVE).write_bytes(png)
        # Replaces the template PEFT writes.
        (staging / "README.md").write_text(model_card(recipe, run, pairs, version, notes))
        replace_dir(staging, target)

        metadata: dict = {
            "recipe": recipe.name,
            RECIPE_VERSION: recipe.version,
            "base_model": run.base_model,
            "device": run.device,
            "checkpoint": dg.MetadataValue.path(str(target)),
            TRAINING_DATA_VERSION: version,
            "train_pairs": run.examples,
            # The mixture it was trained on: per source, its train and test pairs.
            "mixture": dg.MetadataValue.json(mixture(pairs)),
            **{f"train_pairs_{s}": m["train"] for s, m in mixture(pairs).items()},
            "truncated_away": run.truncated_away,
            "steps": len(run.steps),
            "final_train_loss": run.steps[-1].loss,
            "tokens": run.tokens,
            "tokens_per_s": round(run.tokens_per_s, 1),
            "train_seconds": round(run.seconds, 1),
            "loss_curve": dg.MetadataValue.md(
                f"![loss curve](data:image/png;base64,{base64.b64encode(png).decode()})"
            ),
        }
        if run.base and run.tuned:
            metadata |= {
                "heldout_loss_base": run.base.mean_loss,
                "heldout_loss_tuned": run.tuned.mean_loss,
                "heldout_tokens": run.tuned.tokens,
                "heldout_loss_per_group": dg.MetadataValue.md(loss_table(run.base, run.tuned)),
            }
            context.log.info(f"held-out loss: base {run.base.mean_loss:.4f}, tuned {run.tuned.mean_loss:.4f}")
            if run.tuned.mean_loss >= run.base.mean_loss:
                context.log.warning("the tuned model's held-out loss is not lower than the base model's")
        else:
            context.log.warning("no held-out pairs: set GLAN_HELDOUT_PER_DISCIPLINE (per group) above 0 to evaluate")
        return dg.MaterializeResult(metadata=metadata)

    return model_checkpoint
