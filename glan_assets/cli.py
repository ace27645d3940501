"""The `glan` command: build, trace, export, review rejects and taxonomy proposals."""

import dataclasses
import fcntl
import os
import re
import sys
import time
import uuid
import warnings
from collections import Counter
from contextlib import contextmanager
from pathlib import Path

import click
import dagster as dg
import duckdb

from glan_assets.build import (
    BUILD_ORDER,
    GENERATION,
    WORKERS,
    BuildPlan,
    LevelProgress,
    LevelSummary,
    PartitionSummary,
    build,
    failure_message,
    plan_build,
    train,
    write_log,
)
from glan_assets.batches import STOPPED, describe_batch, poll_batches
from glan_assets.estimate import describe, estimate_build
from glan_assets.glan.schemas import ProposalRow
from glan_assets.glan.taxonomy_file import TaxonomyError, add_node
from glan_assets.definitions import defs
from glan_assets.diagram import mermaid
from glan_assets.lineage import chain, temporary_lineage_views
from glan_assets.orphans import fail_orphaned_runs
from glan_assets.quality.stored import read_rows, summary, worst
from glan_assets.registry import LEVELS, METHODS, TRAINING, level, settings_from_env, stages
from glan_assets.rows import RejectRow
from glan_assets.settings import Settings, SettingsError, set_process_environment
from glan_assets.training.release import export_dataset
from resources.batch import BatchRecord
from resources.budget import spend_line
from resources.llm import EndpointUnreachable
from resources.local_models import convert_in_background
from resources.locks import file_lock
from resources.storage import DuckDBStore, Slice, StoreUnavailable


def _fail(message: str, code: int = 1) -> None:
    click.secho(f"error: {message}", fg="red", err=True)
    sys.exit(code)


def _message(exc: Exception) -> str:
    """An exception's message; a KeyError's without the quotes `str()` adds."""
    return str(exc.args[0]) if isinstance(exc, KeyError) and exc.args else str(exc)


def _settings() -> Settings:
    """The settings this command resolved from the environment when it started (`main`)."""
    return click.get_current_context().find_root().obj


def _resources() -> dict:
    try:
        return _settings().resources()
    except SettingsError as exc:
        _fail(str(exc), 2)


def _home() -> Path:
    return _settings().machine.dagster_home


def _instance() -> dg.DagsterInstance:
    home = _home()  # set_process_environment exported it: Dagster reads DAGSTER_HOME itself
    # One process at a time sets up a home: two at once on a new home raced its schema
    # migration (two alembic heads) and left it unusable.
    with file_lock(home / ".glan.lock"):
        if not (home / "dagster.yaml").exists():
            # Dagster warns about a home without one, and greets a new one with telemetry.
            # The UI's first page would be a community sign-up modal (nux).
            (home / "dagster.yaml").write_text("telemetry:\n  enabled: false\nnux:\n  enabled: false\n")
        instance = dg.DagsterInstance.get()
        instance.get_runs(limit=1)  # creates or migrates the storage while the lock is held
    return instance


@contextmanager
def _one_build_at_a_time(home: Path):
    """A second `glan build` on the same Dagster home waits for the first, then plans anew
    (and usually finds its work done) instead of building the same partitions twice."""
    with open(home / ".glan-build.lock", "a+") as fh:
        try:
            fcntl.flock(fh, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            fh.seek(0)
            holder = fh.read().strip() or "?"
            click.echo(f"waiting for another glan build (pid {holder}) on this DAGSTER_HOME ...")
            fcntl.flock(fh, fcntl.LOCK_EX)
        fh.seek(0)
        fh.truncate()
        fh.write(str(os.getpid()))
        fh.flush()
        try:
            yield
        finally:
            fcntl.flock(fh, fcntl.LOCK_UN)


def _store_with_data(res: dict) -> DuckDBStore:
    """The store opened read-only, for commands that only read: they never create or write
    it, and a missing or unreadable file is a one-line error."""
    store = res["store"].reader()
    try:
        with store.connect():
            pass
    except StoreUnavailable as exc:
        _fail(str(exc))
    return store


@click.group()
def main() -> None:
    """Instruction-tuning data, built incrementally with Dagster and DuckDB."""
    try:
        settings = settings_from_env()
        set_process_environment(settings)
    except SettingsError as exc:
        _fail(str(exc), 2)
    click.get_current_context().obj = settings
    # Dagster's preview/beta warnings are about APIs this project chose; they would drown the
    # progress lines. Its deprecation warnings stay: they announce a break.
    warnings.filterwarnings("ignore", category=dg.PreviewWarning)
    warnings.filterwarnings("ignore", category=dg.BetaWarning)
    # peft calls a transformers attribute deprecated in 5.x; nothing for a user to do.
    warnings.filterwarnings("ignore", message=".*is_gradient_checkpointing.*", category=FutureWarning)


PLAN_LINES = 20  # partitions the plan names one by one; the rest are counted by reason


def _describe(plan: BuildPlan, doomed: dict[tuple[str, str], dict[str, int]] | None = None) -> list[str]:
    """The plan's lines; `doomed` (a dry run's `--prune`): rows per table of each removed
    partition, by (method, partition)."""
    lines = []
    for m in plan.methods:
        if m.added:
            lines.append(f"new {m.method.noun}s: {', '.join(m.added)}")
        if m.removed and doomed is not None:
            for key in m.removed[:PLAN_LINES]:
                rows = doomed.get((m.method.name, key), {})
                tables = ", ".join(f"{t} {n}" for t, n in rows.items())
                what = f"{sum(rows.values())} rows ({tables})" if rows else "no rows"
                lines.append(f"would prune {m.method.noun} {key}: delete {what} and its partition")
            if len(m.removed) > PLAN_LINES:
                lines.append(f"would prune {len(m.removed) - PLAN_LINES} more {m.method.noun}s")
        elif m.removed:
            verb = "pruned (rows deleted)" if plan.pruned else "gone from the file, rows kept (`--prune` deletes them)"
            lines.append(f"{m.method.noun}s {verb}: {', '.join(m.removed)}")
        for p in m.partitions[:PLAN_LINES]:
            lines.append(f"build  {p.key}: {p.levels[0]} .. {p.levels[-1]} ({p.reason})")
        if len(m.partitions) > PLAN_LINES:
            reasons = Counter(p.reason for p in m.partitions[PLAN_LINES:])
            more = ", ".join(f"{n} {reason}" for reason, n in reasons.most_common())
            lines.append(f"build  {len(m.partitions) - PLAN_LINES} more {m.method.noun}s ({more})")
    for step in plan.training:
        lines.append(f"build  {step.asset}{f'[{step.partition}]' if step.partition else ''} ({step.reason})")
    fresh = ", ".join(f"{m.up_to_date} {m.method.noun}(s)" for m in plan.methods)
    lines.append(f"up to date: {fresh}" + ("" if plan.training else ", training"))
    return lines


def _partition_options(command):
    """`--discipline`, `--dataset`, ...: one repeatable filter per method's partitions."""
    for method in reversed(METHODS):
        command = click.option(f"--{method.noun}", f"only_{method.noun}", multiple=True,
                               help=f"Build only these {method.noun}s (repeatable).")(command)
    return command


@main.command("build")
@_partition_options
@click.option("--workers", default=WORKERS, show_default=True, help="Partitions building their levels at once.")
@click.option("--keep-server", is_flag=True, help="Leave the embedded model server running afterwards.")
@click.option("--until", type=click.Choice(BUILD_ORDER), default=BUILD_ORDER[-1], show_default=True,
              help="The last level to build.")
@click.option("--recipe", default="demo", show_default=True, help="Training recipe (GLAN_RECIPES) for the checkpoint.")
@click.option("--dry-run", is_flag=True, help="Print the plan and stop.")
@click.option("--force", is_flag=True, help="Rebuild the named disciplines (all when none is named), through the LLM cache.")
@click.option("--prune", is_flag=True, help="Delete the rows of disciplines no longer in the taxonomy.")
@click.option("--verbose", "-v", is_flag=True, help="Show Dagster's own log on the terminal.")
@click.option("--yes", is_flag=True, help="Start even if the estimate is over GLAN_BUDGET_USD (it still stops there).")
@click.option("--wait", is_flag=True, help="In batch mode (GLAN_BATCH), wait for the batches and build on when they end.")
def build_cmd(workers: int, keep_server: bool, until: str, recipe: str, dry_run: bool, force: bool, prune: bool,
              verbose: bool, yes: bool, wait: bool, **only: tuple[str, ...]) -> None:
    """Build what is missing or stale: print the plan, then materialize only that, from each
    method's file (the taxonomy, ...) through the training set and the recipe's checkpoint."""
    res = _resources()
    only = {noun.removeprefix("only_"): keys for noun, keys in only.items()}
    wanted: dict[str, dict[str, str]] = {}
    try:
        recipe_spec = res["training"].recipe(recipe)
        for method in METHODS:
            wanted[method.name] = method.wanted(res)
            click.echo(f"{method.name}: {method.source_file(res)}, {len(wanted[method.name])} {method.noun}s")
            if unknown := [k for k in only.get(method.noun, ()) if k not in wanted[method.name]]:
                _fail(f"not in {method.source_file(res)}: {', '.join(unknown)}")
    except (TaxonomyError, KeyError, ValueError) as exc:
        _fail(_message(exc))
    instance = _instance()
    with _one_build_at_a_time(_home()):
        _build(instance, res, only, wanted, workers, keep_server, until, (recipe, recipe_spec), dry_run, force, prune,
               verbose, yes, wait)


def _build(instance: dg.DagsterInstance, res: dict, only: dict, wanted: dict, workers: int, keep_server: bool,
           until: str, recipe: tuple, dry_run: bool, force: bool, prune: bool, verbose: bool, yes: bool = False,
           wait: bool = False) -> None:
    store, llm = res["store"], res["llm"]
    if orphaned := fail_orphaned_runs(instance):
        click.echo(f"marked {len(orphaned)} run(s) of killed builds as failed")
    # Batches sent before (by a killed build too): those that ended are downloaded into the
    # cache; a level whose batch is still going re-attaches to it, and sends nothing again.
    for b in poll_batches(llm):
        click.echo(f"  {describe_batch(b)}{'' if b.ended else '; in flight, not sent again'}")
    plan = plan_build(instance, res, only=only, force=force, prune=prune and not dry_run, until=until, recipe=recipe,
                      wanted=wanted)
    doomed = _doomed(store, plan) if dry_run and prune else None
    for line in _describe(plan, doomed):
        click.echo(f"  {line}")
    estimate, tags = estimate_build([(m.method, m.partitions) for m in plan.methods], res, workers)
    for line in describe(estimate, llm.budget_usd):
        click.echo(f"  {line}")
    for m in plan.methods:  # each run records its estimate beside what it did
        m.partitions[:] = [dataclasses.replace(p, estimate=tags[(m.method.name, p.key)]) for p in m.partitions]
    if dry_run or not (plan.partitions or plan.training):
        return
    if llm.budget_usd and estimate.total("cost_usd") > llm.budget_usd and not yes:
        _fail(f"not started: the estimate, ${estimate.total('cost_usd'):.2f}, is over GLAN_BUDGET_USD="
              f"${llm.budget_usd:g}; `glan build --yes` starts it anyway and stops when the budget is spent")
    build_id = uuid.uuid4().hex
    log_path = _home() / "logs" / f"build-{time.strftime('%Y%m%d-%H%M%S')}-{build_id[:8]}.log"
    embedded = not llm.base_url
    if embedded:
        from resources import embedded as server

        click.echo(f"no OPENAI_BASE_URL: starting the embedded model ({llm.default_model}) ...")
        try:
            endpoint = server.ensure_server(llm.default_model, Path(llm.embedded_state),
                                            idle_timeout_s=llm.embedded_idle_timeout_s,
                                            model_cache=Path(llm.model_cache))
        except RuntimeError as exc:
            _fail(str(exc))
        click.echo(f"  serving at {endpoint.base_url}")
    converting = None
    if any(step.asset == "model_checkpoint" for step in plan.training):
        converting = convert_in_background(recipe[1].base_model, Path(res["training"].model_cache))
    start = time.monotonic()

    def rejected(lv: LevelSummary) -> str:
        return f" (+{lv.rejects} rejected)" if lv.rejects else ""

    def retried(n: int) -> str:
        return f", {n} retried" if n else ""

    def progress(p: LevelProgress) -> None:
        lv = p.level
        outcome = click.style("FAILED", fg="red") if lv.failed else f"{lv.rows} rows"
        click.echo(f"  {p.partition} · {lv.asset}: {outcome}{rejected(lv)}, {lv.llm_calls} LLM calls, "
                   f"{lv.cache_hits} cached{retried(lv.retries)}  [{p.seconds:.0f}s]")

    def report(s: PartitionSummary) -> None:
        mark = click.style("ok  ", fg="green") if s.success else click.style("FAIL", fg="red")
        if s.success and s.batches:
            mark = click.style("wait", fg="yellow")
        calls = sum(lv.llm_calls for lv in s.levels)
        hits = sum(lv.cache_hits for lv in s.levels)
        retries = sum(lv.retries for lv in s.levels)
        click.echo(f"[{mark}] {s.partition}: {s.seconds:.0f}s, {calls} LLM calls, {hits} cached{retried(retries)}")
        for failure in sorted(s.failed_checks, key=lambda f: not f.error):  # errors first
            kind = click.style("error", fg="red") if failure.error else click.style("warning", fg="yellow")
            click.echo(f"       {kind} {failure.check}: {failure.advice}")
        for b in s.batches:
            click.echo(f"       {describe_batch(b)}")
        if not s.success:
            lv = s.failed_level
            where = f" --level {lv.asset}" if lv else ""
            click.echo(f"       {s.error}; {lv.rejects if lv else 0} rejects: "
                       f"glan rejects --partition '{s.partition}'{where}")

    summaries, trained_ok = [], True
    try:
        summaries = build(instance, plan.partitions, workers=workers, on_done=report, on_progress=progress,
                          build_id=build_id, verbose=verbose)
        while wait and any(s.batches for s in summaries):
            again, stopped = _after_batches(llm, plan, summaries)
            for s in summaries:
                if s.partition in stopped:
                    s.success, s.batches, s.error = False, [], stopped[s.partition]
                    report(s)
            done = build(instance, again, workers=workers, on_done=report, on_progress=progress, build_id=build_id,
                         verbose=verbose)
            summaries = [s for s in summaries if s.partition not in {d.partition for d in done}] + done
        ok = sum(s.success and not s.batches for s in summaries)
        if waiting := sum(len(s.batches) for s in summaries):
            click.echo(f"\n{waiting} LLM batch(es) in flight: `glan build` again once they have ended (or `--wait`); "
                       "under `glan ui` the llm_batches sensor builds their levels")
        if plan.partitions:
            click.echo(f"\nbuilt {ok}/{len(summaries)} partitions in {time.monotonic() - start:.0f}s")
        if plan.training and (ok or not plan.partitions):
            for step, result in train(instance, plan.training, recipe, build_id=build_id, verbose=verbose):
                name = f"{step.asset}{f'[{step.partition}]' if step.partition else ''}"
                if result is None:
                    click.echo(f"[{click.style('ok  ', fg='green')}] {name}: up to date")
                    continue
                for event in result.get_asset_materialization_events():
                    md = {k: v.value for k, v in event.event_specific_data.materialization.metadata.items()}
                    shown = {k: md[k] for k in TRAINING_SUMMARY if k in md}
                    click.echo(f"[{click.style('ok  ', fg='green')}] {name} ({step.reason}): {shown}")
                    if "table" in md:  # model_eval: base against tuned
                        click.echo(md["table"])
                if not result.success:
                    trained_ok = False
                    click.echo(f"[{click.style('FAIL', fg='red')}] {name}: {failure_message(result)}")
    finally:
        if converting is not None:
            converting.wait()  # a failed build leaves the conversion whole, not half-written
        if embedded and not keep_server:
            server.stop_server(Path(llm.embedded_state))
        click.echo(f"log:      {write_log(instance, build_id, log_path)}")
        click.echo(f"spent:    {spend_line(llm.cache_path, build_id)}")
    click.echo(f"data:     {store.location} (tables {', '.join(GENERATION)}, view lineage)")
    click.echo(f"runs:     DAGSTER_HOME={_home()}")
    click.echo(f"UI:       {_glan_command()} ui   (then open http://127.0.0.1:3000)")
    if not all(s.success for s in summaries) or not trained_ok:
        sys.exit(1)


def _after_batches(llm, plan: BuildPlan, summaries: list[PartitionSummary]) -> tuple[list, dict[str, str]]:
    """Poll until every batch of a partition has ended. Returns the plans that build on from the
    levels whose batches have ended (a level whose batch failed in part sends the rest again), and
    why the partitions whose batch was cancelled by hand or refused stop here."""
    keys = {b.batch_id for s in summaries for b in s.batches}
    click.echo(f"waiting on {len(keys)} LLM batch(es), polling every {llm.batch_poll_s:g}s (GLAN_BATCH_POLL)")
    ended: dict[str, BatchRecord] = {}
    while True:  # until every batch of a partition has ended
        for b in poll_batches(llm):
            if b.ended and b.batch_id in keys:
                ended[b.batch_id] = b
                click.echo(f"  {describe_batch(b)}")
        if any(s.batches and all(b.batch_id in ended for b in s.batches) for s in summaries):
            break
        time.sleep(llm.batch_poll_s)
    planned = {p.key: p for p in plan.partitions}
    again, stopped = [], {}
    for s in summaries:
        if not s.batches or not all(b.batch_id in ended for b in s.batches):
            continue
        mine = [ended[b.batch_id] for b in s.batches]
        if halted := [b for b in mine if b.status in STOPPED]:
            stopped[s.partition] = f"{describe_batch(halted[0])}; `glan build` sends what it left unanswered"
        else:
            p = planned[s.partition]
            first = min(p.levels.index(b.level) for b in mine)
            again.append(dataclasses.replace(p, levels=p.levels[first:]))
    return again, stopped


def _doomed(store: DuckDBStore, plan: BuildPlan) -> dict[tuple[str, str], dict[str, int]]:
    """Rows per table that `--prune` would delete, per removed partition, read read-only."""
    if store.backend == "duckdb" and not Path(store.path).exists():
        return {}
    reader = store.reader()
    try:
        return {
            (m.method.name, key): reader.partition_rows(m.method.partition_column, key)
            for m in plan.methods
            for key in m.removed
        }
    except StoreUnavailable as exc:
        _fail(str(exc))


# What `glan build` prints of the training assets' metadata.
TRAINING_SUMMARY = (
    "train", "test", "exact_duplicates_removed", "near_duplicates_removed", "contaminated_removed",
    "steps", "tokens_per_s", "heldout_loss_base", "heldout_loss_tuned", "checkpoint", "eval_seconds", "failed_benchmarks",
)


@main.command()
@click.option("--partition", "--discipline", "-p", "partition", help="Only this partition's (a discipline's, ...) rejects.")
@click.option("--level", "-l", type=click.Choice([lv.name for lv in LEVELS]), help="Only this level's rejects.")
@click.option("--limit", default=20, show_default=True, help="At most this many.")
def rejects(partition: str | None, level: str | None, limit: int) -> None:
    """Print rejected LLM outputs with their reasons."""
    store = _store_with_data(_resources())
    clauses = [c for c, v in (("partition_key = ?", partition), ("asset = ?", level)) if v is not None]
    rows = store.read(RejectRow, where=" AND ".join(clauses), params=[v for v in (partition, level) if v is not None])
    if not rows:
        click.echo("no rejects" + (f" for {partition}" if partition else "") + (f" at {level}" if level else ""))
    for r in rows[:limit]:
        click.echo(f"{r.reject_id}  {r.asset}[{r.partition_key}] {r.stage}, for {r.parent_id}, {r.attempts} attempt(s)")
        click.echo(f"  reason: {r.reason}")
        click.echo(f"  output: {_short(r.raw_output, 300)}")
    if len(rows) > limit:
        click.echo(f"... {len(rows) - limit} more (--limit)")


@main.command("quality")
@click.option("--source", "-s", type=click.Choice([m.name for m in METHODS]), help="Only this source's pairs.")
@click.option("--partition", "-p", help="Only this partition's (a discipline's, dataset's, collection's) pairs.")
@click.option("--worst", "limit", default=5, show_default=True, help="Print this many worst pairs per source.")
def quality_cmd(source: str | None, partition: str | None, limit: int) -> None:
    """Print each source's quality scores (flags by rule, IFD quantiles, the judge's mean) and its worst pairs."""
    store = _store_with_data(_resources())
    shown = False
    for method in (m for m in METHODS if source in (None, m.name)):
        rows = read_rows(store, method.name, partition)
        if not rows:
            continue
        shown, s = True, summary(rows)
        click.echo(f"{method.name}{f'[{partition}]' if partition else ''}: {s['pairs']} pairs scored, {s['flagged']} flagged")
        click.echo("  flags by rule: " + (", ".join(f"{k} {v}" for k, v in s["flags_by_rule"].items()) or "none"))
        click.echo(f"  IFD p10 {s['ifd_p10']}, median {s['ifd_median']}, p90 {s['ifd_p90']}; "
                   f"judged {s['judged']}, judge mean {s['judge_mean']}")
        ranked = worst(rows)[:limit]
        pairs_sql = level(method.levels[-1].parent).training_pairs
        marks = ", ".join("?" for _ in ranked)
        text = {r["source_id"]: r for r in store.query(
            f"SELECT source_id, instruction, response FROM ({pairs_sql}) WHERE source_id IN ({marks})",
            [r["source_id"] for r in ranked])} if ranked else {}
        click.echo(f"  worst {len(ranked)} (trace one with `glan lineage ID`):")
        for r in ranked:
            click.echo(f"    {r['source_id']}  ifd {r['ifd']}  judge {r['judge']}  flags: {r['flags']}")
            if r["source_id"] in text:
                click.echo(f"      instruction: {_short(text[r['source_id']]['instruction'])}")
                click.echo(f"      response:    {_short(text[r['source_id']]['response'])}")
    if not shown:
        click.echo("no quality scores" + (f" for {partition}" if partition else "") +
                   ": build the quality levels first (`glan build`)")


@main.command()
@click.argument("item_id")
def lineage(item_id: str) -> None:
    """Print an item's chain up to its field: pair -> answer -> question -> ... -> field."""
    store = _store_with_data(_resources())
    try:
        rows = chain(store, item_id, LEVELS)
    except (ValueError, KeyError) as exc:
        _fail(_message(exc))
    labels = {lv.name: lv.label for lv in LEVELS} | {
        t.table: f"{lv.label} (removed)" for lv in LEVELS for t in lv.other_row_types
    }
    for depth, row in enumerate(rows):
        data = row.model_dump()
        ident = data.pop(row.id_column)
        text = "; ".join(f"{k}={_short(v)}" for k, v in data.items() if k != row.parent_column)
        click.echo(f"{'  ' * depth}{labels.get(row.table, row.table)} {ident}: {text}")


def _short(value: object, width: int = 100) -> str:
    text = " ".join(str(value).split())
    return text if len(text) <= width else text[: width - 1] + "…"


@main.command()
@click.option("--format", "fmt", type=click.Choice(["jsonl", "parquet"]), default="jsonl", show_default=True)
@click.option("--layout", type=click.Choice(["pairs", "dataset"]), default="pairs", show_default=True,
              help="pairs: one file, every pair with its lineage columns. dataset: a folder of the "
              "curated training set (train/test splits and a dataset card) that Hugging Face "
              "`datasets.load_dataset(PATH)` loads.")
@click.argument("path", type=click.Path(path_type=Path))
def export(fmt: str, layout: str, path: Path) -> None:
    """Write the pairs (or the training set as a dataset release) to PATH."""
    res = _resources()
    store = _store_with_data(res)
    try:
        if layout == "dataset":
            llm = res["llm"]
            # The generating stages' sampling (the JSON-formatting ones run at temperature 0).
            sampling = {
                s.name: llm.sampling(s.name, s.sampling).model_dump(include={"temperature", "top_p", "max_tokens"})
                for s in stages()
                if s.schema is None
            }
            written = export_dataset(store, path, fmt, sampling, levels=LEVELS, sources=TRAINING.sources)
            for name, file in written.items():
                click.echo(f"wrote {name}: {file}")
            return
        options = "FORMAT JSON" if fmt == "jsonl" else "FORMAT PARQUET"
        # The store is read-only here: the lineage view is this connection's own.
        with store.connect(memory_limit=store.export_memory_limit) as con:
            # The pairs are the lineage view of the first level that declares one (GLAN's answers).
            leaf = next(lv for lv in LEVELS if lv.lineage_view)
            if leaf.lineage_view not in temporary_lineage_views(con, LEVELS):
                _fail(f"no pairs in {store.location} yet: run `glan build`")
            n = con.execute(f"SELECT count(*) FROM {leaf.lineage_view}").fetchone()[0]
            path.parent.mkdir(parents=True, exist_ok=True)
            target = str(path).replace("'", "''")
            con.execute(f"COPY (SELECT * FROM {leaf.lineage_view} ORDER BY {leaf.row_type.id_column}) TO '{target}' ({options})")
    except (ValueError, StoreUnavailable) as exc:
        _fail(str(exc))
    except (OSError, duckdb.IOException) as exc:
        # Reading is the store's (StoreUnavailable above); what fails here is writing PATH.
        cause = getattr(exc, "strerror", None) or str(exc).splitlines()[0].rsplit(": ", 1)[-1]
        _fail(f"cannot write {path}: {cause}")
    click.echo(f"wrote {n} pairs to {path}")


@main.group()
def taxonomy() -> None:
    """Review LLM-proposed taxonomy nodes."""


@taxonomy.command("propose")
def taxonomy_propose() -> None:
    """Ask the LLM for missing fields, sub-fields and disciplines (the taxonomy_proposals asset)."""
    from glan_assets.glan.taxonomy_proposals import taxonomy_proposals

    try:
        result = dg.materialize([taxonomy_proposals], instance=_instance(), resources=_resources())
    except EndpointUnreachable as exc:
        _fail(str(exc))
    if not result.success:
        _fail("the taxonomy_proposals run failed; see `dagster dev` for its logs")
    _list_proposals("pending")


@taxonomy.command("list")
@click.option("--status", type=click.Choice(["pending", "accepted", "rejected", "all"]), default="pending")
def taxonomy_list(status: str) -> None:
    """Show proposals awaiting a vote."""
    _list_proposals(status)


def _list_proposals(status: str) -> None:
    store = _store_with_data(_resources())
    rows = [p for p in store.read(ProposalRow) if status in ("all", p.status)]
    if not rows:
        click.echo(f"no {status} proposals; run `glan taxonomy propose`")
    for p in rows:
        parent = " > ".join(x for x in (p.field_name, p.sub_field_name) if x) or "(root)"
        click.echo(f"{p.proposal_id}  [{p.status}] {p.kind:<10} {parent} > {p.name}  — {p.reason}")


@taxonomy.command("accept")
@click.argument("proposal_ids", nargs=-1, required=True)
def taxonomy_accept(proposal_ids: tuple[str, ...]) -> None:
    """Add proposals to the taxonomy file; the sensor (or `glan build`) builds them."""
    _vote(proposal_ids, keep=True)


@taxonomy.command("reject")
@click.argument("proposal_ids", nargs=-1, required=True)
def taxonomy_reject(proposal_ids: tuple[str, ...]) -> None:
    """Mark proposals removed; they stay out of the taxonomy."""
    _vote(proposal_ids, keep=False)


def _vote(proposal_ids: tuple[str, ...], keep: bool) -> None:
    res = _resources()
    store, settings = res["store"], res["settings"]
    proposals = {p.proposal_id: p for p in _store_with_data(res).read(ProposalRow)}
    missing = [i for i in proposal_ids if i not in proposals]
    if missing:
        _fail(f"no proposal with id {', '.join(missing)}; see `glan taxonomy list --status all`")
    for pid in proposal_ids:
        p = proposals[pid]
        if keep:
            try:
                add_node(settings.taxonomy_path, p.kind, p.name, p.field_name, p.sub_field_name)
            except TaxonomyError as exc:
                _fail(str(exc))
        proposals[pid] = p.model_copy(update={"keep": keep, "status": "accepted" if keep else "rejected"})
        click.echo(f"{'accepted' if keep else 'rejected'} {p.kind} {p.name!r}")
    store.replace([Slice(ProposalRow, list(proposals.values()))])
    if keep:
        click.echo(f"added to {settings.taxonomy_path}; run `glan build` or let the sensor pick it up")


@main.command()
@click.option("--checkpoint", "recipe", default="demo", show_default=True, help="The recipe whose checkpoint to load.")
@click.option("--max-new-tokens", default=256, show_default=True)
@click.argument("prompt", required=False)
def chat(recipe: str, max_new_tokens: int, prompt: str | None) -> None:
    """Answer PROMPT (or each line typed) with the base model plus the recipe's adapter."""
    from resources.trainer import chat as reply
    from resources.trainer import load_for_chat

    training = _resources()["training"]
    try:
        model, tokenizer = load_for_chat(training.checkpoint_dir(recipe), Path(training.model_cache))
    except FileNotFoundError as exc:
        _fail(f"{exc}; build it with `glan build --recipe {recipe}`")
    prompts = [prompt] if prompt else (line.strip() for line in sys.stdin if line.strip())
    for text in prompts:
        click.echo(reply(model, tokenizer, text, max_new_tokens=max_new_tokens))


def _glan_command() -> str:
    """This environment's `glan`, as the user can type it from here."""
    glan = Path(sys.executable).parent / "glan"
    try:
        return str(glan.relative_to(Path.cwd()))
    except ValueError:
        return str(glan)


@main.command()
@click.option("--host", default="127.0.0.1", show_default=True)
@click.option("--port", default=3000, show_default=True)
def ui(host: str, port: int) -> None:
    """Dagster's UI on this project's instance: the runs and partitions `glan build` wrote.

    A bare `dagster dev` without DAGSTER_HOME opens a temporary instance instead, where every
    partition looks new and the sensors rebuild it all."""
    _instance()  # the home `glan build` uses, set up if new
    workspace = Path(__file__).resolve().parent.parent / "workspace.yaml"
    dagster = Path(sys.executable).parent / "dagster"
    click.echo(f"runs:     DAGSTER_HOME={_home()}")
    click.echo(f"UI:       http://{host}:{port}", nl=True)
    sys.stdout.flush()
    os.execv(dagster, [str(dagster), "dev", "-h", host, "-p", str(port), "-w", str(workspace)])


@main.command()
@click.option("--write", is_flag=True, help="Replace the diagram in README.md with it.")
def diagram(write: bool) -> None:
    """The asset graph as a Mermaid flowchart, from the definitions."""
    text = mermaid(defs())
    if not write:
        click.echo(text, nl=False)
        return
    readme = Path(__file__).resolve().parent.parent / "README.md"
    old = readme.read_text()
    new, found = re.subn(r"```mermaid\n.*?```", lambda _: f"```mermaid\n{text}```", old, count=1, flags=re.S)
    if not found:
        _fail(f"{readme}: no ```mermaid block to replace")
    readme.write_text(new)
    click.echo(f"wrote the diagram into {readme}")
@main.command("eval")
@click.option("--recipe", default="demo", show_default=True, help="The recipe whose evaluation to show.")
def eval_cmd(recipe: str) -> None:
    """Print the recipe's latest benchmark scores, base against tuned (`glan build` runs them)."""
    from glan_assets.training.evaluation import results_table, verdict
    from glan_assets.training.model_eval import read_results

    result = _instance().fetch_materializations(
        dg.AssetRecordsFilter(dg.AssetKey("model_eval"), asset_partitions=[recipe]), limit=1
    )
    if not result.records:
        _fail(f"recipe {recipe} has not been evaluated; build it with `glan build --recipe {recipe}`")
    mat = result.records[0].asset_materialization
    results = read_results(dict(mat.metadata))
    click.echo(f"model_eval[{recipe}], base {mat.metadata['base_model'].value}:")
    click.echo(results_table(results))
    for r in results:
        click.echo(f"- {verdict(r)}")


@main.command("server")
@click.argument("action", type=click.Choice(["start", "stop"]))
def server_cmd(action: str) -> None:
    """Start or stop the embedded model server (it also stops itself when idle)."""
    from resources import embedded

    machine = _settings().machine
    if action == "stop":
        embedded.stop_server(machine.embedded_state)
        click.echo("embedded server stopped")
    else:
        endpoint = embedded.ensure_server(_resources()["llm"].default_model, machine.embedded_state,
                                          idle_timeout_s=machine.embedded_idle_timeout_s,
                                          model_cache=machine.model_cache)
        click.echo(f"serving {endpoint.model} at {endpoint.base_url}")


if __name__ == "__main__":
    main()
