"""The partitions every UIT level shares: one per registered collection, keyed by its name."""

import dagster as dg

collection_partitions = dg.DynamicPartitionsDefinition(name="collection")
