"""Training recipes: named hyperparameters, read from a YAML file (`GLAN_RECIPES`). Each
recipe is one partition of `model_checkpoint`."""

from pathlib import Path

import yaml

from glan_assets.ids import content_hash
from resources.trainer import Hyperparameters


class TrainingRecipe(Hyperparameters):
    """How to tune one base model, under a name."""

    name: str
    description: str = ""

    @property
    def version(self) -> str:
        """Changes with any field: a checkpoint trained on an older version is stale."""
        return content_hash(self.model_dump())[:16]


def load_recipes(path: str | Path) -> dict[str, TrainingRecipe]:
    """Recipes by name from a YAML file `{recipes: [{name: ..., ...}, ...]}`."""
    raw = yaml.safe_load(Path(path).read_text()) or {}
    recipes: dict[str, TrainingRecipe] = {}
    for i, entry in enumerate(raw.get("recipes") or []):
        try:
            recipe = TrainingRecipe.model_validate(entry)
        except ValueError as exc:
            name = entry.get("name", "?") if isinstance(entry, dict) else "?"
            raise ValueError(f"{path}: recipe #{i + 1} ({name}): {exc}") from exc
        if recipe.name in recipes:
            raise ValueError(f"{path}: recipe {recipe.name!r} is defined twice")
        recipes[recipe.name] = recipe
    if not recipes:
        raise ValueError(f"{path}: no recipes (expected a top-level `recipes:` list)")
    return recipes
