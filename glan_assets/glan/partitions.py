"""The one partitions definition every per-discipline asset shares.

Assets that share this object map partition to partition by identity. Keys are the
discipline names themselves, so the UI and `--partition` read as the taxonomy does.
"""

import dagster as dg

discipline_partitions = dg.DynamicPartitionsDefinition(name="discipline")
