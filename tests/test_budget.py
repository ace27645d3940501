"""GLAN_BUDGET_USD: the spend table several processes write at once, and a build that the
budget refuses, then stops, then resumes through the cache (the fake endpoint, real path)."""

import json
import multiprocessing
import re

import dagster as dg
import pytest

from glan_assets.glan.schemas import DisciplineRow
from glan_assets.registry import settings_from_env
from glan_assets.settings import SettingsError
from resources.budget import BUILD_TAG, Spend, SpendLedger
from resources.storage import DuckDBStore
from tests.test_cli import glan


def test_the_budget_is_a_typed_setting_unset_by_default():
    assert settings_from_env({}).llm().budget_usd == 0
    assert settings_from_env({"GLAN_BUDGET_USD": "2.5"}).llm().budget_usd == 2.5
    with pytest.raises(SettingsError, match="GLAN_BUDGET_USD='ten': expected a number"):
        settings_from_env({"GLAN_BUDGET_USD": "ten"}).llm()


def _add_many(path: str, run_id: str, n: int) -> None:
    ledger = SpendLedger(path)
    for _ in range(n):
        ledger.add(run_id, "build-1", Spend(1, 10, 20, 0.5, 0.1))
    ledger.close()


def test_spend_of_every_run_of_a_build_adds_up_across_processes(tmp_path):
    path = str(tmp_path / "llm_cache.sqlite")
    SpendLedger(path).close()
    procs = [multiprocessing.get_context("spawn").Process(target=_add_many, args=(path, f"run-{i}", 200)) for i in range(3)]
    for p in procs:
        p.start()
    for p in procs:
        p.join(60)
    ledger = SpendLedger(path)
    ledger.add("run-other", "build-2", Spend(2, 1, 1, 7.0, 4.0))  # the last build: its latency is read back

    assert ledger.spent("build-1") == pytest.approx(300.0)
    assert {run: s.calls for run, s in ledger.runs("build-1").items()} == {"run-0": 200, "run-1": 200, "run-2": 200}
    assert ledger.total().cost_usd == pytest.approx(307.0)
    assert ledger.last_latency() == (2.0, 2)


def test_a_budget_refuses_then_stops_a_build_which_resumes_through_the_cache(project, fake_llm):
    # $1 a token: the fake's first calls already cost about $100.
    priced = {"GLAN_PRICE": "1000000,1000000", "GLAN_MAX_CONCURRENCY": "1"}
    project.env |= priced | {"GLAN_BUDGET_USD": "300"}

    refused = glan(project, "build", "--until", "answers", "--workers", "1")

    assert refused.returncode == 1
    assert "over the budget, GLAN_BUDGET_USD=$300" in refused.stdout
    assert "not started: the estimate" in refused.stderr and "--yes" in refused.stderr
    assert not fake_llm.requests

    stopped = glan(project, "build", "--until", "answers", "--workers", "1", "--yes")

    assert stopped.returncode == 1, stopped.stdout + stopped.stderr
    # Physics is cut short at its first call past the budget; Astronomy, built after it, at its first call.
    reason = r"budget reached: this build spent \$[\d.]+ of GLAN_BUDGET_USD=\$300, so no new LLM call was sent"
    assert re.search(rf"^\[FAIL\] Physics: .*\n +\w+: .*{reason}", stopped.stdout, re.MULTILINE)
    assert re.search(rf"^\[FAIL\] Astronomy: .*\n +subjects: .*{reason}", stopped.stdout, re.MULTILINE)
    sent = [json.dumps(r["messages"]) for r in fake_llm.requests]
    assert 0 < len(sent) < 32
    ledger = SpendLedger(project.db.with_name("llm_cache.sqlite"))
    (build_id,) = {run.tags[BUILD_TAG] for run in dg.DagsterInstance.from_config(str(project.dagster_home)).get_runs()}
    spent = ledger.spent(build_id)
    assert 300 <= spent < 300 + 200  # over by at most the one call in flight
    assert len(ledger.runs(build_id)) == 1  # Astronomy's run sent nothing
    assert f"${spent:.4f} for {len(sent)} LLM calls over 1 run(s) in this build" in stopped.stdout
    assert len(DuckDBStore(path=str(project.db)).read(DisciplineRow)) == 2  # what was built stays

    del project.env["GLAN_BUDGET_USD"]
    resumed = glan(project, "build", "--until", "answers", "--workers", "1")

    assert resumed.returncode == 0, resumed.stdout + resumed.stderr
    again = [json.dumps(r["messages"]) for r in fake_llm.requests[len(sent):]]
    assert not set(again) & set(sent)  # the calls paid for before came from the cache
    assert len(sent) + len(again) == 32
    assert ledger.total().calls == 32
