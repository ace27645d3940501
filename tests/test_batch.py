"""The OpenAI Batch API (`resources.batch`) against the fake's `/v1/files` and `/v1/batches`:
misses go as one batch and come back into the cache under the same keys, so a batch build and
an online build give the same rows; an expired, a partly failed and a cancelled batch send
only what was not answered; a step re-attaches to its batch instead of paying twice; the
`llm_batches` sensor polls, shows progress and asks for the level's run."""

import json
import os
import re
import signal
import subprocess
import sys
import time

import dagster as dg
import duckdb
import openai
import pytest

from glan_assets import stages
from glan_assets.batches import poll_batches
from glan_assets.estimate import describe, estimate_build
from glan_assets.glan.answers import RESPOND
from glan_assets.glan.sessions import EXTRACT
from glan_assets.registry import COMPOSED, settings_from_env
from glan_assets.settings import SettingsError
from glan_assets.stages import Request
from resources import batch
from resources.batch import URL, BatchBook, BatchPending, Pending, in_flight, submit
from resources.budget import SpendLedger
from resources.cache import ResponseCache
from tests.conftest import Project
from tests.test_cli import glan

QUESTIONS = [Request(f"q{i}", [{"role": "user", "content": f"question {i}"}], sample_index=i) for i in range(5)]


def llm_of(env: dict):
    return settings_from_env(env).llm().process_config_and_initialize()


def batch_env(project, **more: str) -> dict:
    return project.env | {"GLAN_BATCH": "1", "GLAN_PRICE": "1000000,2000000"} | more


def until_answered(llm, stage, requests, most: int = 10):
    """Run the stage, polling its batches, until it answers: what a build's runs do."""
    for _ in range(most):
        try:
            return stages.run(llm, stage, requests)
        except BatchPending:
            poll_batches(llm)
    raise AssertionError("never answered")


def test_batch_mode_is_a_setting_per_stage_priced_by_a_factor(project):
    llm = llm_of(project.env | {"GLAN_ANSWERS_BATCH": "1", "GLAN_BATCH_PRICE_FACTOR": "0.4"})
    assert llm.stages["answers"].batch and not llm.stages["questions"].batch
    assert llm.batch_price_factor == 0.4
    assert all(s.batch for s in llm_of(project.env | {"GLAN_BATCH": "1"}).stages.values())
    with pytest.raises(SettingsError, match="needs OPENAI_BASE_URL"):
        llm_of({"GLAN_BATCH": "1"})
    with pytest.raises(SettingsError, match="GLAN_BATCH='maybe': expected 1 or 0"):
        llm_of(project.env | {"GLAN_BATCH": "maybe"})


def test_misses_go_as_one_batch_whose_answers_are_the_online_ones(project, fake_llm, tmp_path):
    llm = llm_of(batch_env(project))

    with pytest.raises(BatchPending) as sent:
        stages.run(llm, RESPOND, QUESTIONS)

    assert not fake_llm.requests  # nothing online
    (upload,) = fake_llm.batch_api.uploads
    lines = [json.loads(line) for line in upload.decode().splitlines()]
    # As OpenAI's and vLLM's run-batch read them: the body as sent, without cache-only fields.
    assert [set(line) for line in lines] == [{"custom_id", "method", "url", "body"}] * 5
    assert {line["method"] for line in lines} == {"POST"} and {line["url"] for line in lines} == {URL}
    assert not any("sample_index" in line["body"] for line in lines)
    assert [b.batch_id for b in in_flight(llm.cache_path)] == sent.value.batch_ids

    (polled,) = poll_batches(llm)
    assert (polled.status, polled.completed, polled.failed, polled.downloaded) == ("completed", 5, 0, True)
    batched = stages.run(llm, RESPOND, QUESTIONS)
    online = stages.run(llm_of(project.env | {"GLAN_CACHE": str(tmp_path / "online.sqlite")}), RESPOND, QUESTIONS)

    assert [r.text for r in batched.replies] == [r.text for r in online.replies]
    assert all(r.ok for r in batched.replies) and batched.stats.cache_hits == 5
    cache = ResponseCache(llm.cache_path)
    assert len(cache) == 5 and cache.measured()[("answers", "smollm2-135m-instruct")].responses == 5
    cache.close()


def test_more_requests_than_a_batch_holds_go_as_several_and_re_attach_alike(project, fake_llm, monkeypatch):
    monkeypatch.setattr(batch, "MAX_REQUESTS", 2)
    llm = llm_of(batch_env(project))
    fake_llm.batch_api.hold = True
    with pytest.raises(BatchPending) as first:
        stages.run(llm, RESPOND, QUESTIONS)
    with pytest.raises(BatchPending) as again:
        stages.run(llm, RESPOND, QUESTIONS)

    assert len(first.value.batch_ids) == 3 and again.value.batch_ids == first.value.batch_ids and again.value.attached
    assert [len(u.splitlines()) for u in fake_llm.batch_api.uploads] == [2, 2, 1]
    fake_llm.batch_api.hold = False
    assert all(r.ok for r in until_answered(llm, RESPOND, QUESTIONS).replies)


def test_a_step_re_attaches_to_its_batch_instead_of_paying_twice(project, fake_llm):
    llm = llm_of(batch_env(project))
    fake_llm.batch_api.hold = True
    with pytest.raises(BatchPending) as first:
        stages.run(llm, RESPOND, QUESTIONS)
    poll_batches(llm)  # still in progress

    with pytest.raises(BatchPending) as again:
        stages.run(llm, RESPOND, QUESTIONS)

    assert again.value.attached and again.value.batch_ids == first.value.batch_ids
    assert len(fake_llm.batch_api.uploads) == 1
    fake_llm.batch_api.hold = False
    assert all(r.ok for r in until_answered(llm, RESPOND, QUESTIONS).replies)
    assert len(fake_llm.batch_api.uploads) == 1


def test_a_batch_sent_by_a_step_killed_before_it_recorded_it_is_found_not_sent_again(project, fake_llm, monkeypatch):
    llm = llm_of(batch_env(project))
    fake_llm.batch_api.hold = True

    def killed(*args, **kwargs):
        raise KeyboardInterrupt("killed between batches.create and the record")

    with monkeypatch.context() as m:
        m.setattr(BatchBook, "record", killed)
        with pytest.raises(KeyboardInterrupt):
            stages.run(llm, RESPOND, QUESTIONS)
    with pytest.raises(BatchPending) as again:
        stages.run(llm, RESPOND, QUESTIONS)

    assert again.value.attached and again.value.batch_ids == list(fake_llm.batch_api.batches)
    assert len(fake_llm.batch_api.uploads) == 1
    fake_llm.batch_api.hold = False
    assert all(r.ok for r in until_answered(llm, RESPOND, QUESTIONS).replies)


def test_an_expired_batch_keeps_its_answers_and_sends_only_the_rest_again(project, fake_llm):
    llm = llm_of(batch_env(project))
    fake_llm.batch_api.expire_after = 2
    with pytest.raises(BatchPending):
        stages.run(llm, RESPOND, QUESTIONS)
    (expired,) = poll_batches(llm)
    assert (expired.status, expired.completed, expired.failed) == ("expired", 2, 3)

    fake_llm.batch_api.expire_after = None
    with pytest.raises(BatchPending) as rest:
        stages.run(llm, RESPOND, QUESTIONS)

    assert rest.value.requests == 3
    assert len(fake_llm.batch_api.uploads[1].decode().splitlines()) == 3
    assert all(r.ok for r in until_answered(llm, RESPOND, QUESTIONS).replies)


def test_failed_lines_go_again_and_a_line_that_keeps_failing_is_a_reject(project, fake_llm):
    llm = llm_of(batch_env(project, GLAN_MAX_RETRIES="1"))
    fake_llm.batch_api.fail_every = 2  # lines 2 and 4 answer 500
    with pytest.raises(BatchPending):
        stages.run(llm, RESPOND, QUESTIONS)
    (partly,) = poll_batches(llm)
    assert (partly.completed, partly.failed) == (3, 2)

    fake_llm.batch_api.fail_every = 0
    with pytest.raises(BatchPending) as again:
        stages.run(llm, RESPOND, QUESTIONS)
    assert again.value.requests == 2
    assert all(r.ok for r in until_answered(llm, RESPOND, QUESTIONS).replies)

    # Failing in more batches than GLAN_MAX_RETRIES allows, a request is a reject with the reason.
    fake_llm.batch_api.fail_every = 1
    other = [Request("x", [{"role": "user", "content": "other"}])]
    for _ in range(2):
        with pytest.raises(BatchPending):
            stages.run(llm, RESPOND, other)
        poll_batches(llm)
    (reply,) = stages.run(llm, RESPOND, other).replies
    assert reply.error == "batch request failed in 2 batches: server_error: injected"


def test_a_batch_cancelled_by_hand_keeps_what_was_answered(project, fake_llm):
    llm = llm_of(batch_env(project))
    fake_llm.batch_api.hold = True
    fake_llm.batch_api.answer_before_cancel = 1
    with pytest.raises(BatchPending) as sent:
        stages.run(llm, RESPOND, QUESTIONS)

    openai.OpenAI(base_url=fake_llm.base_url, api_key="k").batches.cancel(*sent.value.batch_ids)
    (cancelled,) = poll_batches(llm)

    assert (cancelled.status, cancelled.completed, cancelled.failed) == ("cancelled", 1, 4)
    with pytest.raises(BatchPending) as rest:
        stages.run(llm, RESPOND, QUESTIONS)
    assert rest.value.requests == 4


def test_a_batch_the_api_refuses_says_why_and_goes_again_when_asked(project, fake_llm):
    llm = llm_of(batch_env(project, GLAN_MAX_RETRIES="1"))
    fake_llm.batch_api.refuse = True
    with pytest.raises(BatchPending):
        stages.run(llm, RESPOND, QUESTIONS)
    (refused,) = poll_batches(llm)
    assert (refused.status, refused.error) == ("failed", "invalid_model: the model is not available for batches")

    fake_llm.batch_api.refuse = False
    assert all(r.ok for r in until_answered(llm, RESPOND, QUESTIONS).replies)
    assert len(fake_llm.batch_api.uploads) == 2

    # Refused in more batches than GLAN_MAX_RETRIES allows, the request is a reject with the API's reason.
    fake_llm.batch_api.refuse = True
    other = [Request("x", [{"role": "user", "content": "other"}])]
    (reply,) = until_answered(llm, RESPOND, other).replies
    assert reply.error == ("batch request failed in 2 batches: batch_failed: "
                           "invalid_model: the model is not available for batches")


def test_the_estimate_prices_batch_stages_at_the_batch_price(project):
    project.env |= {"GLAN_PRICE": "1,2"}
    online, _ = estimate_build([(m.method, m.partitions) for m in project.plan().methods], project.resources(), 1)
    project.env |= {"GLAN_ANSWERS_BATCH": "1"}
    batched, _ = estimate_build([(m.method, m.partitions) for m in project.plan().methods], project.resources(), 1)

    cost = {s.stage: s.cost_usd for s in online.stages}
    assert {s.stage: s.cost_usd for s in batched.stages} == cost | {"answers": pytest.approx(cost["answers"] / 2)}
    assert batched.batch_stages == ("answers",)
    assert "  batch (GLAN_BATCH): answers, at 0.5 of the price (GLAN_BATCH_PRICE_FACTOR)" in "\n".join(describe(batched))


def test_a_re_ask_goes_in_the_next_batch(project, fake_llm):
    llm = llm_of(batch_env(project))
    fake_llm.garbage_for = "Syllabus of X"  # the extraction's first reply does not parse
    request = [Request("s1", [{"role": "user", "content": "Extract the class sessions of this syllabus\nSyllabus:\nSyllabus of X."}])]

    (reply,) = until_answered(llm, EXTRACT, request).replies

    assert reply.error and reply.error.startswith("unparseable after 3 attempts")
    # A batch per new attempt: the third asks what the second did, which is cached (as online).
    assert len(fake_llm.batch_api.uploads) == 2
    assert not fake_llm.requests


GENERATION = ("fields", "disciplines", "subjects", "syllabi", "sessions", "questions", "answers")


def tables(db) -> dict[str, list[tuple]]:
    """Every GLAN level's rows, sorted, read-only."""
    con = duckdb.connect(str(db), read_only=True)
    try:
        return {t: sorted(con.execute(f"SELECT * FROM {t}").fetchall(), key=repr) for t in GENERATION}
    finally:
        con.close()


def test_a_batch_build_and_an_online_build_give_identical_tables(project, fake_llm, tmp_path, monkeypatch):
    (tmp_path / "online").mkdir()
    online = Project(tmp_path / "online", fake_llm.base_url)
    with monkeypatch.context() as m:
        for k, v in online.env.items():
            m.setenv(k, v)
        assert all(s.success for s in online.build())
    sent_online = len(fake_llm.requests)
    monkeypatch.setenv("GLAN_BATCH", "1")
    project.env["GLAN_BATCH"] = "1"
    llm = project.resources()["llm"]
    fake_llm.batch_api.hold = True

    (first,) = project.build("Physics")
    (again,) = project.build("Physics")  # the step finds its batch going: it re-attaches

    assert first.success and [b.level for b in first.batches] == ["subjects"]
    assert [b.batch_id for b in again.batches] == [b.batch_id for b in first.batches]
    assert len(fake_llm.batch_api.uploads) == 1
    fake_llm.batch_api.hold = False
    for _ in range(12):
        if not project.plan().partitions:
            break
        project.build()
        poll_batches(llm)

    assert not project.plan().partitions and not in_flight(llm.cache_path)
    assert len(fake_llm.requests) == sent_online  # the batch build sent nothing online
    assert tables(project.db) == tables(online.db)
    # Each request went once: no batch carried a line another had answered.
    answered = [line["custom_id"] for line in fake_llm.batch_api.lines]
    assert len(answered) == len(set(answered))


def test_the_sensor_shows_progress_downloads_and_builds_the_level_and_below(project, fake_llm):
    llm = llm_of(batch_env(project))
    api = openai.OpenAI(base_url=fake_llm.base_url, api_key="k")
    book = BatchBook(llm.cache_path)
    body = {"model": "m", "messages": [{"role": "user", "content": "q"}], "sample_index": 0}
    sent = submit(api, book, "questions", "Physics", [Pending("k1", body, body, "questions", 1.0, 2.0)], "run-1", "build-1")
    book.close()
    sensor = COMPOSED.definitions(settings_from_env(project.env).resources()).get_sensor_def("llm_batches")
    fake_llm.batch_api.hold = True

    going = sensor(dg.build_sensor_context(instance=project.instance, resources={"llm": llm}))

    assert not going.run_requests
    (seen,) = going.asset_events
    assert seen.asset_key == dg.AssetKey("questions") and seen.partition == "Physics"
    assert {k: v.value for k, v in seen.metadata.items()} == {
        "batch_id": sent.batch_ids[0], "batch_status": "in_progress", "completed": 0, "failed": 0, "total": 1}

    fake_llm.batch_api.hold = False
    done = sensor(dg.build_sensor_context(instance=project.instance, resources={"llm": llm}))

    (request,) = done.run_requests
    assert request.partition_key == "Physics" and request.job_name == "build_discipline"
    assert [k.to_user_string() for k in request.asset_selection] == ["questions", "answers", "glan_quality"]
    assert done.asset_events[0].metadata["batch_status"].value == "completed"
    assert not sensor(dg.build_sensor_context(instance=project.instance, resources={"llm": llm})).run_requests
    ledger = SpendLedger(llm.cache_path)
    assert ledger.spent("build-1") > 0  # the batch's spend is its build's
    ledger.close()


def test_glan_build_re_attaches_after_a_kill_then_waits_for_its_batches(project, fake_llm, tmp_path):
    """The real path: `glan build` with a Dagster instance in DAGSTER_HOME and a DuckDB file."""
    (tmp_path / "online").mkdir()
    online = Project(tmp_path / "online", fake_llm.base_url)
    assert glan(online, "build", "--until", "answers").returncode == 0
    project.env |= {"GLAN_BATCH": "1", "GLAN_BATCH_POLL": "0.2", "GLAN_PRICE": "1,2"}
    fake_llm.batch_api.hold = True
    cache = project.db.with_name("llm_cache.sqlite")
    log = tmp_path / "killed.out"
    with log.open("w") as out:
        killed = subprocess.Popen(
            [sys.executable, "-m", "glan_assets.cli", "build", "--until", "answers", "--workers", "1", "--wait"],
            env=project.subprocess_env() | {"PYTHONUNBUFFERED": "1"}, cwd=project.root, stdout=out,
            stderr=subprocess.STDOUT, start_new_session=True,
        )
        deadline = time.monotonic() + 300
        while "waiting on 2 LLM batch(es)" not in log.read_text() and time.monotonic() < deadline:
            time.sleep(0.1)
        os.killpg(killed.pid, signal.SIGKILL)  # while it waits on its batch
        killed.wait()
    assert "at 0.5 of the price" in log.read_text()  # the plan's estimate prices the batch stages
    assert len(in_flight(cache)) == 2  # each discipline's subjects

    again = glan(project, "build", "--until", "answers", "--workers", "1")  # the batch is still going

    assert again.returncode == 0, again.stdout + again.stderr
    assert re.search(r"batch batch_\d+ for subjects\[\w+\]: in_progress, 0/\d+ done, 0 failed; in flight, not sent again",
                     again.stdout)
    assert again.stdout.count("[wait]") == 2 and "LLM batch(es) in flight: `glan build` again" in again.stdout

    fake_llm.batch_api.hold = False
    waited = glan(project, "build", "--until", "answers", "--workers", "1", "--wait")

    assert waited.returncode == 0, waited.stdout + waited.stderr
    assert "built 2/2 partitions" in waited.stdout
    # Its runs asked nothing online; its batches' spend is its own.
    assert re.search(r"LLM calls over 0 run\(s\) and [1-9]\d* batch\(es\) in this build", waited.stdout)
    assert tables(project.db) == tables(online.db)
    sets = [frozenset(json.loads(line)["custom_id"] for line in upload.splitlines()) for upload in fake_llm.batch_api.uploads]
    assert len(sets) == len(set(sets))  # no batch was sent twice
    answered = [line["custom_id"] for line in fake_llm.batch_api.lines]
    assert len(answered) == len(set(answered))
    # The key went to the endpoint only: in no file of the project (DuckDB, cache, Dagster's event log, logs).
    assert not [p for p in project.root.rglob("*") if p.is_file() and b"sk-test-secret-key" in p.read_bytes()]
