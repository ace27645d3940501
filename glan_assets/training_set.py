"""The training set: every answered question as a pair, deduplicated, decontaminated and split."""

from collections import Counter

import dagster as dg

from glan_assets.answers import answers
from glan_assets.curation import curate, load_benchmarks
from glan_assets.lineage import ensure_lineage_view
from glan_assets.results import data_version, markdown_table
from glan_assets.training_schemas import ContaminationRow, RemovedPairRow, TrainingPairRow, pair_id_of
from resources.storage import DuckDBStore
from resources.training import TrainingSettings


def read_pairs(store: DuckDBStore) -> list[TrainingPairRow]:
    """Every answer with its question, discipline, field and subject, as a pair."""
    ensure_lineage_view(store)
    records = store.query(
        "SELECT answer_id, discipline, field_name, subject_name, question, answer FROM lineage ORDER BY answer_id"
    )
    return [
        TrainingPairRow(
            pair_id=pair_id_of(r["answer_id"]),
            answer_id=r["answer_id"],
            discipline=r["discipline"],
            field_name=r["field_name"],
            subject_name=r["subject_name"],
            instruction=r["question"],
            response=r["answer"],
        )
        for r in records
    ]


def per_discipline(pairs: list[TrainingPairRow], kept: list[TrainingPairRow], removed: list[RemovedPairRow]) -> str:
    """Markdown: per discipline, the pairs in, removed per reason, and the split."""
    inputs = Counter(p.discipline for p in pairs)
    fields = {p.discipline: p.field_name for p in pairs}
    gone = Counter((r.discipline, r.reason) for r in removed)
    splits = Counter((p.discipline, p.split) for p in kept)
    records = [
        {
            "discipline": d,
            "field": fields[d],
            "pairs": inputs[d],
            "exact_dups": gone[d, "exact_duplicate"],
            "near_dups": gone[d, "near_duplicate"],
            "contaminated": gone[d, "contaminated"],
            "train": splits[d, "train"],
            "test": splits[d, "test"],
        }
        for d in sorted(inputs)
    ]
    return markdown_table(records, limit=len(records))


@dg.asset(
    deps=[dg.AssetDep(answers, partition_mapping=dg.AllPartitionMapping())],
    group_name="training",
    code_version="1",
    kinds={"duckdb"},
    owners=["team:data"],
    automation_condition=dg.AutomationCondition.eager(),
    description="Question/answer pairs of every discipline, exact and near (MinHash) duplicates "
    "removed, pairs sharing a 13-gram with a benchmark question removed (`GLAN_BENCHMARKS`), "
    "and a held-out test split of N pairs per discipline (`GLAN_HELDOUT_PER_DISCIPLINE`). "
    "What was removed and why is in the `training_removed` and `contamination` tables.",
)
def training_set(
    context: dg.AssetExecutionContext, store: DuckDBStore, training: TrainingSettings
) -> dg.MaterializeResult:
    pairs = read_pairs(store)
    if not pairs:
        raise dg.Failure("no answered questions yet: build the answers of at least one discipline first")
    benchmark_items = load_benchmarks(training.benchmarks)
    result = curate(
        pairs,
        benchmark_items,
        heldout_per_discipline=training.heldout_per_discipline,
        near_dup_threshold=training.near_dup_threshold,
        num_perm=training.minhash_permutations,
        shingle_words=training.shingle_words,
        ngram=training.contamination_ngram,
        seed=training.split_seed,
    )
    # Together, so the audit tables always explain the training set stored beside them.
    store.replace_tables(
        {RemovedPairRow: result.removed, ContaminationRow: result.contamination, TrainingPairRow: result.kept}
    )
    counts = result.counts()
    context.log.info(", ".join(f"{k} {v}" for k, v in counts.items()))
    return dg.MaterializeResult(
        data_version=dg.DataVersion(data_version(result.kept)),
        metadata={
            **counts,
            "benchmark_items": len(benchmark_items),
            "benchmark_files": dg.MetadataValue.md("\n".join(f"- `{p}`" for p in training.benchmarks) or "_none_"),
            "per_discipline": dg.MetadataValue.md(per_discipline(pairs, result.kept, result.removed)),
            "contamination": dg.MetadataValue.md(
                markdown_table(
                    [c.model_dump(exclude={"contamination_id", "discipline"}) for c in result.contamination],
                    limit=20,
                )
            ),
        },
    )
