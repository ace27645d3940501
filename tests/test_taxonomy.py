"""The taxonomy file: the documented shape loads; bad input names file, line and node."""

import subprocess
import sys

import pytest

from glan_assets.glan.taxonomy_file import DEFAULT_TAXONOMY, TaxonomyError, add_node, load_taxonomy


def test_the_documented_shape_loads_with_extra_keys(tmp_path):
    path = tmp_path / "t.yaml"
    path.write_text(
        "fields:\n  - name: Natural Sciences\n    description: extra keys are fine\n    sub_fields:\n"
        "      - name: Physical Sciences\n        disciplines:\n          - name: Physics\n"
        "          - name: Astronomy\n            description: stars\n"
    )
    taxonomy = load_taxonomy(path)
    assert list(taxonomy.disciplines) == ["Physics", "Astronomy"]
    assert taxonomy.disciplines["Astronomy"].description == "stars"
    assert taxonomy.disciplines["Physics"].field == "Natural Sciences"


def test_the_shipped_demo_taxonomy_loads():
    assert len(load_taxonomy(DEFAULT_TAXONOMY).disciplines) >= 2


BAD = {
    "yaml that does not parse": (
        "fields:\n  - name: A\n    sub_fields: [\n", r"t\.yaml:\d+: YAML does not parse"),
    "a missing name": (
        "fields:\n  - name: A\n    sub_fields:\n      - name: B\n        disciplines:\n          - description: x\n",
        r"t\.yaml:6: A > B > discipline #1: missing 'name'"),
    "two disciplines with the same name": (
        "fields:\n  - name: A\n    sub_fields:\n      - name: B\n        disciplines:\n          - name: Optics\n"
        "      - name: C\n        disciplines:\n          - name: Optics\n",
        r"t\.yaml:9: A > C > 'Optics': duplicate discipline \(also under A > B\)"),
    "a name Dagster refuses as a partition key": (
        "fields:\n  - name: A\n    sub_fields:\n      - name: B\n        disciplines:\n          - name: Wait...what\n",
        r"t\.yaml:6: A > B > 'Wait...what': contains '...', which Dagster refuses"),
}


@pytest.mark.parametrize("case", list(BAD))
def test_bad_input_names_file_line_and_node(tmp_path, case):
    text, message = BAD[case]
    path = tmp_path / "t.yaml"
    path.write_text(text)
    with pytest.raises(TaxonomyError, match=message):
        load_taxonomy(path)


def test_glan_build_refuses_a_bad_file_and_keeps_what_was_stored(project):
    project.build("Physics")
    stored = project.db.read_bytes()
    project.taxonomy.write_text(project.taxonomy.read_text() + "          - name: Physics\n")

    proc = subprocess.run([sys.executable, "-m", "glan_assets.cli", "build"], capture_output=True, text=True,
                          env=project.subprocess_env())

    assert proc.returncode == 1
    assert f"{project.taxonomy}:8: Natural Sciences > Physical Sciences > 'Physics': duplicate discipline" in proc.stderr
    assert project.db.read_bytes() == stored


def test_accepting_a_node_keeps_the_files_comments(tmp_path):
    path = tmp_path / "t.yaml"
    path.write_text("# my taxonomy\nfields:\n  - name: A  # the first\n    sub_fields:\n      - name: B\n"
                    "        disciplines:\n          - name: C\n")
    add_node(path, "discipline", "D", field="A", sub_field="B")
    assert "# my taxonomy" in path.read_text() and "# the first" in path.read_text()
    assert list(load_taxonomy(path).disciplines) == ["C", "D"]
    with pytest.raises(TaxonomyError, match="duplicate discipline"):
        add_node(path, "discipline", "C", field="A", sub_field="B")
    assert list(load_taxonomy(path).disciplines) == ["C", "D"]
