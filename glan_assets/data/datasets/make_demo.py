"""Writes the demo datasets the default registry (`registry.yaml`) names, three shapes:

- `sentiment/`: classification, a `datasets` `save_to_disk` directory with `ClassLabel`
  names and a description in its `dataset_info.json`;
- `capitals_qa.jsonl`: extractive QA (context, question, answer);
- `headlines.csv`: a generation pair with no description anywhere.

Run `python glan_assets/data/datasets/make_demo.py`; the outputs are committed.
"""

import csv
import json
import shutil
from pathlib import Path

import datasets

HERE = Path(__file__).resolve().parent

REVIEWS = [
    ("The battery lasts two full days and charging is quick.", "positive"),
    ("It stopped working after a week and support never answered.", "negative"),
    ("Setup took five minutes and the manual was clear.", "positive"),
    ("The screen scratches far too easily.", "negative"),
    ("Great sound for the price, I use it every day.", "positive"),
    ("The strap broke on the first walk.", "negative"),
    ("Light, sturdy and it folds into my bag.", "positive"),
    ("Arrived late and the box was crushed.", "negative"),
    ("Exactly as described, I would buy it again.", "positive"),
    ("Loud fan, hot case, and the app keeps crashing.", "negative"),
    ("My kids love it and it survived a fall down the stairs.", "positive"),
    ("The colours look nothing like the photos.", "negative"),
]

QA = [
    ("Canberra is the capital of Australia. It was chosen as a compromise between Sydney and Melbourne.",
     "What is the capital of Australia?", "Canberra"),
    ("Ottawa, on the Ottawa River, became the capital of Canada in 1857.", "When did Ottawa become the capital of Canada?", "1857"),
    ("The capital of Kenya is Nairobi, which grew from a railway depot founded in 1899.",
     "What did Nairobi grow from?", "a railway depot"),
    ("Brasília was built in the 1950s to move Brazil's capital inland from Rio de Janeiro.",
     "Which city was Brazil's capital before Brasília?", "Rio de Janeiro"),
    ("Wellington, at the southern tip of the North Island, is New Zealand's capital.",
     "Where in New Zealand is Wellington?", "at the southern tip of the North Island"),
    ("Astana has been the capital of Kazakhstan since 1997, when it replaced Almaty.",
     "Which city did Astana replace as capital?", "Almaty"),
    ("Bern is the federal city of Switzerland; the Swiss constitution names no capital.",
     "What does the Swiss constitution name as capital?", "no capital"),
    ("Naypyidaw replaced Yangon as the capital of Myanmar in 2005.", "What did Naypyidaw replace?", "Yangon"),
]

HEADLINES = [
    ("City council approves a new bike lane network covering forty kilometres of streets.", "Council backs 40 km of bike lanes"),
    ("Researchers find that a common garden plant repels mosquitoes as well as sprays do.", "Garden plant rivals mosquito sprays"),
    ("The regional rail line will run every ten minutes from next spring.", "Trains every 10 minutes from spring"),
    ("A local bakery wins the national bread award for the third year running.", "Bakery wins bread award again"),
    ("Heavy rain closes the mountain pass for two days; detours are signposted.", "Rain shuts mountain pass"),
    ("The library now lends tools, from drills to sewing machines.", "Library starts lending tools"),
    ("School lunches will include produce from nearby farms this autumn.", "Local farms to supply school lunches"),
    ("A volunteer team restores the town's 1920s cinema organ.", "Volunteers restore cinema organ"),
]


def write_sentiment(path: Path) -> None:
    features = datasets.Features({"text": datasets.Value("string"), "label": datasets.ClassLabel(names=["negative", "positive"])})
    info = datasets.DatasetInfo(
        description="Short product reviews written by customers, each labelled positive or negative.",
        license="CC0-1.0",
        homepage="https://example.org/glan-demo/product-reviews",
        citation="glan demo data, written by glan_assets/data/datasets/make_demo.py",
        features=features,
    )
    rows = {"text": [t for t, _ in REVIEWS], "label": [["negative", "positive"].index(lab) for _, lab in REVIEWS]}
    shutil.rmtree(path, ignore_errors=True)
    datasets.Dataset.from_dict(rows, info=info).save_to_disk(str(path))


def main() -> None:
    write_sentiment(HERE / "sentiment")
    with (HERE / "capitals_qa.jsonl").open("w") as out:
        for context, question, answer in QA:
            out.write(json.dumps({"context": context, "question": question, "answer": answer}, ensure_ascii=False) + "\n")
    with (HERE / "headlines.csv").open("w", newline="") as out:
        writer = csv.writer(out)
        writer.writerow(["news summary", "headline"])
        writer.writerows(HEADLINES)


if __name__ == "__main__":
    main()
