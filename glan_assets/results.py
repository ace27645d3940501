"""Turning a level's rows into a stored partition and what the UI shows about it."""

from collections.abc import Callable, Mapping, Sequence

import dagster as dg

from glan_assets.ids import content_hash
from glan_assets.schemas import RejectRow, TableRow
from resources.llm import CallStats, Reply
from resources.storage import DuckDBStore, EmptyOutputError


def rejects_of(asset: str, discipline: str, rejected: Mapping[str, Sequence[Reply]]) -> list[RejectRow]:
    """A reject row for every unusable reply, and for every listed item a usable reply
    dropped, per LLM stage."""
    rows = []
    for stage, replies in rejected.items():
        for r in replies:
            key = [stage, r.request.item_id, r.request.sample_index]
            failures = [] if r.ok else [(key, r.error or "", r.text)]
            failures += [([*key, d.index], f"item {d.index} dropped: {d.reason}", d.raw) for d in r.dropped]
            rows += [
                RejectRow(
                    reject_id=f"rej_{content_hash(k)[:16]}",
                    parent_id=r.request.item_id,
                    discipline=discipline,
                    asset=asset,
                    stage=stage,
                    reason=reason,
                    raw_output=raw,
                    attempts=r.attempts,
                )
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


def store_partition(
    context: dg.AssetExecutionContext,
    store: DuckDBStore,
    row_type: type[TableRow],
    rows: Sequence[TableRow],
    rejected: Mapping[str, Sequence[Reply]] | None = None,
    stats: CallStats | None = None,
    preview: Callable[[], str] | None = None,
) -> dg.MaterializeResult:
    """Replace the partition's rows, and its unusable replies (per LLM stage) in the rejects
    table, in one transaction, and describe the result.

    No rows means no materialization: the step fails with the reason and the rows stored
    before stay (the rejects are still recorded).
    """
    discipline = context.partition_key
    rejects = rejects_of(row_type.table, discipline, rejected or {})
    stats = stats or CallStats()
    try:
        store.replace_partition(row_type, discipline, rows, rejects)
    except EmptyOutputError as exc:
        raise dg.Failure(
            description=str(exc),
            metadata={"rejects": len(rejects), "llm_calls": stats.calls, "cache_hits": stats.cache_hits},
        ) from exc
    if rejects:
        context.log.warning(f"{len(rejects)} {row_type.table} outputs rejected; see the rejects table")
    fields = [f for f in row_type.model_fields if f != "discipline"][:4]
    return dg.MaterializeResult(
        data_version=dg.DataVersion(data_version(rows)),
        metadata={
            "rows": len(rows),
            "rejects": len(rejects),
            "llm_calls": stats.calls,
            "cache_hits": stats.cache_hits,
            "prompt_tokens": stats.prompt_tokens,
            "completion_tokens": stats.completion_tokens,
            **({"cost_usd": round(stats.cost_usd, 6)} if stats.cost_usd else {}),
            "table": row_type.table,
            "preview": dg.MetadataValue.md(
                preview() if preview else markdown_table([{f: getattr(r, f) for f in fields} for r in rows])
            ),
        },
    )
