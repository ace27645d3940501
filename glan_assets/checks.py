"""Data-quality checks on every per-discipline level, recorded per discipline partition.

Each level's checks are one `multi_asset_check`: one step after the level materializes
(a step per check would start a process per check). Its specs carry the discipline
partitions, so a run of one discipline records its results against that partition, and
the UI shows them per partition (the check's Partitions tab).
"""

import warnings
from collections.abc import Iterator, Sequence

import dagster as dg

from glan_assets.levels import Level
from glan_assets.results import markdown_table
from glan_assets.rows import TableRow
from resources.storage import DuckDBStore, columns_of


class CheckThresholds(dg.ConfigurableResource):
    """Rates above which a partition's check fails (`GLAN_MAX_REJECT_RATE`,
    `GLAN_MAX_DUPLICATE_RATE`, `GLAN_MAX_FLAGGED_SHARE`), and whether such a rate is a warning rather than an error
    (`GLAN_RATES_WARN`; on in the demo profile, whose 135M model misses them by design)."""

    max_reject_rate: float = 0.2
    max_duplicate_rate: float = 0.05
    # A quality level's pairs some rule flags. Half: the embedded demo model's answers are
    # often cut off at the demo's 256 tokens; a real endpoint's should be far below.
    max_flagged_share: float = 0.5
    rates_warn: bool = False

    @property
    def rate_severity(self) -> dg.AssetCheckSeverity:
        return dg.AssetCheckSeverity.WARN if self.rates_warn else dg.AssetCheckSeverity.ERROR


# What each check's result carries besides `passed`: keyword arguments of AssetCheckResult.
Outcome = dict[str, object]


def row_count(store: DuckDBStore, row_type: type[TableRow], key: str) -> int:
    column = row_type.partition_column
    return store.query(f"SELECT count(*) AS n FROM {row_type.table} WHERE {column} = ?", [key])[0]["n"]


def not_empty(store: DuckDBStore, row_type: type[TableRow], key: str) -> Outcome:
    rows = row_count(store, row_type, key)
    return {"passed": rows > 0, "metadata": {"rows": rows},
            "description": f"no rows: see `glan rejects --level {row_type.table} --partition '{key}'`"}


def no_orphans(store: DuckDBStore, row_type: type[TableRow], parent: type[TableRow], key: str) -> Outcome:
    """Every row's parent exists in the parent level, in the same partition."""
    column = row_type.partition_column
    orphans = store.query(
        f"SELECT c.{row_type.id_column}, c.{row_type.parent_column} FROM {row_type.table} c "
        f"WHERE c.{column} = ? AND NOT EXISTS (SELECT 1 FROM {parent.table} p "
        f"WHERE p.{parent.id_column} = c.{row_type.parent_column} AND p.{column} = c.{column}) "
        f"ORDER BY 1",
        [key],
    )
    return {
        "passed": not orphans,
        "metadata": {
            "orphans": len(orphans),
            "parent_table": parent.table,
            "sample": dg.MetadataValue.md(markdown_table(orphans)),
        },
        "description": f"{len(orphans)} rows whose {parent.table} row is gone: rebuild with "
        f"`glan build --force` on '{key}'",
    }


def reject_rate(store: DuckDBStore, row_type: type[TableRow], key: str, max_rate: float) -> Outcome:
    """Unusable LLM outputs of this level (see the rejects table) / (rows + rejects)."""
    rows = row_count(store, row_type, key)
    # Storing a partition creates the rejects table, so it exists once the level has run.
    rejects = store.query(
        "SELECT count(*) AS n FROM rejects WHERE partition_key = ? AND asset = ?", [key, row_type.table]
    )[0]["n"]
    rate = rejects / (rows + rejects) if rows + rejects else 0.0
    return {
        "passed": rate <= max_rate,
        "metadata": {"rows": rows, "rejects": rejects, "reject_rate": round(rate, 4), "max_reject_rate": max_rate},
        "description": f"{rejects} of {rows + rejects} outputs unusable ({rate:.0%} > {max_rate:.0%}): see "
        f"`glan rejects --level {row_type.table} --partition '{key}'`",
    }


def duplicate_rate(
    store: DuckDBStore, row_type: type[TableRow], column: str, key: str, max_rate: float
) -> Outcome:
    """Share of rows whose text an earlier row of the partition already has."""
    normalized = f"lower(trim(regexp_replace({column}, '\\s+', ' ', 'g')))"
    groups = store.query(
        f"SELECT any_value({column}) AS text, count(*) AS copies FROM {row_type.table} "
        f"WHERE {row_type.partition_column} = ? GROUP BY {normalized} ORDER BY copies DESC, text",
        [key],
    )
    rows = sum(g["copies"] for g in groups)
    duplicates = rows - len(groups)
    rate = duplicates / rows if rows else 0.0
    return {
        "passed": rate <= max_rate,
        "metadata": {
            "column": column,
            "duplicates": duplicates,
            "duplicate_rate": round(rate, 4),
            "max_duplicate_rate": max_rate,
            "most_repeated": dg.MetadataValue.md(markdown_table([g for g in groups if g["copies"] > 1])),
        },
        "description": f"{duplicates} of {rows} rows repeat another's {column} ({rate:.0%} > {max_rate:.0%}): "
        "the most repeated are in the check's metadata",
    }


def flagged_share(store: DuckDBStore, row_type: type[TableRow], key: str, max_share: float) -> Outcome:
    """Share of a quality level's pairs that a rule flags, with the count per rule."""
    rules = [f for f in row_type.model_fields if f.startswith("flag_") and f != "flag_reasons"]
    counts = store.query(
        f"SELECT count(*) AS pairs, count(*) FILTER (flagged) AS flagged, "
        + ", ".join(f"count(*) FILTER ({f}) AS {f}" for f in rules)
        + f" FROM {row_type.table} WHERE {row_type.partition_column} = ?",
        [key],
    )[0]
    share = counts["flagged"] / counts["pairs"] if counts["pairs"] else 0.0
    return {
        "passed": share <= max_share,
        "metadata": {
            "pairs": counts["pairs"],
            "flagged": counts["flagged"],
            "flagged_share": round(share, 4),
            "max_flagged_share": max_share,
            "flags_by_rule": dg.MetadataValue.json({f.removeprefix("flag_"): counts[f] for f in rules if counts[f]}),
        },
        "description": f"{counts['flagged']} of {counts['pairs']} pairs flagged by a rule ({share:.0%} > "
        f"{max_share:.0%}): `glan quality --partition '{key}'` shows them; the training set drops them",
    }


def schema_matches_model(store: DuckDBStore, row_type: type[TableRow]) -> Outcome:
    """The table's columns and DuckDB types are exactly those the row model declares."""
    stored = {
        r["column_name"]: r["data_type"]
        for r in store.query(
            "SELECT column_name, data_type FROM duckdb_columns() WHERE table_name = ? "
            "AND database_name = current_database() AND schema_name = current_schema()",
            [row_type.table],
        )
    }
    declared = {name: sql for name, (sql, _) in columns_of(row_type).items()}
    differences = [
        {"column": c, "model": declared.get(c, "(none)"), "table": stored.get(c, "(none)")}
        for c in [*declared, *(c for c in stored if c not in declared)]
        if declared.get(c) != stored.get(c)
    ]
    return {
        "passed": not differences,
        "metadata": {"columns": len(stored), "differences": dg.MetadataValue.md(markdown_table(differences, limit=50))},
        "description": f"{row_type.table}'s columns differ from its row model: `glan build --force` rewrites it",
    }


def level_checks(level: Level, parent: Level | None) -> dg.AssetChecksDefinition:
    """The checks of one partitioned level, evaluated together for the run's partition."""
    row_type = level.row_type
    descriptions = {
        "not_empty": "The partition has rows.",
        "schema_matches_model": "The table's columns and types match the row model.",
        "reject_rate": "Rejected LLM outputs / (rows + rejects) is at most `max_reject_rate`.",
    }
    if parent is not None:
        descriptions["no_orphans"] = "Every parent id exists upstream, in the same partition."
    if level.dedup_column:
        descriptions["duplicate_rate"] = (
            f"Rows repeating another row's `{level.dedup_column}` (ignoring case and "
            "spacing) are at most `max_duplicate_rate`."
        )

    if "flagged" in row_type.model_fields:  # a quality level
        descriptions["flagged_share"] = "Pairs some quality rule flags are at most `max_flagged_share` of the partition."

    # Partitioned checks are a preview in Dagster 1.13, used on purpose: no warning per spec.
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", dg.PreviewWarning)
        specs = [
            dg.AssetCheckSpec(name, asset=level.name, description=text, partitions_def=level.partitions_def)
            for name, text in descriptions.items()
        ]

    @dg.multi_asset_check(name=f"{level.name}_checks", specs=specs, can_subset=True)  # the UI can run one check
    def _checks(
        context: dg.AssetCheckExecutionContext, store: DuckDBStore, check_thresholds: CheckThresholds
    ) -> Iterator[dg.AssetCheckResult]:
        key = context.partition_key
        rates = {"severity": check_thresholds.rate_severity}
        evaluate = {
            "not_empty": lambda: not_empty(store, row_type, key),
            "no_orphans": lambda: no_orphans(store, row_type, parent.row_type, key),
            "reject_rate": lambda: reject_rate(store, row_type, key, check_thresholds.max_reject_rate) | rates,
            "duplicate_rate": lambda: duplicate_rate(
                store, row_type, level.dedup_column, key, check_thresholds.max_duplicate_rate
            )
            | rates,
            "schema_matches_model": lambda: schema_matches_model(store, row_type),
            "flagged_share": lambda: flagged_share(store, row_type, key, check_thresholds.max_flagged_share) | rates,
        }
        outcomes = {}
        with store.connect():  # one turn at the file for them all: the checks' own connections share it
            for check in sorted(context.selected_asset_check_keys, key=lambda k: k.name):
                outcomes[check] = evaluate[check.name]()
        for check, outcome in outcomes.items():
            if outcome["passed"]:
                outcome.pop("description")  # what to do, when there is something to do
            # A multi-check's results must say which asset and check they belong to.
            yield dg.AssetCheckResult(asset_key=check.asset_key, check_name=check.name, **outcome)

    return _checks


def all_checks(levels: Sequence[Level]) -> list[dg.AssetChecksDefinition]:
    """The checks of every partitioned level."""
    by_name = {lv.name: lv for lv in levels}
    return [
        level_checks(lv, by_name.get(lv.parent) if lv.parent else None)
        for lv in levels
        if lv.partitions_def is not None
    ]
