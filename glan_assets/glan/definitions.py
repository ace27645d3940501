"""GLAN's Dagster definitions: its levels' assets, the per-discipline job and the taxonomy sensor."""

import dagster as dg

from glan_assets.glan import METHOD, MODULES, ON_DEMAND
from glan_assets.sensors import method_job, method_sensor

build_discipline = method_job(METHOD, "build_discipline")

defs = dg.Definitions(
    assets=dg.load_assets_from_modules([*MODULES, *ON_DEMAND]),
    jobs=[build_discipline],
    sensors=[method_sensor(METHOD, "taxonomy_sensor", build_discipline)],
)
