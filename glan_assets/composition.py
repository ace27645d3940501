"""Everything the list of methods decides, derived from the list the root hands in: each
method ending with its quality level, the training assets over them, every level, and the
code location's definitions. Nothing here names a method: a method is added at the root."""

from collections.abc import Mapping, Sequence
from dataclasses import dataclass

import dagster as dg

from glan_assets.batches import batch_sensor
from glan_assets.checks import all_checks
from glan_assets.levels import Level
from glan_assets.methods import Method
from glan_assets.orphans import orphaned_runs_sensor
from glan_assets.plan import with_input_versions
from glan_assets.quality.levels import Quality, quality_level, with_quality
from glan_assets.sensors import method_job, method_sensor
from glan_assets.stages import Stage
from glan_assets.training.assets import Training, training_assets


@dataclass(frozen=True)
class Composition:
    methods: tuple[Method, ...]  # in build order, each ending with its quality level
    qualities: tuple[Quality, ...]  # each method's quality level and asset, in its order
    training: Training

    @property
    def levels(self) -> list[Level]:
        """Tables with rows and ids, each declared once beside its asset."""
        return [
            *(lv for m in self.methods for lv in m.levels),
            *(module.LEVEL for m in self.methods for module in m.on_demand),
            self.training.level,
        ]

    def level(self, name: str) -> Level:
        for lv in self.levels:
            if lv.name == name:
                return lv
        raise KeyError(f"no level {name!r}; levels: {', '.join(lv.name for lv in self.levels)}")

    def quality(self, method: str) -> Quality:
        return next(q for q in self.qualities if q.level.method == method)

    def stages(self) -> list[Stage]:
        """Every LLM stage, once each, in level order."""
        found: dict[str, Stage] = {}
        for lv in self.levels:
            for stage in lv.stages:
                found.setdefault(stage.name, stage)
        return list(found.values())

    def generation_assets(self) -> list[dg.AssetsDefinition]:
        """Every method's per-partition assets, its quality level's included."""
        return [
            *dg.load_assets_from_modules([module for m in self.methods for module in m.modules]),
            *(q.asset for q in self.qualities),
        ]

    def definitions(self, resources: Mapping[str, dg.ConfigurableResource]) -> dg.Definitions:
        """The code location: every asset, a job and a sensor per method, every level's checks."""
        on_demand = dg.load_assets_from_modules([module for m in self.methods for module in m.on_demand])
        jobs = {m.name: method_job(m, m.job_name) for m in self.methods}
        return dg.Definitions(
            # A level's code version carries its settings and input files, so the UI's stale markers
            # and the training set's automation agree with `glan build`'s plan.
            assets=with_input_versions(
                [*self.generation_assets(), *on_demand, *self.training.assets], self.levels, resources
            ),
            jobs=list(jobs.values()),
            sensors=[
                *(method_sensor(m, m.sensor_name, jobs[m.name]) for m in self.methods),
                # training_set is eager: it follows new partitions once this sensor runs.
                dg.AutomationConditionSensorDefinition(
                    "training_automation",
                    target=dg.AssetSelection.assets(self.training.level.name),
                    default_status=dg.DefaultSensorStatus.RUNNING,
                ),
                orphaned_runs_sensor,
                batch_sensor(self.methods, list(jobs.values())),
            ],
            asset_checks=all_checks(self.levels),
            resources=resources,
        )


def compose(methods: Sequence[Method]) -> Composition:
    """The composition of `methods`, in build order; the training set reads them all."""
    qualities = [quality_level(m) for m in methods]
    return Composition(
        tuple(with_quality(m, q) for m, q in zip(methods, qualities, strict=True)),
        tuple(qualities),
        training_assets(methods),
    )
