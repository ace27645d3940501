"""The partitions of `model_checkpoint`: one per recipe name. The build registers the
recipes file's names, as it registers the taxonomy's disciplines."""

import dagster as dg

recipe_partitions = dg.DynamicPartitionsDefinition(name="recipe")
