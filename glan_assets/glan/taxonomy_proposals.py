"""GLAN's LLM-assisted taxonomy building: proposed fields, sub-fields and disciplines wait in
a review table until a person accepts them (`glan taxonomy accept`) or edits the file."""

import dagster as dg

from glan_assets import stages
from glan_assets.glan.prompts import PROPOSE_NODES
from glan_assets.glan.resources import GenerationSettings
from glan_assets.glan.schemas import ProposalList, ProposalRow
from glan_assets.glan.taxonomy_file import Taxonomy
from glan_assets.ids import stable_id
from glan_assets.levels import Level, level_asset
from glan_assets.results import rejects_of
from glan_assets.rows import RejectRow
from glan_assets.stages import Reply, Request, Stage
from resources.llm import LLMResource, Sampling
from resources.storage import DuckDBStore, Slice

PROPOSE = Stage("taxonomy", (PROPOSE_NODES,), Sampling(temperature=1.0, max_tokens=512), ProposalList)

LEVEL = Level(
    "taxonomy_proposals",
    ProposalRow,
    id_prefix="prp",
    method="glan",
    group="taxonomy",
    description="LLM-proposed taxonomy nodes for review (keep/remove). Nothing enters the "
    "taxonomy until a person accepts it with `glan taxonomy accept`.",
    stages=(PROPOSE,),
    label="proposal",
)

# (kind proposed, field, sub-field): the parent is the taxonomy root, a field or a sub-field.
Slot = tuple[str, str, str]


def proposal_slots(taxonomy: Taxonomy) -> list[tuple[Slot, str, list[str]]]:
    """Every place a node could be added: (slot, parent description, existing children)."""
    slots: list[tuple[Slot, str, list[str]]] = [(("field", "", ""), "the root", list(taxonomy.tree))]
    for field, subs in taxonomy.tree.items():
        slots.append((("sub_field", field, ""), f'the field "{field}"', list(subs)))
        for sub, names in subs.items():
            slots.append((("discipline", field, sub), f'the sub-field "{sub}" of "{field}"', names))
    return slots


def proposal_rows(slot: Slot, reply: Reply, existing: set[str]) -> list[ProposalRow]:
    kind, field, sub = slot
    return [
        ProposalRow(
            proposal_id=stable_id(LEVEL.id_prefix, kind, field, sub, p.name.strip().lower()),
            kind=kind,
            field_name=field,
            sub_field_name=sub,
            name=p.name.strip(),
            reason=p.reason.strip(),
        )
        for p in reply.value.proposals
        if p.name.strip().lower() not in existing
    ]


@level_asset(LEVEL)
def taxonomy_proposals(
    context: dg.AssetExecutionContext, llm: LLMResource, store: DuckDBStore, settings: GenerationSettings
) -> dg.MaterializeResult:
    taxonomy = settings.taxonomy()
    slots = proposal_slots(taxonomy)
    kind_plural = {"field": "fields", "sub_field": "sub-fields", "discipline": "disciplines"}
    batch = stages.run(
        llm,
        PROPOSE,
        [
            Request(
                "|".join(slot),
                PROPOSE_NODES.messages(
                    parent=parent,
                    kind_plural=kind_plural[slot[0]],
                    existing=", ".join(children) or "none yet",
                    count=settings.proposals_per_sub_field,
                ),
            )
            for slot, parent, children in slots
        ],
    )
    # Votes already cast survive a rebuild; fresh proposals join them as pending.
    voted = {p.proposal_id: p for p in store.read(ProposalRow) if p.status != "pending"}
    fresh: dict[str, ProposalRow] = {}
    for (slot, _, children), reply in zip(slots, batch.replies):
        if reply.ok:
            for row in proposal_rows(slot, reply, {c.lower() for c in children}):
                fresh.setdefault(row.proposal_id, row)
    rows = list({**fresh, **voted}.values())
    rejects = rejects_of(LEVEL.name, "", {PROPOSE.name: batch.replies})
    store.replace([Slice(RejectRow, rejects, {"asset": LEVEL.name}), Slice(ProposalRow, rows)])
    return dg.MaterializeResult(
        metadata={
            "pending": sum(r.status == "pending" for r in rows),
            "rejects": len(rejects),
            "llm_calls": batch.stats.calls,
            "cache_hits": batch.stats.cache_hits,
            "next_step": "review with `glan taxonomy list`, then `glan taxonomy accept ID ...`",
        }
    )
