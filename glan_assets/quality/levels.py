"""The quality level of each method, declared once: `quality_level` builds it for a method
the root hands in.

`<method>_quality` comes after the method's last level, partitioned like it, so a new
discipline, dataset or collection is scored alone. One row per pair the training set can
take from the partition (its source's cap applies), keyed by the pair's origin id, with
three signals: every rule's flag and reason, IFD with both losses under the local scorer,
and the judge's score, reason and model for the pairs in the judge's sample (NULL for the
others). The judge is an LLM stage like the others: the same transport, cache and rejects;
an unusable verdict is a reject with its reason. Selection by these signals happens in the
training set, so a changed threshold re-selects from these rows without a call.
"""

import time
from dataclasses import dataclass, replace
from pathlib import Path
from typing import ClassVar

import dagster as dg
import pydantic

from glan_assets import stages
from glan_assets.ids import content_hash, stable_id
from glan_assets.levels import Level, level_asset
from glan_assets.lineage import ensure_lineage_views
from glan_assets.methods import Method
from glan_assets.quality.ifd import ifd_scores
from glan_assets.quality.judge import JUDGE_STAGE, judge_llm, judge_request
from glan_assets.quality.rules import RULE_NAMES, check
from glan_assets.quality.settings import QualitySettings
from glan_assets.quality.stored import flags_json, level_name, summary, worst
from glan_assets.results import markdown_table, store_partition
from glan_assets.rows import TableRow
from glan_assets.stages import Batch
from glan_assets.training.resources import TrainingSettings
from glan_assets.training.schemas import pair_id_of
from glan_assets.training.sources import capped_sql
from resources.llm import LLMResource
from resources.local_models import resolve_model
from resources.scorer import load_scorer
from resources.storage import DuckDBStore

# The settings the rows depend on: the rules' thresholds, the scorer, the judge's sample and
# endpoint, and the caps that decide which pairs there are. Selection thresholds are not here.


class QualityRow(TableRow):
    id_column: ClassVar[str] = "quality_id"
    parent_column: ClassVar[str | None] = "source_id"


def row_type(method: Method) -> type[QualityRow]:
    """The method's quality table: its partition column, and one flag column per rule."""
    fields: dict[str, tuple] = {
        "quality_id": (str, ...),
        "source_id": (str, ...),  # the pair's origin row: an answer, a unified instance, an instance
        method.partition_column: (str, ...),
        "pair_id": (str, ...),  # the pair's id in training_set / training_removed
        "flagged": (bool, ...),
        **{f"flag_{rule}": (bool, ...) for rule in RULE_NAMES},
        "flag_reasons": (str, ...),  # "rule: reason" of each flag, one a line
        "flags": (str, ...),  # JSON [{rule, value, reason}]
        "ifd": (float | None, ...),  # None: a response with no tokens
        "loss_given_instruction": (float, ...),
        "loss_alone": (float, ...),
        "response_tokens": (int, ...),
        "scorer_model": (str, ...),
        "judge_sampled": (bool, ...),
        "judge_score": (int | None, ...),  # None: not in the sample, or its verdict was rejected
        "judge_reason": (str, ...),
        "judge_model": (str, ...),
    }
    name = f"{method.name.capitalize()}QualityRow"
    model = pydantic.create_model(name, __base__=QualityRow, __module__=__name__, **fields)
    model.table = level_name(method.name)
    model.partition_column = method.partition_column
    return model


def in_judge_sample(source_id: str, share: float) -> bool:
    """A stable sample by pair: the same pairs whatever else the partition holds."""
    return int(content_hash(["judge", source_id])[:8], 16) < share * 16**8


@dataclass(frozen=True)
class Quality:
    level: Level
    asset: dg.AssetsDefinition


def quality_level(method: Method) -> Quality:
    """The method's quality level and its asset."""
    source = method.levels[-1]
    if not source.training_pairs:
        raise ValueError(f"{method.name}: its last level {source.name} declares no training_pairs to score")
    rows = row_type(method)
    level = Level(
        level_name(method.name),
        rows,
        id_prefix=f"{method.name}q",
        method=method.name,
        group="quality",
        description=f"Quality signals of every {method.name} pair the training set can take from the "
        f"{method.noun}: rule flags with reasons, IFD (both losses under the local scorer) and the LLM "
        "judge's 1-10 score on a sample (`GLAN_JUDGE_SAMPLE`). The training set selects by them.",
        parent=source.name,
        stages=(JUDGE_STAGE,),
        label="quality score",
        partitions_def=method.partitions,
    )
    @level_asset(level)
    def _quality(
        context: dg.AssetExecutionContext,
        llm: LLMResource,
        store: DuckDBStore,
        quality: QualitySettings,
        training: TrainingSettings,
    ) -> dg.MaterializeResult:
        key = context.partition_key
        ensure_lineage_views(store, method.levels)  # its pairs may read its lineage view
        cap = training.source_caps.get(method.name)
        pairs = store.query(f"SELECT * FROM ({capped_sql(source, cap)}) WHERE group_name = ?", [key]) if cap != 0 else []
        if not pairs:
            left_out = f" (GLAN_SOURCE_CAPS gives the training set no {method.name} pairs)" if cap == 0 else ""
            raise dg.Failure(description=f"{level.name}[{key}]: no pairs to score in {source.name}{left_out}")
        context_of = method.pair_contexts(store, key)
        flags = [check(p["instruction"], p["response"], context_of(p["source_id"]), quality) for p in pairs]
        start = time.monotonic()
        scorer = load_scorer(resolve_model(quality.scorer_model, Path(quality.model_cache)))
        ifds = ifd_scores(lambda ps: scorer.score_with_and_without(ps, quality.scorer_batch_size),
                          [(p["instruction"], p["response"]) for p in pairs])
        scoring_seconds = time.monotonic() - start
        judge = judge_llm(llm, quality.judge_base_url, quality.judge_api_key)
        requests = [judge_request(p["source_id"], p["instruction"], p["response"])
                    for p in pairs if in_judge_sample(p["source_id"], quality.judge_sample)]
        # No request, no session: a build that judges nothing needs no endpoint.
        batch = stages.run(judge, JUDGE_STAGE, requests) if requests else Batch([])
        verdicts = {r.request.item_id: r.value for r in batch.replies if r.ok}
        judge_model = stages.model_of(judge, JUDGE_STAGE)
        asked = {r.item_id for r in requests}
        stored = [
            rows(
                quality_id=stable_id(level.id_prefix, p["source_id"]),
                source_id=p["source_id"],
                **{method.partition_column: key},
                pair_id=pair_id_of(p["source_id"]),
                flagged=bool(fl),
                **{f"flag_{rule}": any(f.rule == rule for f in fl) for rule in RULE_NAMES},
                flag_reasons="\n".join(f"{f.rule}: {f.reason}" for f in fl),
                flags=flags_json(fl),
                ifd=s.ifd,
                loss_given_instruction=s.loss_given_instruction,
                loss_alone=s.loss_alone,
                response_tokens=s.tokens,
                scorer_model=quality.scorer_model,
                judge_sampled=p["source_id"] in asked,
                judge_score=v.score if (v := verdicts.get(p["source_id"])) else None,
                judge_reason=v.reason if v else "",
                judge_model=judge_model if p["source_id"] in asked else "",
            )
            for p, fl, s in zip(pairs, flags, ifds)
        ]
        found = summary([r.model_dump() for r in stored])
        context.log.info(f"{level.name}[{key}]: {found}")
        return store_partition(
            context,
            store,
            level,
            stored,
            {JUDGE_STAGE.name: batch},
            preview=lambda: markdown_table(worst([r.model_dump() for r in stored]), limit=10),
            metadata={
                **{k: v for k, v in found.items() if not isinstance(v, dict | list) and v is not None},
                "flags_by_rule": dg.MetadataValue.json(found["flags_by_rule"]),
                "scorer_model": scorer.model_dir,
                "scoring_seconds": round(scoring_seconds, 2),
                "judge_sample": quality.judge_sample,
            },
        )

    return Quality(level, _quality)


def with_quality(method: Method, quality: Quality) -> Method:
    """The method with its quality level after its last one."""
    return replace(method, levels=(*method.levels, quality.level))
