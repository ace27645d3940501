"""One reader of the environment: `glan_assets/settings.py`. Any other module of the project that
reads or writes `os.environ` (or calls `os.getenv`/`os.putenv`/`os.unsetenv`) fails here, by
file and line; it takes its values from the settings, by argument."""

import ast
from pathlib import Path

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
