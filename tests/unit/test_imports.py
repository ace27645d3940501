"""The import graph of glan_assets/ and resources/, read from the source (imports inside
functions included): no circle, and the list of methods is composed only at the roots."""

import ast
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
PACKAGES = ("glan_assets", "resources")
# The module that composes the list of methods, and the roots that may import it: the code
# location, and the CLI and its build (entry points). Everything else is handed the methods.
COMPOSER = "glan_assets.registry"
ROOTS = {"glan_assets.definitions", "glan_assets.cli", "glan_assets.build", COMPOSER}
# The methods' own packages; generic modules name none of them.
METHOD_PACKAGES = ("glan_assets.glan", "glan_assets.uit", "glan_assets.dynosaur")


def modules() -> dict[str, Path]:
    found = {}
    for package in PACKAGES:
        for path in sorted((ROOT / package).rglob("*.py")):
            parts = path.relative_to(ROOT).with_suffix("").parts
            found[".".join(parts[:-1] if parts[-1] == "__init__" else parts)] = path
    return found


def imported(name: str, path: Path, known: set[str]) -> set[str]:
    """The project modules `name` imports anywhere in its file. `from a import b` counts as
    `a.b` when that is a module, else as `a`."""
    package = name if path.name == "__init__.py" else name.rpartition(".")[0]
    found = set()
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.Import):
            targets = [a.name for a in node.names]
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                up = package.split(".")[: len(package.split(".")) - (node.level - 1)]
                base = ".".join([*up, base] if base else up)
            targets = [f"{base}.{a.name}" if f"{base}.{a.name}" in known else base for a in node.names]
        else:
            continue
        for target in targets:
            # `import a.b.c` runs a, a.b and a.b.c; the innermost project module is the edge.
            while target and target not in known:
                target = target.rpartition(".")[0]
            if target and target != name:
                found.add(target)
                # ... and its packages: `import a.b` runs a's __init__ first, so an __init__ that
                # imports a submodule importing a sibling is a circle.
                found |= {p for p in ancestors(target) if p in known and p != name}
    return found


def ancestors(name: str) -> set[str]:
    parts = name.split(".")
    return {".".join(parts[:i]) for i in range(1, len(parts))}


def graph() -> dict[str, set[str]]:
    mods = modules()
    return {name: imported(name, path, set(mods)) for name, path in mods.items()}


def find_cycle(edges: dict[str, set[str]]) -> list[str] | None:
    """One cycle as [a, b, ..., a], or None."""
    state: dict[str, int] = {}  # 1: on the path, 2: done
    path: list[str] = []

    def visit(node: str) -> list[str] | None:
        state[node] = 1
        path.append(node)
        for nxt in sorted(edges[node]):
            if state.get(nxt) == 1:
                return [*path[path.index(nxt) :], nxt]
            if nxt not in state and (cycle := visit(nxt)):
                return cycle
        path.pop()
        state[node] = 2
        return None

    for node in sorted(edges):
        if node not in state and (cycle := visit(node)):
            return cycle
    return None


def test_the_import_graph_has_no_cycle():
    cycle = find_cycle(graph())
    assert cycle is None, "import cycle: " + " -> ".join(cycle)


def test_only_the_roots_import_the_list_of_methods():
    importers = sorted(name for name, targets in graph().items() if COMPOSER in targets and name not in ROOTS)
    assert not importers, f"{', '.join(importers)} import {COMPOSER}; take the methods from the root instead"


def test_generic_modules_import_no_method():
    """A method reaches the settings, the training set, the quality levels and the release only
    as an argument, so a new one needs no line in them."""
    def in_method(name: str) -> bool:
        return any(name == p or name.startswith(p + ".") for p in METHOD_PACKAGES)

    found = sorted(f"{name} imports {', '.join(sorted(filter(in_method, targets)))}"
                   for name, targets in graph().items()
                   if name not in ROOTS and not in_method(name) and any(map(in_method, targets)))
    assert not found, "; ".join(found)


def test_the_roots_sit_on_top():
    """A root imported from below would hand the list of methods down by the back door."""
    below = sorted(f"{name} imports {root}" for name, targets in graph().items() if name not in ROOTS
                   for root in targets & ROOTS)
    assert not below, "; ".join(below)


def test_the_graph_sees_imports_inside_functions(tmp_path):
    """What the two tests above rest on: an import in a function body is an edge, a cycle is found."""
    a = tmp_path / "a.py"
    a.write_text("def f():\n    from pkg import b\n")
    assert imported("pkg.a", a, {"pkg", "pkg.a", "pkg.b"}) == {"pkg", "pkg.b"}
    a.write_text("import other.sub.mod\n")
    assert imported("pkg.a", a, {"pkg", "other", "other.sub", "other.sub.mod"}) == {"other", "other.sub", "other.sub.mod"}
    assert find_cycle({"x": {"y"}, "y": {"z"}, "z": {"x"}}) == ["x", "y", "z", "x"]
    assert find_cycle({"x": {"y"}, "y": set()}) is None
    # A package's __init__ importing a submodule that imports a sibling runs the __init__ again
    # half-done: the circle GLAN's __init__ -> answers -> preview -> glan once was.
    init = tmp_path / "pkg" / "__init__.py"
    init.parent.mkdir()
    init.write_text("from pkg import a\n")
    a.write_text("from pkg import b\n")
    known = {"pkg", "pkg.a", "pkg.b"}
    assert find_cycle({"pkg": imported("pkg", init, known), "pkg.a": imported("pkg.a", a, known), "pkg.b": set()}) == [
        "pkg", "pkg.a", "pkg"]
