"""Training on the generated pairs: the curated training set, a LoRA checkpoint per recipe,
and its benchmark scores against the base model.

`assets.training_assets` builds them over the generation methods the root hands in; `model_checkpoint`
and `model_eval` write a model folder and metadata, not table rows, so only the training set is
a level.
"""
