"""GLAN, declared once: `MODULES` lists its levels in build order, one module each (adding a
level is a module beside these and one line here); `METHOD` derives the rest from them."""

from glan_assets.glan import answers, disciplines, fields, questions, sessions, subjects, syllabi, taxonomy_proposals
from glan_assets.glan.estimate import FANOUT
from glan_assets.glan.fake_replies import fake_reply
from glan_assets.glan.partitions import discipline_partitions
from glan_assets.glan.resources import PROFILE_COUNTS, GenerationSettings
from glan_assets.methods import Method, MethodSettings

MODULES = [fields, disciplines, subjects, syllabi, sessions, questions, answers]
LEVELS = [m.LEVEL for m in MODULES]

METHOD = Method(
    "glan",
    tuple(LEVELS),
    tuple(MODULES),
    discipline_partitions,
    wanted=lambda res: {name: node.fingerprint for name, node in res["settings"].taxonomy().disciplines.items()},
    source_file=lambda res: res["settings"].taxonomy_path,
    settings=MethodSettings(GenerationSettings, "settings", "GLAN_TAXONOMY", "taxonomy_path", profiles=PROFILE_COUNTS),
    prunes=lambda res: res["settings"].sensor_prunes,
    note="GLAN (Li et al., 2024): homework questions and answers generated from a taxonomy of human knowledge",
    # Not built per discipline: asked for on demand (`glan taxonomy propose`).
    on_demand=(taxonomy_proposals,),
    sensor="taxonomy_sensor",
    fake_reply=fake_reply,
    fanout=FANOUT,
)
