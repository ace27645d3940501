"""UIT, declared once: `MODULES` lists its levels in build order, one module each (adding a
level is a module beside these and one line here); `METHOD` derives the rest from them."""

from glan_assets.methods import Method, MethodSettings
from glan_assets.uit import candidates, raw, unified
from glan_assets.uit.contexts import WORKED_EXAMPLES, uit_contexts
from glan_assets.uit.estimate import FANOUT
from glan_assets.uit.fake_replies import fake_reply
from glan_assets.uit.partitions import collection_partitions
from glan_assets.uit.resources import UITSettings

MODULES = [raw, candidates, unified]
LEVELS = [m.LEVEL for m in MODULES]

METHOD = Method(
    "uit",
    tuple(LEVELS),
    tuple(MODULES),
    collection_partitions,
    wanted=lambda res: res["uit"].wanted(),
    source_file=lambda res: res["uit"].collections_path,
    settings=MethodSettings(UITSettings, "uit", "GLAN_COLLECTIONS", "collections_path"),
    note="UIT (Liang et al., 2023): existing instruction collections, their instructions moved to one format",
    worked_examples=WORKED_EXAMPLES,
    contexts=uit_contexts,
    fake_reply=fake_reply,
    fanout=FANOUT,
)
