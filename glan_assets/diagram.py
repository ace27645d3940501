"""The asset graph as a Mermaid flowchart, from the definitions themselves: the README's
diagram is this text (`glan diagram`), and a test fails when they differ."""

import dagster as dg


def mermaid(defs: dg.Definitions) -> str:
    """One subgraph per asset group, one node per asset, an edge per dependency."""
    specs = sorted(defs.resolve_all_asset_specs(), key=lambda s: s.key.to_user_string())
    groups: dict[str, list[dg.AssetSpec]] = {}
    for spec in specs:
        groups.setdefault(spec.group_name or "default", []).append(spec)
    lines = ["flowchart LR"]
    for group, members in groups.items():
        lines.append(f"  subgraph {group}")
        lines += [f"    {_node(s.key)}[{s.key.to_user_string()}]" for s in members]
        lines.append("  end")
    for spec in specs:
        for dep in sorted(spec.deps, key=lambda d: d.asset_key.to_user_string()):
            lines.append(f"  {_node(dep.asset_key)} --> {_node(spec.key)}")
    return "\n".join(lines) + "\n"


def _node(key: dg.AssetKey) -> str:
    return "_".join(key.path)
