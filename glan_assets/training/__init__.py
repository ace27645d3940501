"""Training on the generated pairs: the curated training set, a LoRA checkpoint per recipe,
and its benchmark scores against the base model.

`MODULES` lists the method's assets in build order; `model_checkpoint` and `model_eval` write a
model folder and metadata, not table rows, so only the training set is a level.
"""

from glan_assets.training import model_checkpoint, model_eval, training_set

MODULES = [training_set, model_checkpoint, model_eval]
LEVELS = [training_set.LEVEL]
