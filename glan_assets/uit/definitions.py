"""UIT's Dagster definitions: its levels' assets, the per-collection job and the registry sensor."""

import dagster as dg

from glan_assets.quality.levels import QUALITY, with_quality
from glan_assets.sensors import method_job, method_sensor
from glan_assets.uit import METHOD, MODULES

# The job and the sensor end with the method's quality level.
build_collection = method_job(with_quality(METHOD), "build_collection")

defs = dg.Definitions(
    assets=[*dg.load_assets_from_modules(MODULES), QUALITY[METHOD.name].asset],
    jobs=[build_collection],
    sensors=[method_sensor(with_quality(METHOD), "collection_sensor", build_collection)],
)
