"""Draw this folder's sample of GSM8K from a checkout of openai/grade-school-math.

    python draw_samples.py /path/to/grade-school-math

test.jsonl: 100 test problems; train.jsonl: 5 training problems for few-shot prompts. Each
keeps the original `question` and `answer` (worked solution ending in `#### <number>`) and
gets an `id` naming its line in the original file.
"""

import json
import random
import sys
from pathlib import Path

SEED = 0
DRAWS = {"test": 100, "train": 5}


def draw(source: Path, split: str, n: int) -> list[dict]:
    lines = (source / "grade_school_math" / "data" / f"{split}.jsonl").read_text(encoding="utf-8").splitlines()
    picked = sorted(random.Random(SEED).sample(range(len(lines)), n))
    return [{"id": f"gsm8k-{split}-{i + 1}", **json.loads(lines[i])} for i in picked]


if __name__ == "__main__":
    here = Path(__file__).resolve().parent
    for split, n in DRAWS.items():
        rows = draw(Path(sys.argv[1]), split, n)
        (here / f"{split}.jsonl").write_text("".join(json.dumps(r, ensure_ascii=False) + "\n" for r in rows))
