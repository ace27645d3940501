"""The README's asset graph is generated from the definitions: `glan diagram` rewrites it."""

import re
from pathlib import Path

from glan_assets.definitions import defs
from glan_assets.diagram import mermaid

README = Path(__file__).resolve().parents[2] / "README.md"


def test_the_readme_diagram_is_the_definitions_graph():
    shown = re.search(r"```mermaid\n(.*?)```", README.read_text(), re.S)
    assert shown, "README.md has no mermaid diagram"
    assert shown.group(1) == mermaid(defs()), "the asset graph changed: run `glan diagram --write`"


def test_every_asset_and_dependency_is_drawn():
    text = mermaid(defs())
    assert "answers --> training_set" in text and "training_set --> model_checkpoint" in text
    assert "subgraph uit" in text and "    uit_candidates[uit_candidates]" in text
