"""The Dagster code location: each method's definitions merged, every level's checks, and the
resources the settings resolve from the environment when the location loads."""

import dagster as dg

from glan_assets.batches import batch_sensor
from glan_assets.checks import all_checks
from glan_assets.dynosaur.definitions import defs as dynosaur_defs
from glan_assets.glan.definitions import defs as glan_defs
from glan_assets.orphans import orphaned_runs_sensor
from glan_assets.plan import with_input_versions
from glan_assets.registry import LEVELS, METHODS
from glan_assets.settings import Settings, set_process_environment
from glan_assets.training.definitions import defs as training_defs
from glan_assets.uit.definitions import defs as uit_defs


@dg.definitions
def defs() -> dg.Definitions:
    settings = Settings.from_env()
    set_process_environment(settings)  # before a run's step imports torch
    resources = settings.resources()
    merged = dg.Definitions.merge(glan_defs, training_defs, uit_defs, dynosaur_defs)
    return dg.Definitions(
        # A level's code version carries its settings and input files, so the UI's stale markers
        # and the training set's automation agree with `glan build`'s plan.
        assets=with_input_versions(merged.assets, LEVELS, resources),
        jobs=merged.jobs,
        sensors=[*merged.sensors, orphaned_runs_sensor, batch_sensor(METHODS, merged.jobs)],
        asset_checks=all_checks(LEVELS),
        resources=resources,
    )
