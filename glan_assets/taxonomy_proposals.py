"""GLAN's LLM-assisted taxonomy building: proposed fields, sub-fields and disciplines wait in
a review table until a person accepts them (`glan taxonomy accept`) or edits the file."""

import dagster as dg

from glan_assets.ids import stable_id
from glan_assets.prompts import PROPOSE_NODES, code_version
from glan_assets.results import rejects_of
from glan_assets.schemas import ProposalList, ProposalRow
from glan_assets.taxonomy_file import Taxonomy
from resources.llm import LLMResource, Reply, Request
from resources.settings import GenerationSettings
from resources.storage import DuckDBStore

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
            proposal_id=stable_id("prp", kind, field, sub, p.name.strip().lower()),
            kind=kind,
            field_name=field,
            sub_field_name=sub,
            name=p.name.strip(),
            reason=p.reason.strip(),
        )
        for p in reply.value.proposals
        if p.name.strip().lower() not in existing
    ]


@dg.asset(
    group_name="taxonomy",
    code_version=code_version(PROPOSE_NODES),
    kinds={"openai", "duckdb"},
    owners=["team:data"],
    description="LLM-proposed taxonomy nodes for review (keep/remove). Nothing enters the "
    "taxonomy until a person accepts it with `glan taxonomy accept`.",
)
def taxonomy_proposals(
    context: dg.AssetExecutionContext, llm: LLMResource, store: DuckDBStore, settings: GenerationSettings
) -> dg.MaterializeResult:
    taxonomy = settings.taxonomy()
    slots = proposal_slots(taxonomy)
    kind_plural = {"field": "fields", "sub_field": "sub-fields", "discipline": "disciplines"}
    batch = llm.generate_structured(
        "taxonomy",
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
        ProposalList,
    )
    # Votes already cast survive a rebuild; fresh proposals join them as pending.
    voted = {p.proposal_id: p for p in store.read(ProposalRow) if p.status != "pending"}
    fresh: dict[str, ProposalRow] = {}
    for (slot, _, children), reply in zip(slots, batch.replies):
        if reply.ok:
            for row in proposal_rows(slot, reply, {c.lower() for c in children}):
                fresh.setdefault(row.proposal_id, row)
    rows = list({**fresh, **voted}.values())
    rejects = rejects_of(ProposalRow.table, "", {"taxonomy": batch.replies})
    store.replace_rows(ProposalRow, rows, rejects)
    return dg.MaterializeResult(
        metadata={
            "pending": sum(r.status == "pending" for r in rows),
            "rejects": len(rejects),
            "llm_calls": batch.stats.calls,
            "cache_hits": batch.stats.cache_hits,
            "next_step": "review with `glan taxonomy list`, then `glan taxonomy accept ID ...`",
        }
    )
