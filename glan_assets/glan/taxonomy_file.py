"""The taxonomy file (`GLAN_TAXONOMY`): fields -> sub-fields -> disciplines.

Every discipline becomes one partition key, so a bad file is refused whole with an error
naming the file, the line and the node, before anything is registered or written.
"""

from dataclasses import dataclass, field
from pathlib import Path

from ruamel.yaml import YAML
from ruamel.yaml.error import MarkedYAMLError

from glan_assets.ids import content_hash, stable_id
from glan_assets.methods import partition_key_problem

DEFAULT_TAXONOMY = Path(__file__).resolve().parent.parent / "data" / "taxonomy.yaml"

# Dagster refuses partition keys containing these (dagster/_core/definitions/partitions).
class TaxonomyError(ValueError):
    """The taxonomy file cannot be used; the message names file, line and node."""


@dataclass(frozen=True)
class DisciplineNode:
    name: str
    sub_field: str
    field: str
    description: str = ""
    field_description: str = ""

    @property
    def field_id(self) -> str:
        return stable_id("fld", self.field)

    @property
    def discipline_id(self) -> str:
        return stable_id("dsc", self.name)

    @property
    def fingerprint(self) -> str:
        """Changes when anything the discipline's prompts are built from changes."""
        return content_hash([self.name, self.sub_field, self.field, self.description, self.field_description])


@dataclass
class Taxonomy:
    path: Path
    disciplines: dict[str, DisciplineNode] = field(default_factory=dict)
    # field -> sub-field -> discipline names, in file order (for proposals and display)
    tree: dict[str, dict[str, list[str]]] = field(default_factory=dict)

    def node(self, discipline: str) -> DisciplineNode:
        if discipline not in self.disciplines:
            raise TaxonomyError(
                f"{self.path}: no discipline {discipline!r}; it was removed or renamed, and the "
                "taxonomy sensor will drop its partition"
            )
        return self.disciplines[discipline]


def _line(node: object) -> int:
    lc = getattr(node, "lc", None)
    return lc.line + 1 if lc is not None else 0


def _name(path: Path, node: object, where: str) -> str:
    if not isinstance(node, dict):
        raise TaxonomyError(f"{path}:{_line(node)}: {where}: expected a mapping with a 'name'")
    name = node.get("name")
    if not isinstance(name, str) or not name.strip():
        raise TaxonomyError(f"{path}:{_line(node)}: {where}: missing 'name'")
    return name


def _children(path: Path, node: dict, key: str, where: str) -> list:
    children = node.get(key) or []
    if not isinstance(children, list):
        raise TaxonomyError(f"{path}:{_line(node)}: {where}: '{key}' must be a list")
    return children


def _deepest_line(text: str) -> int:
    """The line that opens the deepest nesting (indentation plus flow brackets)."""
    depth = [len(ln) - len(ln.lstrip(" ")) + ln.count("[") + ln.count("{") for ln in text.splitlines()]
    return depth.index(max(depth)) + 1 if depth else 1


def load_taxonomy(path: str | Path) -> Taxonomy:
    path = Path(path)
    try:
        raw = path.read_bytes()
    except OSError as exc:
        raise TaxonomyError(f"{path}: cannot read the taxonomy file: {exc.strerror}") from exc
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError as exc:
        line = raw[: exc.start].count(b"\n") + 1
        raise TaxonomyError(f"{path}:{line}: not UTF-8 (byte {raw[exc.start]:#x}); save the file as UTF-8") from None
    try:
        doc = YAML(typ="rt").load(text)
    except MarkedYAMLError as exc:
        mark = exc.problem_mark
        raise TaxonomyError(f"{path}:{mark.line + 1}: YAML does not parse: {exc.problem}") from exc
    except RecursionError:
        raise TaxonomyError(
            f"{path}:{_deepest_line(text)}: nested too deeply to read; a taxonomy is fields > "
            "sub_fields > disciplines"
        ) from None
    if not isinstance(doc, dict) or not isinstance(doc.get("fields"), list):
        raise TaxonomyError(f"{path}:1: expected a top-level 'fields:' list")

    taxonomy = Taxonomy(path)
    for i, f in enumerate(doc["fields"]):
        field_name = _name(path, f, f"field #{i + 1}")
        subs = taxonomy.tree.setdefault(field_name, {})
        for j, sf in enumerate(_children(path, f, "sub_fields", f"field {field_name!r}")):
            sub_name = _name(path, sf, f"{field_name} > sub-field #{j + 1}")
            names = subs.setdefault(sub_name, [])
            for k, d in enumerate(_children(path, sf, "disciplines", f"{field_name} > {sub_name}")):
                where = f"{field_name} > {sub_name} > discipline #{k + 1}"
                name = _name(path, d, where)
                if problem := partition_key_problem(name):
                    raise TaxonomyError(f"{path}:{_line(d)}: {field_name} > {sub_name} > {name!r}: {problem}")
                if name in taxonomy.disciplines:
                    first = taxonomy.disciplines[name]
                    raise TaxonomyError(
                        f"{path}:{_line(d)}: {field_name} > {sub_name} > {name!r}: duplicate discipline "
                        f"(also under {first.field} > {first.sub_field}); discipline names are partition "
                        "keys and must be unique"
                    )
                taxonomy.disciplines[name] = DisciplineNode(
                    name, sub_name, field_name, str(d.get("description", "")), str(f.get("description", ""))
                )
                names.append(name)
    return taxonomy


def add_node(path: str | Path, kind: str, name: str, field: str = "", sub_field: str = "") -> None:
    """Add a field, sub-field or discipline to the file, keeping its comments and order.

    The file is validated with the new node before it is replaced, so a clash (a duplicate
    discipline, a name Dagster refuses) leaves the file as it was.
    """
    path = Path(path)
    yaml = YAML(typ="rt")
    doc = yaml.load(path.read_text())

    def find(items: list, wanted: str, what: str) -> dict:
        for item in items:
            if item.get("name") == wanted:
                return item
        raise TaxonomyError(f"{path}: no {what} named {wanted!r}")

    if kind == "field":
        doc["fields"].append({"name": name, "sub_fields": []})
    elif kind == "sub_field":
        parent = find(doc["fields"], field, "field")
        parent.setdefault("sub_fields", []).append({"name": name, "disciplines": []})
    elif kind == "discipline":
        parent = find(find(doc["fields"], field, "field").get("sub_fields") or [], sub_field, "sub-field")
        parent.setdefault("disciplines", []).append({"name": name})
    else:
        raise ValueError(f"unknown node kind {kind!r}")
    staged = path.with_name(f".{path.name}.staged")
    with staged.open("w") as out:
        yaml.dump(doc, out)
    try:
        load_taxonomy(staged)
    except TaxonomyError as exc:
        staged.unlink()
        raise TaxonomyError(str(exc).replace(str(staged), str(path))) from None
    staged.replace(path)
