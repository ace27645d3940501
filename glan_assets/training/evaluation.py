"""Scoring a base model and its tuned adapter on benchmarks with lm-evaluation-harness.

A benchmark is an lm-eval task file (YAML) in the folder `GLAN_EVAL_TASKS`, with its data in
local files (`dataset_path: json`, `dataset_kwargs.data_files` relative to the YAML): nothing
is downloaded. Each task runs on its own, so a broken one is reported and the others still run.
"""

import hashlib
import io
import json
import math
import shutil
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

import yaml
from pydantic import BaseModel

from glan_assets.ids import content_hash
from glan_assets.results import markdown_table

GENERATIVE = "generate_until"
CARD_START, CARD_END = "<!-- glan:evaluation -->", "<!-- /glan:evaluation -->"
CHART = "eval_scores.png"


class TaskFileError(ValueError):
    """A task file or its data that cannot be evaluated; the message names the file and line."""


class _Function(str):
    """lm-eval's `!function module.name` tag, kept as it is when a task file is rewritten."""


class _Loader(yaml.SafeLoader):
    pass


class _Dumper(yaml.SafeDumper):
    pass


_Loader.add_constructor("!function", lambda loader, node: _Function(loader.construct_scalar(node)))
_Dumper.add_representer(_Function, lambda dumper, value: dumper.represent_scalar("!function", str(value)))


@dataclass(frozen=True)
class TaskFile:
    name: str  # lm-eval's task name
    path: Path  # the YAML
    config: dict  # its contents, data files made absolute
    data_files: tuple[Path, ...]

    @property
    def generative(self) -> bool:
        return self.config.get("output_type") == GENERATIVE

    def version(self) -> str:
        """Changes when the task file or any of its data files changes."""
        data = [[str(p.name), hashlib.sha256(p.read_bytes()).hexdigest()] for p in self.data_files]
        return content_hash([self.path.read_text(encoding="utf-8"), data])[:16]


def read_task(path: Path) -> TaskFile:
    """A task file, its `data_files` resolved against its folder; TaskFileError names the file."""
    try:
        config = yaml.load(path.read_text(encoding="utf-8"), Loader=_Loader)
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        where = f":{mark.line + 1}" if mark else ""
        raise TaskFileError(f"{path}{where}: not valid YAML ({getattr(exc, 'problem', exc)})") from None
    if not isinstance(config, dict) or not isinstance(config.get("task"), str):
        raise TaskFileError(f"{path}: not an lm-eval task file (no `task:` name)")
    files = (config.get("dataset_kwargs") or {}).get("data_files")
    if config.get("dataset_path") != "json" or not files:
        raise TaskFileError(f"{path}: needs `dataset_path: json` and `dataset_kwargs.data_files` (local files; "
                            "nothing is downloaded)")
    named = files if isinstance(files, dict) else {"test": files}
    resolved: dict[str, object] = {}
    paths: list[Path] = []
    for split, value in named.items():
        listed = [value] if isinstance(value, str) else list(value)
        absolute = [(path.parent / f).resolve() for f in listed]
        for f in absolute:
            if not f.is_file():
                raise TaskFileError(f"{path}: data file {f} ({split}) does not exist")
        paths += absolute
        resolved[split] = [str(f) for f in absolute] if not isinstance(value, str) else str(absolute[0])
    config = {**config, "dataset_kwargs": {**config["dataset_kwargs"], "data_files": resolved}}
    return TaskFile(config["task"], path, config, tuple(paths))


def find_tasks(folder: str | Path) -> tuple[list[TaskFile], dict[str, str]]:
    """Every task file under `folder` (its `*.yaml`, recursively), and the errors of those that
    do not load, by file."""
    tasks, errors = [], {}
    for path in sorted(Path(folder).rglob("*.yaml")):
        try:
            tasks.append(read_task(path))
        except TaskFileError as exc:
            errors[str(path)] = str(exc)
    if not tasks and not errors:
        raise TaskFileError(f"{folder}: no lm-eval task files (*.yaml)")
    return tasks, errors


def check_data(task: TaskFile) -> None:
    """Each line of a JSON-lines data file is a JSON object; else TaskFileError with file:line."""
    for f in task.data_files:
        if f.suffix != ".jsonl":
            continue
        for number, line in enumerate(f.read_text(encoding="utf-8").splitlines(), start=1):
            if not line.strip():
                continue
            try:
                record = json.loads(line)
            except json.JSONDecodeError as exc:
                raise TaskFileError(f"{f}:{number}: not valid JSON ({exc.msg}) [task {task.name}]") from None
            if not isinstance(record, dict):
                raise TaskFileError(f"{f}:{number}: expected a JSON object [task {task.name}]")


def write_tasks(tasks: Sequence[TaskFile], folder: Path, out: Path) -> Path:
    """lm-eval's include path: a copy of the tasks folder (so `!function` helpers beside a task
    file still load), each task file rewritten with absolute data files, which `datasets`
    would otherwise look for relative to the working directory."""
    shutil.rmtree(out, ignore_errors=True)
    shutil.copytree(folder, out, ignore=shutil.ignore_patterns("*.jsonl", "*.json", "*.csv", "*.parquet", "__pycache__"))
    for path in out.rglob("*.yaml"):
        path.unlink()
    for task in tasks:
        target = out / task.path.relative_to(Path(folder))
        target.parent.mkdir(parents=True, exist_ok=True)
        target.write_text(yaml.dump(task.config, Dumper=_Dumper, sort_keys=False, allow_unicode=True))
    return out


class Score(BaseModel):
    """One model's score on one benchmark, as lm-eval reports it."""

    metric: str  # `metric,filter`
    value: float
    stderr: float | None  # lm-eval's standard error; None when it gives none (one item)
    items: int
    seconds: float
    requests: int = 0  # log-likelihood requests (items x choices) or generations
    generated_tokens: int = 0


def primary_metric(task_results: Mapping[str, object]) -> str:
    """The first metric a task reports that has a standard error beside it (a task's first
    `metric_list` entry under its first filter): the one base and tuned are compared on."""
    for key, value in task_results.items():
        if "," not in key or "_stderr" in key or isinstance(value, str | bool) or not isinstance(value, int | float):
            continue
        metric, _, filt = key.partition(",")
        if f"{metric}_stderr,{filt}" in task_results:
            return key
    raise TaskFileError(f"lm-eval reported no metric with a standard error: {sorted(task_results)}")


def parse_score(results: Mapping, task: str, seconds: float, count_tokens: Callable[[str], int] | None = None) -> Score:
    """The task's score from `lm_eval.simple_evaluate`'s result."""
    found = results["results"][task]
    key = primary_metric(found)
    metric, _, filt = key.partition(",")
    stderr = found.get(f"{metric}_stderr,{filt}")
    samples = results.get("samples", {}).get(task, [])
    generated = 0
    if count_tokens and samples and results["configs"][task].get("output_type") == GENERATIVE:
        generated = sum(count_tokens(r[0]) for s in samples for r in s["resps"] if r)
    return Score(
        metric=key,
        value=float(found[key]),
        stderr=float(stderr) if isinstance(stderr, int | float) and math.isfinite(stderr) else None,
        items=int(results["n-samples"][task]["effective"]),
        seconds=round(seconds, 2),
        requests=sum(len(s.get("arguments", ())) for s in samples),
        generated_tokens=generated,
    )


class BenchmarkResult(BaseModel):
    """Base against tuned on one benchmark."""

    benchmark: str
    task_file: str
    metric: str = ""
    items: int = 0
    base: float | None = None
    base_stderr: float | None = None
    tuned: float | None = None
    tuned_stderr: float | None = None
    diff: float | None = None
    # The difference's standard error, sqrt(base_se^2 + tuned_se^2): the two are scored on
    # the same items, so this overstates it a little; a difference beyond twice it is real.
    diff_stderr: float | None = None
    significant: bool = False
    base_seconds: float = 0.0
    base_cached: bool = False
    tuned_seconds: float = 0.0
    requests_per_s: float | None = None  # the tuned run's log-likelihood requests or generations
    tokens_per_s: float | None = None  # the tuned run's generated tokens
    error: str = ""


def compare(task: TaskFile, base: Score, tuned: Score, base_cached: bool) -> BenchmarkResult:
    diff = tuned.value - base.value
    se = math.sqrt(base.stderr**2 + tuned.stderr**2) if base.stderr is not None and tuned.stderr is not None else None
    return BenchmarkResult(
        benchmark=task.name,
        task_file=str(task.path),
        metric=tuned.metric,
        items=tuned.items,
        base=base.value,
        base_stderr=base.stderr,
        tuned=tuned.value,
        tuned_stderr=tuned.stderr,
        diff=diff,
        diff_stderr=se,
        significant=se is not None and abs(diff) > 2 * se,
        base_seconds=base.seconds,
        base_cached=base_cached,
        tuned_seconds=tuned.seconds,
        requests_per_s=round(tuned.requests / tuned.seconds, 2) if tuned.requests and tuned.seconds else None,
        tokens_per_s=round(tuned.generated_tokens / tuned.seconds, 2) if tuned.generated_tokens and tuned.seconds else None,
    )


def _pm(value: float | None, se: float | None) -> str:
    if value is None:
        return "-"
    return f"{value:.3f} ± {se:.3f}" if se is not None else f"{value:.3f}"


def results_table(results: Sequence[BenchmarkResult]) -> str:
    records = [
        {
            "benchmark": r.benchmark,
            "metric": r.metric or "-",
            "items": r.items,
            "base": _pm(r.base, r.base_stderr),
            "tuned": _pm(r.tuned, r.tuned_stderr),
            "difference": "-" if r.diff is None else f"{r.diff:+.3f}",
            "beyond 2 se": "-" if r.error else ("yes" if r.significant else "no"),
            "seconds": f"{r.base_seconds + r.tuned_seconds:.0f}" + (" (base cached)" if r.base_cached else ""),
        }
        for r in results
    ]
    return markdown_table(records, limit=len(records))


def verdict(r: BenchmarkResult) -> str:
    """What one benchmark's numbers support, in words."""
    if r.error:
        return f"**{r.benchmark}** was not scored: {r.error}"
    head = f"**{r.benchmark}** ({r.metric}, {r.items} item{'s' if r.items != 1 else ''}): base {r.base:.3f}, tuned {r.tuned:.3f}, difference {r.diff:+.3f}"
    if r.diff_stderr is None:
        return f"{head}; lm-eval gave no standard error (too few items), so nothing can be concluded from it."
    if not r.significant:
        return (f"{head}, within twice its standard error ({2 * r.diff_stderr:.3f}): these items cannot tell the "
                "two models apart. That is the expected outcome for a small base model tuned on a few dozen pairs; "
                "it shows neither that the data helped nor that it hurt.")
    if r.diff > 0:
        return f"{head}, more than twice its standard error ({2 * r.diff_stderr:.3f}): on this benchmark the tuned model is better."
    return (f"{head}, more than twice its standard error ({2 * r.diff_stderr:.3f}) below the base: on this "
            "benchmark the training data made the model worse.")


def card_section(results: Sequence[BenchmarkResult], recipe: str, settings_note: str) -> str:
    """The model card's evaluation section: table, chart, and what the numbers support."""
    words = "\n".join(f"- {verdict(r)}" for r in results)
    return "\n\n".join([
        CARD_START,
        "## Benchmarks",
        f"Scored with lm-evaluation-harness on the benchmark samples glan ships (and any task file in "
        f"`GLAN_EVAL_TASKS`), base model against base + this adapter ({recipe}); {settings_note}. "
        "Scores are ± lm-eval's standard error; a difference counts only beyond twice the standard error "
        "of the difference. The training set was decontaminated against the same questions.",
        results_table(results),
        f"![base and tuned scores per benchmark, with standard errors]({CHART})",
        words,
        CARD_END,
    ]) + "\n"


def with_section(card: str, section: str) -> str:
    """The card with its evaluation section replaced (or added at the end)."""
    if CARD_START in card and CARD_END in card:
        before, rest = card.split(CARD_START, 1)
        return before + section.rstrip("\n") + rest.split(CARD_END, 1)[1]
    return card.rstrip("\n") + "\n\n" + section


def chart_png(results: Sequence[BenchmarkResult]) -> bytes:
    """Bars of base and tuned per benchmark, with standard-error bars."""
    import matplotlib

    matplotlib.use("Agg")  # no display in a Dagster step
    from matplotlib import pyplot as plt

    scored = [r for r in results if not r.error]
    fig, ax = plt.subplots(figsize=(max(4.0, 1.6 * len(scored) + 2), 3.5), dpi=100)
    xs = range(len(scored))
    for offset, label, values, errors in (
        (-0.2, "base", [r.base for r in scored], [r.base_stderr or 0 for r in scored]),
        (0.2, "tuned", [r.tuned for r in scored], [r.tuned_stderr or 0 for r in scored]),
    ):
        ax.bar([x + offset for x in xs], values, width=0.4, yerr=errors, capsize=4, label=label)
    ax.set_xticks(list(xs), [f"{r.benchmark}\n({r.items} items)" for r in scored])
    ax.set_ylabel("score")
    ax.set_ylim(0, 1)
    ax.legend()
    ax.grid(axis="y", alpha=0.3)
    fig.tight_layout()
    buf = io.BytesIO()
    fig.savefig(buf, format="png")
    plt.close(fig)
    return buf.getvalue()


def evaluate_task(lm: object, task: TaskFile, include_path: Path, *, limit: int, num_fewshot: int | None,
                  max_new_tokens: int, count_tokens: Callable[[str], int] | None = None) -> Score:
    """One model on one task with lm-eval; TaskFileError names the task file on any failure."""
    import lm_eval
    from lm_eval.tasks import TaskManager

    check_data(task)
    # include_defaults=False: lm-eval's own thousands of task files are neither read nor needed.
    manager = TaskManager(include_path=str(include_path), include_defaults=False)
    start = time.monotonic()
    try:
        results = lm_eval.simple_evaluate(
            model=lm,
            tasks=[task.name],
            task_manager=manager,
            limit=limit or None,
            num_fewshot=num_fewshot,
            gen_kwargs={"max_gen_toks": max_new_tokens} if max_new_tokens and task.generative else None,
            log_samples=True,
            bootstrap_iters=1000,
            verbosity="ERROR",
        )
    except Exception as exc:  # lm-eval's own and jinja's errors: one line, naming the file
        message = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        raise TaskFileError(f"{task.path}: {type(exc).__name__}: {message}") from exc
    return parse_score(results, task.name, time.monotonic() - start, count_tokens)
