"""The plan's estimate: the pure estimator and fan-out, then `glan build` through the real path
(the fake endpoint, a real DuckDB file and Dagster home)."""

import dataclasses
import re

import dagster as dg
import pytest

from glan_assets.dynosaur.estimate import fanout_dynosaur
from glan_assets.estimate import MIN_MEASURED, StageWork, Tokens, choose_tokens, describe, estimate
from glan_assets.glan.estimate import DEFAULT_TOKENS, SUBJECTS_PER_QUERY, fanout_glan
from glan_assets.uit.estimate import fanout_uit
from resources.cache import Measured
from tests.test_cli import glan

GLAN_LEVELS = ("fields", "disciplines", "subjects", "syllabi", "sessions", "questions", "answers")
DEMO = {"subject_queries": 2, "max_subjects_per_discipline": 2, "questions_per_syllabus": 3}


def test_estimate_sums_stages_prices_uncached_tokens_and_divides_time_by_concurrency():
    work = [
        StageWork("questions", "questions", "m", calls=10, cached=4),
        StageWork("answers", "answers", "m", calls=10),
        StageWork("questions", "questions", "m", calls=6, cached=0),  # another partition
    ]
    tokens = {("questions", "m"): Tokens(100, 20, "measured (50 responses)"), ("answers", "m"): Tokens(10, 200, "default")}
    prices = {"questions": (1.0, 2.0), "answers": (3.0, 4.0)}

    est = estimate(work, tokens, prices, latency_s=0.5, concurrency=4)

    q, a = est.stages
    assert (q.calls, q.cached, q.prompt_tokens, q.completion_tokens) == (16, 4, 1200, 240)
    assert q.cost_usd == pytest.approx((1200 * 1.0 + 240 * 2.0) / 1e6)
    assert q.seconds == pytest.approx(12 * 0.5 / 4)
    assert (a.prompt_tokens, a.completion_tokens) == (100, 2000)
    assert est.total("calls") == 26 and est.total("cost_usd") == pytest.approx(q.cost_usd + a.cost_usd)
    assert est.by_level()["questions"] == {"llm_calls": 12, "cache_hits": 4, "prompt_tokens": 1200,
                                           "completion_tokens": 240, "cost_usd": round(q.cost_usd, 6)}
    lines = describe(est, budget_usd=0.001)
    assert any("over the budget" in line for line in lines)
    assert re.search(r"questions\s+16\s+4\s+1,200\s+240\s", "\n".join(lines))
    unknown = dataclasses.replace(est, not_estimated=("summaries",))
    assert describe(unknown)[-1] == "  not estimated (no fan-out here, or an input it cannot read): summaries"


def test_measured_lengths_replace_the_defaults_only_with_enough_responses():
    few = {("answers", "m"): Measured(MIN_MEASURED - 1, 70.0, 90.0)}
    enough = {("answers", "m"): Measured(MIN_MEASURED, 70.0, 90.0)}

    default = DEFAULT_TOKENS["answers"]

    assert choose_tokens(few, "answers", "m", 1024, default) == Tokens(*default, "default")
    assert choose_tokens(enough, "answers", "m", 1024, default) == Tokens(70.0, 90.0, f"measured ({MIN_MEASURED} responses)")
    assert choose_tokens(enough, "answers", "other-model", 100, default).completion == 100  # capped at max_tokens


def test_glan_fanout_follows_the_profile_and_counts_stored_rows_of_levels_not_rebuilt():
    built = {stage.name: calls for _, stage, calls in fanout_glan(GLAN_LEVELS, DEMO, {})}
    assert built == {"subjects": 2, "subjects_format": 2, "syllabus": 2, "sessions": 2, "questions": 6, "answers": 6}

    uncapped = {s.name: c for _, s, c in fanout_glan(GLAN_LEVELS, DEMO | {"max_subjects_per_discipline": 0}, {})}
    assert uncapped["syllabus"] == 2 * SUBJECTS_PER_QUERY

    # Rebuilt from questions: the syllabi stored are what the questions are asked over.
    tail = fanout_glan(("questions", "answers"), DEMO, {"syllabi": 7, "subjects": 9})
    assert [(level, stage.name, calls) for level, stage, calls in tail] == [
        ("questions", "questions", 21), ("answers", "answers", 21)]
    # The quality level's judge scores its sample of the answers.
    judged = fanout_glan(("answers", "glan_quality"), DEMO, {"questions": 21}, judge_sample=0.25)
    assert [(level, stage.name, calls) for level, stage, calls in judged] == [
        ("answers", "answers", 21), ("glan_quality", "judge", 6)]
    assert fanout_uit(("instructions_raw", "uit_candidates"), tasks=4, candidates_per_task=3)[0][2] == 12
    assert fanout_uit(("instructions_unified",), tasks=4, candidates_per_task=3) == []
    assert [c for _, _, c in fanout_dynosaur(("dataset_metadata", "dynosaur_tasks"))] == [1]
    # UIT's judge scores its sample of the collection's pairs; Dynosaur's, of the instances
    # stored, and is not estimated while the model has yet to propose the tasks they come from.
    assert [(lv, s.name, c) for lv, s, c in fanout_uit(("uit_candidates", "uit_quality"), 4, 3, pairs=10, judge_sample=0.25)
            ] == [("uit_candidates", "format_transfer", 12), ("uit_quality", "judge", 3)]
    assert [(lv, c) for lv, _, c in fanout_dynosaur(("dynosaur_quality",), stored_instances=12, judge_sample=0.5)] == [
        ("dynosaur_quality", 6)]
    assert fanout_dynosaur(("dynosaur_tasks", "dynosaur_instances", "dynosaur_quality"), None, 1.0)[-1][0] == "dynosaur_tasks"


def _estimated(stdout: str) -> dict[str, tuple[int, int]]:
    """stage -> (calls, cached) from the plan's estimate lines."""
    rows = re.findall(r"^\s+(\w+)\s+([\d,]+)\s+([\d,]+)\s+[\d,]+\s+[\d,]+\s", stdout, re.MULTILINE)
    return {stage: (int(calls.replace(",", "")), int(cached.replace(",", ""))) for stage, calls, cached in rows}


def test_every_plan_carries_its_estimate_and_the_build_records_it_beside_the_actuals(project, fake_llm):
    dry = glan(project, "build", "--dry-run", "--until", "answers")

    assert dry.returncode == 0, dry.stdout + dry.stderr
    assert "estimate at 2.00 s per call (default)" in dry.stdout
    planned = _estimated(dry.stdout)
    # Two disciplines of the demo profile, 2 questions per syllabus (the project's setting).
    assert planned == {"subjects": (4, 0), "subjects_format": (4, 0), "syllabus": (4, 0), "sessions": (4, 0),
                       "questions": (8, 0), "answers": (8, 0), "total": (32, 0)}
    assert not fake_llm.requests  # a dry run sends nothing

    built = glan(project, "build", "--until", "answers")

    assert built.returncode == 0, built.stdout + built.stderr
    assert len(fake_llm.requests) == planned["total"][0]
    assert re.search(r"^spent: +\$0\.0000 for 32 LLM calls over 2 run\(s\) in this build", built.stdout, re.MULTILINE)
    instance = dg.DagsterInstance.from_config(str(project.dagster_home))
    for level in ("subjects", "questions", "answers"):
        mat = instance.fetch_materializations(
            dg.AssetRecordsFilter(dg.AssetKey(level), asset_partitions=["Physics"]), limit=1
        ).records[0].asset_materialization
        expected = mat.metadata["estimate"].value
        assert expected["llm_calls"] == mat.metadata["llm_calls"].value > 0
        assert expected["prompt_tokens"] > 0 and "completion_tokens" in expected

    again = glan(project, "build", "--dry-run", "--force", "--until", "answers")

    assert again.returncode == 0, again.stderr
    assert "measured over the last build's 32 calls" in again.stdout
    assert all(calls == cached for calls, cached in _estimated(again.stdout).values())  # all in the cache: free
    assert re.search(r"^\s+total\s+32\s+32\s+0\s+0\s+0\.0000", again.stdout, re.MULTILINE)

    # One more question per syllabus: the stored syllabi are counted, the first two cached.
    project.env["GLAN_QUESTIONS_PER_SYLLABUS"] = "3"
    sent = len(fake_llm.requests)
    more = glan(project, "build", "--until", "answers")

    assert more.returncode == 0, more.stdout + more.stderr
    planned = _estimated(more.stdout)
    assert planned["questions"] == planned["answers"] == (12, 8)
    assert "subjects" not in planned  # not rebuilt: no calls to estimate
    assert len(fake_llm.requests) - sent == (12 - 8) * 2

    # Sampled otherwise, the cached answers are other requests: none is counted as free.
    project.env["GLAN_ANSWERS_TEMPERATURE"] = "0.3"
    hotter = glan(project, "build", "--dry-run", "--until", "answers")

    assert _estimated(hotter.stdout)["answers"] == (12, 0)


def test_a_level_whose_input_the_plan_cannot_read_is_named_as_not_estimated(project):
    (project.root / "broken.json").write_text('{"not": "a format"')
    (project.root / "collections.yaml").write_text("collections:\n  - name: broken\n    path: broken.json\n")

    dry = glan(project, "build", "--dry-run", "--until", "instructions_unified")

    assert dry.returncode == 0, dry.stdout + dry.stderr
    assert "not estimated (no fan-out here, or an input it cannot read): uit_candidates" in dry.stdout
