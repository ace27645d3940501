"""One reader of the environment: `glan_assets/settings.py`. Any other module of the project that
reads or writes `os.environ` (or calls `os.getenv`/`os.putenv`/`os.unsetenv`) fails here, by
file and line; it takes its values from the settings, by argument."""

import ast
import os
from pathlib import Path

import pytest

import glan_assets.definitions  # noqa: F401  (declares every level's asset)
from glan_assets.plan import config_version
from glan_assets.registry import LEVELS, resources_from_env, settings_from_env
from glan_assets.settings import SettingsError, set_process_environment
from resources.embedded import DEFAULT_IDLE_TIMEOUT_S, DEFAULT_STATE_DIR
from resources.local_models import DEFAULT_MODEL_CACHE

ROOT = Path(__file__).resolve().parents[2]
READER = ROOT / "glan_assets" / "settings.py"
NAMES = {"environ", "environb", "getenv", "getenvb", "putenv", "unsetenv"}


def uses_of_the_environment(source: str) -> list[tuple[int, str]]:
    """(line, what) for each `os.environ`-like attribute, and each name imported from `os` that is one."""
    found = []
    for node in ast.walk(ast.parse(source)):
        if isinstance(node, ast.Attribute) and node.attr in NAMES and isinstance(node.value, ast.Name) \
                and node.value.id == "os":
            found.append((node.lineno, f"os.{node.attr}"))
        elif isinstance(node, ast.ImportFrom) and node.module == "os":
            found += [(node.lineno, f"from os import {a.name}") for a in node.names if a.name in NAMES]
    return sorted(found)


def test_only_the_settings_read_the_environment():
    offenders = [
        f"{path.relative_to(ROOT)}:{line}: {what}"
        for folder in ("glan_assets", "resources")
        for path in sorted((ROOT / folder).rglob("*.py"))
        if path != READER
        for line, what in uses_of_the_environment(path.read_text())
    ]
    assert not offenders, "only glan_assets/settings.py reads the environment:\n" + "\n".join(offenders)


def test_the_scan_sees_each_way_of_reading_it():
    source = "import os\nfrom os import getenv\nos.environ['A'] = '1'\nos.getenv('B')\nos.putenv('C', '')\n"
    assert [line for line, _ in uses_of_the_environment(source)] == [2, 3, 4, 5]
    assert uses_of_the_environment("import os\nos.path.join('a', 'b')\n") == []


MACHINE = {"GLAN_MODEL_CACHE": "~/models", "GLAN_EMBEDDED_STATE": "/srv/embedded", "GLAN_EMBEDDED_IDLE_TIMEOUT": "30",
           "DAGSTER_HOME": "/srv/home"}


def test_the_machine_settings_resolve_from_the_environment_and_reach_their_readers():
    settings = settings_from_env(MACHINE)
    machine = settings.machine
    assert machine.model_cache == Path.home() / "models"
    assert machine.embedded_state == Path("/srv/embedded")
    assert machine.embedded_idle_timeout_s == 30.0
    assert machine.dagster_home == Path("/srv/home")
    resources = settings.resources()
    llm = resources["llm"]
    assert (llm.embedded_state, llm.embedded_idle_timeout_s) == ("/srv/embedded", 30.0)
    assert {resources[key].model_cache for key in ("llm", "quality", "uit", "training")} == {str(Path.home() / "models")}


def test_the_machine_settings_default_to_the_user_cache_and_a_home_here(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    machine = settings_from_env({}).machine
    assert machine.model_cache == DEFAULT_MODEL_CACHE == Path.home() / ".cache" / "glan" / "models"
    assert machine.embedded_state == DEFAULT_STATE_DIR == Path.home() / ".cache" / "glan" / "embedded"
    assert machine.embedded_idle_timeout_s == DEFAULT_IDLE_TIMEOUT_S
    assert machine.dagster_home == tmp_path / "dagster_home"


def test_a_bad_idle_timeout_is_a_settings_error_naming_it():
    with pytest.raises(SettingsError, match="GLAN_EMBEDDED_IDLE_TIMEOUT='soon'"):
        settings_from_env({"GLAN_EMBEDDED_IDLE_TIMEOUT": "soon"}).machine


def test_where_models_and_state_are_kept_is_in_no_level_version():
    base, moved = resources_from_env({}), resources_from_env(MACHINE)
    for lv in LEVELS:
        assert config_version(lv, base) == config_version(lv, moved), lv.name


def test_the_process_environment_is_the_settings_own_plus_what_others_read():
    env = settings_from_env({"A": "1", "DAGSTER_HOME": "/srv/home"}).process_environment()
    assert env == {"A": "1", "DAGSTER_HOME": "/srv/home", "OMP_WAIT_POLICY": "PASSIVE"}
    kept = settings_from_env({"OMP_WAIT_POLICY": "ACTIVE"}).process_environment()
    assert kept["OMP_WAIT_POLICY"] == "ACTIVE"  # the user's value stays


def test_set_process_environment_makes_this_process_run_with_the_settings(monkeypatch):
    """What a build worker does with its caller's environment: a variable only the fork server
    had is gone, the caller's are there."""
    monkeypatch.setattr(os, "environ", {"ONLY_IN_THE_FORK_SERVER": "1", "A": "old"})
    set_process_environment(settings_from_env({"A": "new", "DAGSTER_HOME": "/srv/home"}))
    assert os.environ == {"A": "new", "DAGSTER_HOME": "/srv/home", "OMP_WAIT_POLICY": "PASSIVE"}
