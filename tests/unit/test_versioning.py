"""Every input of a level is in its version by default: settings as a whole, files by content."""

import ast
import importlib
from pathlib import Path
from typing import Annotated

import dagster as dg

import glan_assets.definitions  # noqa: F401  (declares every level's asset)
from glan_assets.levels import Level, resource_keys
from glan_assets.plan import config_version
from glan_assets.registry import LEVELS, level, resources_from_env
from resources.versioning import InputFiles, ReadBy, Unversioned, file_digest, settings_version

ROOT = Path(__file__).resolve().parents[2]


class Example(dg.ConfigurableResource):
    new_setting: int = 1  # nobody listed it anywhere
    files: Annotated[list[str], InputFiles()] = []
    output: Annotated[str, Unversioned("where it goes")] = "out"
    only_b: Annotated[int, ReadBy("b")] = 0


def test_a_field_no_one_listed_is_versioned():
    assert settings_version(Example(new_setting=1), "a") != settings_version(Example(new_setting=2), "a")


def test_marked_fields_are_left_out_where_they_say():
    assert settings_version(Example(output="x"), "a") == settings_version(Example(output="y"), "a")
    assert settings_version(Example(only_b=1), "a") == settings_version(Example(only_b=2), "a")
    assert settings_version(Example(only_b=1), "b") != settings_version(Example(only_b=2), "b")


def test_files_are_versioned_by_content_not_by_path(tmp_path):
    a, b = tmp_path / "a.jsonl", tmp_path / "b.jsonl"
    a.write_text('{"question": "q1"}\n')
    b.write_text('{"question": "q1"}\n')
    before = settings_version(Example(files=[str(a)]), "a")
    a.write_text('{"question": "q2"}\n')
    assert settings_version(Example(files=[str(a)]), "a") != before
    folder = tmp_path / "tasks"
    folder.mkdir()
    (folder / "t.yaml").write_text("task: one\n")
    digest = file_digest([str(folder)])
    (folder / "t.yaml").write_text("task: two\n")
    assert file_digest([str(folder)]) != digest
    assert file_digest(str(tmp_path / "missing")) != file_digest(str(b))


QUALITY = {"glan_quality", "uit_quality", "dynosaur_quality"}


def test_a_setting_makes_exactly_its_readers_stale():
    base = resources_from_env({})
    changes = [
        ("settings", "questions_per_syllabus", 7, {"questions"}),
        ("settings", "sessions_max", 99, {"syllabi", "sessions"}),
        ("settings", "proposals_per_sub_field", 9, {"taxonomy_proposals"}),
        ("training", "heldout_per_discipline", 9, {"training_set"}),
        ("training", "near_dup_threshold", 0.5, {"training_set"}),
        ("training", "contamination_ngram", 8, {"training_set"}),
        # The quality levels score the pairs the caps let through; the training set takes them.
        ("training", "source_caps", {"glan": 1}, {"training_set", *QUALITY}),
        # A threshold re-selects from stored scores; a rule re-scores.
        ("quality", "ifd_max", 0.9, {"training_set"}),
        ("quality", "min_explained_words", 3, QUALITY),
        ("quality", "judge_api_key", "sk-other", set()),
        ("training", "checkpoints", "elsewhere", set()),
        ("uit", "candidates_per_task", 9, {"uit_candidates"}),
        ("dynosaur", "max_chars", 10, {"dynosaur_instances"}),
    ]
    for key, name, value, readers in changes:
        changed = base | {key: base[key].model_copy(update={name: value})}
        stale = {lv.name for lv in LEVELS if config_version(lv, base) != config_version(lv, changed)}
        assert stale == readers, (name, stale)


def test_training_set_version_follows_benchmark_file_content(tmp_path):
    bench = tmp_path / "bench.jsonl"
    bench.write_text('{"question": "What is 2+2?"}\n')
    base = resources_from_env({"GLAN_BENCHMARKS": str(bench)})
    before = config_version(level("training_set"), base)
    bench.write_text('{"question": "What is 2+3?"}\n')
    assert config_version(level("training_set"), base) != before


def _level_modules() -> dict[str, Path]:
    """Level name -> the file that declares it (its `LEVEL`)."""
    found = {}
    for path in (ROOT / "glan_assets").rglob("*.py"):
        module = importlib.import_module(".".join(path.relative_to(ROOT).with_suffix("").parts))
        if isinstance(getattr(module, "LEVEL", None), Level):
            found[module.LEVEL.name] = path
    return found


def test_read_by_names_every_level_that_reads_the_field():
    """A `ReadBy` field read by a level it does not name would leave that level up to date when
    it changes: each level's module may read only the fields whose `ReadBy` names it."""
    resources = resources_from_env({})
    for name, path in _level_modules().items():
        read = {n.attr for n in ast.walk(ast.parse(path.read_text())) if isinstance(n, ast.Attribute)}
        for key in resource_keys(level(name)):
            for field_name, info in type(resources[key]).model_fields.items():
                for mark in (m for m in info.metadata if isinstance(m, ReadBy)):
                    assert field_name not in read or name in mark.levels, (
                        f"{path.name} reads {key}.{field_name}, whose ReadBy does not name {name}"
                    )
