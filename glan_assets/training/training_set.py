"""The training set: the pairs of every source (GLAN answers, Dynosaur instances, UIT unified
instances), capped per source, deduplicated across sources, decontaminated and split."""

from collections import Counter

import dagster as dg

from glan_assets.levels import Level, level_asset
from glan_assets.plan import BENCHMARKS_VERSION, DATA_VERSION, SOURCES_VERSION, sources_version
from glan_assets.results import data_version, markdown_table
from glan_assets.training.curation import benchmarks_version, curate, load_benchmarks
from glan_assets.training.resources import TrainingSettings
from glan_assets.training.schemas import ContaminationRow, RemovedPairRow, TrainingPairRow
from glan_assets.training.sources import SOURCE_LEVELS, SourceRead, read_sources
from resources.storage import DuckDBStore, Slice, columns_of

LEVEL = Level(
    "training_set",
    TrainingPairRow,
    id_prefix="pair",
    method="training",
    group="training",
    description="Instruction/response pairs from every source level (GLAN answers, Dynosaur instances, "
    "UIT unified instances), each with its `source` and its origin row's id, capped per source and task "
    "(`GLAN_SOURCE_CAPS`), exact and near (MinHash) duplicates removed across sources, pairs sharing a "
    "13-gram with a benchmark question removed (`GLAN_BENCHMARKS`), and a held-out test split of N pairs "
    "per discipline, dataset or collection (`GLAN_HELDOUT_PER_DISCIPLINE`). What was removed and why is "
    "in the `training_removed` and `contamination` tables.",
    # Its rows' parents are in whichever source level they came from (ans_, dinst_, uni_ ids);
    # every source level is upstream, so a new partition of any makes it stale.
    extra_deps=tuple(lv.name for lv in SOURCE_LEVELS),
    label="pair",
    other_row_types=(RemovedPairRow,),
    kinds=frozenset({"duckdb"}),
    logic_version="2",  # every source, `source_id` and `group_name`
)
TABLES = (RemovedPairRow, ContaminationRow, TrainingPairRow)


def drop_outdated_tables(store: DuckDBStore) -> None:
    """Drop a training table written by an older model (an `answer_id` column, say): each is
    rewritten whole below, so nothing is lost, and an added column could not be filled."""
    for row_type in TABLES:
        stored = {
            r["column_name"]
            for r in store.query(
                "SELECT column_name FROM duckdb_columns() WHERE table_name = ? "
                "AND database_name = current_database() AND schema_name = current_schema()",
                [row_type.table],
            )
        }
        if stored and stored != set(columns_of(row_type)):
            with store.connect() as con:
                con.execute(f"DROP TABLE {row_type.table}")


def per_group(pairs: list[TrainingPairRow], kept: list[TrainingPairRow], removed: list[RemovedPairRow]) -> str:
    """Markdown: per source and group (discipline, dataset, collection), the pairs in, removed
    per reason, and the split."""
    inputs = Counter((p.source, p.group_name) for p in pairs)
    fields = {(p.source, p.group_name): p.field_name for p in pairs}
    gone = Counter((r.source, r.group_name, r.reason) for r in removed)
    splits = Counter((p.source, p.group_name, p.split) for p in kept)
    records = [
        {
            "source": s,
            "group": g,
            "field": fields[s, g] or "-",
            "pairs": inputs[s, g],
            "exact_dups": gone[s, g, "exact_duplicate"],
            "near_dups": gone[s, g, "near_duplicate"],
            "contaminated": gone[s, g, "contaminated"],
            "train": splits[s, g, "train"],
            "test": splits[s, g, "test"],
        }
        for s, g in sorted(inputs)
    ]
    return markdown_table(records, limit=len(records))


def by_source(reads: list[SourceRead], kept: list[TrainingPairRow], removed: list[RemovedPairRow]) -> dict:
    """Per source: rows its levels hold, those left out by its cap, taken, removed, train, test."""
    found: dict[str, dict[str, int | None]] = {}
    for read in reads:
        entry = found.setdefault(read.source, {"available": 0, "capped_away": 0, "taken": 0})
        entry["available"] += read.available
        entry["capped_away"] += read.capped_away
        entry["taken"] += len(read.pairs)
        entry["cap_per_task"] = read.cap
    gone = Counter(r.source for r in removed)
    splits = Counter((p.source, p.split) for p in kept)
    for source, entry in found.items():
        entry |= {"removed": gone[source], "train": splits[source, "train"], "test": splits[source, "test"]}
    return found


@level_asset(
    LEVEL,
    deps=[dg.AssetDep(name, partition_mapping=dg.AllPartitionMapping()) for name in LEVEL.deps],
    automation_condition=dg.AutomationCondition.eager(),
)
def training_set(
    context: dg.AssetExecutionContext, store: DuckDBStore, training: TrainingSettings
) -> dg.MaterializeResult:
    # Imported here: the registry imports this module.
    from glan_assets.registry import level

    # Before reading: a partition written meanwhile makes the next build read it again.
    sources = sources_version(context.instance, [level(name) for name in LEVEL.deps])
    try:
        reads = read_sources(store, training.source_caps)
    except ValueError as exc:
        raise dg.Failure(description=str(exc)) from exc
    pairs = [p for read in reads for p in read.pairs]
    if not pairs:
        raise dg.Failure(
            "no pairs from any source yet: build the answers of a discipline, the instances of a dataset "
            "or the unified instances of a collection first"
            + (f" (source caps: {training.source_caps})" if any(r.available for r in reads) else "")
        )
    benchmark_items = load_benchmarks(training.benchmarks)
    result = curate(
        pairs,
        benchmark_items,
        heldout_per_group=training.heldout_per_discipline,
        near_dup_threshold=training.near_dup_threshold,
        num_perm=training.minhash_permutations,
        shingle_words=training.shingle_words,
        ngram=training.contamination_ngram,
        seed=training.split_seed,
    )
    drop_outdated_tables(store)
    # Together, so the audit tables always explain the training set stored beside them.
    store.replace(
        [
            Slice(RemovedPairRow, result.removed),
            Slice(ContaminationRow, result.contamination),
            Slice(TrainingPairRow, result.kept),
        ]
    )
    counts = result.counts()
    mixture = by_source(reads, result.kept, result.removed)
    context.log.info(", ".join(f"{k} {v}" for k, v in counts.items()))
    context.log.info("mixture: " + "; ".join(f"{s} {m['train']} train, {m['test']} test" for s, m in mixture.items()))
    version = data_version(result.kept)
    return dg.MaterializeResult(
        data_version=dg.DataVersion(version),
        metadata={
            **counts,
            **{f"pairs_{s}": m["train"] + m["test"] for s, m in mixture.items()},
            DATA_VERSION: version,
            SOURCES_VERSION: sources,
            BENCHMARKS_VERSION: benchmarks_version(training.benchmarks),
            "mixture": dg.MetadataValue.json(mixture),
            "source_caps": dg.MetadataValue.json(dict(training.source_caps)),
            "benchmark_items": len(benchmark_items),
            "benchmark_files": dg.MetadataValue.md("\n".join(f"- `{p}`" for p in training.benchmarks) or "_none_"),
            "per_group": dg.MetadataValue.md(per_group(pairs, result.kept, result.removed)),
            "contamination": dg.MetadataValue.md(
                markdown_table(
                    [c.model_dump(exclude={"contamination_id", "group_name"}) for c in result.contamination],
                    limit=20,
                )
            ),
        },
    )
