"""The root: the list of methods, composed once (`glan_assets.composition`). The code location
(`glan_assets.definitions`) and the CLI take everything from here; nothing below imports it.
A method joins with one line here."""

from collections.abc import Mapping

import dagster as dg

from glan_assets.composition import compose
from glan_assets.dynosaur.method import METHOD as DYNOSAUR
from glan_assets.glan.method import METHOD as GLAN
from glan_assets.settings import Settings
from glan_assets.uit.method import METHOD as UIT

# The methods, in build order.
REGISTERED = (GLAN, UIT, DYNOSAUR)
COMPOSED = compose(REGISTERED)

# Every method whose partitions `glan build` plans and builds, in build order; each ends
# with its quality level.
METHODS = list(COMPOSED.methods)
LEVELS = COMPOSED.levels
TRAINING = COMPOSED.training
level = COMPOSED.level
stages = COMPOSED.stages


def settings_from_env(env: Mapping[str, str] | None = None) -> Settings:
    """The settings of this composition, from the environment (or `env`)."""
    return Settings.from_env(env, COMPOSED)


def resources_from_env(env: Mapping[str, str] | None = None) -> dict[str, dg.ConfigurableResource]:
    """Every resource, from the environment (or `env`)."""
    return settings_from_env(env).resources()
