"""Dynosaur's fan-out for the plan's estimate (`glan_assets.estimate`): one call per dataset,
and the quality level's judge over its sample of the dataset's stored instances."""

import math
from collections.abc import Mapping, Sequence

import dagster as dg

from glan_assets.dynosaur import instances, tasks
from glan_assets.methods import Fanout
from glan_assets.plan import PartitionPlan
from glan_assets.quality.judge import JUDGE_STAGE
from glan_assets.quality.stored import level_name
from glan_assets.stages import Stage

# Prompt and completion tokens per call before any are measured (the README's projection).
DEFAULT_TOKENS = {tasks.PROPOSE.name: (700, 300)}
QUALITY = level_name("dynosaur")


def fanout_dynosaur(levels: Sequence[str], stored_instances: int | None = None, judge_sample: float = 0.0
                    ) -> list[tuple[str, Stage, int]]:
    """One dataset's calls: one to propose its tasks; the judge scores `judge_sample` of its
    instances when they are known, that is stored and not rebuilt (how many tasks the model
    proposes, and so how many instances, is known only once it has)."""
    calls = [(tasks.LEVEL.name, tasks.PROPOSE, 1)]
    if stored_instances is not None:
        calls.append((QUALITY, JUDGE_STAGE, math.ceil(stored_instances * judge_sample)))
    return [c for c in calls if c[0] in levels]


def partition_calls(
    plan: PartitionPlan, resources: Mapping[str, dg.ConfigurableResource], stored: Mapping[str, int]
) -> list[tuple[str, Stage, int]]:
    known = None if instances.LEVEL.name in plan.levels else stored.get("instances", 0)
    return fanout_dynosaur(plan.levels, known, resources["quality"].judge_sample)


FANOUT = Fanout(
    partition_calls,
    stored_rows={"instances": f"SELECT dataset AS k, count(*) AS n FROM {instances.LEVEL.name} GROUP BY 1"},
    default_tokens=DEFAULT_TOKENS,
)
