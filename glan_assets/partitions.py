"""The one partitions definition every per-discipline asset shares.

Assets that share this object map partition to partition by identity. Keys are the
discipline names themselves, so the UI and `--partition` read as the taxonomy does.
"""

import dagster as dg

discipline_partitions = dg.DynamicPartitionsDefinition(name="discipline")


def partition_changes(registered: list[str], wanted: list[str]) -> tuple[list[str], list[str]]:
    """(keys to add, in taxonomy order; keys to drop) to make `registered` match `wanted`."""
    have, want = set(registered), set(wanted)
    return [k for k in wanted if k not in have], [k for k in registered if k not in want]
