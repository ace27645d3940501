"""UIT's fan-out for the plan's estimate (`glan_assets.estimate`): K rewrites per task, and
the quality level's judge over its sample of the collection's pairs."""

import math
from collections.abc import Mapping, Sequence

import dagster as dg

from glan_assets.methods import Fanout
from glan_assets.plan import PartitionPlan
from glan_assets.quality.judge import JUDGE_STAGE
from glan_assets.quality.stored import level_name
from glan_assets.stages import Stage
from glan_assets.uit import candidates
from glan_assets.uit.formats import Bad
from glan_assets.uit.reading import read_collection

# Prompt and completion tokens per call before any are measured (the README's projection).
DEFAULT_TOKENS = {candidates.TRANSFER.name: (600, 200)}
QUALITY = level_name("uit")


def fanout_uit(
    levels: Sequence[str], tasks: int, candidates_per_task: int, pairs: int = 0, judge_sample: float = 0.0
) -> list[tuple[str, Stage, int]]:
    """One collection's calls: K rewrites per task; the judge scores `judge_sample` of its
    pairs (one per instance)."""
    calls = [(candidates.LEVEL.name, candidates.TRANSFER, tasks * candidates_per_task),
             (QUALITY, JUDGE_STAGE, math.ceil(pairs * judge_sample))]
    return [c for c in calls if c[0] in levels]


def partition_calls(
    plan: PartitionPlan, resources: Mapping[str, dg.ConfigurableResource], stored: Mapping[str, int]
) -> list[tuple[str, Stage, int]]:
    uit = resources["uit"]
    if "instructions_raw" in plan.levels:  # read the collection's files as the level will
        collections = uit.collections()
        try:
            found = [item for item in read_collection(collections.data_path(plan.key), collections.entry(plan.key).format)
                     if not isinstance(item, Bad)]
        except (ValueError, OSError):  # the level fails on it with its reason; not estimated here
            return []
        tasks, pairs = len({item.task for item in found}), len(found)
    else:
        tasks, pairs = stored.get("tasks", 0), stored.get("pairs", 0)
    return fanout_uit(plan.levels, tasks, uit.candidates_per_task, pairs, resources["quality"].judge_sample)


FANOUT = Fanout(
    partition_calls,
    stored_rows={"tasks": "SELECT collection AS k, count(DISTINCT task_id) AS n FROM instructions_raw GROUP BY 1",
                 "pairs": "SELECT collection AS k, count(*) AS n FROM instructions_raw GROUP BY 1"},
    default_tokens=DEFAULT_TOKENS,
)
