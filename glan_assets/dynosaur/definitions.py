"""Dynosaur's Dagster definitions: its levels' assets, the per-dataset job and the registry sensor."""

import dagster as dg

from glan_assets.dynosaur import METHOD, MODULES
from glan_assets.quality.levels import QUALITY, with_quality
from glan_assets.sensors import method_job, method_sensor

# The job and the sensor end with the method's quality level.
build_dataset = method_job(with_quality(METHOD), "build_dataset")

defs = dg.Definitions(
    assets=[*dg.load_assets_from_modules(MODULES), QUALITY[METHOD.name].asset],
    jobs=[build_dataset],
    sensors=[method_sensor(with_quality(METHOD), "dataset_sensor", build_dataset)],
)
