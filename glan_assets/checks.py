"""Data-quality checks on every per-discipline level, recorded per discipline partition.

Each level's checks are one `multi_asset_check`: one step after the level materializes
(a step per check would start a process per check). Its specs carry the discipline
partitions, so a run of one discipline records its results against that partition, and
the UI shows them per partition (the check's Partitions tab).
"""

import os
import warnings
from collections.abc import Iterator

import dagster as dg

from glan_assets.lineage import ROW_TYPES
from glan_assets.partitions import discipline_partitions
from glan_assets.results import markdown_table
from glan_assets.schemas import TableRow
from resources.storage import DuckDBStore, columns_of

# The text a level should not repeat; repeats are counted ignoring case and spacing.
DUPLICATE_TEXT = {"subjects": "subject_name", "questions": "question", "answers": "answer"}

# A level's parent is the level whose id its parent column holds.
PARENT_TYPES = {t.id_column: t for t in ROW_TYPES.values()}


class CheckThresholds(dg.ConfigurableResource):
    """Rates above which a partition's check fails (`GLAN_MAX_REJECT_RATE`,
    `GLAN_MAX_DUPLICATE_RATE`)."""

    max_reject_rate: float = 0.2
    max_duplicate_rate: float = 0.05

    @classmethod
    def from_env(cls, env: dict[str, str] | None = None) -> "CheckThresholds":
        env = os.environ if env is None else env
        return cls(
            **{
                name: float(env[f"GLAN_{name.upper()}"])
                for name in cls.model_fields
                if f"GLAN_{name.upper()}" in env
            }
        )


def row_count(store: DuckDBStore, row_type: type[TableRow], discipline: str) -> int:
    return store.query(f"SELECT count(*) AS n FROM {row_type.table} WHERE discipline = ?", [discipline])[0]["n"]


def not_empty(store: DuckDBStore, row_type: type[TableRow], discipline: str) -> dg.AssetCheckResult:
    rows = row_count(store, row_type, discipline)
    return dg.AssetCheckResult(passed=rows > 0, metadata={"rows": rows})


def no_orphans(store: DuckDBStore, row_type: type[TableRow], discipline: str) -> dg.AssetCheckResult:
    """Every row's parent exists in the parent level, in the same discipline."""
    parent = PARENT_TYPES[row_type.parent_column]
    orphans = store.query(
        f"SELECT c.{row_type.id_column}, c.{row_type.parent_column} FROM {row_type.table} c "
        f"WHERE c.discipline = ? AND NOT EXISTS (SELECT 1 FROM {parent.table} p "
        f"WHERE p.{parent.id_column} = c.{row_type.parent_column} AND p.discipline = c.discipline) "
        f"ORDER BY 1",
        [discipline],
    )
    return dg.AssetCheckResult(
        passed=not orphans,
        metadata={
            "orphans": len(orphans),
            "parent_table": parent.table,
            "sample": dg.MetadataValue.md(markdown_table(orphans)),
        },
    )


def reject_rate(
    store: DuckDBStore, row_type: type[TableRow], discipline: str, max_rate: float
) -> dg.AssetCheckResult:
    """Unusable LLM outputs of this level (see the rejects table) / (rows + rejects)."""
    rows = row_count(store, row_type, discipline)
    # Storing a partition creates the rejects table, so it exists once the level has run.
    rejects = store.query(
        "SELECT count(*) AS n FROM rejects WHERE discipline = ? AND asset = ?", [discipline, row_type.table]
    )[0]["n"]
    rate = rejects / (rows + rejects) if rows + rejects else 0.0
    return dg.AssetCheckResult(
        passed=rate <= max_rate,
        metadata={"rows": rows, "rejects": rejects, "reject_rate": round(rate, 4), "max_reject_rate": max_rate},
    )


def duplicate_rate(
    store: DuckDBStore, row_type: type[TableRow], discipline: str, max_rate: float
) -> dg.AssetCheckResult:
    """Share of rows whose text an earlier row of the partition already has."""
    column = DUPLICATE_TEXT[row_type.table]
    normalized = f"lower(trim(regexp_replace({column}, '\\s+', ' ', 'g')))"
    groups = store.query(
        f"SELECT any_value({column}) AS text, count(*) AS copies FROM {row_type.table} "
        f"WHERE discipline = ? GROUP BY {normalized} ORDER BY copies DESC, text",
        [discipline],
    )
    rows = sum(g["copies"] for g in groups)
    duplicates = rows - len(groups)
    rate = duplicates / rows if rows else 0.0
    return dg.AssetCheckResult(
        passed=rate <= max_rate,
        metadata={
            "column": column,
            "duplicates": duplicates,
            "duplicate_rate": round(rate, 4),
            "max_duplicate_rate": max_rate,
            "most_repeated": dg.MetadataValue.md(markdown_table([g for g in groups if g["copies"] > 1])),
        },
    )


def schema_matches_model(store: DuckDBStore, row_type: type[TableRow]) -> dg.AssetCheckResult:
    """The table's columns and DuckDB types are exactly those the row model declares."""
    stored = {
        r["column_name"]: r["data_type"]
        for r in store.query(
            "SELECT column_name, data_type FROM duckdb_columns() WHERE table_name = ? AND schema_name = 'main'",
            [row_type.table],
        )
    }
    declared = {name: sql for name, (sql, _) in columns_of(row_type).items()}
    differences = [
        {"column": c, "model": declared.get(c, "(none)"), "table": stored.get(c, "(none)")}
        for c in [*declared, *(c for c in stored if c not in declared)]
        if declared.get(c) != stored.get(c)
    ]
    return dg.AssetCheckResult(
        passed=not differences,
        metadata={"columns": len(stored), "differences": dg.MetadataValue.md(markdown_table(differences, limit=50))},
    )


def level_checks(row_type: type[TableRow], thresholds: CheckThresholds) -> dg.AssetChecksDefinition:
    """The checks of one level, evaluated together for the run's discipline partition."""
    descriptions = {
        "not_empty": "The partition has rows.",
        "schema_matches_model": "The table's columns and types match the row model.",
        "reject_rate": "Rejected LLM outputs / (rows + rejects) is at most `max_reject_rate`.",
    }
    if row_type.parent_column:
        descriptions["no_orphans"] = "Every parent id exists upstream, in the same discipline."
    if row_type.table in DUPLICATE_TEXT:
        descriptions["duplicate_rate"] = (
            f"Rows repeating another row's `{DUPLICATE_TEXT[row_type.table]}` (ignoring case and "
            "spacing) are at most `max_duplicate_rate`."
        )

    # Partitioned checks are a preview in Dagster 1.13, used on purpose: no warning per spec.
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", dg.PreviewWarning)
        specs = [
            dg.AssetCheckSpec(name, asset=row_type.table, description=text, partitions_def=discipline_partitions)
            for name, text in descriptions.items()
        ]

    @dg.multi_asset_check(
        name=f"{row_type.table}_checks",
        specs=specs,
        can_subset=True,  # the UI can run a single check
        resource_defs={"check_thresholds": thresholds},
    )
    def _checks(
        context: dg.AssetCheckExecutionContext, store: DuckDBStore, check_thresholds: CheckThresholds
    ) -> Iterator[dg.AssetCheckResult]:
        discipline = context.partition_key
        evaluate = {
            "not_empty": lambda: not_empty(store, row_type, discipline),
            "no_orphans": lambda: no_orphans(store, row_type, discipline),
            "reject_rate": lambda: reject_rate(store, row_type, discipline, check_thresholds.max_reject_rate),
            "duplicate_rate": lambda: duplicate_rate(
                store, row_type, discipline, check_thresholds.max_duplicate_rate
            ),
            "schema_matches_model": lambda: schema_matches_model(store, row_type),
        }
        for key in sorted(context.selected_asset_check_keys, key=lambda k: k.name):
            # A multi-check's results must say which asset and check they belong to.
            yield evaluate[key.name]()._replace(asset_key=key.asset_key, check_name=key.name)

    return _checks


def all_checks(thresholds: CheckThresholds) -> list[dg.AssetChecksDefinition]:
    """Every level's checks, sharing one thresholds object (Dagster wants one object per
    resource key across a job)."""
    return [level_checks(row_type, thresholds) for row_type in ROW_TYPES.values()]


ALL_CHECKS = all_checks(CheckThresholds.from_env())
