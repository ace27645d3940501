"""What a build plan will cost before it runs: per LLM stage, calls, tokens, USD and time.

- **Calls** follow each method's fan-out from its settings (`Method.fanout`): for GLAN, the
  profile's subject queries, subjects per discipline, questions per syllabus, and so on. A
  level above the first one rebuilt is not rebuilt, so its rows are counted in the store (by
  the fan-out's queries). A method without one has its levels "not estimated".
- **Cached calls are free.** The response cache records each response's stage, partition and
  model: those already cached for a partition's stage, model and sampling are counted as
  cached (up to its calls), except in a partition rebuilt because its code changed, whose
  prompts may not be the cached ones.
- **Tokens per call** are the cache's measured means for the stage and model once it holds
  `MIN_MEASURED` responses of them, otherwise the fan-out's defaults (the README's projection)
  or `FALLBACK_TOKENS`; the plan says which.
- **Batch stages** (`GLAN_BATCH`) cost their prices times `GLAN_BATCH_PRICE_FACTOR`.
- **Time** is the uncached calls times the mean latency per call of the last build (recorded
  in the spend table, `resources.budget`), or `DEFAULT_LATENCY_S`, divided by the calls in
  flight: `GLAN_MAX_CONCURRENCY` per run times the runs at once. It leaves out waits between
  levels, so it is a lower bound.

`estimate` is pure; `estimate_build` gathers its inputs for a `BuildPlan`.
"""

import dataclasses
import json
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

from glan_assets.methods import Method
from glan_assets.plan import CODE, PartitionPlan
from resources.budget import SpendLedger
from resources.cache import Measured, ResponseCache
from resources.storage import DuckDBStore

# Responses of a stage and model the cache must hold before their mean replaces the default.
MIN_MEASURED = 20
FALLBACK_TOKENS = (500, 500)  # a stage its method's fan-out gives no default tokens for
DEFAULT_LATENCY_S = 2.0  # seconds per call before a build has measured its endpoint


@dataclass(frozen=True)
class Tokens:
    prompt: float
    completion: float
    source: str  # "measured (N responses)" or "default"


@dataclass(frozen=True)
class StageWork:
    """One stage's calls for a partition (or summed over partitions)."""

    level: str
    stage: str
    model: str
    calls: int
    cached: int = 0  # of the calls, those already in the cache: free


@dataclass(frozen=True)
class StageEstimate:
    level: str
    stage: str
    model: str
    calls: int
    cached: int
    prompt_tokens: int  # of the uncached calls: what is paid for
    completion_tokens: int
    cost_usd: float
    seconds: float
    tokens_source: str

    def figures(self) -> dict[str, float]:
        """As a materialization's metadata names them."""
        return {"llm_calls": self.calls - self.cached, "cache_hits": self.cached, "prompt_tokens": self.prompt_tokens,
                "completion_tokens": self.completion_tokens, "cost_usd": round(self.cost_usd, 6)}


@dataclass(frozen=True)
class Estimate:
    stages: tuple[StageEstimate, ...]
    latency_s: float
    latency_source: str
    concurrency: int
    not_estimated: tuple[str, ...] = ()  # levels with LLM stages that no fan-out here counts
    batch_stages: tuple[str, ...] = ()  # priced at the batch price; back within the batch window
    batch_price_factor: float = 1.0

    def total(self, name: str) -> float:
        return sum(getattr(s, name) for s in self.stages)

    def by_level(self) -> dict[str, dict[str, float]]:
        """Level -> its stages' figures summed."""
        levels: dict[str, dict[str, float]] = {}
        for s in self.stages:
            mine = levels.setdefault(s.level, dict.fromkeys(s.figures(), 0))
            for k, v in s.figures().items():
                mine[k] = round(mine[k] + v, 6)
        return levels


def choose_tokens(
    measured: Mapping[tuple[str, str], Measured], stage: str, model: str, max_tokens: int, default: tuple[int, int]
) -> Tokens:
    """The cache's means for the stage and model when it has enough, else `default`."""
    m = measured.get((stage, model))
    if m is not None and m.responses >= MIN_MEASURED:
        return Tokens(m.prompt_tokens, m.completion_tokens, f"measured ({m.responses} responses)")
    prompt, completion = default
    return Tokens(prompt, min(completion, max_tokens), "default")


def estimate(
    work: Iterable[StageWork],
    tokens: Mapping[tuple[str, str], Tokens],
    prices: Mapping[str, tuple[float, float]],
    latency_s: float,
    concurrency: int,
    latency_source: str = "default",
) -> Estimate:
    """Per (level, stage, model), in the order first seen: the calls summed, what the uncached
    ones cost at `prices` (stage -> USD per million prompt, completion tokens) and take at
    `latency_s` each with `concurrency` in flight."""
    summed: dict[tuple[str, str, str], StageWork] = {}
    for w in work:
        key = (w.level, w.stage, w.model)
        had = summed.get(key)
        summed[key] = w if had is None else dataclasses.replace(had, calls=had.calls + w.calls, cached=had.cached + w.cached)
    stages = []
    for (level, stage, model), w in summed.items():
        t = tokens[(stage, model)]
        paid = w.calls - w.cached
        prompt, completion = round(paid * t.prompt), round(paid * t.completion)
        price_in, price_out = prices.get(stage, (0.0, 0.0))
        stages.append(StageEstimate(
            level, stage, model, w.calls, w.cached, prompt, completion,
            (prompt * price_in + completion * price_out) / 1e6, paid * latency_s / max(concurrency, 1), t.source,
        ))
    return Estimate(tuple(stages), latency_s, latency_source, concurrency)


def _stored_rows(store: DuckDBStore, sql: str) -> dict[str, int]:
    """partition -> count, by `sql`; empty where the store or its table does not exist yet."""
    if store.backend == "duckdb" and not Path(store.path).exists():
        return {}
    table = sql.split(" FROM ", 1)[1].split()[0]
    if table not in store.relations():
        return {}
    return {r["k"]: r["n"] for r in store.query(sql)}


def estimate_build(
    plans_of: Sequence[tuple[Method, Sequence[PartitionPlan]]], resources: Mapping, runs_at_once: int
) -> tuple[Estimate, dict[tuple[str, str], str]]:
    """The whole plan's estimate (plans_of: (method, its partitions' plans)), and per
    (method, partition) its levels' figures as JSON (the run tag
    `ESTIMATE_TAG` that the materializations record beside their actual figures)."""
    llm, store = resources["llm"], resources["store"]
    without_calls = {lv.name for m, _ in plans_of for lv in m.levels if not lv.stages}
    # Per method with partitions to plan: its fan-out's stored rows, name -> partition -> count.
    stored = {m.name: {name: _stored_rows(store, sql) for name, sql in m.fanout.stored_rows.items()}
              for m, plans in plans_of if m.fanout and plans}
    default_tokens = {stage: t for m, _ in plans_of if m.fanout for stage, t in m.fanout.default_tokens.items()}
    measured, cached, last = {}, {}, None
    if Path(llm.cache_path).exists():  # a plan does not create the cache
        cache, ledger = ResponseCache(llm.cache_path), SpendLedger(llm.cache_path)
        try:
            measured, cached, last = cache.measured(), cache.cached_calls(), ledger.last_latency()
        finally:
            cache.close()
            ledger.close()
    latency, latency_source = (last[0], f"measured over the last build's {last[1]} calls") if last else (
        DEFAULT_LATENCY_S, "default")
    partitions = [p for _, plans in plans_of for p in plans]
    concurrency = llm.max_concurrency * max(1, min(runs_at_once, len(partitions)))
    tokens, prices, everything, per_partition, counted, batched = {}, {}, [], {}, set(), {}
    for method, plans in plans_of:
        for plan in plans:
            work = []
            mine_stored = {name: rows.get(plan.key, 0) for name, rows in stored.get(method.name, {}).items()}
            found = method.fanout.calls(plan, resources, mine_stored) if method.fanout else []
            counted |= {level for level, _, _ in found} | {lv for lv in plan.levels if lv in without_calls}
            for level, stage, calls in found:
                sampling = llm.sampling(stage.name, stage.sampling)
                model = llm.model_for(sampling)
                tokens[(stage.name, model)] = choose_tokens(measured, stage.name, model, sampling.max_tokens,
                                                            default_tokens.get(stage.name, FALLBACK_TOKENS))
                factor = llm.batch_price_factor if sampling.batch else 1.0
                prices[stage.name] = (sampling.prompt_price * factor, sampling.completion_price * factor)
                if sampling.batch:
                    batched[stage.name] = None
                asked = (stage.name, plan.key, model, sampling.temperature, sampling.top_p, sampling.max_tokens)
                free = 0 if plan.reason == CODE else min(calls, cached.get(asked, 0))
                work.append(StageWork(level, stage.name, model, calls, free))
            everything += work
            mine = estimate(work, tokens, prices, latency, concurrency, latency_source)
            per_partition[(method.name, plan.key)] = json.dumps(mine.by_level(), sort_keys=True)
    total = estimate(everything, tokens, prices, latency, concurrency, latency_source)
    planned = dict.fromkeys(lv for _, plans in plans_of for p in plans for lv in p.levels)
    return dataclasses.replace(
        total, not_estimated=tuple(lv for lv in planned if lv not in counted), batch_stages=tuple(batched),
        batch_price_factor=llm.batch_price_factor,
    ), per_partition


def describe(est: Estimate, budget_usd: float = 0.0) -> list[str]:
    """The estimate as the plan prints it: a line per stage and the total."""
    if not est.stages and not est.not_estimated:
        return ["estimate: no LLM calls"]
    lines = [
        f"estimate at {est.latency_s:.2f} s per call ({est.latency_source}), {est.concurrency} calls in flight; "
        "tokens per call measured in the cache where it says so, else defaults:",
        f"  {'stage':<18} {'calls':>11} {'cached':>9} {'prompt tok':>14} {'completion tok':>15} {'USD':>10} {'time':>8}  tokens",
    ]
    for s in est.stages:
        lines.append(f"  {s.stage:<18} {s.calls:>11,} {s.cached:>9,} {s.prompt_tokens:>14,} {s.completion_tokens:>15,} "
                     f"{_usd(s.cost_usd):>10} {_duration(s.seconds):>8}  {s.tokens_source}")
    lines.append(f"  {'total':<18} {int(est.total('calls')):>11,} {int(est.total('cached')):>9,} "
                 f"{int(est.total('prompt_tokens')):>14,} {int(est.total('completion_tokens')):>15,} "
                 f"{_usd(est.total('cost_usd')):>10} {_duration(est.total('seconds')):>8}")
    if est.batch_stages:
        lines.append(f"  batch (GLAN_BATCH): {', '.join(est.batch_stages)}, at {est.batch_price_factor:g} of the price "
                     "(GLAN_BATCH_PRICE_FACTOR); each round back within 24 h, not in the time above")
    if est.not_estimated:
        lines.append(f"  not estimated (no fan-out here, or an input it cannot read): {', '.join(est.not_estimated)}")
    if budget_usd and est.total("cost_usd") > budget_usd:
        lines.append(f"  over the budget, GLAN_BUDGET_USD=${budget_usd:g}")
    if budget_usd and not est.total("cost_usd"):
        lines.append("  no prices set (GLAN_PRICE): the cost is unknown and GLAN_BUDGET_USD cannot stop anything")
    return lines


def _usd(amount: float) -> str:
    return f"{amount:,.4f}" if amount < 100 else f"{amount:,.0f}"


def _duration(seconds: float) -> str:
    if seconds < 60:
        return f"{seconds:.0f}s"
    if seconds < 3600:
        return f"{seconds / 60:.0f}m"
    return f"{seconds / 3600:.1f}h"
