"""Dynosaur's Dagster definitions: its levels' assets, the per-dataset job and the registry sensor."""

import dagster as dg

from glan_assets.dynosaur import METHOD, MODULES
from glan_assets.sensors import method_job, method_sensor

build_dataset = method_job(METHOD, "build_dataset")

defs = dg.Definitions(
    assets=dg.load_assets_from_modules(MODULES),
    jobs=[build_dataset],
    sensors=[method_sensor(METHOD, "dataset_sensor", build_dataset)],
)
