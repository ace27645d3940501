"""A LoRA checkpoint per training recipe, trained on the training set's train split.

The partitions are the recipe names of the recipes file (`GLAN_RECIPES`) read when the
code location loads, so `dg.materialize(..., partition_key="demo")` and
`--partition demo` work with no instance set-up; edit the file and reload to add one.
"""

import base64
import io
import os
import shutil
from collections.abc import Sequence
from pathlib import Path

import dagster as dg

from glan_assets.results import data_version, markdown_table
from glan_assets.training_schemas import TrainingPairRow
from glan_assets.training_set import training_set
from resources.storage import DuckDBStore
from resources.training import LossReport, TrainingSettings, TrainingStep, fine_tune, load_recipes, recipes_path

recipe_partitions = dg.StaticPartitionsDefinition(list(load_recipes(recipes_path())))


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
        {"discipline": d, "base": f"{base.per_discipline[d]:.4f}", "tuned": f"{tuned.per_discipline[d]:.4f}",
         "change": f"{tuned.per_discipline[d] - base.per_discipline[d]:+.4f}"}
        for d in base.per_discipline
    ]
    records.append({"discipline": "**all**", "base": f"{base.mean_loss:.4f}", "tuned": f"{tuned.mean_loss:.4f}",
                    "change": f"{tuned.mean_loss - base.mean_loss:+.4f}"})
    return markdown_table(records, limit=len(records))


def replace_dir(new: Path, target: Path) -> None:
    """Swap a finished checkpoint in, so a failed run never leaves half of one behind."""
    old = target.with_name(f".{target.name}.old")
    shutil.rmtree(old, ignore_errors=True)
    if target.exists():
        os.replace(target, old)
    os.replace(new, target)
    shutil.rmtree(old, ignore_errors=True)


@dg.asset(
    partitions_def=recipe_partitions,
    deps=[training_set],
    group_name="training",
    code_version="1",
    kinds={"pytorch"},
    owners=["team:data"],
    description="LoRA adapters trained with a recipe (the partition, from `GLAN_RECIPES`) on the "
    "training set's train split, loss on response tokens only; held-out loss of the base and "
    "the tuned model. Saved with its tokenizer, recipe.json and the training set's data version "
    "under `GLAN_CHECKPOINTS/<recipe>`.",
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

    run = fine_tune(recipe, train, test, staging, on_step=log_step)
    (staging / "training_data_version.txt").write_text(version + "\n")
    png = loss_curve_png(run.steps)
    (staging / "loss_curve.png").write_bytes(png)
    replace_dir(staging, target)

    metadata: dict = {
        "recipe": recipe.name,
        "base_model": recipe.base_model,
        "device": run.device,
        "checkpoint": dg.MetadataValue.path(str(target)),
        "training_data_version": version,
        "train_pairs": run.examples,
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
            "heldout_loss_per_discipline": dg.MetadataValue.md(loss_table(run.base, run.tuned)),
        }
        context.log.info(f"held-out loss: base {run.base.mean_loss:.4f}, tuned {run.tuned.mean_loss:.4f}")
        if run.tuned.mean_loss >= run.base.mean_loss:
            context.log.warning("the tuned model's held-out loss is not lower than the base model's")
    else:
        context.log.warning("no held-out pairs: set GLAN_HELDOUT_PER_DISCIPLINE above 0 to evaluate")
    return dg.MaterializeResult(metadata=metadata)
