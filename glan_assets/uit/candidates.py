"""Level 2: K rewrites of each task's instruction into the target format (one LLM request
per task and sample, never per instance), each scored by a local causal LM: the mean loss of
the task's gold outputs under it. The lowest loss is chosen (perplexity-based denoising).

The task's original instruction is not a candidate: the point is one format for all
collections, and the original is in its collection's format (the paper picks among the
transferred instructions only).
"""

import time
from pathlib import Path

import dagster as dg

from glan_assets import stages
from glan_assets.ids import stable_id
from glan_assets.levels import Level, level_asset
from glan_assets.results import markdown_table, store_partition
from glan_assets.stages import Request, Stage
from glan_assets.uit.partitions import collection_partitions
from glan_assets.uit.prompts import DEFINITION, DEMONSTRATED, TEMPLATE
from glan_assets.uit.resources import UITSettings
from glan_assets.uit.schemas import CandidateRow, RawInstructionRow
from glan_assets.uit.tasks import copied_example, group_tasks, score_candidates, source_view, winners
from resources.llm import LLMResource, Sampling
from resources.local_models import resolve_model
from resources.scorer import load_scorer
from resources.storage import DuckDBStore

# Sampled, so that the K candidates differ.
TRANSFER = Stage("format_transfer", (DEFINITION, TEMPLATE), Sampling(temperature=1.0, top_p=0.95, max_tokens=512))

LEVEL = Level(
    "uit_candidates",
    CandidateRow,
    id_prefix="ucand",
    method="uit",
    group="uit",
    description="Candidate instructions: K rewrites per task into the target format (`GLAN_TARGET_FORMAT`), "
    "each with the scorer's loss of the task's gold outputs; the lowest is `chosen`.",
    extra_deps=("instructions_raw",),
    stages=(TRANSFER,),
    label="candidate instruction",
    kinds=frozenset({"duckdb", "pytorch"}),
    partitions_def=collection_partitions,
)


@level_asset(LEVEL)
def uit_candidates(
    context: dg.AssetExecutionContext, llm: LLMResource, store: DuckDBStore, uit: UITSettings
) -> dg.MaterializeResult:
    key = context.partition_key
    tasks = group_tasks(store.read(RawInstructionRow, key))
    prompt = uit.transfer_prompt()
    batch = stages.run(
        llm,
        TRANSFER,
        [
            Request(t.task_id, prompt.messages(source_format=t.source_format, source=source_view(t)), i)
            for t in tasks
            for i in range(uit.candidates_per_task)
        ],
    )
    for r in batch.replies:  # a copied demonstration is unusable: it goes to the rejects
        if r.ok and (copied := copied_example(r.text, r.request.messages[-1]["content"], DEMONSTRATED)):
            r.error = f"copies the worked example ({copied!r}) instead of rewriting the task"
    by_id = {t.task_id: t for t in tasks}
    written = [r for r in batch.replies if r.ok]
    scorer = load_scorer(resolve_model(uit.scorer_model, Path(uit.model_cache)))
    start = time.monotonic()
    scores = score_candidates(
        lambda pairs: scorer.score(pairs, uit.scorer_batch_size),
        [(by_id[r.request.item_id], r.text) for r in written],
        uit.target_format,
        uit.max_scored_instances,
    )
    seconds = time.monotonic() - start
    chosen = winners([(r.request.item_id, r.request.sample_index, s.loss) for r, s in zip(written, scores)])
    model = stages.model_of(llm, TRANSFER)
    rows = [
        CandidateRow(
            candidate_id=stable_id(LEVEL.id_prefix, r.request.item_id, uit.target_format, r.request.sample_index),
            task_id=r.request.item_id,
            collection=key,
            task=by_id[r.request.item_id].task,
            candidate_index=r.request.sample_index,
            target_format=uit.target_format,
            instruction=r.text,
            loss=s.loss,
            scored_instances=s.instances,
            chosen=(r.request.item_id, r.request.sample_index) in chosen,
            model=model,
            scorer_model=uit.scorer_model,
        )
        for r, s in zip(written, scores)
    ]
    scored = sum(s.instances for s in scores)
    return store_partition(
        context,
        store,
        LEVEL,
        rows,
        {TRANSFER.name: batch},
        preview=lambda: markdown_table(
            [{"task": c.task, "candidate": c.candidate_index, "loss": round(c.loss, 4), "chosen": c.chosen,
              "instruction": c.instruction} for c in sorted(rows, key=lambda c: (c.task, c.loss))],
            limit=12,
        ),
        metadata={
            "tasks": len(tasks),
            "scorer_model": scorer.model_dir,
            "scored_instances": scored,
            "scoring_seconds": round(seconds, 2),
            "scored_instances_per_s": round(scored / seconds, 1) if seconds else 0.0,
        },
    )
