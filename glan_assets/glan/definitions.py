"""GLAN's Dagster definitions: its levels' assets, the per-discipline job and the taxonomy sensor."""

import dagster as dg

from glan_assets.glan import METHOD, MODULES, ON_DEMAND
from glan_assets.quality.levels import QUALITY, with_quality
from glan_assets.sensors import method_job, method_sensor

# The job and the sensor end with the method's quality level.
build_discipline = method_job(with_quality(METHOD), "build_discipline")

defs = dg.Definitions(
    assets=[*dg.load_assets_from_modules([*MODULES, *ON_DEMAND]), QUALITY[METHOD.name].asset],
    jobs=[build_discipline],
    sensors=[method_sensor(with_quality(METHOD), "taxonomy_sensor", build_discipline)],
)
