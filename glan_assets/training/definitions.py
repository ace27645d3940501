"""Training's Dagster definitions: its assets, and the sensor that keeps the training set
following new answers."""

import dagster as dg

from glan_assets.training import MODULES

defs = dg.Definitions(
    assets=dg.load_assets_from_modules(MODULES),
    sensors=[
        # training_set is eager: it follows new answers partitions once this sensor runs.
        dg.AutomationConditionSensorDefinition(
            "training_automation",
            target=dg.AssetSelection.assets("training_set"),
            default_status=dg.DefaultSensorStatus.RUNNING,
        ),
    ],
)
