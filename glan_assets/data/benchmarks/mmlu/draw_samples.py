"""Draw this folder's sample of MMLU from a checkout of a repository that holds its CSVs.

    python draw_samples.py /path/to/MLILAB-FedLLM

Reads `data/mmlu/{test,dev}/<subject>_{test,dev}.csv` (columns question, choice0..3, answer
as a 0-based index). test.jsonl: 100 questions drawn from all 57 subjects' test questions;
dev.jsonl: 5 dev questions for few-shot prompts. Questions with no text are left out. Each row: `id` (subject and line in its
CSV), `subject`, `question`, `choices` (4), `answer` (index of the right choice).
"""

import csv
import json
import random
import sys
from pathlib import Path

SEED = 0
DRAWS = {"test": 100, "dev": 5}


def rows_of(source: Path, split: str) -> list[dict]:
    rows = []
    for path in sorted((source / "data" / "mmlu" / split).glob(f"*_{split}.csv")):
        subject = path.name.removesuffix(f"_{split}.csv")
        with path.open(newline="", encoding="utf-8") as f:
            for line, rec in enumerate(csv.DictReader(f), start=2):
                rows.append({
                    "id": f"mmlu-{subject}-{split}-{line}",
                    "subject": subject,
                    "question": rec["question"],
                    "choices": [rec[f"choice{i}"] for i in range(4)],
                    "answer": int(rec["answer"]),
                })
    # A few MMLU questions are empty (the choices ask it all); decontamination needs a question.
    return [r for r in rows if r["question"].strip()]


if __name__ == "__main__":
    here = Path(__file__).resolve().parent
    for split, n in DRAWS.items():
        rows = rows_of(Path(sys.argv[1]), split)
        picked = sorted(random.Random(SEED).sample(range(len(rows)), n))
        (here / f"{split}.jsonl").write_text("".join(json.dumps(rows[i], ensure_ascii=False) + "\n" for i in picked))
