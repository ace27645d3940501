"""Building disciplines end to end against the fake endpoint, and the build's worker pool."""

import os
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import dagster as dg
import pytest

from glan_assets.build import LevelProgress, PartitionSummary, build, plan_build
from glan_assets.glan.prompts import ANSWER
from glan_assets.glan.schemas import AnswerRow, QuestionRow, SessionRow, SubjectRow
from glan_assets.lineage import chain
from glan_assets.registry import LEVELS
from glan_assets.workers import worker_pool
from resources.storage import DuckDBStore


def test_build_fills_every_level_with_linked_rows(project):
    summaries = project.build()
    assert [s.success for s in summaries] == [True, True], [s.error for s in summaries]

    store = DuckDBStore(path=str(project.db))
    answers = store.read(AnswerRow)
    # 2 subjects (demo cap) x 2 questions per syllabus x 2 disciplines
    assert len(answers) == 8
    assert {a.discipline for a in answers} == {"Physics", "Astronomy"}
    kinds = {q.kind for q in store.read(QuestionRow)}
    assert kinds == {"basic", "harder"}  # harder_question_fraction 0.5 of 8 questions gives both
    tables = [type(r).table for r in chain(store, answers[0].answer_id, LEVELS)]
    assert tables == ["answers", "questions", "sessions", "syllabi", "subjects", "disciplines", "fields"]
    assert len(store.read(SubjectRow, "Physics")) == 2


def test_a_run_materializes_its_levels_before_it_runs_their_checks(project):
    """The checks are not the next level's inputs; run between levels they would hold up the
    next LLM level (waiting on the DuckDB file's lock while other runs write)."""
    (summary,) = project.build("Physics")
    started = [e.step_key for e in project.instance.all_logs(summary.run_id, of_type=dg.DagsterEventType.STEP_START)]
    checks = [i for i, step in enumerate(started) if step.endswith("_checks")]
    assert checks, started
    assert started[: checks[0]] == ["fields", "disciplines", "subjects", "syllabi", "sessions", "questions", "answers"]
    assert all(step.endswith("_checks") for step in started[checks[0]:])


def build_reporting(project, fake_llm, *disciplines: str) -> list[tuple[LevelProgress | PartitionSummary, int]]:
    """Build in-process as `project.build` does, keeping what is reported, in order, each
    with how many LLM calls had completed by then."""
    plans = project.plan(*disciplines).partitions  # registers the partitions, as `glan build` does
    assert [p.key for p in plans] == list(disciplines)
    reported = []

    def keep(item: LevelProgress | PartitionSummary) -> None:
        reported.append((item, len(fake_llm.completed)))

    build(project.instance, plans, workers=1, on_done=keep, on_progress=keep)
    return reported


@pytest.mark.parametrize("instance", ["on disk", "ephemeral"])
def test_each_level_is_reported_once(project, fake_llm, tmp_path, instance):
    """On disk, as `glan build` runs, each level while its run is in flight. An ephemeral
    instance's shared-cache SQLite cannot be read by a second thread during a write, so
    there each level comes as its run ends."""
    fake_llm.delay_s = 0.2  # a run of some seconds, so the build polls during it
    if instance == "on disk":
        (tmp_path / "dagster").mkdir()
        project.instance = dg.DagsterInstance.local_temp(str(tmp_path / "dagster"))

    reported = build_reporting(project, fake_llm, "Physics", "Astronomy")

    done = [i for i, (r, _) in enumerate(reported) if isinstance(r, PartitionSummary)]
    assert [reported[i][0].partition for i in done] == ["Physics", "Astronomy"]
    for previous, end in zip([-1, *done], done):
        summary, calls_when_done = reported[end]
        assert summary.success, summary.error
        progress = reported[previous + 1 : end]
        assert [p.level for p, _ in progress] == summary.levels  # the same counts, each level once
        assert all(p.partition == summary.partition and not p.level.failed and p.seconds >= 0 for p, _ in progress)
        in_flight = progress[0][1] < calls_when_done  # the first while its LLM calls went on
        assert in_flight == (instance == "on disk")


def test_a_failed_level_is_reported_with_its_rejects(project, fake_llm):
    fake_llm.garbage_for = "Extract the class sessions"

    *progress, summary = [r for r, _ in build_reporting(project, fake_llm, "Physics")]

    assert not summary.success
    assert [(p.level.asset, p.level.failed) for p in progress][-2:] == [("syllabi", False), ("sessions", True)]
    failed = progress[-1].level
    assert (failed.rows, failed.rejects) == (0, 2) and failed.llm_calls > 0  # from the failure's metadata
    assert summary.failed_level == failed and summary.error.startswith("sessions: sessions[Physics]: no usable rows")


def test_sessions_of_a_syllabus_outline_are_read_without_an_llm_call(project, fake_llm):
    fake_llm.outline_syllabi = True
    summaries = project.build("Physics")
    assert summaries[0].success, summaries[0].error

    sessions = DuckDBStore(path=str(project.db)).read(SessionRow, "Physics")
    assert {s.extracted_by for s in sessions} == {"outline"}
    assert {(s.session_index, tuple(s.key_concepts)) for s in sessions} == {
        (1, ("definitions", "units")),
        (2, ("models", "measurement")),
    }
    assert not [p for p in fake_llm.prompts() if "Extract the class sessions" in p]


def test_sessions_past_the_number_asked_for_are_not_kept(project, fake_llm, monkeypatch):
    fake_llm.outline_syllabi = True  # two sessions per syllabus
    monkeypatch.setenv("GLAN_SESSIONS_MAX", "1")
    project.build("Physics")

    sessions = DuckDBStore(path=str(project.db)).read(SessionRow, "Physics")
    assert sorted(s.session_index for s in sessions) == [1, 1]  # one per syllabus, the first


# A parent that starts a pool as `glan build` does, prints its workers' pids, and waits. A
# script file, not `-c`: the fork server imports the main module to find `pid_after`.
POOL_PARENT = """
import os, time
from glan_assets.workers import worker_pool

def pid_after(seconds):
    time.sleep(seconds)
    return os.getpid()

if __name__ == "__main__":
    pool = worker_pool(2)
    pids = set()
    while len(pids) < 2:
        pids |= set(pool.map(pid_after, [0.2, 0.2]))
    print(*pids, flush=True)
    time.sleep(600)
"""


# Held by a thread of the test while a worker starts; taken by the worker.
LOCK = threading.Lock()


def take_lock(timeout_s: float) -> bool:
    return LOCK.acquire(timeout=timeout_s)


@pytest.mark.timeout(60)
def test_a_worker_starts_while_another_thread_holds_a_lock():
    """`glan build` starts its run processes from several threads while others read the
    Dagster instance. A worker forked then inherited a lock another thread held (SQLite's)
    and waited for it forever: a build of 200 disciplines hung after 11 runs."""
    held, release = threading.Event(), threading.Event()

    def hold() -> None:
        with LOCK:
            held.set()
            release.wait()

    holder = threading.Thread(target=hold)
    holder.start()
    held.wait()
    try:
        with worker_pool(1) as pool:
            assert pool.submit(take_lock, 5).result(timeout=30), "the worker inherited the held lock"
    finally:
        release.set()
        holder.join()


# A program run as `python -m pkg.main`, as the whole-build benchmark runs `glan_assets.cli`: its
# main module imports `pkg.heavy`, which notes each process that imports it.
HEAVY = "import os\nwith open(os.environ['IMPORTED_BY'], 'a') as f:\n    f.write(f'{os.getpid()}\\n')\n"
MAIN = """
import os
import pkg.heavy
from glan_assets.workers import worker_pool

if __name__ == "__main__":
    with worker_pool(2) as pool:
        print(*{pool.submit(os.getpid).result() for _ in range(4)})
"""


@pytest.mark.timeout(60)
def test_workers_of_a_program_run_with_dash_m_find_its_imports_loaded(tmp_path):
    """A worker runs the caller's main module again. Under `python -m` the fork server had not
    imported it, so each worker imported the CLI's modules itself: 2.4 s of CPU each, ten at
    once, before a build's first request."""
    (tmp_path / "pkg").mkdir()
    (tmp_path / "pkg" / "__init__.py").write_text("")
    (tmp_path / "pkg" / "heavy.py").write_text(HEAVY)
    (tmp_path / "pkg" / "main.py").write_text(MAIN)
    imported_by = tmp_path / "imported_by"
    env = {**os.environ, "IMPORTED_BY": str(imported_by),
           "PYTHONPATH": os.pathsep.join([str(tmp_path), str(Path(__file__).parent.parent)])}
    done = subprocess.run([sys.executable, "-m", "pkg.main"], env=env, capture_output=True, text=True, timeout=50)
    assert done.returncode == 0, done.stderr
    workers = {int(pid) for pid in done.stdout.split()}
    importers = {int(pid) for pid in imported_by.read_text().split()}
    assert workers and not workers & importers, (workers, importers)
    assert len(importers) == 2  # the program itself, and the fork server once


@pytest.mark.timeout(180)
def test_runs_in_worker_processes_read_the_callers_settings(project, monkeypatch, tmp_path):
    """A fork server's workers start with the environment the server started with. Runs in
    them read the settings the caller has now: an in-process caller may change them."""
    elsewhere = tmp_path / "elsewhere.duckdb"
    with monkeypatch.context() as m:
        m.setenv("GLAN_DB", str(elsewhere))
        with worker_pool(1, preload=["glan_assets.build"]) as pool:  # starts the fork server if none runs
            pool.submit(os.getpid).result()
    with project.instance_on_disk() as instance:  # workers open it from its ref
        summaries = build(instance, plan_build(instance, project.resources(), until="answers").partitions, workers=2)

    assert [s.success for s in summaries] == [True, True], [s.error for s in summaries]
    assert {a.discipline for a in DuckDBStore(path=str(project.db)).read(AnswerRow)} == {"Physics", "Astronomy"}
    assert not elsewhere.exists()


@pytest.mark.timeout(240)
def test_the_next_partition_starts_beside_a_run_on_its_last_level(project, fake_llm):
    """With two run slots and three partitions, the third run starts once a first-wave run has
    only its last level (answers, which waits on the endpoint) left, not once that run ends:
    its narrow first levels then go on while the endpoint still answers."""
    project.add_discipline("Chemistry")
    fake_llm.delay_for[ANSWER.system] = 10.0  # the last level waits on the endpoint
    with project.instance_on_disk() as instance:
        plans = plan_build(instance, project.resources(), until="answers").partitions
        summaries = build(instance, plans, workers=2)
        steps = {
            s.partition: {
                (e.dagster_event.event_type, e.step_key): e.timestamp
                for e in instance.all_logs(s.run_id, of_type={dg.DagsterEventType.STEP_START,
                                                              dg.DagsterEventType.STEP_SUCCESS})
            }
            for s in summaries
        }

    assert [s.success for s in summaries] == [True] * 3, [s.error for s in summaries]
    first_step = {p: min(t for (kind, _), t in events.items() if kind == dg.DagsterEventType.STEP_START)
                  for p, events in steps.items()}
    *first_wave, third = sorted(first_step, key=first_step.get)
    answered = min(steps[p][(dg.DagsterEventType.STEP_SUCCESS, "answers")] for p in first_wave)
    assert first_step[third] < answered, (third, first_step, answered)


def running(pid: int) -> bool:
    """Alive and not a zombie: nobody may reap an orphan here, and a zombie runs nothing."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except FileNotFoundError:
        return False
    return stat.rsplit(")", 1)[1].split()[0] not in ("Z", "X")


@pytest.mark.skipif(sys.platform != "linux", reason="the parent-death signal is Linux's")
@pytest.mark.timeout(60)
def test_pool_workers_die_with_a_killed_parent(tmp_path):
    (tmp_path / "parent.py").write_text(POOL_PARENT)
    parent = subprocess.Popen([sys.executable, str(tmp_path / "parent.py")], stdout=subprocess.PIPE, text=True)
    workers: list[int] = []
    try:
        workers = [int(pid) for pid in parent.stdout.readline().split()]
        assert len(workers) == 2, "the pool did not start"
        parent.kill()  # SIGKILL: no `with` exit, no atexit
        parent.wait()
        deadline = time.monotonic() + 5
        while any(running(pid) for pid in workers) and time.monotonic() < deadline:
            time.sleep(0.05)
        assert [pid for pid in workers if running(pid)] == []
    finally:
        parent.kill()
        for pid in workers:
            if running(pid):
                os.kill(pid, signal.SIGKILL)
