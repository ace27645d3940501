"""Dynosaur's settings as a typed resource; `glan_assets.settings` fills it from the
environment (`GLAN_DATASETS`, `GLAN_MAX_CHARS`, `GLAN_INSTANCES_PER_TASK`), and the
launchpad can override any field."""

import dagster as dg

from glan_assets.dynosaur.registry_file import DEFAULT_REGISTRY, Registry, load_registry


class DynosaurSettings(dg.ConfigurableResource):
    registry_path: str = str(DEFAULT_REGISTRY)
    max_chars: int = 2000  # each of instruction, input and output is cut to this (the paper's cap)
    # Instances per task at most (0: every usable row), so a huge dataset does not drown the rest.
    instances_per_task: int = 2000
    # The sensor deletes a dataset removed from the registry only when this is set.
    sensor_prunes: bool = False

    def registry(self) -> Registry:
        return load_registry(self.registry_path)
