"""Training's settings as a typed resource; `glan_assets.settings` fills it from the profile
and the environment, and the launchpad can override any field."""

from pathlib import Path
from typing import Annotated

import dagster as dg

from glan_assets.training.recipes import TrainingRecipe, load_recipes
from resources.local_models import DEFAULT_MODEL_CACHE
from resources.versioning import InputFiles, ReadBy, Unversioned

# The quality levels read only the caps (they score the pairs the training set can take).
CURATION = ReadBy("training_set")

DATA_DIR = Path(__file__).resolve().parent.parent / "data"
# The benchmark samples glan ships: lm-eval task files with their data. What model_eval
# scores is what the training set is decontaminated against.
BENCHMARKS_DIR = DATA_DIR / "benchmarks"
DEFAULT_BENCHMARKS = [BENCHMARKS_DIR / "gsm8k" / "test.jsonl", BENCHMARKS_DIR / "mmlu" / "test.jsonl"]
DEFAULT_RECIPES = DATA_DIR / "recipes.yaml"
# A million-row dataset's tasks give this many instances each, so they do not drown the GLAN pairs.
DEFAULT_SOURCE_CAPS = {"dynosaur": 500}


class TrainingSettings(dg.ConfigurableResource):
    """The training set's mixture and curation, and where recipes and checkpoints live.

    An empty `benchmarks` list skips decontamination. `source_caps` maps a source (a method
    whose level declares `training_pairs`: glan, dynosaur, uit) to the most rows it gives per
    task (a Dynosaur or UIT task, a GLAN subject), a stable spread sample; 0 leaves the source
    out, and a source it does not name is not capped.
    """

    # Files by content: editing a benchmark file makes the training set stale.
    benchmarks: Annotated[list[str], InputFiles(), CURATION] = [str(p) for p in DEFAULT_BENCHMARKS]
    # Per group: a GLAN discipline, a Dynosaur dataset, a UIT collection.
    heldout_per_discipline: Annotated[int, CURATION] = 1  # the paper's GLAN-Test holds out 50
    source_caps: Annotated[
        dict[str, int], ReadBy("training_set", "glan_quality", "uit_quality", "dynosaur_quality")
    ] = dict(DEFAULT_SOURCE_CAPS)
    near_dup_threshold: Annotated[float, CURATION] = 0.8
    minhash_permutations: Annotated[int, CURATION] = 128
    shingle_words: Annotated[int, CURATION] = 5
    contamination_ngram: Annotated[int, CURATION] = 13
    split_seed: Annotated[int, CURATION] = 0
    recipes: Annotated[str, Unversioned("each recipe's content versions the checkpoint it trains")] = str(
        DEFAULT_RECIPES
    )
    checkpoints: Annotated[str, Unversioned("where checkpoints are written")] = "data/checkpoints"
    # GLAN_MODEL_CACHE: where the packaged models' converted copies are kept.
    model_cache: Annotated[str, Unversioned("where converted models are kept, not which")] = str(DEFAULT_MODEL_CACHE)

    def recipe_names(self) -> list[str]:
        return list(load_recipes(self.recipes))

    def recipe(self, name: str) -> TrainingRecipe:
        recipes = load_recipes(self.recipes)
        if name not in recipes:
            raise KeyError(f"no recipe {name!r} in {self.recipes}; it has {', '.join(recipes)}")
        return recipes[name]

    def checkpoint_dir(self, recipe_name: str) -> Path:
        return Path(self.checkpoints) / recipe_name


class EvalSettings(dg.ConfigurableResource):
    """How `model_eval` scores the base model and a recipe's adapter with lm-eval.

    `eval_tasks` is a folder of lm-eval task files (searched recursively) whose data are local
    files. The item limits and `eval_max_new_tokens` are 0 for a task's whole file and its own
    generation length; `eval_fewshot` -1 keeps each task's own few-shot count.
    """

    eval_tasks: str = str(BENCHMARKS_DIR)
    eval_mc_items: int = 0  # per log-likelihood (multiple-choice) benchmark
    eval_gen_items: int = 0  # per generative benchmark
    eval_max_new_tokens: int = 0
    eval_fewshot: int = -1
    eval_batch_size: int = 8  # generation's; on a CPU, log-likelihoods go one sequence at a time

    def version(self) -> dict[str, int]:
        """The settings a score depends on (not where the tasks are, nor the batch size)."""
        return {k: v for k, v in self.model_dump().items() if k not in ("eval_tasks", "eval_batch_size")}
