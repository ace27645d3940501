"""UIT's Dagster definitions: its levels' assets, the per-collection job and the registry sensor."""

import dagster as dg

from glan_assets.sensors import method_job, method_sensor
from glan_assets.uit import METHOD, MODULES

build_collection = method_job(METHOD, "build_collection")

defs = dg.Definitions(
    assets=dg.load_assets_from_modules(MODULES),
    jobs=[build_collection],
    sensors=[method_sensor(METHOD, "collection_sensor", build_collection)],
)
