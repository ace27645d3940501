"""Lineage of a record: every row names its parent, so the chain is a walk or a join.

Both are derived from the level declarations: `chain` walks parent ids level by level, and
each method's lineage view joins its last level up to its root.
"""

from collections.abc import Sequence

import duckdb

from glan_assets.levels import Level
from glan_assets.rows import TableRow
from resources.storage import DuckDBStore


def ancestry(leaf: Level, levels: Sequence[Level]) -> list[Level]:
    """The leaf and its ancestors, leaf first."""
    by_name = {lv.name: lv for lv in levels}
    found = [leaf]
    while found[-1].parent:
        found.append(by_name[found[-1].parent])
    return found


def view_sql(leaf: Level, levels: Sequence[Level], temporary: bool = False) -> str:
    """One row per row of `leaf`: every ancestor's id, then each level's lineage columns,
    root first. `temporary`: a view of the connection only, as a read-only one can create."""
    up = ancestry(leaf, levels)
    alias = {lv.name: f"t{i}" for i, lv in enumerate(up)}
    ids = [f"{alias[lv.name]}.{lv.row_type.id_column}" for lv in up]
    texts = [
        f"{alias[lv.name]}.{col}" + (f" AS {name}" if name != col else "")
        for lv in reversed(up)
        for col, name in lv.lineage_columns.items()
    ]
    joins = []
    for child, parent in zip(up, up[1:]):
        c, p = alias[child.name], alias[parent.name]
        on = f"{p}.{parent.row_type.id_column} = {c}.{child.row_type.parent_column}"
        partition = child.row_type.partition_column
        if partition and partition == parent.row_type.partition_column:
            on += f" AND {p}.{partition} = {c}.{partition}"
        joins.append(f"JOIN {parent.name} {p} ON {on}")
    return (
        f"CREATE OR REPLACE {'TEMP ' if temporary else ''}VIEW {leaf.lineage_view} AS\n"
        f"SELECT {', '.join(ids + texts)}\n"
        f"FROM {leaf.name} {alias[leaf.name]}\n" + "\n".join(joins)
    )


def ensure_lineage_views(store: DuckDBStore, levels: Sequence[Level]) -> None:
    """Create the lineage view of each of `levels` that declares one, over the tables that exist."""
    tables = store.relations()
    with store.connect() as con:
        for leaf in (lv for lv in levels if lv.lineage_view):
            if all(lv.name in tables for lv in ancestry(leaf, levels)):
                con.execute(view_sql(leaf, levels))


def temporary_lineage_views(con: duckdb.DuckDBPyConnection, levels: Sequence[Level]) -> set[str]:
    """Every method's lineage view over the tables that exist, as TEMP views of `con` (they
    shadow stored ones), for a read-only connection; returns their names."""
    tables = {
        t
        for (t,) in con.execute(
            "SELECT table_name FROM duckdb_tables() "
            "WHERE database_name = current_database() AND schema_name = current_schema()"
        ).fetchall()
    }
    made = set()
    for leaf in (lv for lv in levels if lv.lineage_view):
        if all(lv.name in tables for lv in ancestry(leaf, levels)):
            con.execute(view_sql(leaf, levels, temporary=True))
            made.add(leaf.lineage_view)
    return made


def chain(store: DuckDBStore, item_id: str, levels: Sequence[Level]) -> list[TableRow]:
    """The item and its ancestors, up to its root. Raises KeyError for an unknown id and
    ValueError for a string that is no id."""
    found: list[TableRow] = []
    current: str | None = item_id
    while current:
        row = _row(store, current, levels)
        found.append(row)
        current = getattr(row, row.parent_column) if row.parent_column else None
    return found


def level_of_id(item_id: str, levels: Sequence[Level]) -> Level:
    """The level an id belongs to, from its prefix."""
    prefix, sep, _ = item_id.partition("_")
    for lv in levels:
        if sep and lv.id_prefix == prefix:
            return lv
    known = ", ".join(f"{lv.id_prefix}_ ({lv.name})" for lv in levels)
    raise ValueError(f"'{item_id}' is not a glan id: ids start with one of {known}")


def _row(store: DuckDBStore, item_id: str, levels: Sequence[Level]) -> TableRow:
    level = level_of_id(item_id, levels)
    for row_type in (level.row_type, *level.other_row_types):
        rows = store.read(row_type, where=f"{row_type.id_column} = ?", params=[item_id])
        if rows:
            return rows[0]
    raise KeyError(f"no {level.name} row with id {item_id}")
