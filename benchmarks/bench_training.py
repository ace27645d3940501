"""Training throughput: the pipeline's trainer against a plain transformers + peft loop.

On a CPU shared with other processes, run it with OMP_NUM_THREADS=1: two OpenMP threads
then stall on each other and single steps vary by 10x.

Both train the same LoRA (the recipe's) on the same tokenized pairs and batch size, and
count the same tokens (the inputs, padding excluded). The plain loop is what a user would
write: `DataCollatorForSeq2Seq` padding and `model(..., labels=...).loss`, which projects
every position onto the vocabulary. Timing starts after each run's first step (warm-up),
and the runs go A B B A so a change in the machine's load hits both alike.

Then a small full run of the recipe reports the held-out loss of the base and the tuned model.

    .venv/bin/python benchmarks/bench_training.py [--recipe demo] [--steps 8] [--db data/glan.duckdb]

Pairs come from the DuckDB file's training set when it has one, else from the sample below.
Writes benchmarks/results/training_throughput.json.
"""

import argparse
import json
import os
import platform
import statistics
import tempfile
import time
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")

import torch  # noqa: E402  (after HF_HUB_OFFLINE: the benchmark must not reach the hub)
from transformers import AutoTokenizer, DataCollatorForSeq2Seq, get_scheduler  # noqa: E402

from glan_assets.registry import resources_from_env  # noqa: E402
from glan_assets.training.curation import hold_out  # noqa: E402
from glan_assets.training.model_checkpoint import as_pairs  # noqa: E402
from glan_assets.training.recipes import TrainingRecipe  # noqa: E402
from glan_assets.training.schemas import TrainingPairRow  # noqa: E402
from resources.local_models import resolve_model  # noqa: E402
from resources.storage import DuckDBStore  # noqa: E402
from resources.trainer import (  # noqa: E402
    TrainingStep,
    add_lora,
    encode,
    fine_tune,
    length_grouped_batches,
    load_base,
    train_lora,
)

RESULTS = Path(__file__).resolve().parent / "results" / "training_throughput.json"

# Homework pairs in the shape the demo builds: three disciplines, four pairs each.
SAMPLE = {
    "Physics": [
        ("In Introduction to Mechanics, explain Newton's first law and how it relates to inertia.",
         "Newton's first law states that an object stays at rest, or keeps moving in a straight line at constant "
         "speed, unless a net external force acts on it. Inertia is the name for this tendency to resist changes in "
         "motion, and an object's mass measures how much inertia it has. For example, passengers in a bus lurch "
         "forward when it brakes suddenly: their bodies keep moving until the seat or a seat belt exerts a force."),
        ("A 1200 kg car accelerates from rest to 20 m/s in 8 seconds. What net force acts on it?",
         "First find the acceleration: a = (20 m/s - 0 m/s) / 8 s = 2.5 m/s^2. Newton's second law gives the net "
         "force as F = m a = 1200 kg x 2.5 m/s^2 = 3000 N. So a net force of 3000 newtons acts on the car in the "
         "direction of its motion. Friction and air resistance would mean the engine must supply somewhat more."),
        ("In Thermodynamics, explain the difference between heat and temperature.",
         "Temperature measures the average kinetic energy of the particles in a substance and is read with a "
         "thermometer in kelvin or degrees Celsius. Heat is energy transferred from a hotter body to a colder one "
         "because of their temperature difference, measured in joules. A bathtub of warm water holds more thermal "
         "energy than a cup of boiling water, even though the cup has the higher temperature."),
        ("Explain why a ball thrown horizontally from a cliff follows a curved path.",
         "The ball's motion has two independent parts. Horizontally no force acts, ignoring air resistance, so the "
         "ball keeps its initial horizontal speed. Vertically gravity accelerates it downward at 9.8 m/s^2, so its "
         "downward speed grows every second. Constant horizontal speed combined with steadily increasing vertical "
         "speed traces a parabola, which is why the path curves more and more steeply."),
    ],
    "Astronomy": [
        ("In Introduction to Astronomy, explain why the Moon shows phases.",
         "The Moon does not make its own light; we see sunlight reflected from it. The Sun always lights half of "
         "the Moon, but as the Moon orbits Earth over about 29.5 days we see different portions of that lit half. "
         "At new moon the lit side faces away from us, at full moon it faces us completely, and the crescent, "
         "quarter and gibbous phases lie in between."),
        ("What is a light-year, and why do astronomers use it?",
         "A light-year is the distance light travels in one year, about 9.46 trillion kilometers. Astronomers use "
         "it because distances between stars are so large that kilometers become unwieldy numbers. Saying that "
         "Proxima Centauri is 4.2 light-years away also tells us that the light we see left the star 4.2 years "
         "ago, so looking farther away means looking back in time."),
        ("In Stellar Astrophysics, describe how a star like the Sun will end its life.",
         "When the Sun exhausts the hydrogen in its core, in about five billion years, the core will contract and "
         "heat up while the outer layers expand, turning the Sun into a red giant. Helium fusion then begins in the "
         "core. Eventually the outer layers drift away as a planetary nebula, and the exposed core remains as a "
         "white dwarf, a hot, dense remnant about the size of Earth that slowly cools."),
        ("Explain how astronomers use parallax to measure the distance to nearby stars.",
         "As Earth orbits the Sun, a nearby star appears to shift slightly against much more distant background "
         "stars. Astronomers measure the star's position six months apart, when Earth is on opposite sides of its "
         "orbit, and half of the angular shift is the parallax angle. The distance in parsecs is one divided by the "
         "parallax in arcseconds, so a star with a parallax of 0.5 arcseconds is 2 parsecs away."),
    ],
    "Algebra": [
        ("In Introduction to Algebra, solve the equation 3x + 7 = 22 and explain each step.",
         "We want x alone on one side. Subtract 7 from both sides to keep the equation balanced: 3x = 15. Then "
         "divide both sides by 3: x = 5. To check, substitute back: 3 x 5 + 7 = 15 + 7 = 22, which matches the right "
         "side, so x = 5 is the solution."),
        ("Explain what a function is, with an example from everyday life.",
         "A function is a rule that assigns to each input exactly one output. The price of apples at a shop is an "
         "example: if apples cost 2 dollars per kilogram, the cost is the function c(w) = 2w of the weight w. Each "
         "weight gives one cost. A relation in which one input could give two different outputs would not be a "
         "function."),
        ("In Linear Algebra, explain what it means for two vectors to be linearly independent.",
         "Two vectors are linearly independent when neither is a scalar multiple of the other, that is, the only "
         "way to combine them into the zero vector is with both coefficients equal to zero. In the plane, the "
         "vectors (1, 0) and (0, 1) are independent, while (1, 2) and (2, 4) are dependent because the second is "
         "twice the first. Independent vectors point in genuinely different directions."),
        ("Factor the quadratic x^2 - 5x + 6 and find its roots.",
         "We look for two numbers whose product is 6 and whose sum is -5; these are -2 and -3. So x^2 - 5x + 6 = "
         "(x - 2)(x - 3). A product is zero only when one factor is zero, so the roots are x = 2 and x = 3. "
         "Substituting x = 2 gives 4 - 10 + 6 = 0, which confirms it."),
    ],
}


def sample_pairs() -> list[TrainingPairRow]:
    return [
        TrainingPairRow(pair_id=f"pair_sample_{d[:3].lower()}{i}", source_id=f"ans_sample_{d[:3].lower()}{i}",
                        source="glan", group_name=d, field_name="sample", subject_name="sample", instruction=q,
                        response=a)
        for d, pairs in SAMPLE.items()
        for i, (q, a) in enumerate(pairs)
    ]


class PlainLoop:
    """The loop from the transformers/peft docs, stepped one batch at a time from outside."""

    def __init__(self, recipe: TrainingRecipe, examples, batches: list[list[int]], total_steps: int):
        from peft import LoraConfig, get_peft_model

        model, tokenizer = load_base(recipe.base_model, recipe.dtype)
        torch.manual_seed(recipe.seed)  # the same LoRA initialisation as the pipeline's
        self.model = get_peft_model(model, LoraConfig(
            r=recipe.lora_r, lora_alpha=recipe.lora_alpha, lora_dropout=recipe.lora_dropout,
            target_modules=recipe.target_modules, task_type="CAUSAL_LM"))
        self.collator = DataCollatorForSeq2Seq(tokenizer, padding=True)
        params = [p for p in self.model.parameters() if p.requires_grad]
        self.optimizer = torch.optim.AdamW(params, lr=recipe.learning_rate)
        self.scheduler = get_scheduler(recipe.lr_scheduler, self.optimizer, recipe.warmup_steps, total_steps)
        self.examples, self.batches = examples, iter(batches)
        self.model.train()

    def step(self) -> tuple[float, int, float]:
        """(seconds, tokens, loss) of one optimizer step on the next batch."""
        start = time.perf_counter()
        features = [{"input_ids": self.examples[i].input_ids, "attention_mask": [1] * len(self.examples[i].input_ids),
                     "labels": self.examples[i].labels} for i in next(self.batches)]
        batch = self.collator(features)
        loss = self.model(**batch).loss
        loss.backward()
        self.optimizer.step()
        self.scheduler.step()
        self.optimizer.zero_grad()
        return time.perf_counter() - start, int(batch["attention_mask"].sum()), loss.item()


def interleaved(recipe: TrainingRecipe, examples, steps: int) -> dict[str, list[tuple[float, int, float]]]:
    """Per step (seconds, tokens, loss) of both loops, alternating step by step, so that
    whatever else the machine runs slows both alike."""
    lengths = [len(e.input_ids) for e in examples]
    batches = [b for epoch in range(recipe.epochs)
               for b in length_grouped_batches(len(examples), lengths, recipe.batch_size, recipe.seed + epoch)]
    plain = PlainLoop(recipe, examples, batches, steps)
    model, tokenizer = load_base(recipe.base_model, recipe.dtype)
    model = add_lora(model, recipe)
    runs: dict[str, list[tuple[float, int, float]]] = {"pipeline": [], "plain": []}
    resumed = [time.perf_counter()]
    seen = [0]

    def on_step(step: TrainingStep) -> None:
        runs["pipeline"].append((time.perf_counter() - resumed[0], step.tokens - seen[0], step.loss))
        seen[0] = step.tokens
        runs["plain"].append(plain.step())
        print(f"step {step.step}: pipeline {runs['pipeline'][-1][0]:.1f}s, plain {runs['plain'][-1][0]:.1f}s", flush=True)
        resumed[0] = time.perf_counter()

    train_lora(model, tokenizer, examples, recipe.model_copy(update={"max_steps": steps}), on_step=on_step)
    return runs


def rate(steps: list[tuple[float, int, float]]) -> float:
    """Tokens per second, leaving out the first step (warm-up)."""
    return sum(n for _, n, _ in steps[1:]) / sum(t for t, _, _ in steps[1:])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--recipe", default="demo")
    parser.add_argument("--steps", type=int, default=8, help="optimizer steps of each loop")
    parser.add_argument("--db", help="a DuckDB file with a training set (default: GLAN_DB)")
    args = parser.parse_args()

    resources = resources_from_env()
    recipe = resources["training"].recipe(args.recipe)
    db = args.db or resources["store"].path
    stored = DuckDBStore(path=db).read(TrainingPairRow) if Path(db).exists() else []
    pairs = stored or hold_out(sample_pairs(), per_group=1)
    train = as_pairs([p for p in pairs if p.split == "train"])
    test = as_pairs([p for p in pairs if p.split == "test"])
    examples, _ = encode(AutoTokenizer.from_pretrained(resolve_model(recipe.base_model)), train, recipe.max_length)
    # The throughput runs may take more steps than one epoch of a small set holds.
    looped = recipe.model_copy(update={"epochs": max(recipe.epochs, args.steps)})

    runs = interleaved(looped, examples, args.steps)
    pipeline, plain = rate(runs["pipeline"]), rate(runs["plain"])

    with tempfile.TemporaryDirectory() as out:
        full = fine_tune(recipe, train, test, out)
    result = {
        "recipe": recipe.model_dump(),
        "data": "training_set of " + db if stored else "built-in sample (3 disciplines x 4 pairs)",
        "train_pairs": len(train),
        "test_pairs": len(test),
        "throughput_steps": args.steps,
        # The same batches from the same initialisation: the losses agree, the work is the same.
        "step_losses": {name: [round(loss, 4) for _, _, loss in steps] for name, steps in runs.items()},
        # On a shared machine single steps stall; the median of the paired ratios shrugs that off.
        "step_seconds": {name: [round(t, 2) for t, _, _ in steps] for name, steps in runs.items()},
        "median_step_ratio_plain_over_pipeline": round(statistics.median(
            p[0] / q[0] for p, q in zip(runs["plain"][1:], runs["pipeline"][1:])), 3),
        "pipeline_tokens_per_s": round(pipeline, 1),
        "plain_tokens_per_s": round(plain, 1),
        "ratio_pipeline_over_plain": round(pipeline / plain, 3),
        "full_run": {
            "steps": len(full.steps),
            "seconds": round(full.seconds, 1),
            "tokens_per_s": round(full.tokens_per_s, 1),
            "heldout_loss_base": full.base.mean_loss if full.base else None,
            "heldout_loss_tuned": full.tuned.mean_loss if full.tuned else None,
            "per_discipline_base": full.base.per_group if full.base else None,
            "per_discipline_tuned": full.tuned.per_group if full.tuned else None,
        },
        "machine": {"cpus": os.cpu_count(), "platform": platform.platform(), "torch": torch.__version__,
                    "device": full.device, "torch_threads": torch.get_num_threads(), "load_average": os.getloadavg()},
    }
    RESULTS.parent.mkdir(parents=True, exist_ok=True)
    RESULTS.write_text(json.dumps(result, indent=2) + "\n")
    print(f"pipeline {pipeline:.1f} tokens/s, plain {plain:.1f} tokens/s, ratio {pipeline / plain:.2f}")
    if full.base and full.tuned:
        print(f"held-out loss: base {full.base.mean_loss:.4f} -> tuned {full.tuned.mean_loss:.4f} "
              f"({len(full.steps)} steps, {full.seconds:.0f} s)")
    print(f"wrote {RESULTS}")


if __name__ == "__main__":
    main()
