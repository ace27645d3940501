"""The training assets over the generation methods the root hands in: the training set (a
level), a LoRA checkpoint and its scores per recipe."""


from collections.abc import Sequence
from dataclasses import dataclass

import dagster as dg

from glan_assets.levels import Level
from glan_assets.methods import Method
from glan_assets.training import model_eval
from glan_assets.training.model_checkpoint import model_checkpoint_asset
from glan_assets.training.sources import Sources
from glan_assets.training.training_set import training_set_level


@dataclass(frozen=True)
class Training:
    sources: Sources
    level: Level  # the training set's
    training_set: dg.AssetsDefinition
    checkpoint: dg.AssetsDefinition
    evaluation: dg.AssetsDefinition

    @property
    def assets(self) -> list[dg.AssetsDefinition]:
        """In build order."""
        return [self.training_set, self.checkpoint, self.evaluation]

    @property
    def names(self) -> list[str]:
        """The assets' names in build order: what `glan build --until` can name past generation."""
        return [a.key.to_user_string() for a in self.assets]


def training_assets(methods: Sequence[Method]) -> Training:
    sources = Sources(tuple(methods))
    training_set = training_set_level(sources)
    return Training(
        sources, training_set.level, training_set.asset, model_checkpoint_asset(sources.notes), model_eval.model_eval
    )
