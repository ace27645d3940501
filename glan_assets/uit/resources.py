"""UIT's settings as a typed resource; `glan_assets.settings` fills it from the environment
(`GLAN_COLLECTIONS`, `GLAN_<FIELD>`), and the launchpad can override any field."""

from typing import Annotated

import dagster as dg

from glan_assets.prompting import Prompt
from glan_assets.uit.collections_file import DEFAULT_REGISTRY, Collections, load_collections
from glan_assets.uit.prompts import TARGETS
from resources.local_models import DEFAULT_MODEL_CACHE
from resources.versioning import ReadBy, Unversioned


class UITSettings(dg.ConfigurableResource):
    collections_path: Annotated[str, Unversioned("each collection's entry and files are fingerprinted")] = str(
        DEFAULT_REGISTRY
    )
    # K rewrites per task, one request each (sample index 0..K-1)
    candidates_per_task: Annotated[int, ReadBy("uit_candidates")] = 3
    # "definition" (Super-NI, the paper's default) or "template" (FLAN)
    target_format: Annotated[str, ReadBy("uit_candidates")] = "definition"
    # A packaged model's name, or the directory of any causal LM.
    scorer_model: Annotated[str, ReadBy("uit_candidates")] = "smollm2-135m-instruct"
    # the paper scores a task on up to 32 of its instances
    max_scored_instances: Annotated[int, ReadBy("uit_candidates")] = 32
    scorer_batch_size: Annotated[int, Unversioned("batching does not change the scores")] = 8
    # GLAN_MODEL_CACHE: where the packaged models' converted copies are kept.
    model_cache: Annotated[str, Unversioned("where converted models are kept, not which")] = str(DEFAULT_MODEL_CACHE)

    def collections(self) -> Collections:
        return load_collections(self.collections_path)

    def transfer_prompt(self) -> Prompt:
        try:
            return TARGETS[self.target_format]
        except KeyError:
            raise ValueError(f"GLAN_TARGET_FORMAT={self.target_format!r}: use one of {', '.join(TARGETS)}") from None

    def wanted(self) -> dict[str, str]:
        """Collection -> fingerprint of its entry and its files, in registry order. """
        self.transfer_prompt()  # an unknown target format fails here, before anything runs
        collections = self.collections()
        return {name: collections.fingerprint(name) for name in collections.entries}
