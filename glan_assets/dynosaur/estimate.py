"""Dynosaur's fan-out for the plan's estimate (`glan_assets.estimate`): one call per dataset."""

from collections.abc import Mapping, Sequence

import dagster as dg

from glan_assets.dynosaur import tasks
from glan_assets.methods import Fanout
from glan_assets.plan import PartitionPlan
from glan_assets.stages import Stage

# Prompt and completion tokens per call before any are measured (the README's projection).
DEFAULT_TOKENS = {tasks.PROPOSE.name: (700, 300)}


def fanout_dynosaur(levels: Sequence[str]) -> list[tuple[str, Stage, int]]:
    """One dataset's calls: one to propose its tasks."""
    level = tasks.LEVEL.name
    return [(level, tasks.PROPOSE, 1)] if level in levels else []


def partition_calls(
    plan: PartitionPlan, resources: Mapping[str, dg.ConfigurableResource], stored: Mapping[str, int]
) -> list[tuple[str, Stage, int]]:
    return fanout_dynosaur(plan.levels)


FANOUT = Fanout(partition_calls, default_tokens=DEFAULT_TOKENS)
