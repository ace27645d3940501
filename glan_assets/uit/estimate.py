"""UIT's fan-out for the plan's estimate (`glan_assets.estimate`): K rewrites per task."""

from collections.abc import Mapping, Sequence

import dagster as dg

from glan_assets.methods import Fanout
from glan_assets.plan import PartitionPlan
from glan_assets.stages import Stage
from glan_assets.uit import candidates
from glan_assets.uit.formats import Bad
from glan_assets.uit.reading import read_collection

# Prompt and completion tokens per call before any are measured (the README's projection).
DEFAULT_TOKENS = {candidates.TRANSFER.name: (600, 200)}


def fanout_uit(levels: Sequence[str], tasks: int, candidates_per_task: int) -> list[tuple[str, Stage, int]]:
    """One collection's calls: K rewrites per task."""
    level = candidates.LEVEL.name
    return [(level, candidates.TRANSFER, tasks * candidates_per_task)] if level in levels else []


def partition_calls(
    plan: PartitionPlan, resources: Mapping[str, dg.ConfigurableResource], stored: Mapping[str, int]
) -> list[tuple[str, Stage, int]]:
    uit = resources["uit"]
    if candidates.LEVEL.name not in plan.levels:
        return []
    if "instructions_raw" in plan.levels:  # read the collection's files as the level will
        collections = uit.collections()
        try:
            found = read_collection(collections.data_path(plan.key), collections.entry(plan.key).format)
            tasks = len({item.task for item in found if not isinstance(item, Bad)})
        except (ValueError, OSError):  # the level fails on it with its reason; not estimated here
            return []
    else:
        tasks = stored.get("tasks", 0)
    return fanout_uit(plan.levels, tasks, uit.candidates_per_task)


FANOUT = Fanout(
    partition_calls,
    stored_rows={"tasks": "SELECT collection AS k, count(DISTINCT task_id) AS n FROM instructions_raw GROUP BY 1"},
    default_tokens=DEFAULT_TOKENS,
)
