"""The partitions every Dynosaur asset shares: one per registered dataset, keyed by its name."""

import dagster as dg

dataset_partitions = dg.DynamicPartitionsDefinition(name="dataset")
