"""The asset graph as a Mermaid flowchart, from the definitions themselves: the README's
diagram is this text (`glan diagram`), and a test fails when they differ."""

import dagster as dg


def mermaid(defs: dg.Definitions) -> str:
    """One subgraph per asset group holding its assets and the edges between them, then the
    edges across groups. Edges are written compactly so the README stays short: a run of
    one-to-one dependencies as one chain (`a --> b --> c`), other edges one line per asset
    with its dependencies joined by `&`."""
    specs = sorted(defs.resolve_all_asset_specs(), key=lambda s: s.key.to_user_string())
    group_of = {_node(s.key): s.group_name or "default" for s in specs}
    edges = sorted({(_node(d.asset_key), _node(s.key)) for s in specs for d in s.deps})
    lines = ["flowchart LR"]
    for group in dict.fromkeys(group_of[n] for n in sorted(group_of)):  # by each group's first asset
        inner = [(u, v) for u, v in edges if group_of.get(u) == group_of[v] == group]
        lines.append(f"  subgraph {group}")
        lines += [f"    {line}" for line in _compact(inner)]
        touched = {n for u, v in inner for n in (u, v)}
        lines += [f"    {n}" for n in sorted(group_of) if group_of[n] == group and n not in touched]
        lines.append("  end")
    across = [(u, v) for u, v in edges if group_of.get(u) != group_of[v]]
    lines += [f"  {line}" for line in _compact(across)]
    return "\n".join(lines) + "\n"


def _compact(edges: list[tuple[str, str]]) -> list[str]:
    outs: dict[str, list[str]] = {}
    ins: dict[str, list[str]] = {}
    for u, v in edges:
        outs.setdefault(u, []).append(v)
        ins.setdefault(v, []).append(u)

    def linear(u: str, v: str) -> bool:
        return len(outs[u]) == 1 and len(ins[v]) == 1

    lines, chained = [], set()
    # A chain starts where the edge into its first node, if any, is not one-to-one.
    for u, v in edges:
        if not linear(u, v) or any(linear(p, u) for p in ins.get(u, [])):
            continue
        chain = [u, v]
        while chain[-1] in outs and linear(chain[-1], outs[chain[-1]][0]):
            chain.append(outs[chain[-1]][0])
        chained.update(zip(chain, chain[1:]))
        lines.append(" --> ".join(chain))
    rest: dict[str, list[str]] = {}
    for u, v in edges:
        if (u, v) not in chained:
            rest.setdefault(v, []).append(u)
    lines += [f"{' & '.join(sorted(us))} --> {v}" for v, us in sorted(rest.items())]
    return lines


def _node(key: dg.AssetKey) -> str:
    return "_".join(key.path)
