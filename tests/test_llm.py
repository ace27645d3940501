"""The LLM resource: retries, rejects, unreachable endpoints, caching, secrets."""

import json
import logging
import subprocess
import sys
import time

import dagster as dg
import pytest

from glan_assets import stages
from glan_assets.glan.answers import RESPOND
from glan_assets.glan.prompts import SUBJECTS_FORMAT
from glan_assets.glan.questions import ASK as QUESTION
from glan_assets.glan.schemas import SessionRow, SubjectRow, SyllabusRow
from glan_assets.glan.sessions import EXTRACT
from glan_assets.glan.subjects import FORMAT
from glan_assets.glan.syllabi import WRITE
from glan_assets.parsing import TRUNCATED
from glan_assets.results import rejects_of
from glan_assets.rows import RejectRow
from glan_assets.registry import settings_from_env
from glan_assets.settings import SettingsError
from glan_assets.stages import Request
from resources.llm import EndpointUnreachable
from resources.storage import DuckDBStore, to_arrow
from tests.conftest import Project
from tests.fault_llm import FaultyLLM

ASK = [{"role": "system", "content": "s"}, {"role": "user", "content": "hello"}]
EXTRACT_SESSIONS = [{"role": "user", "content": "Extract the class sessions of this syllabus\nSyllabus:\nSyllabus of X."}]


def llm_from_env(env: dict):
    """The LLM resource the settings build from `env`, initialized as Dagster would."""
    return settings_from_env(env).llm().process_config_and_initialize()


def test_rate_limits_and_server_errors_are_retried_honouring_retry_after(project, fake_llm):
    fake_llm.fail_next = [(429, {"Retry-After": "1"}), (503, {}), (500, {})]
    llm = llm_from_env(project.env)
    start = time.monotonic()

    batch = stages.run(llm, RESPOND, [Request("q1", ASK)])

    assert batch.replies[0].ok and batch.replies[0].text == "An answer to: hello"
    assert len(fake_llm.requests) == 4
    assert time.monotonic() - start >= 1.0  # waited as Retry-After said


def test_a_request_that_is_never_answered_is_reported_while_it_waits_then_rejected(project, caplog):
    env = project.env | {"GLAN_REQUEST_TIMEOUT": "1", "GLAN_MAX_RETRIES": "1", "GLAN_SLOW_REQUEST": "0.4"}
    with FaultyLLM(kinds=("timeout",), every=1, timeout_s=1.0) as silent:
        llm = llm_from_env(env | {"OPENAI_BASE_URL": silent.base_url})
        with caplog.at_level(logging.WARNING):
            batch = stages.run(llm, RESPOND, [Request("q1", ASK)])

    assert batch.replies[0].error == "timed out after 1 retries"
    assert batch.stats.retries == {"timeout": 1}
    assert len(silent.log) == 2  # the first attempt and its one retry
    waiting = [r.getMessage() for r in caplog.records if "goes on waiting" in r.getMessage()]
    said = "a request to smollm2-135m-instruct has waited 0.4s and goes on waiting (timeout 1s, GLAN_REQUEST_TIMEOUT)"
    assert waiting == [said] * 2  # once per attempt, while it waited


def test_an_endpoint_that_is_down_fails_fast_and_writes_nothing(project, tmp_path):
    project.build("Physics")
    store = DuckDBStore(path=str(project.db))
    before = store.read(SessionRow, "Physics")
    env = project.env | {"OPENAI_BASE_URL": "http://127.0.0.1:9/v1"}  # nothing listens on port 9
    llm = llm_from_env(env | {"GLAN_CACHE": str(tmp_path / "empty-cache.sqlite")})

    start = time.monotonic()
    with pytest.raises(EndpointUnreachable, match="cannot reach the LLM endpoint at http://127.0.0.1:9/v1"):
        stages.run(llm, RESPOND, [Request("q1", ASK)])
    assert time.monotonic() - start < 20
    assert store.read(SessionRow, "Physics") == before


def test_unusable_json_goes_to_rejects_and_the_partition_still_builds(project, fake_llm):
    fake_llm.garbage_for = "Syllabus of Advanced Physics"  # one of two syllabi cannot be parsed
    (summary,) = project.build("Physics")

    assert summary.success
    store = DuckDBStore(path=str(project.db))
    (reject,) = store.read(RejectRow, "Physics")
    assert reject.stage == "sessions" and reject.asset == "sessions"
    assert "unparseable after 3 attempts: no JSON found" in reject.reason
    assert reject.raw_output == "I cannot do JSON, sorry."
    syllabi = {s.syllabus_id for s in store.read(SyllabusRow, "Physics")}
    assert {s.syllabus_id for s in store.read(SessionRow, "Physics")} == syllabi - {reject.parent_id}
    sessions_level = next(lv for lv in summary.levels if lv.asset == "sessions")
    assert sessions_level.rejects == 1 and sessions_level.rows == 3


def test_a_broken_item_of_a_list_is_a_reject_and_its_siblings_are_kept(project, fake_llm, monkeypatch):
    fake_llm.broken_items = True  # the third subject of each listing has no subtopics
    monkeypatch.setenv("GLAN_MAX_SUBJECTS_PER_DISCIPLINE", "0")  # no cap: every valid subject is kept
    (summary,) = project.build("Physics")

    assert summary.success
    store = DuckDBStore(path=str(project.db))
    assert {s.subject_name for s in store.read(SubjectRow, "Physics")} == {"Introduction to Physics", "Advanced Physics"}
    rejects = [r for r in store.read(RejectRow, "Physics") if r.stage == "subjects_format"]
    assert rejects and all(r.reason.startswith("item 3 dropped:") and "subtopics" in r.reason for r in rejects)
    assert all('"Physics Lab"' in r.raw_output for r in rejects)


def test_a_reply_that_copies_the_worked_example_is_asked_again_without_it(project, fake_llm):
    """Given a thin subject list, the embedded model copied the prompt's worked example on every
    attempt, and the discipline failed; asked without the example, it has only the input."""
    fake_llm.copy_examples = True
    llm = llm_from_env(project.env)
    request = Request("dsc_1", SUBJECTS_FORMAT.messages(text="Subjects of Optics: lenses; mirrors."))

    (reply,) = stages.run(llm, FORMAT, [request]).replies

    assert reply.ok, reply.error
    assert [s.subject_name for s in reply.value.subjects] == ["Introduction to Optics", "Advanced Optics", "Optics Lab"]
    first, second = fake_llm.requests
    assert [m["role"] for m in first["messages"]] == ["system", "user", "assistant", "user"]  # the example, once
    assert [m["role"] for m in second["messages"]] == ["system", "user"]
    assert "matching this schema" in second["messages"][-1]["content"]


def test_a_free_text_reply_cut_off_at_max_tokens_is_sampled_again(project, fake_llm):
    """Most of the demo's rejects were answers the embedded model rambled past its 256 tokens;
    another sample of the same question usually ends in time. Only the complete one is kept."""
    fake_llm.cut_off = 1
    llm = llm_from_env(project.env)

    (reply,) = stages.run(llm, RESPOND, [Request("q1", ASK)]).replies

    assert reply.ok and reply.text == "An answer to: hello" and reply.attempts == 2
    first, second = fake_llm.requests
    assert first["messages"] == second["messages"] == ASK  # the same question, sampled anew
    fake_llm.requests.clear()
    (again,) = stages.run(llm, RESPOND, [Request("q1", ASK)]).replies  # a rebuild replays both
    assert (again.text, again.attempts, fake_llm.requests) == (reply.text, 2, [])


def test_a_reply_cut_off_on_every_attempt_is_rejected_as_truncated(project, fake_llm):
    fake_llm.cut_off = 3
    llm = llm_from_env(project.env)

    (reply,) = stages.run(llm, RESPOND, [Request("q1", ASK)]).replies

    assert (reply.ok, reply.error, reply.attempts, len(fake_llm.requests)) == (False, TRUNCATED, 3, 3)


def test_a_partition_whose_every_output_is_unusable_keeps_its_old_rows(project, fake_llm):
    project.build("Physics")
    store = DuckDBStore(path=str(project.db))
    before = store.read(SessionRow, "Physics")
    fake_llm.garbage_for = "Extract the class sessions"
    # A different syllabus prompt version would re-ask; here the cache is cleared instead.
    project.db.with_name("llm_cache.sqlite").unlink()

    (summary,) = project.build("Physics", force=True)  # up to date: only a forced build runs it

    assert not summary.success
    assert "no usable rows (2 rejects" in summary.error and "kept" in summary.error
    assert store.read(SessionRow, "Physics") == before
    assert len(store.read(RejectRow, "Physics")) == 2


def test_responses_are_cached_before_use(project, fake_llm):
    llm = llm_from_env(project.env)
    first = stages.run(llm, EXTRACT, [Request("s", EXTRACT_SESSIONS)])
    again = stages.run(llm, EXTRACT, [Request("s", EXTRACT_SESSIONS)])
    other_sample = stages.run(llm, EXTRACT, [Request("s", EXTRACT_SESSIONS, sample_index=1)])
    assert (first.stats.calls, again.stats.calls, again.stats.cache_hits) == (1, 0, 1)
    assert other_sample.stats.calls == 1  # the sample index is part of the key
    assert first.replies[0].ok and again.replies[0].value == first.replies[0].value


def test_the_api_key_is_sent_but_never_stored(project, fake_llm):
    instance = project.instance
    project.build("Physics")
    assert fake_llm.requests[0]["authorization"] == "Bearer sk-test-secret-key"
    secret = b"sk-test-secret-key"
    for path in project.root.rglob("*"):
        if path.is_file():
            assert secret not in path.read_bytes(), path
    logs = instance.all_logs(instance.get_runs()[0].run_id)
    assert all("sk-test-secret-key" not in (e.message or "") for e in logs)
    run = instance.get_runs()[0]
    assert "sk-test-secret-key" not in str(run.run_config)


def test_each_stage_uses_its_own_model_and_sampling(project, fake_llm):
    env = project.env | {
        "GLAN_ANSWERS_MODEL": "cheap-model",
        "GLAN_QUESTIONS_MODEL": "strong-model",
        "GLAN_QUESTIONS_TEMPERATURE": "1.0",
    }
    llm = llm_from_env(env)
    stages.run(llm, RESPOND, [Request("q", ASK)])
    stages.run(llm, QUESTION, [Request("q", ASK)])
    answers_req, questions_req = fake_llm.requests
    assert (answers_req["model"], answers_req["temperature"], answers_req["top_p"]) == ("cheap-model", 0.7, 0.95)
    assert (questions_req["model"], questions_req["temperature"]) == ("strong-model", 1.0)
    # The demo profile keeps the embedded model at 0.7 or cooler; the paper profile samples as the paper did.
    assert llm.sampling(WRITE.name, WRITE.sampling).temperature == 0.7
    paper = llm_from_env(env | {"GLAN_PROFILE": "paper"})
    assert paper.sampling(WRITE.name, WRITE.sampling).temperature == 1.0
    assert isinstance(llm, dg.ConfigurableResource)


def test_an_unknown_setting_is_refused_before_anything_runs(project):
    with pytest.raises(SettingsError, match="unknown setting GLAN_ANSWER_MODEL"):  # GLAN_ANSWERS_MODEL misspelt
        settings_from_env(project.env | {"GLAN_ANSWER_MODEL": "cheap-model"})


def leaves(value: object) -> list[str]:
    if isinstance(value, str):
        return [value]
    if isinstance(value, dict):
        value = list(value.values())
    return [s for v in value for s in leaves(v)] if isinstance(value, list) else []


def test_a_json_reply_cut_with_finish_stop_is_asked_again_and_replayed_from_the_cache(project):
    """json-repair mends JSON cut in half into valid JSON; finish_reason says "stop". The
    reply is asked again (the same messages), and a rebuild replays both without calls."""
    with FaultyLLM(kinds=("cut", "ok"), every=1) as cutting:  # the first reply is cut, the second whole
        llm = llm_from_env(project.env | {"OPENAI_BASE_URL": cutting.base_url})
        (reply,) = stages.run(llm, EXTRACT, [Request("s", EXTRACT_SESSIONS)]).replies
        first, second = cutting.log
        (again,) = stages.run(llm, EXTRACT, [Request("s", EXTRACT_SESSIONS)]).replies

    assert first["fault"] == "cut" and second["fault"] == "ok"
    assert first["body"]["messages"] == second["body"]["messages"] == EXTRACT_SESSIONS
    assert reply.ok and reply.attempts == 2 and not reply.dropped
    assert reply.value.model_dump() == {"sessions": json.loads(first["full"])["sessions"]}
    assert len(cutting.log) == 2 and (again.value, again.attempts) == (reply.value, 2)


def test_a_json_reply_cut_on_every_attempt_keeps_its_complete_items_and_rejects_the_cut_one(project):
    with FaultyLLM(kinds=("cut",), every=1) as cutting:
        llm = llm_from_env(project.env | {"OPENAI_BASE_URL": cutting.base_url})
        (reply,) = stages.run(llm, EXTRACT, [Request("s", EXTRACT_SESSIONS)]).replies

    assert len(cutting.log) == reply.attempts == 3
    whole = leaves(json.loads(cutting.log[0]["full"]))
    kept = leaves(reply.value.model_dump())
    assert kept and all(s in whole for s in kept)  # no value cut short, 'Found' for 'Foundations of X'
    (cut,) = reply.dropped
    assert cut.index == len(reply.value.sessions) + 1 and cut.reason.startswith("truncated")
    (reject,) = rejects_of("sessions", "Physics", {"sessions": [reply]})
    assert reject.reason.startswith(f"item {cut.index} dropped: truncated") and reject.raw_output == cut.raw


def test_a_cut_reply_keeps_its_complete_items_when_the_attempts_after_it_fail(project):
    with FaultyLLM(kinds=("cut", "wrong_content", "wrong_content"), every=1) as endpoint:
        llm = llm_from_env(project.env | {"OPENAI_BASE_URL": endpoint.base_url})
        (reply,) = stages.run(llm, EXTRACT, [Request("s", EXTRACT_SESSIONS)]).replies

    assert [e["fault"] for e in endpoint.log] == ["cut", "wrong_content", "wrong_content"]
    full = endpoint.log[0]["full"]
    assert reply.ok and reply.attempts == 3 and reply.text == full[: len(full) // 2]  # the cut reply's items
    assert reply.value.sessions and all(s in leaves(json.loads(full)) for s in leaves(reply.value.model_dump()))
    assert reply.dropped[-1].reason.startswith("truncated")


def test_an_oversized_prompt_is_a_reject_never_a_request(project, fake_llm):
    llm = llm_from_env(project.env | {"GLAN_MAX_PROMPT_CHARS": "1000"})
    huge = [{"role": "user", "content": "x" * 5000}]

    big, small = stages.run(llm, RESPOND, [Request("big", huge), Request("q1", ASK)]).replies

    assert (big.ok, big.attempts) == (False, 0)  # attempts sent
    assert big.error == "prompt too long: 5,000 characters, over the cap of 1,000 (GLAN_MAX_PROMPT_CHARS); not sent"
    assert small.ok and [r["messages"] for r in fake_llm.requests] == [ASK]  # the small one only
    assert llm_from_env(project.env).max_prompt_chars == 100_000  # the default


def test_the_settings_know_every_secret_and_redaction_masks_them(caplog):
    from resources import redact

    env = {
        "OPENAI_API_KEY": "sk-settings-key-123", "PGPASSWORD": "pg-password-1", "DAGSTER_PG_PASSWORD": "dagster-pw-2",
        "DAGSTER_CELERY_BROKER": "rediss://:br%40ker-pw-3@queue:6380/0",
        "DAGSTER_CELERY_BACKEND": "redis://u:backend-pw-4@q/1",
        "OPENAI_BASE_URL": "https://user:url-secret-5@llm.example/v1",
    }
    found = settings_from_env(env).secrets()
    for value in ("sk-settings-key-123", "pg-password-1", "dagster-pw-2", "br%40ker-pw-3", "br@ker-pw-3",
                  "backend-pw-4", "url-secret-5"):
        assert value in found
        assert redact.redact(f"said {value}!") == "said ***!"  # from_env registered them
    redact.register("short")  # too short to tell from words: "test" would mask every test split
    assert redact.redact("a short text") == "a short text"
    row = SessionRow(session_id="s", syllabus_id="y", discipline="d", session_index=1, title="see pg-password-1",
                     key_concepts=["dagster-pw-2 here", "clean"], extracted_by="m")
    (written,) = to_arrow(SessionRow, [row]).to_pylist()  # what every store write and release gets
    assert (written["title"], written["key_concepts"]) == ("see ***", ["*** here", "clean"])
    with caplog.at_level(logging.INFO):
        dg.get_dagster_logger("glan.test").warning("the endpoint said %s", "Bearer sk-settings-key-123")
        try:
            raise RuntimeError("failed with backend-pw-4")
        except RuntimeError:
            logging.getLogger("glan.test").exception("oops")
    said, failed = caplog.records[-2:]
    assert said.getMessage() == "the endpoint said Bearer ***"
    assert "backend-pw-4" not in logging.Formatter().format(failed) and "failed with ***" in failed.exc_text


def test_an_endpoint_that_echoes_the_key_leaves_it_nowhere(tmp_path):
    """401 bodies that quote the Authorization header, and answers that quote it: the key is
    in no file of the DuckDB store, the Dagster instance, the build's log or an export."""
    key = "sk-echoed-secret-0123456789"
    with FaultyLLM(kinds=("unauthorized", "echo"), every=2) as echoing:
        project = Project(tmp_path, echoing.base_url)
        project.env["OPENAI_API_KEY"] = key
        (project.dagster_home / "dagster.yaml").write_text("telemetry:\n  enabled: false\n")
        env = project.subprocess_env()
        built = subprocess.run([sys.executable, "-m", "glan_assets.cli", "build", "--until", "answers"], env=env,
                               cwd=project.root, capture_output=True, text=True)
    exported = subprocess.run([sys.executable, "-m", "glan_assets.cli", "export", str(tmp_path / "pairs.jsonl")],
                              env=env, cwd=project.root, capture_output=True, text=True)

    assert exported.returncode == 0, exported.stderr
    assert {e["fault"] for e in echoing.log} >= {"unauthorized", "echo"}
    assert {e["authorization"] for e in echoing.log} == {f"Bearer {key}"}  # sent, then echoed
    assert key not in built.stdout + built.stderr + exported.stdout + exported.stderr
    store = DuckDBStore(path=str(project.db))
    rejects = store.read(RejectRow)
    assert any("invalid credentials: Authorization: Bearer ***" in r.reason for r in rejects)
    pairs = (tmp_path / "pairs.jsonl").read_text()
    assert "(you sent Authorization: Bearer ***)" in pairs  # the echo was stored, masked
    logs = list((project.dagster_home / "logs").glob("build-*.log"))
    assert logs and "rejected" in logs[0].read_text()
    files = [p for p in tmp_path.rglob("*") if p.is_file()]
    assert project.db in files and any("storage" in p.parts for p in files)  # the instance's event log
    assert [p for p in files if key.encode() in p.read_bytes()] == []
