"""Dynosaur, declared once: `MODULES` lists its levels in build order, one module each (adding a
level is a module beside these and one line here); `METHOD` derives the rest from them."""

from glan_assets.dynosaur import instances, metadata, tasks
from glan_assets.dynosaur.partitions import dataset_partitions
from glan_assets.dynosaur.contexts import WORKED_EXAMPLES, dynosaur_contexts
from glan_assets.dynosaur.estimate import FANOUT
from glan_assets.dynosaur.fake_replies import fake_reply
from glan_assets.dynosaur.resources import DynosaurSettings
from glan_assets.methods import Method, MethodSettings

MODULES = [metadata, tasks, instances]
LEVELS = [m.LEVEL for m in MODULES]

METHOD = Method(
    "dynosaur",
    tuple(LEVELS),
    tuple(MODULES),
    dataset_partitions,
    wanted=lambda res: {name: e.fingerprint for name, e in res["dynosaur"].registry().entries.items()},
    source_file=lambda res: res["dynosaur"].registry_path,
    settings=MethodSettings(DynosaurSettings, "dynosaur", "GLAN_DATASETS", "registry_path"),
    prunes=lambda res: res["dynosaur"].sensor_prunes,
    note="Dynosaur (Yin et al., 2023): instructions an LLM wrote for existing annotated datasets, over their rows",
    worked_examples=WORKED_EXAMPLES,
    contexts=dynosaur_contexts,
    fake_reply=fake_reply,
    fanout=FANOUT,
)
