"""Faults real endpoints and machines produce: nothing planned is lost, nothing is stored twice.

An endpoint that fails a fifth of its requests, a killed run, two builds at once on a new
Dagster home, and taxonomy files that are huge, deep, not UTF-8 or full of braces and quotes.
"""

import json
import os
import re
import shutil
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import dagster as dg
import pytest

from glan_assets.glan.prompts import ANSWER
from glan_assets.glan.schemas import AnswerRow, QuestionRow, SessionRow, SubjectRow, SyllabusRow
from glan_assets.build import build, plan_build
from glan_assets.rows import RejectRow
from glan_assets.uit.schemas import CandidateRow, UnifiedRow
from resources.storage import DuckDBStore
from tests.conftest import Project
from tests.fault_llm import CONTENT, TRANSPORT, FaultyLLM

REPO = Path(__file__).resolve().parent.parent

# Each level with an LLM call: (its rows, the rows it was asked for, how a row names that item).
ASKED = [
    (SyllabusRow, SubjectRow, "subject_id"),
    (SessionRow, SyllabusRow, "syllabus_id"),
    (AnswerRow, QuestionRow, "question_id"),
]


def accounted(store: DuckDBStore, discipline: str) -> None:
    """Every item a level asked the LLM for has a row or a reject with its reason."""
    rejects = store.read(RejectRow, discipline)
    assert all(r.reason for r in rejects)
    for row_type, asked_type, parent in ASKED:
        asked = {getattr(r, asked_type.id_column) for r in store.read(asked_type, discipline)}
        produced = {getattr(r, parent) for r in store.read(row_type, discipline)}
        rejected = {r.parent_id for r in rejects if r.asset == row_type.table}
        assert asked <= produced | rejected, f"{row_type.table}: items neither produced nor rejected"
    with_sessions = {s.syllabus_id for s in store.read(SessionRow, discipline)}
    planned = 2 * len(with_sessions)  # questions_per_syllabus, for each syllabus that has sessions
    questions = store.read(QuestionRow, discipline)
    assert len(questions) + len([r for r in rejects if r.asset == "questions"]) == planned


def level_metadata(instance: dg.DagsterInstance, key: str) -> dict[str, dict]:
    found = {}
    for name in ("subjects", "syllabi", "sessions", "questions", "answers"):
        records = instance.fetch_materializations(
            dg.AssetRecordsFilter(dg.AssetKey(name), asset_partitions=[key]), limit=1
        ).records
        found[name] = {k: v.value for k, v in records[0].asset_materialization.metadata.items()}
    return found


@pytest.mark.parametrize("fault", TRANSPORT + CONTENT)
def test_a_partition_completes_when_a_fifth_of_requests_fail(tmp_path, monkeypatch, fault):
    with FaultyLLM(kinds=(fault,), timeout_s=1.5) as llm:
        project = Project(tmp_path, llm.base_url)
        project.env |= {"GLAN_REQUEST_TIMEOUT": "1.5", "GLAN_MAX_RETRIES": "10"}
        for k, v in project.env.items():
            monkeypatch.setenv(k, v)
        (summary,) = project.build("Physics")

    assert summary.success, summary.error
    assert llm.faults().get(fault, 0) > 0, "the fault was injected"
    store = DuckDBStore(path=str(project.db))
    accounted(store, "Physics")
    retries = sum(md["retries"] for md in level_metadata(project.instance, "Physics").values())
    if fault in TRANSPORT:
        assert retries == llm.faults()[fault]  # every failed attempt was retried, and counted
    else:
        assert retries == 0
    if fault == "truncated":  # a cut-off answer is sampled again, not kept
        cut = [i for i, e in enumerate(llm.log) if e["fault"] == "truncated"
               and e["body"]["messages"][0]["content"] == ANSWER.system]
        assert cut, "answers were cut off"
        for i in cut:
            assert any(e["body"]["messages"] == llm.log[i]["body"]["messages"] for e in llm.log[i + 1:])


GENERATED = (SubjectRow, SyllabusRow, SessionRow, QuestionRow, AnswerRow)


def leaves(value: object) -> list[str]:
    if isinstance(value, str):
        return [value]
    if isinstance(value, dict):
        value = list(value.values())
    return [s for v in value for s in leaves(v)] if isinstance(value, list) else []


# The columns that hold values of structured replies (subjects, sessions), in every table
# that copies them.
FROM_JSON = {
    SubjectRow: ("subject_name", "level", "subtopics"),
    SyllabusRow: ("subject_name", "level"),
    SessionRow: ("title", "key_concepts"),
    QuestionRow: ("key_concepts",),
}


def stored_strings(store: DuckDBStore, columns: dict | None = None) -> set[str]:
    """Every string, or string in a list, of the generated rows (of `columns` only, when
    given); not the rejects, whose raw output is the cut text, kept to say what was refused."""
    return {s for row_type in GENERATED for row in store.read(row_type)
            for s in leaves(row.model_dump(include=set(columns.get(row_type, ())) if columns else None))}


def test_json_cut_in_half_with_finish_stop_is_asked_again_and_never_stored(tmp_path, monkeypatch):
    """40% of structured replies cut in half, finish_reason "stop". json-repair mends each
    into valid JSON whose last value is cut short ('Stub method history' for 'Stub method
    history law 7f3a'); such values had been stored, and later prompts carried them."""
    results = {}
    for name, rate in (("whole", 0.0), ("cut", 0.4)):
        (tmp_path / name).mkdir()
        with FaultyLLM(kinds=(), cut_rate=rate) as llm:
            project = Project(tmp_path / name, llm.base_url)
            # Re-asks are drawn anew; at 40% a request is cut 3 times running 6.4% of the time.
            project.env["GLAN_PARSE_ATTEMPTS"] = "8"
            for k, v in project.env.items():
                monkeypatch.setenv(k, v)
            summaries = project.build()
            asked = len(llm.log)
            again = project.build(force=True)  # every attempt replays from the cache
            assert len(llm.log) == asked
        assert all(s.success for s in summaries + again), [s.error for s in summaries + again]
        results[name] = (DuckDBStore(path=str(project.db)), llm)

    store, llm = results["cut"]
    structured = [e for e in llm.log if "response_format" in e["body"]]
    cut = [i for i, e in enumerate(llm.log) if e["fault"] == "cut"]
    assert len(cut) >= 0.25 * len(structured), (len(cut), len(structured))
    for i in cut:  # asked again, with the same messages
        assert any(e["body"]["messages"] == llm.log[i]["body"]["messages"] for e in llm.log[i + 1 :])
    # (a) no stored value is a strict prefix of a value the endpoint would give uncut
    whole = {s for e in structured for s in leaves(json.loads(e["full"]))}
    from_json = stored_strings(store, FROM_JSON)
    assert from_json and [s for s in from_json - whole if any(w.startswith(s) for w in whole)] == []
    # (b) once the re-asks succeed, every level has the rows of a build without faults
    clean, _ = results["whole"]
    for row_type in GENERATED:
        assert len(store.read(row_type)) == len(clean.read(row_type)) > 0, row_type.table
    assert store.read(RejectRow) == clean.read(RejectRow) == []
    assert stored_strings(store) == stored_strings(clean)


def test_an_instruction_of_a_megabyte_is_a_reject_and_never_sent(project, fake_llm, monkeypatch):
    huge = "Answer the question. " + "x" * 1_000_000
    rows = [{"instruction": "Classify the sentiment.", "input": t, "output": o}
            for t, o in (("Great phone.", "positive"), ("Broke at once.", "negative"))]
    rows += [{"instruction": huge, "input": f"q{i}", "output": f"a{i}"} for i in range(2)]
    collection = project.root / "big.jsonl"
    collection.write_text("".join(json.dumps(r) + "\n" for r in rows))
    (project.root / "collections.yaml").write_text(f"collections:\n  - name: big\n    path: {collection}\n")
    project.env["GLAN_CANDIDATES_PER_TASK"] = "1"
    monkeypatch.setenv("GLAN_CANDIDATES_PER_TASK", "1")
    plan = plan_build(project.instance, project.resources(), only={"collection": ("big",)},
                      until="instructions_unified")

    (summary,) = build(project.instance, plan.partitions, workers=1)

    assert summary.success, summary.error
    assert all("x" * 1000 not in p for p in fake_llm.prompts())  # nothing of it was sent
    assert len(fake_llm.requests) == 1  # the other task's one candidate
    store = DuckDBStore(path=str(project.db))
    (refused,) = [r for r in store.read(RejectRow, "big") if "prompt too long" in r.reason]
    size = int(re.search(r"prompt too long: ([\d,]+) characters", refused.reason).group(1).replace(",", ""))
    assert size > 1_000_000 and "over the cap of 100,000" in refused.reason
    assert (refused.asset, refused.attempts) == ("uit_candidates", 0)  # none sent
    assert len(store.read(CandidateRow, "big")) == 1
    assert {u.output for u in store.read(UnifiedRow, "big")} == {"positive", "negative"}


def glan(project: Project, *args: str, **kw) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "glan_assets.cli", *args], env=project.subprocess_env(),
                          cwd=project.root, capture_output=True, text=True, **kw)


def test_a_killed_run_process_resumes_without_duplicates_or_losses(project, fake_llm):
    fake_llm.delay_s = 0.3
    env = project.subprocess_env() | {"GLAN_MAX_CONCURRENCY": "2"}
    proc = subprocess.Popen([sys.executable, "-m", "glan_assets.cli", "build", "--workers", "2", "--until", "answers"],
                            env=env, cwd=project.root, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
                            start_new_session=True)
    instance = dg.DagsterInstance.from_config(str(project.dagster_home))
    deadline = time.monotonic() + 120
    victim = None
    while victim is None and time.monotonic() < deadline:  # the worker running one discipline's run
        runs = instance.get_runs(dg.RunsFilter(statuses=[dg.DagsterRunStatus.STARTED]))
        if runs and len(fake_llm.completed) >= 6:
            victim = runs[0]
        time.sleep(0.05)
    assert victim is not None, "no run started"
    in_flight = len(fake_llm.requests) - len(fake_llm.completed)
    os.kill(int(victim.tags["glan/pid"]), signal.SIGKILL)
    out, _ = proc.communicate(timeout=300)
    assert proc.returncode == 1, out
    assert "Traceback" not in out and victim.tags["glan/partition"] in out
    first_run = {json.dumps(r["messages"]) for r in fake_llm.requests}
    fake_llm.requests.clear()
    fake_llm.delay_s = 0

    resumed = glan(project, "build", "--until", "answers")

    assert resumed.returncode == 0, resumed.stdout + resumed.stderr
    assert "marked 1 run(s) of killed builds as failed" in resumed.stdout
    assert f"build  {victim.tags['glan/partition']}" in resumed.stdout
    repeated = [r for r in fake_llm.requests if json.dumps(r["messages"]) in first_run]
    assert len(repeated) <= max(in_flight, 2) + 2  # what was in flight when it died, at most
    answers = DuckDBStore(path=str(project.db)).read(AnswerRow)
    assert len(answers) == 8 and len({a.answer_id for a in answers}) == 8
    status = instance.get_run_by_id(victim.run_id).status
    assert status == dg.DagsterRunStatus.FAILURE  # no longer holds a run slot


def test_two_builds_at_once_on_a_new_dagster_home(project, fake_llm):
    env = project.subprocess_env()
    procs = [
        subprocess.Popen([sys.executable, "-m", "glan_assets.cli", "build", "--until", "answers"], env=env,
                         cwd=project.root, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
        for _ in range(2)
    ]
    outs = [p.communicate(timeout=300)[0] for p in procs]

    assert [p.returncode for p in procs] == [0, 0], outs
    assert not any("Traceback" in out or "alembic" in out for out in outs)
    assert sum("waiting for another glan build" in out for out in outs) == 1
    assert any("up to date: 2 discipline(s)" in out for out in outs)  # the second found it built
    assert len(DuckDBStore(path=str(project.db)).read(AnswerRow)) == 8
    assert glan(project, "build", "--until", "answers").returncode == 0  # the home still works


ODD_NAMES = [
    "Physics {subject}",
    "Chemistry {{x}}",
    "Biology ${HOME}",
    "Geology 'quoted' \"twice\"",
    "Botany'); DROP TABLE answers; --",
    "Zoology " + "z" * 5000,
]


def test_names_with_braces_quotes_and_sql_are_data(project, fake_llm):
    lines = ["fields:", "  - name: Natural Sciences", "    sub_fields:", "      - name: All", "        disciplines:"]
    project.taxonomy.write_text("\n".join(lines + [f"          - name: {json.dumps(n)}" for n in ODD_NAMES]) + "\n")

    summaries = project.build()

    assert [s.success for s in summaries] == [True] * len(ODD_NAMES), [s.error for s in summaries]
    store = DuckDBStore(path=str(project.db))
    assert {a.discipline for a in store.read(AnswerRow)} == set(ODD_NAMES)
    asked = "\n".join(fake_llm.prompts())
    assert 'learn in "Physics {subject}"' in asked and "Biology ${HOME}" in asked
    assert str(os.environ.get("HOME")) not in asked.replace(str(project.root), "")


def test_a_huge_taxonomy_plans_in_seconds(project):
    lines = ["fields:", "  - name: Everything", "    sub_fields:", "      - name: All", "        disciplines:"]
    project.taxonomy.write_text("\n".join(lines + [f"          - name: D{i:05d}" for i in range(10_000)]) + "\n")

    start = time.monotonic()
    out = glan(project, "build", "--dry-run", timeout=120)

    assert out.returncode == 0, out.stderr
    assert out.stdout.count(".. glan_quality (new)") == 20
    assert "build  9980 more disciplines (9980 new)" in out.stdout
    assert time.monotonic() - start < 60


@pytest.mark.parametrize(
    "content, message",
    [
        (b"fields:\n  - name: Caf\xe9\n", "taxonomy.yaml:2: not UTF-8"),
        (("fields:\n  - name: x\n    sub_fields: " + "[" * 5000 + "]" * 5000 + "\n").encode(), "nested too deeply"),
    ],
    ids=["not-utf8", "deep"],
)
def test_an_unreadable_taxonomy_is_a_clear_error_and_nothing_is_lost(project, content, message):
    assert glan(project, "build", "--until", "answers").returncode == 0
    project.taxonomy.write_bytes(content)

    out = glan(project, "build", "--until", "answers")

    assert out.returncode == 1 and "Traceback" not in out.stderr
    assert message in out.stderr
    assert len(DuckDBStore(path=str(project.db)).read(AnswerRow)) == 8


def test_read_only_commands_do_not_create_a_database(project):
    out = glan(project, "lineage", "ans_0123456789abcdef")
    assert out.returncode == 1 and "no data at" in out.stderr
    assert not project.db.exists()


def test_an_unknown_id_and_an_unwritable_export_are_clear_errors(project, tmp_path):
    assert glan(project, "build", "--until", "answers").returncode == 0
    out = glan(project, "lineage", "xyz_123")
    assert out.returncode == 1
    assert "error: 'xyz_123' is not a glan id" in out.stderr
    (tmp_path / "file").write_text("")
    for target in (tmp_path / "file" / "pairs.jsonl", "/proc/pairs.parquet"):
        out = glan(project, "export", "--format", "parquet" if str(target).endswith("parquet") else "jsonl", str(target))
        assert out.returncode == 1 and "Traceback" not in out.stderr, out.stderr
        assert f"cannot write {target}" in out.stderr


def test_an_unknown_setting_is_an_error_before_anything_runs(project):
    out = subprocess.run([sys.executable, "-m", "glan_assets.cli", "build"], cwd=project.root, capture_output=True,
                         text=True, env=project.subprocess_env() | {"GLAN_QUESTIONS_PER_SYLABUS": "3"})
    assert out.returncode == 2 and "unknown setting GLAN_QUESTIONS_PER_SYLABUS" in out.stderr
    out = subprocess.run([sys.executable, "-m", "glan_assets.cli", "build"], cwd=project.root, capture_output=True,
                         text=True, env=project.subprocess_env() | {"GLAN_PROFILE": "papr"})
    assert out.returncode == 2 and "GLAN_PROFILE='papr'" in out.stderr
    assert not project.db.exists()


@pytest.mark.timeout(600)
def test_a_build_while_dagster_dev_serves_the_same_instance(project, fake_llm):
    """The taxonomy sensor in `dagster dev` and `glan build` both find the new disciplines;
    neither fails on the other's writes, and the rows are those of one build."""
    fake_llm.delay_s = 0.05
    shutil.copy(REPO / "dagster_home" / "dagster.yaml", project.dagster_home)
    log = open(project.root / "dagster-dev.log", "w")
    dev = subprocess.Popen([str(Path(sys.executable).parent / "dagster"), "dev", "-h", "127.0.0.1", "-p",
                            str(free_port()), "-w", "workspace.yaml"], cwd=REPO, env=project.subprocess_env(),
                           stdout=log, stderr=subprocess.STDOUT, start_new_session=True)
    try:
        instance = dg.DagsterInstance.from_config(str(project.dagster_home))
        deadline = time.monotonic() + 180
        while not instance.get_runs() and time.monotonic() < deadline:  # the sensor's first runs
            time.sleep(0.5)
        assert instance.get_runs(), (project.root / "dagster-dev.log").read_text()[-3000:]
        out = glan(project, "build", "--until", "answers", timeout=300)
        assert out.returncode == 0 and "Traceback" not in out.stdout + out.stderr, out.stdout + out.stderr
        while any(not r.is_finished for r in instance.get_runs()) and time.monotonic() < deadline + 120:
            time.sleep(0.5)
    finally:
        os.killpg(dev.pid, signal.SIGKILL)
        dev.wait()
        log.close()
    answers = DuckDBStore(path=str(project.db)).read(AnswerRow)
    assert len(answers) == 8 and len({a.answer_id for a in answers}) == 8
    assert "up to date: 2 discipline(s)" in glan(project, "build", "--until", "answers", "--dry-run").stdout


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]
