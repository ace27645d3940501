"""The README's asset graph is generated from the definitions: `glan diagram` rewrites it."""

import re
from pathlib import Path

import dagster as dg

from glan_assets.definitions import defs
from glan_assets.diagram import mermaid

README = Path(__file__).resolve().parents[2] / "README.md"


def drawn(text: str) -> tuple[dict[str, str], set[tuple[str, str]]]:
    """Read a flowchart back: each node's subgraph, and every edge, chains and `&` expanded."""
    group_of, edges, group = {}, set(), None
    for line in text.splitlines()[1:]:
        line = line.strip()
        if line.startswith("subgraph "):
            group = line.split()[1]
        elif line == "end":
            group = None
        else:
            steps = [[n.strip() for n in step.split("&")] for step in line.split("-->")]
            for a, b in zip(steps, steps[1:]):
                edges |= {(u, v) for u in a for v in b}
            for node in (n for step in steps for n in step):
                group_of.setdefault(node, group)
    return group_of, edges


def test_the_readme_diagram_is_the_definitions_graph():
    shown = re.search(r"```mermaid\n(.*?)```", README.read_text(), re.S)
    assert shown, "README.md has no mermaid diagram"
    assert shown.group(1) == mermaid(defs()), "the asset graph changed: run `glan diagram --write`"


def test_every_asset_in_its_group_and_every_dependency_is_drawn():
    d = defs()
    specs = d.resolve_all_asset_specs()
    group_of, edges = drawn(mermaid(d))
    assert group_of == {s.key.to_user_string(): s.group_name for s in specs}
    assert edges == {(dep.asset_key.to_user_string(), s.key.to_user_string()) for s in specs for dep in s.deps}
    assert "subjects --> syllabi --> sessions --> questions --> answers" in mermaid(d)


def test_chains_and_fan_ins_are_drawn_without_losing_an_edge():
    @dg.asset(group_name="g")
    def a(): ...

    @dg.asset(group_name="g", deps=[a])
    def b(): ...

    @dg.asset(group_name="g", deps=[b])
    def c(): ...

    @dg.asset(group_name="g", deps=[a, c])
    def d(): ...

    @dg.asset(group_name="h", deps=[d, b])
    def e(): ...

    @dg.asset(group_name="h")
    def lone(): ...

    text = mermaid(dg.Definitions(assets=[a, b, c, d, e, lone]))
    group_of, edges = drawn(text)
    assert edges == {("a", "b"), ("b", "c"), ("a", "d"), ("c", "d"), ("d", "e"), ("b", "e")}
    assert group_of == {"a": "g", "b": "g", "c": "g", "d": "g", "e": "h", "lone": "h"}
    assert "b --> c" in text and "a & c --> d" in text and "b & d --> e" in text
