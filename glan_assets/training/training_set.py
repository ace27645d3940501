"""The training set: the pairs of every source (GLAN answers, Dynosaur instances, UIT unified
instances), capped per source, selected by their quality signals, deduplicated across sources,
decontaminated and split."""

from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass

import dagster as dg

from glan_assets.levels import Level, level_asset
from glan_assets.plan import CONFIG_VERSION, DATA_VERSION, SOURCES_VERSION, config_version, sources_version
from glan_assets.quality.selection import Dropped, PairQuality, Selection, select
from glan_assets.quality.settings import QualitySettings
from glan_assets.quality.stored import level_name, read_scores
from glan_assets.results import data_version, markdown_table
from glan_assets.training.curation import curate, load_benchmarks
from glan_assets.training.resources import TrainingSettings
from glan_assets.training.schemas import ContaminationRow, RemovedPairRow, TrainingPairRow
from glan_assets.training.sources import SourceRead, Sources, read_sources
from resources.storage import DuckDBStore, Slice, columns_of

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


def select_by_quality(
    pairs: Sequence[TrainingPairRow], scores: dict[str, PairQuality], thresholds: QualitySettings
) -> tuple[list[TrainingPairRow], list[RemovedPairRow]]:
    """The pairs that pass the quality thresholds, carrying their scores, and a removal row for
    each that does not; a pair its quality level has not scored is removed as `unscored`."""
    scored = [scores[p.source_id] for p in pairs if p.source_id in scores]
    selection = select(scored, thresholds)
    selection.dropped += [
        Dropped(p.pair_id, "unscored", None, f"no {level_name(p.source)} row: build {level_name(p.source)}[{p.group_name}]")
        for p in pairs
        if p.source_id not in scores
    ]
    kept = set(selection.kept)
    return (
        [
            p.model_copy(update={"ifd": q.ifd, "judge_score": q.judge_score,
                                 "quality_flags": ",".join(f.rule for f in q.flags)})
            for p in pairs
            if p.pair_id in kept and (q := scores[p.source_id])
        ],
        removed_rows(pairs, selection),
    )


def removed_rows(pairs: Sequence[TrainingPairRow], selection: Selection) -> list[RemovedPairRow]:
    """`training_removed` rows for the pairs the selection dropped."""
    by_id = {p.pair_id: p for p in pairs}
    return [
        RemovedPairRow(
            pair_id=d.pair_id,
            source_id=by_id[d.pair_id].source_id,
            source=by_id[d.pair_id].source,
            group_name=by_id[d.pair_id].group_name,
            reason="quality",
            signal=d.signal,
            signal_value=d.value,
            detail=d.detail,
        )
        for d in sorted(selection.dropped, key=lambda d: d.pair_id)
    ]


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
            "quality": gone[s, g, "quality"],
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


@dataclass(frozen=True)
class TrainingSet:
    level: Level
    asset: dg.AssetsDefinition


def training_set_level(sources: Sources) -> TrainingSet:
    """The training set's level and asset over the sources the root hands down."""
    level = Level(
        "training_set",
        TrainingPairRow,
        id_prefix="pair",
        method="training",
        group="training",
        description="Instruction/response pairs from every source level (GLAN answers, Dynosaur instances, "
        "UIT unified instances), each with its `source` and its origin row's id, capped per source and task "
        "(`GLAN_SOURCE_CAPS`), exact and near (MinHash) duplicates removed across sources, pairs sharing a "
        "13-gram with a benchmark question removed (`GLAN_BENCHMARKS`), and a held-out test split of N pairs "
        "per discipline, dataset or collection (`GLAN_HELDOUT_PER_DISCIPLINE`). Pairs a quality rule flags, or "
        "whose IFD or judge score misses its threshold (`GLAN_IFD_MAX`, `GLAN_JUDGE_MIN`, ...), are left out "
        "first. What was removed and why is in the `training_removed` and `contamination` tables.",
        # Its rows' parents are in whichever source level they came from (ans_, dinst_, uni_ ids);
        # every source level and each source's quality level is upstream, so a new partition of
        # any, or new scores, make it stale.
        extra_deps=tuple(sources.upstream),
        label="pair",
        other_row_types=(RemovedPairRow,),
        kinds=frozenset({"duckdb"}),
        logic_version="3",  # selected by quality
    )

    @level_asset(
        level,
        deps=[dg.AssetDep(name, partition_mapping=dg.AllPartitionMapping()) for name in level.deps],
        # New source data, or a changed setting or benchmark file (its code version carries them).
        automation_condition=dg.AutomationCondition.eager()
        | (
            dg.AutomationCondition.code_version_changed()
            & ~dg.AutomationCondition.in_progress()
            & ~dg.AutomationCondition.any_deps_in_progress()
        ),
    )
    def training_set(
        context: dg.AssetExecutionContext, store: DuckDBStore, training: TrainingSettings, quality: QualitySettings
    ) -> dg.MaterializeResult:
        # Before reading: a partition written meanwhile makes the next build read it again.
        upstream_version = sources_version(context.instance, sources.upstream)
        try:
            reads = read_sources(store, training.source_caps, sources)
        except ValueError as exc:
            raise dg.Failure(description=str(exc)) from exc
        pairs = [p for read in reads for p in read.pairs]
        if not pairs:
            raise dg.Failure(
                "no pairs from any source yet: build the answers of a discipline, the instances of a dataset "
                "or the unified instances of a collection first"
                + (f" (source caps: {training.source_caps})" if any(r.available for r in reads) else "")
            )
        try:
            good, dropped = select_by_quality(pairs, read_scores(store, sources.names), quality)
        except ValueError as exc:  # a threshold out of range
            raise dg.Failure(description=str(exc)) from exc
        benchmark_items = load_benchmarks(training.benchmarks)
        result = curate(
            good,
            benchmark_items,
            heldout_per_group=training.heldout_per_discipline,
            near_dup_threshold=training.near_dup_threshold,
            num_perm=training.minhash_permutations,
            shingle_words=training.shingle_words,
            ngram=training.contamination_ngram,
            seed=training.split_seed,
        )
        result.removed = sorted([*dropped, *result.removed], key=lambda r: r.pair_id)
        drop_outdated_tables(store)
        # Together, so the audit tables always explain the training set stored beside them.
        store.replace(
            [
                Slice(RemovedPairRow, result.removed),
                Slice(ContaminationRow, result.contamination),
                Slice(TrainingPairRow, result.kept),
            ]
        )
        counts = {**result.counts(), "input_pairs": len(pairs), "quality_removed": len(dropped)}
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
                SOURCES_VERSION: upstream_version,
                CONFIG_VERSION: config_version(level, {"store": store, "training": training, "quality": quality}),
                "quality_removed_by_signal": dg.MetadataValue.json(dict(Counter(r.signal for r in dropped))),
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

    return TrainingSet(level, training_set)
