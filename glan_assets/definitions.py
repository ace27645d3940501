"""The Dagster code location: the root's composition of the methods, with the resources the
settings resolve from the environment when the location loads."""

import dagster as dg

from glan_assets.registry import COMPOSED, settings_from_env
from glan_assets.settings import set_process_environment


@dg.definitions
def defs() -> dg.Definitions:
    settings = settings_from_env()
    set_process_environment(settings)  # before a run's step imports torch
    return COMPOSED.definitions(settings.resources())
