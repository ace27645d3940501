"""How many syllabi yield class sessions on the embedded model, per syllabus prompt and sampling.

The demo fails a discipline when none of its syllabi yields a session. This measures,
for the same subjects and samples, the syllabus prompt before and after its worked
example, at the paper's temperature (1.0) and the demo's (0.7):

- outline: the syllabus lists at least one session with key concepts that the sessions
  level reads directly;
- llm: the JSON extraction call (with its re-asks) gives sessions that are not copies of
  its own worked example;
- usable: what the sessions level does now, outline first and the LLM for the rest.

    .venv/bin/python benchmarks/bench_sessions.py [--samples 3]

Every config gets its own response cache in a temporary directory, so nothing is replayed.
Writes benchmarks/results/sessions_extraction.json.
"""

import argparse
import dataclasses
import json
import platform
import tempfile
import time
from pathlib import Path

from glan_assets.prompts import SESSIONS, SYLLABUS
from glan_assets.schemas import SessionList
from glan_assets.sessions import read_outline
from resources.llm import LLMResource, Request, Sampling
from resources.settings import DEMO_MAX_TOKENS

# A few subjects as the demo taxonomy's disciplines produce them, one of them vague.
SUBJECTS = [
    ("Physics", "Classical Mechanics", "undergraduate", "motion, forces, energy"),
    ("Astronomy", "Introduction to Astronomy", "high school", "stars, planets, galaxies"),
    ("Algebra", "Linear Algebra", "undergraduate", "vectors, matrices, linear equations"),
    ("Astronomy", "Astronomy", "high school", "Physical Sciences, Natural Sciences, Astronomy"),
]
CONFIGS = {
    "no example, t=1.0 (before)": (dataclasses.replace(SYLLABUS, examples=()), 1.0, 0.95),
    "no example, t=0.7": (dataclasses.replace(SYLLABUS, examples=()), 0.7, 0.95),
    "worked example, t=1.0": (SYLLABUS, 1.0, 0.95),
    "worked example, t=0.7 (demo now)": (SYLLABUS, 0.7, 0.95),
}


def run(name: str, prompt, temperature: float, top_p: float, samples: int, cache: Path) -> dict:
    llm = LLMResource(
        cache_path=str(cache),
        syllabus=Sampling(temperature=temperature, top_p=top_p, max_tokens=DEMO_MAX_TOKENS),
        sessions=Sampling(temperature=0.0, top_p=1.0, max_tokens=DEMO_MAX_TOKENS),
    )
    requests = [
        Request(
            f"{discipline}/{subject}",
            prompt.messages(subject_name=subject, discipline=discipline, level=level, subtopics=subtopics,
                            sessions_min=2, sessions_max=3, concepts=3),
            sample_index=k,
        )
        for discipline, subject, level, subtopics in SUBJECTS
        for k in range(samples)
    ]  # fmt: skip
    started = time.monotonic()
    syllabi = [r for r in llm.generate("syllabus", requests).replies if r.ok]
    extracted = llm.generate_structured(
        "sessions", [Request(r.request.item_id, SESSIONS.messages(syllabus=r.text)) for r in syllabi], SessionList
    ).replies
    outline = [bool(read_outline(r.text)) for r in syllabi]
    llm_ok = [r.ok for r in extracted]
    result = {
        "config": name,
        "syllabi": len(syllabi),
        "outline": sum(outline),
        "llm": sum(llm_ok),
        "usable": sum(o or e for o, e in zip(outline, llm_ok)),
        "seconds": round(time.monotonic() - started, 1),
    }
    print(result, flush=True)
    return result


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--samples", type=int, default=3, help="syllabi per subject and config")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        results = [
            run(name, prompt, t, p, args.samples, Path(tmp) / f"cache{i}.sqlite")
            for i, (name, (prompt, t, p)) in enumerate(CONFIGS.items())
        ]
    out = Path(__file__).parent / "results" / "sessions_extraction.json"
    out.write_text(json.dumps({"machine": platform.node(), "subjects": SUBJECTS, "samples": args.samples,
                               "results": results}, indent=2) + "\n")  # fmt: skip
    print(f"wrote {out}")


if __name__ == "__main__":
    main()
