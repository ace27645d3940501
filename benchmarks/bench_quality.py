"""How well the quality signals tell good pairs from bad, and how fast they score.

On the hand-written calibration set (tests/data/quality_calibration.jsonl: good pairs and bad
ones, each bad one written to show one defect):
- each rule's precision (flagged pairs that are bad) and recall (pairs with its defect that
  it flags), and what the rules flag on 200 real DuoRC pairs (tests/data, all good);
- the ROC AUC of IFD (higher = worse) on the embedded SmolLM2 scorer, with a 95% bootstrap
  interval, and what `ifd_max` removes;
- the ROC AUC of the judge's score (lower = worse) on the embedded model over HTTP, and
  through a stub endpoint that scores by a hash of the answer (chance by construction: it
  shows the plumbing, not a judgement);
- what the selection keeps with the default thresholds, and with a judge floor of 4;
- throughput: IFD pairs/s on `--threads` cores at batch size 1 against `--batch-size`, and
  the judge stage's requests/s against a stub endpoint whose limit is concurrency / latency,
  and against the embedded model.

    .venv/bin/python benchmarks/bench_quality.py [--pairs 84] [--throughput-pairs 32] [--judge-pairs 84]

Writes benchmarks/results/quality.json. `--judge-pairs 0` skips the embedded judge.
"""

import argparse
import json
import os
import platform
import sys
import tempfile
import time
import zlib
from collections import Counter, defaultdict
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")
ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

import torch  # noqa: E402

from glan_assets import stages  # noqa: E402
from glan_assets.quality import calibration, rules  # noqa: E402
from glan_assets.quality.ifd import ifd_scores  # noqa: E402
from glan_assets.quality.judge import JUDGE_STAGE, judge_request  # noqa: E402
from glan_assets.quality.selection import PairQuality, select  # noqa: E402
from glan_assets.quality.settings import QualitySettings  # noqa: E402
from glan_assets.registry import METHODS  # noqa: E402
from glan_assets.uit.formats import Instance  # noqa: E402
from glan_assets.uit.reading import read_collection  # noqa: E402
from glan_assets.uit.tasks import prompt_text  # noqa: E402
from resources.llm import LLMResource  # noqa: E402
from resources.local_models import local_model_dir  # noqa: E402
from resources.scorer import CausalLMScorer  # noqa: E402
from tests import fake_llm  # noqa: E402

RESULT = ROOT / "benchmarks" / "results" / "quality.json"
DUORC = ROOT / "tests" / "data" / "duorc_selfrc_200.json"
STUB_LATENCY_S = 0.05
STUB_CONCURRENCY = 16


def balanced(pairs: list[calibration.LabelledPair], n: int) -> list[calibration.LabelledPair]:
    """Up to n pairs, half good and half bad, in file order."""
    good = [p for p in pairs if not p.bad][: n // 2]
    bad = [p for p in pairs if p.bad][: n - len(good)]
    return good + bad


def auc_entry(scores: list[float], bad: list[bool]) -> dict:
    point = calibration.auc(scores, bad)
    low, high = calibration.auc_interval(scores, bad)
    return {"auc": round(point, 3), "ci95": [round(low, 3), round(high, 3)], "chance_in_ci95": low <= 0.5 <= high,
            "pairs": len(scores), "bad": sum(bad)}


def rule_report(pairs: list[calibration.LabelledPair]) -> dict:
    flags = {p.pair_id: rules.check(p.instruction, p.response, p.context) for p in pairs}
    bad = {p.pair_id for p in pairs if p.bad}
    report = {}
    for name in rules.RULE_NAMES:
        flagged = {k for k, fs in flags.items() if any(f.rule == name for f in fs)}
        targeted = {p.pair_id for p in pairs if p.defect == calibration.TARGETS[name]}
        report[name] = calibration.precision_recall(flagged, bad, targeted) | {
            "defect": calibration.TARGETS[name], "missed": sorted(targeted - flagged), "flagged_good": sorted(flagged - bad)}
    any_flag = {k for k, fs in flags.items() if fs}
    report["any_rule"] = calibration.precision_recall(any_flag, bad, bad) | {"missed": sorted(bad - any_flag)}
    return report


def duorc_flags() -> dict:
    """Flags on 200 real QA pairs no one here wrote: every one is a false flag."""
    instances = [i for i in read_collection(DUORC) if isinstance(i, Instance)]
    gold = tuple((i.input, i.output) for i in instances)
    examples = rules.example_strings(next(m.worked_examples for m in METHODS if m.name == "uit"))
    counts = Counter(
        f.rule
        for i in instances
        for f in rules.check(prompt_text(i.instruction, i.input), i.output,
                             rules.PairContext(source="uit", input=i.input, gold=gold, worked_examples=examples))
    )
    return {"pairs": len(instances), "flags": dict(counts)}


def ifd_report(scorer: CausalLMScorer, pairs: list[calibration.LabelledPair], batch_size: int) -> dict:
    start = time.perf_counter()
    scores = ifd_scores(lambda ps: scorer.score_with_and_without(ps, batch_size), [(p.instruction, p.response) for p in pairs])
    seconds = time.perf_counter() - start
    settings = QualitySettings()
    # A pair with no response tokens has no IFD; it ranks as the worst.
    values = [s.ifd if s.ifd is not None else float("inf") for s in scores]
    by_defect = defaultdict(list)
    for p, v in zip(pairs, values):
        by_defect[p.defect or "good"].append(v)
    above = [p for p, v in zip(pairs, values) if v > settings.ifd_max]
    return {
        "scorer_model": settings.scorer_model,
        **auc_entry(values, [p.bad for p in pairs]),
        f"ifd_above_{settings.ifd_max:g}": {"bad": sum(p.bad for p in above), "good": sum(not p.bad for p in above),
                                            "defects": dict(Counter(p.defect for p in above if p.bad))},
        # null: the median pair has no IFD (no response tokens).
        "median_ifd_by_defect": {d: finite(sorted(v)[len(v) // 2]) for d, v in sorted(by_defect.items())},
        "scoring_seconds": round(seconds, 1),
        "per_pair": {p.pair_id: {"ifd": None if s.ifd is None else round(s.ifd, 4),
                                 "loss_given_instruction": round(s.loss_given_instruction, 4),
                                 "loss_alone": round(s.loss_alone, 4), "tokens": s.tokens} for p, s in zip(pairs, scores)},
    }


def finite(value: float) -> float | None:
    return round(value, 3) if value != float("inf") else None


def selection_report(pairs: list[calibration.LabelledPair], result: dict) -> dict:
    """What `select` keeps of the calibration set from the scores measured above: with the
    default thresholds, and with a judge floor of 4."""
    ifd = result["ifd"]["per_pair"]
    judged = result.get("judge_embedded", {}).get("per_pair", {})
    scored = [
        PairQuality(p.pair_id, p.source, tuple(rules.check(p.instruction, p.response, p.context)),
                    ifd[p.pair_id]["ifd"], judged.get(p.pair_id, {}).get("score"))
        for p in pairs if p.pair_id in ifd
    ]
    bad = {p.pair_id for p in pairs if p.bad}
    report = {}
    for name, settings in (("defaults", QualitySettings(keep_unjudged=not judged)),
                           ("judge_min_4", QualitySettings(judge_min=4, keep_unjudged=not judged))):
        chosen = select(scored, settings)
        report[name] = {
            "kept_good": sum(k not in bad for k in chosen.kept), "kept_bad": sorted(k for k in chosen.kept if k in bad),
            "dropped_good": sorted(d.pair_id for d in chosen.dropped if d.pair_id not in bad),
            "dropped_by_signal": dict(Counter(d.signal for d in chosen.dropped)),
        }
    return report | {"judge": "embedded" if judged else "none (unjudged pairs kept)"}


def ifd_throughput(scorer: CausalLMScorer, pairs: list[tuple[str, str]], batch_size: int) -> dict:
    """Pairs/s at batch size 1 and batched, timed in the order A B B A after a warm-up."""
    scorer.score_with_and_without(pairs[:4], batch_size)
    times: dict[int, list[float]] = defaultdict(list)
    for size in (1, batch_size, batch_size, 1):
        start = time.perf_counter()
        scorer.score_with_and_without(pairs, size)
        times[size].append(time.perf_counter() - start)
    rate = {size: len(pairs) / min(t) for size, t in times.items()}
    return {"pairs": len(pairs), "pairs_per_s_batch_1": round(rate[1], 2),
            f"pairs_per_s_batch_{batch_size}": round(rate[batch_size], 2),
            "speedup": round(rate[batch_size] / rate[1], 2)}


def stub_reply(messages, *args, _reply_for=fake_llm._reply_for):
    """The stub endpoint's judge: a score from a hash of the answer, blind to its quality."""
    if "[Answer]" not in messages[-1]["content"]:
        return _reply_for(messages, *args)
    answer = messages[-1]["content"].split("[Answer]\n", 1)[1]
    return json.dumps({"reason": "stub verdict", "score": zlib.crc32(answer.encode()) % 10 + 1})


def judge(llm: LLMResource, pairs: list[calibration.LabelledPair]) -> dict:
    start = time.perf_counter()
    batch = stages.run(llm, JUDGE_STAGE, [judge_request(p.pair_id, p.instruction, p.response) for p in pairs])
    seconds = time.perf_counter() - start
    judged = [(p, r.value.score) for p, r in zip(pairs, batch.replies) if r.ok]
    # An unusable reply has no score; it counts as the worst, as selection drops it by default.
    scores = [-(r.value.score if r.ok else 0) for r in batch.replies]
    return {
        **auc_entry(scores, [p.bad for p in pairs]),
        "unusable_replies": sum(not r.ok for r in batch.replies),
        "requests_sent": batch.stats.requests_sent,
        "seconds": round(seconds, 1),
        "requests_per_s": round(batch.stats.requests_sent / seconds, 2),
        "completion_tokens": batch.stats.completion_tokens,
        "scores_good": dict(sorted(Counter(s for p, s in judged if not p.bad).items())),
        "scores_bad": dict(sorted(Counter(s for p, s in judged if p.bad).items())),
        "per_pair": {p.pair_id: ({"score": r.value.score, "reason": r.value.reason} if r.ok else {"error": r.error})
                     for p, r in zip(pairs, batch.replies)},
    }


def stub_judge(pairs: list[calibration.LabelledPair], cache: Path) -> dict:
    fake_llm._reply_for = stub_reply
    with fake_llm.FakeLLM() as stub:
        stub.delay_s = STUB_LATENCY_S
        llm = LLMResource(base_url=stub.base_url, cache_path=str(cache), max_concurrency=STUB_CONCURRENCY)
        report = judge(llm, pairs)
        again = stages.run(llm, JUDGE_STAGE, [judge_request(p.pair_id, p.instruction, p.response) for p in pairs])
    report.pop("per_pair")
    return report | {"endpoint_limit_requests_per_s": STUB_CONCURRENCY / STUB_LATENCY_S,
                     "rerun_calls": again.stats.calls, "rerun_cache_hits": again.stats.cache_hits}


def embedded_judge(pairs: list[calibration.LabelledPair], root: Path) -> dict:
    from resources import embedded

    # A server of its own, stopped at the end.
    llm = LLMResource(base_url="", cache_path=str(root / "embedded_cache.sqlite"), embedded_state=str(root / "embedded"))
    try:
        embedded.ensure_server(llm.default_model, root / "embedded")  # started before the clock: its start is not the judge's
        return {"model": llm.default_model, **judge(llm, pairs)}
    finally:
        embedded.stop_server(root / "embedded")


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--pairs", type=int, default=84, help="calibration pairs for IFD (half good, half bad)")
    parser.add_argument("--throughput-pairs", type=int, default=32)
    parser.add_argument("--batch-size", type=int, default=8)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--judge-pairs", type=int, default=84, help="pairs the embedded model judges; 0 skips it")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)

    everything = calibration.load({m.name: m.worked_examples for m in METHODS})
    pairs = balanced(everything, args.pairs)
    result: dict = {"calibration_pairs": len(everything), "rules": rule_report(everything), "rules_on_duorc": duorc_flags()}
    scorer = CausalLMScorer(str(local_model_dir(QualitySettings().scorer_model)))
    result["ifd"] = ifd_report(scorer, pairs, args.batch_size)
    throughput = [(p.instruction, p.response) for p in everything]
    result["ifd_throughput"] = ifd_throughput(scorer, [throughput[k % len(throughput)] for k in range(args.throughput_pairs)],
                                              args.batch_size) | {"torch_threads": torch.get_num_threads()}
    with tempfile.TemporaryDirectory(prefix="glan-bench-quality-") as tmp:
        result["judge_stub_endpoint"] = stub_judge(everything, Path(tmp) / "stub_cache.sqlite")
        if args.judge_pairs:
            result["judge_embedded"] = embedded_judge(balanced(everything, args.judge_pairs), Path(tmp))
    result["selection"] = selection_report(everything, result)
    result |= {"cpus": os.cpu_count(), "load_average_1m": round(os.getloadavg()[0], 1),
               "python": platform.python_version(), "torch": torch.__version__}
    summary = {k: v for k, v in result.items() if k not in ("ifd", "judge_embedded")}
    print(json.dumps(summary, indent=1, ensure_ascii=False))
    for key in ("ifd", "judge_embedded"):
        if key in result:
            print(key, json.dumps({k: v for k, v in result[key].items() if k != "per_pair"}, ensure_ascii=False))
    RESULT.parent.mkdir(parents=True, exist_ok=True)
    RESULT.write_text(json.dumps(result, indent=1, ensure_ascii=False) + "\n")


if __name__ == "__main__":
    main()
