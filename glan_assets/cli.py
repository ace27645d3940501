"""The `glan` command: build, trace, export, and review taxonomy proposals."""

import os
import sys
import time
from pathlib import Path

import click
import dagster as dg

from glan_assets.build import (
    LEVELS,
    DisciplineSummary,
    LevelProgress,
    LevelSummary,
    build,
    failure_message,
    sync_partitions,
    train,
)
from glan_assets.definitions import GENERATION_ASSETS
from glan_assets.ids import table_of
from glan_assets.lineage import LINEAGE_VIEW, chain
from glan_assets.release import export_dataset
from glan_assets.schemas import ProposalRow
from glan_assets.taxonomy_file import TaxonomyError, add_node
from resources.llm import EndpointUnreachable
from resources.settings import resources_from_env


def _instance() -> dg.DagsterInstance:
    if not os.environ.get("DAGSTER_HOME"):
        # Without it Dagster keeps runs and partitions in a temp dir that vanishes on exit.
        os.environ["DAGSTER_HOME"] = str(Path("dagster_home").resolve())
    Path(os.environ["DAGSTER_HOME"]).mkdir(parents=True, exist_ok=True)
    return dg.DagsterInstance.get()


def _fail(message: str) -> None:
    click.secho(f"error: {message}", fg="red", err=True)
    sys.exit(1)


@click.group()
def main() -> None:
    """GLAN instruction-tuning data, built incrementally with Dagster and DuckDB."""


@main.command("build")
@click.option("--discipline", "-d", "disciplines", multiple=True, help="Build only these (repeatable).")
@click.option("--workers", default=4, show_default=True, help="Disciplines built at once.")
@click.option("--keep-server", is_flag=True, help="Leave the embedded model server running afterwards.")
@click.option("--until", type=click.Choice(LEVELS), default=LEVELS[-1], show_default=True,
              help="The last level to build.")
@click.option("--recipe", default="demo", show_default=True, help="Training recipe (GLAN_RECIPES) for the checkpoint.")
def build_cmd(disciplines: tuple[str, ...], workers: int, keep_server: bool, until: str, recipe: str) -> None:
    """Register partitions from the taxonomy and build everything, or the named disciplines,
    through the training set and the recipe's model checkpoint."""
    res = resources_from_env()
    settings, store, llm = res["settings"], res["store"], res["llm"]
    try:
        taxonomy = settings.taxonomy()
        unknown = [d for d in disciplines if d not in taxonomy.disciplines]
        if unknown:
            _fail(f"not in {taxonomy.path}: {', '.join(unknown)}")
        instance = _instance()
        added, removed = sync_partitions(instance, settings, store)
    except TaxonomyError as exc:
        _fail(str(exc))
    keys = list(disciplines) or list(taxonomy.disciplines)
    click.echo(f"taxonomy {taxonomy.path}: {len(taxonomy.disciplines)} disciplines "
               f"({len(added)} new, {len(removed)} removed); building {len(keys)}")
    embedded = not llm.base_url
    if embedded:
        from resources import embedded as server

        click.echo(f"no OPENAI_BASE_URL: starting the embedded model ({llm.default_model}) ...")
        endpoint = server.ensure_server(llm.default_model)
        click.echo(f"  serving at {endpoint.base_url}")
    start = time.monotonic()

    def rejected(lv: LevelSummary) -> str:
        return f" (+{lv.rejects} rejected)" if lv.rejects else ""

    def progress(p: LevelProgress) -> None:
        lv = p.level
        outcome = click.style("FAILED", fg="red") if p.failed else f"{lv.rows} rows"
        click.echo(f"  {p.discipline} · {lv.asset}: {outcome}{rejected(lv)}, {lv.llm_calls} LLM calls, "
                   f"{lv.cache_hits} cached  [{p.seconds:.0f}s]")

    def report(s: DisciplineSummary) -> None:
        mark = click.style("ok  ", fg="green") if s.success else click.style("FAIL", fg="red")
        levels = ", ".join(f"{lv.asset} {lv.rows}{rejected(lv)}" for lv in s.levels)
        calls = sum(lv.llm_calls for lv in s.levels)
        hits = sum(lv.cache_hits for lv in s.levels)
        click.echo(f"[{mark}] {s.discipline}: {s.seconds:.0f}s, {calls} LLM calls, {hits} cached | {levels}")
        if s.failed_checks:
            click.echo(f"       failed checks: {', '.join(s.failed_checks)}")
        if s.error:
            click.echo(f"       {s.error}")

    try:
        summaries = build(instance, keys, workers=workers, on_done=report, until=until, on_progress=progress)
    finally:
        if embedded and not keep_server:
            server.stop_server()
    ok = sum(s.success for s in summaries)
    click.echo(f"\nbuilt {ok}/{len(summaries)} disciplines in {time.monotonic() - start:.0f}s")
    trained_ok = True
    if ok and until in LEVELS[len(GENERATION_ASSETS):]:
        click.echo(f"training: {' -> '.join(LEVELS[len(GENERATION_ASSETS): LEVELS.index(until) + 1])} ...")
        for result in train(instance, recipe, until):
            for event in result.get_asset_materialization_events():
                mat = event.event_specific_data.materialization
                md = {k: v.value for k, v in mat.metadata.items()}
                shown = {k: md[k] for k in TRAINING_SUMMARY if k in md}
                click.echo(f"[{click.style('ok  ', fg='green')}] {mat.asset_key.to_user_string()}: {shown}")
            if not result.success:
                trained_ok = False
                click.echo(f"[{click.style('FAIL', fg='red')}] {failure_message(result)}")
    click.echo(f"data:     {Path(store.path).resolve()} (tables fields ... answers, view lineage)")
    click.echo(f"runs:     DAGSTER_HOME={os.environ['DAGSTER_HOME']}")
    click.echo("UI:       .venv/bin/dagster dev   (then open http://127.0.0.1:3000)")
    if ok < len(summaries) or not trained_ok:
        sys.exit(1)


# What `glan build` prints of the training assets' metadata.
TRAINING_SUMMARY = (
    "train", "test", "exact_duplicates_removed", "near_duplicates_removed", "contaminated_removed",
    "steps", "tokens_per_s", "heldout_loss_base", "heldout_loss_tuned", "checkpoint",
)


# What `glan lineage` calls each table's rows.
ROW_LABELS = {"syllabi": "syllabus", "training_set": "pair", "training_removed": "pair (removed)"}


@main.command()
@click.argument("item_id")
def lineage(item_id: str) -> None:
    """Print an item's chain up to its field: pair -> answer -> question -> ... -> field."""
    store = resources_from_env()["store"]
    try:
        table_of(item_id)
        rows = chain(store, item_id)
    except (ValueError, KeyError) as exc:
        _fail(str(exc).strip("'\""))
    for depth, row in enumerate(rows):
        data = row.model_dump()
        ident = data.pop(row.id_column)
        text = "; ".join(f"{k}={_short(v)}" for k, v in data.items() if k != row.parent_column)
        click.echo(f"{'  ' * depth}{ROW_LABELS.get(row.table, row.table[:-1])} {ident}: {text}")


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
    res = resources_from_env()
    store = res["store"]
    if layout == "dataset":
        llm = res["llm"]
        sampling = {
            stage: llm.sampling(stage).model_dump(include={"temperature", "top_p", "max_tokens"})
            for stage in ("subjects", "syllabus", "questions", "answers")
        }
        try:
            written = export_dataset(store, path, fmt, sampling)
        except ValueError as exc:
            _fail(str(exc))
        for name, file in written.items():
            click.echo(f"wrote {name}: {file}")
        return
    path.parent.mkdir(parents=True, exist_ok=True)
    options = "FORMAT JSON" if fmt == "jsonl" else "FORMAT PARQUET"
    with store.connect() as con:
        con.execute(LINEAGE_VIEW)
        n = con.execute("SELECT count(*) FROM lineage").fetchone()[0]
        target = str(path).replace("'", "''")
        con.execute(f"COPY (SELECT * FROM lineage ORDER BY answer_id) TO '{target}' ({options})")
    click.echo(f"wrote {n} pairs to {path}")


@main.group()
def taxonomy() -> None:
    """Review LLM-proposed taxonomy nodes."""


@taxonomy.command("propose")
def taxonomy_propose() -> None:
    """Ask the LLM for missing fields, sub-fields and disciplines (the taxonomy_proposals asset)."""
    from glan_assets.taxonomy_proposals import taxonomy_proposals

    try:
        result = dg.materialize([taxonomy_proposals], instance=_instance(), resources=resources_from_env())
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
    store = resources_from_env()["store"]
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
    res = resources_from_env()
    store, settings = res["store"], res["settings"]
    proposals = {p.proposal_id: p for p in store.read(ProposalRow)}
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
    store.replace_rows(ProposalRow, list(proposals.values()))
    if keep:
        click.echo(f"added to {settings.taxonomy_path}; run `glan build` or let the sensor pick it up")


@main.command()
@click.option("--checkpoint", "recipe", default="demo", show_default=True, help="The recipe whose checkpoint to load.")
@click.option("--max-new-tokens", default=256, show_default=True)
@click.argument("prompt", required=False)
def chat(recipe: str, max_new_tokens: int, prompt: str | None) -> None:
    """Answer PROMPT (or each line typed) with the base model plus the recipe's adapter."""
    from resources.training import chat as reply
    from resources.training import load_for_chat

    directory = resources_from_env()["training"].checkpoint_dir(recipe)
    try:
        model, tokenizer = load_for_chat(directory)
    except FileNotFoundError as exc:
        _fail(f"{exc}; build it with `glan build --recipe {recipe}`")
    prompts = [prompt] if prompt else (line.strip() for line in sys.stdin if line.strip())
    for text in prompts:
        click.echo(reply(model, tokenizer, text, max_new_tokens=max_new_tokens))


@main.command("server")
@click.argument("action", type=click.Choice(["start", "stop"]))
def server_cmd(action: str) -> None:
    """Start or stop the embedded model server (it also stops itself when idle)."""
    from resources import embedded

    if action == "stop":
        embedded.stop_server()
        click.echo("embedded server stopped")
    else:
        endpoint = embedded.ensure_server(resources_from_env()["llm"].default_model)
        click.echo(f"serving {endpoint.model} at {endpoint.base_url}")


if __name__ == "__main__":
    main()
