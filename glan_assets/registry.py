"""Every method's levels, in build order: what lineage, checks, export, the stage settings
and the CLI derive from. A method joins with one line here."""

from glan_assets import dynosaur, glan, training, uit
from glan_assets.levels import Level
from glan_assets.methods import Method
from glan_assets.quality import levels as quality
from glan_assets.stages import Stage

# Every method whose partitions `glan build` plans and builds, in build order; each ends
# with its quality level.
METHODS: list[Method] = [quality.with_quality(m) for m in (glan.METHOD, uit.METHOD, dynosaur.METHOD)]

# Tables with rows and ids, each declared once beside its asset.
LEVELS: list[Level] = [
    *glan.LEVELS, *glan.ON_DEMAND_LEVELS, *uit.LEVELS, *dynosaur.LEVELS, *quality.LEVELS, *training.LEVELS
]


def level(name: str) -> Level:
    for lv in LEVELS:
        if lv.name == name:
            return lv
    raise KeyError(f"no level {name!r}; levels: {', '.join(lv.name for lv in LEVELS)}")


def stages() -> list[Stage]:
    """Every LLM stage, once each, in level order."""
    found: dict[str, Stage] = {}
    for lv in LEVELS:
        for stage in lv.stages:
            found.setdefault(stage.name, stage)
    return list(found.values())
