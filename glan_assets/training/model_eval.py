"""Each recipe's checkpoint scored on benchmarks against its base model, with lm-evaluation-harness.

The base model's scores are kept per base model, benchmark version and evaluation settings
(in `<checkpoints>/.eval_base/`), so a new recipe on the same base evaluates only its adapter.
"""

import base64
import hashlib
import json
import tempfile
from pathlib import Path

import dagster as dg

from glan_assets.ids import content_hash
from glan_assets.plan import ADAPTER_VERSION, EVAL_VERSION
from glan_assets.training.evaluation import (
    CHART,
    BenchmarkResult,
    Score,
    TaskFile,
    TaskFileError,
    card_section,
    chart_png,
    compare,
    evaluate_task,
    find_tasks,
    results_table,
    verdict,
    with_section,
    write_tasks,
)
from glan_assets.training.partitions import recipe_partitions
from glan_assets.training.resources import EvalSettings, TrainingSettings

ADAPTER_FILES = ("adapter_config.json", "adapter_model.safetensors")
CHECK = "tuned_not_worse_than_base"


def adapter_version(checkpoint: Path) -> str | None:
    """The adapter's content hash; None when the folder holds no adapter."""
    if not all((checkpoint / f).is_file() for f in ADAPTER_FILES):
        return None
    digest = hashlib.sha256()
    for name in ADAPTER_FILES:
        digest.update((checkpoint / name).read_bytes())
    return digest.hexdigest()[:16]


def eval_version(evaluation: EvalSettings) -> str:
    """Changes when a task file, its data or an evaluation setting changes."""
    try:
        tasks, errors = find_tasks(evaluation.eval_tasks)
    except TaskFileError as exc:
        return content_hash([str(exc)])[:16]
    return content_hash([{t.name: t.version() for t in tasks}, errors, evaluation.version()])[:16]


def settings_note(evaluation: EvalSettings) -> str:
    parts = [
        f"at most {evaluation.eval_mc_items} items per multiple-choice benchmark" if evaluation.eval_mc_items else "",
        f"{evaluation.eval_gen_items} per generative one" if evaluation.eval_gen_items else "",
        f"{evaluation.eval_max_new_tokens} new tokens" if evaluation.eval_max_new_tokens else "",
        f"{evaluation.eval_fewshot}-shot" if evaluation.eval_fewshot >= 0 else "",
    ]
    return ", ".join(p for p in parts if p) or "every item, with each task's own few-shot count and generation length"


class Evaluator:
    """Runs tasks on one model (lm-eval's HFLM around it), loading it only when first needed:
    the base as training loads it, or base + adapter as `glan chat` does, the adapter merged
    into the base's weights (the same model, without LoRA's extra matrix products per layer)."""

    def __init__(self, evaluation: EvalSettings, include_path: Path, base: str, dtype: str, model_cache: Path,
                 checkpoint: Path | None = None, recipe: str = ""):
        self.evaluation, self.include_path, self.model_cache = evaluation, include_path, model_cache
        self.base, self.dtype, self.checkpoint, self.recipe = base, dtype, checkpoint, recipe
        self._lm = None

    def lm(self):
        if self._lm is None:
            from glan_assets.training.scoring_lm import ScoringLM
            from resources.trainer import load_base, load_for_chat

            if self.checkpoint is None:
                model, tokenizer = load_base(self.base, self.dtype, self.model_cache)
            else:
                try:
                    model, tokenizer = load_for_chat(self.checkpoint, self.model_cache)
                except Exception as exc:  # a corrupt or mismatched adapter: nothing can be scored
                    lines = str(exc).strip().splitlines() or [""]
                    raise dg.Failure(f"recipe {self.recipe}: the adapter in {self.checkpoint} does not load: "
                                     f"{type(exc).__name__}: {lines[0]}") from exc
                model = model.merge_and_unload()
            self._lm = ScoringLM(pretrained=model, tokenizer=tokenizer, batch_size=self.evaluation.eval_batch_size)
        return self._lm

    def score(self, task: TaskFile) -> Score:
        lm = self.lm()
        ev = self.evaluation
        return evaluate_task(
            lm, task, self.include_path,
            limit=ev.eval_gen_items if task.generative else ev.eval_mc_items,
            num_fewshot=ev.eval_fewshot if ev.eval_fewshot >= 0 else None,
            max_new_tokens=ev.eval_max_new_tokens,
            count_tokens=lambda text: len(lm.tokenizer(text, add_special_tokens=False)["input_ids"]),
        )


@dg.asset(
    partitions_def=recipe_partitions,
    deps=["model_checkpoint"],
    group_name="training",
    code_version="1",
    kinds={"pytorch"},
    owners=["team:data"],
    check_specs=[dg.AssetCheckSpec(CHECK, asset="model_eval", description=(
        "Warns when the tuned model scores below its base by more than twice the standard error on any "
        "benchmark: the training data made it worse."))],
    description="The recipe's checkpoint (the partition) and its base model scored with lm-evaluation-harness "
    "on the benchmark task files in `GLAN_EVAL_TASKS` (samples of MMLU and GSM8K by default, the same files "
    "the training set is decontaminated against): per benchmark, base and tuned scores with standard "
    "errors, their difference and whether it exceeds twice its standard error. Also written into the "
    "checkpoint's model card, with a chart.",
)
def model_eval(
    context: dg.AssetExecutionContext, training: TrainingSettings, evaluation: EvalSettings
) -> dg.MaterializeResult:
    from peft import PeftConfig

    recipe = training.recipe(context.partition_key)
    checkpoint = training.checkpoint_dir(recipe.name)
    adapter = adapter_version(checkpoint)
    if adapter is None:
        raise dg.Failure(f"recipe {recipe.name}: no adapter in {checkpoint}; build model_checkpoint[{recipe.name}] first")
    # A hub id; a packaged base's resolves to its local copy, as training and `glan chat` load it.
    base_name = PeftConfig.from_pretrained(str(checkpoint)).base_model_name_or_path
    version = eval_version(evaluation)
    try:
        tasks, errors = find_tasks(evaluation.eval_tasks)
    except TaskFileError as exc:
        raise dg.Failure(str(exc)) from exc
    base_cache = training.checkpoint_dir(".eval_base")
    results: list[BenchmarkResult] = [
        BenchmarkResult(benchmark=Path(path).stem, task_file=path, error=message) for path, message in errors.items()
    ]
    with tempfile.TemporaryDirectory(prefix="glan-eval-") as tmp:
        include = write_tasks(tasks, Path(evaluation.eval_tasks), Path(tmp) / "tasks")
        cache = Path(training.model_cache)
        base_lm = Evaluator(evaluation, include, base_name, recipe.dtype, cache)
        tuned_lm = Evaluator(evaluation, include, base_name, recipe.dtype, cache, checkpoint, recipe.name)
        for task in tasks:
            key = content_hash([base_name, recipe.dtype, task.version(), evaluation.version()])[:16]
            cached = base_cache / f"{task.name}-{key}.json"
            try:
                if cached.is_file():
                    base, from_cache = Score.model_validate_json(cached.read_text()), True
                else:
                    base, from_cache = base_lm.score(task), False
                    cached.parent.mkdir(parents=True, exist_ok=True)
                    cached.write_text(base.model_dump_json())
                tuned = tuned_lm.score(task)
            except TaskFileError as exc:
                context.log.error(str(exc))
                results.append(BenchmarkResult(benchmark=task.name, task_file=str(task.path), error=str(exc)))
                continue
            result = compare(task, base, tuned, from_cache)
            context.log.info(verdict(result))
            results.append(result)
    if all(r.error for r in results):
        raise dg.Failure(f"recipe {recipe.name}: no benchmark could be scored: " + "; ".join(r.error for r in results))

    png = chart_png(results)
    card = checkpoint / "README.md"
    if card.is_file():
        (checkpoint / CHART).write_bytes(png)
        card.write_text(with_section(card.read_text(), card_section(results, recipe.name, settings_note(evaluation))))
    worse = [r.benchmark for r in results if r.significant and r.diff < 0]
    scored = {r.benchmark: r.model_dump() for r in results}
    return dg.MaterializeResult(
        metadata={
            "recipe": recipe.name,
            "base_model": base_name,
            ADAPTER_VERSION: adapter,
            EVAL_VERSION: version,
            "benchmarks": dg.MetadataValue.json(scored),
            "table": dg.MetadataValue.md(results_table(results)),
            "chart": dg.MetadataValue.md(f"![scores](data:image/png;base64,{base64.b64encode(png).decode()})"),
            "settings": dg.MetadataValue.json(evaluation.version()),
            **{f"{r.benchmark}_{side}": getattr(r, side) for r in results if not r.error for side in ("base", "tuned")},
            "eval_seconds": round(sum(r.base_seconds * (not r.base_cached) + r.tuned_seconds for r in results), 1),
            "failed_benchmarks": len([r for r in results if r.error]),
        },
        check_results=[
            dg.AssetCheckResult(
                check_name=CHECK,
                passed=not worse,
                severity=dg.AssetCheckSeverity.WARN,
                metadata={"significantly_worse": dg.MetadataValue.json(worse)},
                description=(f"tuned significantly below base on {', '.join(worse)}" if worse else
                             "tuned not significantly below base on any benchmark"),
            )
        ],
    )


def read_results(metadata: dict) -> list[BenchmarkResult]:
    """The benchmark results a materialization recorded (its `benchmarks` JSON)."""
    raw = metadata.get("benchmarks")
    value = getattr(raw, "value", raw)
    return [BenchmarkResult.model_validate(v) for v in (json.loads(value) if isinstance(value, str) else value or {}).values()]
