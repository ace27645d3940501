"""What grammar-constrained decoding buys and costs on the embedded model.

Sends GLAN's structured requests -- subjects-format prompts (free-text subject lists to JSON)
and session-extraction prompts (syllabi to JSON), over varied input texts -- to the embedded
server twice: with `response_format` json_schema (constrained) and without (unconstrained),
everything else equal. For each it reports the replies that fail pydantic validation of their
schema, the replies cut off by max_tokens, and completion tokens per second; and the ratio of
the two throughputs, the cost of constraining.

    .venv/bin/python benchmarks/bench_constrained.py [--requests 200] [--concurrency 16]

It talks to the server directly with openai.AsyncOpenAI (no response cache). By default it starts
its own server in a temporary state dir and stops it at the end; --base-url/--model point it at a
running one instead (--modes unconstrained then measures any server's free-text throughput).
The two modes run in alternating chunks, so that load from other processes on the machine falls
on both alike. Writes benchmarks/results/constrained_decoding.json.
"""

from __future__ import annotations

import argparse
import asyncio
import itertools
import json
import os
import platform
import random
import tempfile
import time
from collections import Counter
from pathlib import Path

import openai
import pydantic

from resources import embedded

try:
    from glan_assets.glan.prompts import SESSIONS, SUBJECTS_FORMAT
    from glan_assets.glan.schemas import SessionList, SubjectList
except ImportError:
    from glan_assets.prompts import SESSIONS, SUBJECTS_FORMAT
    from glan_assets.schemas import SessionList, SubjectList

MAX_TOKENS = 256  # the demo profile's cap on every stage
# The stages' own temperature (0.0), and the one a re-ask samples at (0.8).
TEMPERATURES = (0.0, 0.8)
CHUNK = 50  # requests per mode before switching to the other

# (discipline, subject, level, subtopics, session titles with key concepts)
SUBJECTS = [
    ("Physics", "Classical Mechanics", "undergraduate", ["kinematics", "Newton's laws", "energy", "momentum"],
     [("Motion in one dimension", ["velocity", "acceleration"]), ("Forces", ["Newton's laws", "friction"]),
      ("Energy", ["work", "kinetic energy", "conservation"])]),
    ("Physics", "Quantum Mechanics", "graduate", ["wave functions", "operators", "spin"],
     [("Wave functions", ["Schrodinger equation", "probability"]), ("Operators", ["observables", "commutators"])]),
    ("Chemistry", "General Chemistry", "high school", ["atoms", "bonds", "reactions"],
     [("Atoms", ["protons", "electrons", "isotopes"]), ("Chemical bonds", ["ionic bonds", "covalent bonds"]),
      ("Reactions", ["balancing equations", "stoichiometry"])]),
    ("Chemistry", "Organic Chemistry", "undergraduate", ["hydrocarbons", "functional groups", "reaction mechanisms"],
     [("Hydrocarbons", ["alkanes", "alkenes"]), ("Functional groups", ["alcohols", "carbonyls", "amines"])]),
    ("Biology", "Cell Biology", "undergraduate", ["membranes", "organelles", "cell division"],
     [("The cell membrane", ["lipid bilayer", "transport"]), ("Organelles", ["mitochondria", "ribosomes"]),
      ("Cell division", ["mitosis", "meiosis"])]),
    ("Biology", "Genetics", "high school", ["DNA", "genes", "inheritance"],
     [("DNA", ["double helix", "replication"]), ("Inheritance", ["Mendel's laws", "alleles", "Punnett squares"])]),
    ("Mathematics", "Calculus I", "undergraduate", ["limits", "derivatives", "integrals"],
     [("Limits", ["limit", "continuity"]), ("Derivatives", ["derivative", "chain rule", "product rule"]),
      ("Integrals", ["antiderivative", "fundamental theorem"])]),
    ("Mathematics", "Linear Algebra", "undergraduate", ["vectors", "matrices", "eigenvalues"],
     [("Vectors", ["vector spaces", "linear independence"]), ("Matrices", ["matrix multiplication", "inverse"]),
      ("Eigenvalues", ["eigenvectors", "diagonalization"])]),
    ("Economics", "Microeconomics", "undergraduate", ["supply and demand", "elasticity", "market structures"],
     [("Supply and demand", ["equilibrium", "shifts"]), ("Elasticity", ["price elasticity", "income elasticity"])]),
    ("Economics", "Macroeconomics", "graduate", ["growth models", "monetary policy", "business cycles"],
     [("Growth", ["Solow model", "productivity"]), ("Monetary policy", ["interest rates", "inflation"])]),
    ("History", "World History", "high school", ["ancient civilizations", "the Middle Ages", "revolutions"],
     [("Ancient civilizations", ["Mesopotamia", "Egypt", "Rome"]),
      ("Revolutions", ["French Revolution", "industrialization"])]),
    ("Computer Science", "Data Structures", "undergraduate", ["arrays", "linked lists", "trees", "hash tables"],
     [("Arrays and lists", ["arrays", "linked lists"]), ("Trees", ["binary search trees", "traversal"]),
      ("Hashing", ["hash functions", "collisions"])]),
    ("Computer Science", "Operating Systems", "graduate", ["processes", "memory management", "file systems"],
     [("Processes", ["scheduling", "threads"]), ("Memory", ["paging", "virtual memory"])]),
    ("Astronomy", "Introduction to Astronomy", "high school", ["stars", "planets", "galaxies"],
     [("The solar system", ["planets", "orbits"]), ("Stars", ["fusion", "stellar evolution"]),
      ("Galaxies", ["Milky Way", "dark matter"])]),
    ("Psychology", "Cognitive Psychology", "undergraduate", ["perception", "memory", "attention"],
     [("Perception", ["sensation", "illusions"]), ("Memory", ["working memory", "long-term memory"])]),
    ("Linguistics", "Phonology", "graduate", ["phonemes", "syllable structure", "stress"],
     [("Phonemes", ["minimal pairs", "allophones"]), ("Syllables", ["onset", "coda", "stress"])]),
]  # fmt: skip


def subjects_text(rng: random.Random) -> str:
    """A free-text subject list, as the subjects stage writes one, in one of several styles."""
    discipline = rng.choice(sorted({s[0] for s in SUBJECTS}))
    subjects = [s for s in SUBJECTS if s[0] == discipline]
    subjects = rng.sample(subjects, k=len(subjects))
    style = rng.randrange(4)
    lines = []
    for i, (_, name, level, topics, _) in enumerate(subjects, 1):
        topics = rng.sample(topics, k=rng.randint(2, len(topics)))
        if style == 0:
            lines.append(f"{i}. {name} ({level}): {', '.join(topics)}")
        elif style == 1:
            lines.append(f"- **{name}** - level: {level}; main subtopics: {', '.join(topics)}.")
        elif style == 2:
            lines.append(f"Students then take {name} at the {level} level, covering {' and '.join(topics)}.")
        else:
            lines.append(f"Subject: {name}\nLevel: {level}\nSubtopics: {', '.join(topics)}\n")
    intro = rng.choice(
        ["", f"Here are the subjects a student of {discipline} must learn:\n", f"{discipline} curriculum.\n"]
    )
    return intro + "\n".join(lines)


def syllabus_text(rng: random.Random) -> str:
    """A syllabus, as the syllabus stage writes one, in one of several styles."""
    _, name, level, _, sessions = rng.choice(SUBJECTS)
    style = rng.randrange(4)
    parts = [rng.choice([f"Syllabus: {name} ({level})", f"# {name}", f"Course: {name}\nLevel: {level}"])]
    for i, (title, concepts) in enumerate(sessions, 1):
        if style == 0:
            parts.append(f"Session {i}: {title}\nKey concepts: {', '.join(concepts)}")
        elif style == 1:
            parts.append(f"Week {i}: {title} - {', '.join(concepts)}.")
        elif style == 2:
            parts.append(f"## Class {i}. {title}\n" + "\n".join(f"* {c}" for c in concepts))
        else:
            parts.append(f"In class {i} we study {title.lower()}, introducing {' and '.join(concepts)}.")
    return "\n\n".join(parts)


def build_requests(n: int, seed: int = 0) -> list[tuple[str, list[dict], type[pydantic.BaseModel], float]]:
    """(kind, messages, schema, temperature) for n requests, half of each kind."""
    rng = random.Random(seed)
    requests = []
    for i in range(n):
        temperature = TEMPERATURES[(i // 2) % len(TEMPERATURES)]
        if i % 2 == 0:
            messages = SUBJECTS_FORMAT.messages(text=subjects_text(rng))
            requests.append(("subjects_format", messages, SubjectList, temperature))
        else:
            requests.append(("sessions", SESSIONS.messages(syllabus=syllabus_text(rng)), SessionList, temperature))
    return requests


async def send(
    client: openai.AsyncOpenAI, model: str, request: tuple, constrained: bool, gate: asyncio.Semaphore
) -> dict:
    kind, messages, schema, temperature = request
    extra = {}
    if constrained:
        extra["response_format"] = {
            "type": "json_schema",
            "json_schema": {"name": schema.__name__, "schema": schema.model_json_schema()},
        }
    async with gate:
        started = time.monotonic()
        resp = await client.chat.completions.create(
            model=model, messages=messages, max_tokens=MAX_TOKENS, temperature=temperature, **extra
        )
        seconds = time.monotonic() - started
    content = resp.choices[0].message.content or ""
    try:
        schema.model_validate_json(content)
        error = None
    except pydantic.ValidationError as exc:
        error = f"{exc.errors()[0]['type']}: {exc.errors()[0]['msg']}"
    return {
        "kind": kind,
        "temperature": temperature,
        "error": error,
        "truncated": resp.choices[0].finish_reason == "length",
        "completion_tokens": resp.usage.completion_tokens,
        "seconds": seconds,
        "content": content,
    }


async def measure(
    base_url: str, model: str, requests: list, modes: list[str], concurrency: int, budget_s: float
) -> dict:
    client = openai.AsyncOpenAI(base_url=base_url, api_key="not-needed", timeout=1800, max_retries=0)
    gate = asyncio.Semaphore(concurrency)
    replies: dict[str, list[dict]] = {mode: [] for mode in modes}
    busy: dict[str, float] = dict.fromkeys(modes, 0.0)
    started = time.monotonic()
    chunks = [requests[i : i + CHUNK] for i in range(0, len(requests), CHUNK)]
    for chunk, mode in itertools.product(chunks, modes):  # mode by mode within each chunk
        if time.monotonic() - started > budget_s:
            print(f"time budget of {budget_s:.0f} s spent; stopping early", flush=True)
            break
        t0 = time.monotonic()
        replies[mode] += await asyncio.gather(*(send(client, model, r, mode == "constrained", gate) for r in chunk))
        busy[mode] += time.monotonic() - t0
        done = replies[mode]
        print(f"{mode}: {len(done)} replies, {sum(r['error'] is not None for r in done)} invalid, "
              f"{time.monotonic() - started:.0f} s", flush=True)  # fmt: skip
    return {mode: summarize(replies[mode], busy[mode]) for mode in modes}


def summarize(replies: list[dict], seconds: float) -> dict:
    tokens = sum(r["completion_tokens"] for r in replies)
    by_temperature = {
        str(t): {
            "requests": sum(r["temperature"] == t for r in replies),
            "parse_failures": sum(r["temperature"] == t and r["error"] is not None for r in replies),
        }
        for t in TEMPERATURES
    }
    return {
        "requests": len(replies),
        "parse_failures": sum(r["error"] is not None for r in replies),
        # json_invalid: not JSON (cut off, or malformed); others: JSON the schema or its validators refuse
        "failure_kinds": dict(Counter(r["error"].split(":")[0] for r in replies if r["error"] is not None)),
        "truncated": sum(r["truncated"] for r in replies),
        "completion_tokens": tokens,
        "seconds": round(seconds, 1),
        "tokens_per_s": round(tokens / seconds, 1) if seconds else None,
        "mean_latency_s": round(sum(r["seconds"] for r in replies) / len(replies), 2) if replies else None,
        "by_temperature": by_temperature,
        "failure_examples": [
            {"kind": r["kind"], "temperature": r["temperature"], "error": r["error"], "content": r["content"][:300]}
            for r in replies
            if r["error"] is not None
        ][:5],
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--requests", type=int, default=200, help="requests per mode")
    parser.add_argument("--concurrency", type=int, default=16)
    parser.add_argument("--modes", default="constrained,unconstrained")
    parser.add_argument("--base-url", help="a running server's /v1 URL (default: start one)")
    parser.add_argument("--model", help="the model to ask the server given by --base-url for")
    parser.add_argument("--budget-s", type=float, default=3600.0, help="stop starting chunks after this long")
    parser.add_argument("--out", type=Path, default=Path(__file__).parent / "results" / "constrained_decoding.json")
    args = parser.parse_args()
    modes = args.modes.split(",")
    requests = build_requests(args.requests)

    with tempfile.TemporaryDirectory() as tmp:
        started = time.monotonic()
        if args.base_url:
            base_url, model, startup_s = args.base_url, args.model, None
        else:
            endpoint = embedded.ensure_server(state_dir=Path(tmp))
            base_url, model, startup_s = endpoint.base_url, endpoint.model, round(time.monotonic() - started, 1)
        try:
            results = asyncio.run(measure(base_url, model, requests, modes, args.concurrency, args.budget_s))
        finally:
            if not args.base_url:
                embedded.stop_server(Path(tmp))

    print(f"\n{'mode':<14}{'requests':>9}{'invalid':>9}{'truncated':>10}{'tokens':>8}{'seconds':>9}{'tok/s':>8}")
    for mode, r in results.items():
        print(f"{mode:<14}{r['requests']:>9}{r['parse_failures']:>9}{r['truncated']:>10}"
              f"{r['completion_tokens']:>8}{r['seconds']:>9}{r['tokens_per_s']:>8}")  # fmt: skip
    ratio = None
    if {"constrained", "unconstrained"} <= results.keys() and results["unconstrained"]["tokens_per_s"]:
        ratio = round(results["constrained"]["tokens_per_s"] / results["unconstrained"]["tokens_per_s"], 3)
        print(f"constrained / unconstrained tokens/s: {ratio}")
    if startup_s is not None:
        print(f"server startup: {startup_s} s")
    args.out.write_text(json.dumps({
        "machine": platform.node(),
        "model": model,
        "requests_per_mode": args.requests,
        "concurrency": args.concurrency,
        "max_tokens": MAX_TOKENS,
        "temperatures": TEMPERATURES,
        "server_startup_s": startup_s,
        "load_average_at_end": os.getloadavg(),  # the machine is shared: load skews tokens/s
        "results": results,
        "constrained_over_unconstrained_tokens_per_s": ratio,
    }, indent=2) + "\n")  # fmt: skip
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
