"""Training on the generated pairs: the curated training set, then a LoRA checkpoint per recipe.

`MODULES` lists the method's assets in build order; `model_checkpoint` writes a model folder,
not table rows, so only the training set is a level.
"""

from glan_assets.training import model_checkpoint, training_set

MODULES = [training_set, model_checkpoint]
LEVELS = [training_set.LEVEL]
