"""UIT's settings as a typed resource; `glan_assets.settings` fills it from the environment
(`GLAN_COLLECTIONS`, `GLAN_<FIELD>`), and the launchpad can override any field."""

import dagster as dg

from glan_assets.prompting import Prompt
from glan_assets.uit.collections_file import DEFAULT_REGISTRY, Collections, load_collections
from glan_assets.uit.prompts import TARGETS


class UITSettings(dg.ConfigurableResource):
    collections_path: str = str(DEFAULT_REGISTRY)
    candidates_per_task: int = 3  # K rewrites per task, one request each (sample index 0..K-1)
    target_format: str = "definition"  # "definition" (Super-NI, the paper's default) or "template" (FLAN)
    # A packaged model's name, or the directory of any causal LM.
    scorer_model: str = "smollm2-135m-instruct"
    max_scored_instances: int = 32  # the paper scores a task on up to 32 of its instances
    scorer_batch_size: int = 8

    def collections(self) -> Collections:
        return load_collections(self.collections_path)

    def transfer_prompt(self) -> Prompt:
        try:
            return TARGETS[self.target_format]
        except KeyError:
            raise ValueError(f"GLAN_TARGET_FORMAT={self.target_format!r}: use one of {', '.join(TARGETS)}") from None

    def wanted(self) -> dict[str, str]:
        """Collection -> fingerprint of its entry and its files, in registry order. (The
        settings that shape the candidates are the `uit_candidates` level's `config`.)"""
        self.transfer_prompt()  # an unknown target format fails here, before anything runs
        collections = self.collections()
        return {name: collections.fingerprint(name) for name in collections.entries}
