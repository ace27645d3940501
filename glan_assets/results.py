"""Turning a level's rows into a stored partition and what the UI shows about it."""

import json
from collections.abc import Callable, Mapping, Sequence

import dagster as dg

from glan_assets.ids import content_hash
from glan_assets.levels import Level, resource_keys
from glan_assets.plan import (
    CONFIG_VERSION,
    DATA_VERSION,
    ESTIMATE,
    ESTIMATE_TAG,
    INPUT_VERSIONS,
    config_version,
    input_versions,
)
from glan_assets.rows import RejectRow, TableRow
from glan_assets.stages import Batch, Reply
from resources.llm import CallStats
from resources.storage import DuckDBStore, Slice


def rejects_of(asset: str, partition_key: str, rejected: Mapping[str, Sequence[Reply]]) -> list[RejectRow]:
    """A reject row for every unusable reply, and for every listed item a usable reply
    dropped, per LLM stage."""
    rows = []
    for stage, replies in rejected.items():
        for r in replies:
            key = [stage, r.request.item_id, r.request.sample_index]
            failures = [] if r.ok else [(key, r.error or "", r.text)]
            failures += [([*key, d.index], f"item {d.index} dropped: {d.reason}", d.raw) for d in r.dropped]
            rows += [
                RejectRow.of(asset, partition_key, r.request.item_id, stage, reason, raw, r.attempts, key=k)
                for k, reason, raw in failures
            ]
    return rows


def data_version(rows: Sequence[TableRow]) -> str:
    """Content hash of the rows: downstream goes stale exactly when this changes."""
    return content_hash(sorted((r.model_dump() for r in rows), key=lambda d: str(next(iter(d.values())))))


def markdown_table(records: Sequence[dict], limit: int = 5, width: int = 160) -> str:
    if not records:
        return "_no rows_"
    cols = list(records[0])

    def cell(v: object) -> str:
        text = " ".join(str(v).split()).replace("|", "\\|")
        return text if len(text) <= width else text[: width - 1] + "…"

    lines = ["| " + " | ".join(cols) + " |", "|" + "---|" * len(cols)]
    lines += ["| " + " | ".join(cell(r[c]) for c in cols) + " |" for r in records[:limit]]
    return "\n".join(lines)


def call_metadata(stats: CallStats) -> dict[str, object]:
    """What a level's LLM calls cost: answered calls, cache hits, retries by cause, tokens."""
    return {
        "llm_calls": stats.calls,
        "cache_hits": stats.cache_hits,
        "retries": sum(stats.retries.values()),
        **({"retry_causes": dg.MetadataValue.json(dict(stats.retries))} if stats.retries else {}),
        "requests_sent": stats.requests_sent,
        "prompt_tokens": stats.prompt_tokens,
        "completion_tokens": stats.completion_tokens,
        **({"cost_usd": round(stats.cost_usd, 6)} if stats.cost_usd else {}),
    }


def _resources(context: dg.AssetExecutionContext, level: Level) -> dict[str, object]:
    """The resources `config_version` reads, from the step's own."""
    return {key: getattr(context.resources, key) for key in resource_keys(level)}


def _estimated(context: dg.AssetExecutionContext, level: Level) -> dict[str, object]:
    """The plan's estimate for this level, when the run carries one, to sit beside the actual figures."""
    planned = json.loads(context.run.tags.get(ESTIMATE_TAG) or "{}").get(level.name)
    return {ESTIMATE: dg.MetadataValue.json(planned)} if planned else {}


def store_partition(
    context: dg.AssetExecutionContext,
    store: DuckDBStore,
    level: Level,
    rows: Sequence[TableRow],
    batches: Mapping[str, Batch] | None = None,
    preview: Callable[[], str] | None = None,
    metadata: Mapping[str, object] | None = None,
    rejects: Sequence[RejectRow] = (),
) -> dg.MaterializeResult:
    """Replace the partition's rows, and its unusable replies (per LLM stage name) and other
    `rejects` in the rejects table, in one transaction, and describe the result.

    No rows means no materialization: the step fails with the reason and the rows stored
    before stay (the rejects are still recorded).
    """
    key = context.partition_key
    batches = batches or {}
    rejects = [*rejects_of(level.name, key, {stage: b.replies for stage, b in batches.items()}), *rejects]
    stats = sum((b.stats for b in batches.values()), CallStats())
    recorded = Slice(RejectRow, rejects, {"partition_key": key, "asset": level.name})
    if not rows:
        store.replace([recorded])
        raise dg.Failure(
            description=f"{level.name}[{key}]: no usable rows ({len(rejects)} rejects, see `glan rejects "
            f"--level {level.name}`); the rows stored before were kept",
            metadata=call_metadata(stats) | {"rejects": len(rejects)},
        )
    store.replace([recorded, Slice(level.row_type, rows, {level.row_type.partition_column: key})])
    if rejects:
        context.log.warning(f"{len(rejects)} {level.name} outputs rejected; see the rejects table")
    shown = [f for f in level.row_type.model_fields if f != level.row_type.partition_column][:4]
    version = data_version(rows)
    return dg.MaterializeResult(
        data_version=dg.DataVersion(version),
        metadata={
            **(metadata or {}),
            DATA_VERSION: version,
            INPUT_VERSIONS: dg.MetadataValue.json(input_versions(context.instance, level, key)),
            CONFIG_VERSION: config_version(level, _resources(context, level)),
            "rows": len(rows),
            "rejects": len(rejects),
            **call_metadata(stats),
            **_estimated(context, level),
            "table": level.name,
            "preview": dg.MetadataValue.md(
                preview() if preview else markdown_table([{f: getattr(r, f) for f in shown} for r in rows])
            ),
        },
    )
