"""Jobs over one discipline partition."""

import dagster as dg


# Every per-discipline asset, taxonomy through answers.
PER_DISCIPLINE = dg.AssetSelection.groups("taxonomy", "generation") - dg.AssetSelection.assets("taxonomy_proposals")

build_discipline = dg.define_asset_job(
    "build_discipline",
    selection=PER_DISCIPLINE,
    description="Builds one discipline from its taxonomy node to its answers.",
)

refresh_taxonomy = dg.define_asset_job(
    "refresh_taxonomy",
    selection=dg.AssetSelection.groups("taxonomy") - dg.AssetSelection.assets("taxonomy_proposals"),
    description="Re-reads one discipline's node from the taxonomy file.",
)
