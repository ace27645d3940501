"""Dynosaur's settings as a typed resource; `glan_assets.settings` fills it from the
environment (`GLAN_DATASETS`, `GLAN_MAX_CHARS`, `GLAN_INSTANCES_PER_TASK`), and the
launchpad can override any field."""

from typing import Annotated

import dagster as dg

from glan_assets.dynosaur.registry_file import DEFAULT_REGISTRY, Registry, load_registry
from resources.versioning import ReadBy, Unversioned


class DynosaurSettings(dg.ConfigurableResource):
    registry_path: Annotated[str, Unversioned("each dataset's entry and files are fingerprinted")] = str(
        DEFAULT_REGISTRY
    )
    # each of instruction, input and output is cut to this (the paper's cap)
    max_chars: Annotated[int, ReadBy("dynosaur_instances")] = 2000
    # Instances per task at most (0: every usable row), so a huge dataset does not drown the rest.
    instances_per_task: Annotated[int, ReadBy("dynosaur_instances")] = 2000
    # The sensor deletes a dataset removed from the registry only when this is set.
    sensor_prunes: Annotated[bool, Unversioned("the sensor's choice, not the rows")] = False

    def registry(self) -> Registry:
        return load_registry(self.registry_path)
