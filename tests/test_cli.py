"""What a user does from the terminal: glan build, lineage, export, taxonomy review,
and Dagster's own CLI, against a real DuckDB file and a real Dagster home."""

import json
import os
import re
import signal
import subprocess
import sys
import time

import duckdb

from glan_assets.build import plan_build, train
from glan_assets.glan.schemas import AnswerRow
from glan_assets.training.schemas import TrainingPairRow
from resources.storage import DuckDBStore
from tests.conftest import TINY_TAXONOMY

FOUR = TINY_TAXONOMY + "          - name: Chemistry\n          - name: Geology\n"


def glan(project, *args, **kwargs) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "glan_assets.cli", *args], capture_output=True, text=True,
                          env=project.subprocess_env(), cwd=project.root, timeout=600, **kwargs)


def test_four_partitions_build_at_once_without_lock_failures(project, fake_llm):
    project.taxonomy.write_text(FOUR)
    fake_llm.delay_s = 0.05  # keeps the four runs overlapping

    proc = glan(project, "build", "--workers", "4", "--until", "answers")

    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert proc.stdout.count("[ok  ]") == 4
    assert "built 4/4 partitions" in proc.stdout
    answers = DuckDBStore(path=str(project.db)).read(AnswerRow)
    assert sorted({a.discipline for a in answers}) == ["Astronomy", "Chemistry", "Geology", "Physics"]


def test_build_prints_each_level_while_its_run_is_in_flight(project, fake_llm):
    fake_llm.delay_s = 0.1  # runs of some seconds, so the build polls during them
    proc = subprocess.Popen([sys.executable, "-m", "glan_assets.cli", "build", "--workers", "2", "--until", "answers"],
                            env=project.subprocess_env(), cwd=project.root, stdout=subprocess.PIPE, text=True)
    lines, calls_when_read = [], []  # each line, and how many LLM calls had completed when it came
    for line in proc.stdout:
        lines.append(line.rstrip("\n"))
        calls_when_read.append(len(fake_llm.completed))
    assert proc.wait(timeout=300) == 0, "\n".join(lines)

    first_level = next(i for i, line in enumerate(lines) if " · " in line)
    first_done = next(i for i, line in enumerate(lines) if line.startswith("[ok  ]"))
    assert calls_when_read[first_level] < calls_when_read[first_done]  # as it landed, not with a summary
    for discipline in ("Physics", "Astronomy"):
        assert f"  build  {discipline}: fields .. answers (new)" in lines  # the plan, printed first
        levels = [line.split(" · ")[1].split(":")[0] for line in lines if line.startswith(f"  {discipline} · ")]
        assert levels == ["fields", "disciplines", "subjects", "syllabi", "sessions", "questions", "answers"]
        subjects = next(i for i, line in enumerate(lines) if line.startswith(f"  {discipline} · subjects:"))
        assert re.fullmatch(r"  \w+ · subjects: 2 rows, [1-9]\d* LLM calls, 0 cached  \[\d+s\]", lines[subjects])
        assert subjects < next(i for i, line in enumerate(lines) if line.startswith(f"[ok  ] {discipline}:"))


def test_a_killed_build_resumes_repeating_only_in_flight_requests(project, fake_llm):
    fake_llm.delay_s = 0.3
    env = project.subprocess_env() | {"GLAN_MAX_CONCURRENCY": "2"}
    proc = subprocess.Popen([sys.executable, "-m", "glan_assets.cli", "build", "--workers", "1", "--until", "answers"],
                            env=env, cwd=project.root, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                            start_new_session=True)
    deadline = time.monotonic() + 120
    while len(fake_llm.completed) < 8 and time.monotonic() < deadline:
        time.sleep(0.05)
    os.killpg(proc.pid, signal.SIGKILL)
    proc.wait()
    time.sleep(0.5)  # let the fake finish answering what was in flight
    first_run = [json.dumps(r["messages"]) for r in fake_llm.requests]
    fake_llm.requests.clear()
    fake_llm.delay_s = 0

    resumed = glan(project, "build", "--workers", "1", "--until", "answers")

    assert resumed.returncode == 0, resumed.stdout + resumed.stderr
    repeated = [json.dumps(r["messages"]) for r in fake_llm.requests if json.dumps(r["messages"]) in first_run]
    assert len(first_run) >= 8
    assert len(repeated) <= 2  # at most the max_concurrency requests that were in flight
    assert len(DuckDBStore(path=str(project.db)).read(AnswerRow)) == 8


def test_a_failed_partition_points_to_its_rejects(project, fake_llm):
    fake_llm.garbage_for = "Extract the class sessions"  # no syllabus of Physics yields a session

    built = glan(project, "build", "--discipline", "Physics", "--until", "answers")

    assert built.returncode == 1, built.stdout + built.stderr
    assert "[FAIL] Physics:" in built.stdout
    hint = "glan rejects --partition 'Physics' --level sessions"
    assert f"2 rejects: {hint}" in built.stdout
    assert re.search(r"^log: +\S+", built.stdout, re.MULTILINE)  # Dagster's log, for the details

    shown = glan(project, "rejects", "--partition", "Physics", "--level", "sessions")

    assert shown.returncode == 0, shown.stderr
    assert shown.stdout.count("sessions[Physics] sessions, for syl_") == 2
    assert shown.stdout.count("reason: unparseable after 3 attempts: no JSON found") == 2
    assert "output: I cannot do JSON, sorry." in shown.stdout
    assert glan(project, "rejects", "--partition", "Physics", "--level", "answers").stdout == "no rejects for Physics at answers\n"


def test_lineage_and_export(project, tmp_path):
    assert glan(project, "build", "--until", "answers").returncode == 0
    answer = DuckDBStore(path=str(project.db)).read(AnswerRow)[0]

    chain = glan(project, "lineage", answer.answer_id)

    assert chain.returncode == 0, chain.stderr
    lines = chain.stdout.splitlines()
    assert [line.split()[0] for line in lines] == ["answer", "question", "session", "syllabus", "subject", "discipline", "field"]
    assert answer.answer_id in lines[0] and "field_name=Natural Sciences" in lines[-1]
    assert "is not a glan id" in glan(project, "lineage", "bogus").stderr

    for fmt in ("jsonl", "parquet"):
        out = tmp_path / f"pairs.{fmt}"
        assert glan(project, "export", "--format", fmt, str(out)).returncode == 0
        reader = "read_json_auto" if fmt == "jsonl" else "read_parquet"
        rows = duckdb.sql(f"SELECT answer_id, question, answer, field_name, subject_name FROM {reader}('{out}')").fetchall()
        assert len(rows) == 8 and all(r[3] == "Natural Sciences" for r in rows)


def test_lineage_of_a_training_pair(project):
    assert all(s.success for s in project.build(until="glan_quality"))  # the training set selects by quality
    plan = plan_build(project.instance, project.resources(), until="training_set")
    ((step, result),) = train(project.instance, plan.training, None, build_id="test")
    assert step.asset == "training_set" and result.success
    pair = DuckDBStore(path=str(project.db)).read(TrainingPairRow)[0]

    chain = glan(project, "lineage", pair.pair_id)

    assert chain.returncode == 0, chain.stderr
    lines = chain.stdout.splitlines()
    assert [line.split()[0] for line in lines] == [
        "pair", "answer", "question", "session", "syllabus", "subject", "discipline", "field"
    ]
    assert f"pair {pair.pair_id}:" in lines[0] and pair.source_id in lines[1]


def test_taxonomy_proposals_wait_for_a_person(project):
    proposed = glan(project, "taxonomy", "propose")
    assert proposed.returncode == 0, proposed.stderr
    assert "Proposed Node" in proposed.stdout
    before = project.taxonomy.read_text()
    assert "Proposed Node" not in before  # nothing enters the taxonomy by itself

    discipline_id = next(line.split()[0] for line in proposed.stdout.splitlines() if " discipline " in line)
    accepted = glan(project, "taxonomy", "accept", discipline_id)

    assert accepted.returncode == 0, accepted.stderr
    assert "- name: Proposed Node" in project.taxonomy.read_text()
    assert "[accepted]" in glan(project, "taxonomy", "list", "--status", "all").stdout
    assert "no proposal with id prp_nope" in glan(project, "taxonomy", "accept", "prp_nope").stderr


def test_dagster_cli_materializes_one_partition(project):
    assert glan(project, "build", "--discipline", "Physics", "--until", "answers").returncode == 0  # registers partitions in DAGSTER_HOME
    with duckdb.connect(str(project.db)) as con:
        con.execute("DELETE FROM answers WHERE discipline = 'Physics'")

    proc = subprocess.run(
        [os.path.join(os.path.dirname(sys.executable), "dagster"), "asset", "materialize", "-m", "glan_assets.definitions",
         "--select", "answers", "--partition", "Physics"],
        env=project.subprocess_env(), cwd=project.root, capture_output=True, text=True, timeout=300,
    )

    assert proc.returncode == 0, proc.stderr[-2000:]
    assert len(DuckDBStore(path=str(project.db)).read(AnswerRow, "Physics")) == 4


TINY_RECIPE = """\
recipes:
  - name: tiny
    base_model: gemma3-270m
    lora_dropout: 0.0
    learning_rate: 1.0e-3
    lr_scheduler: constant
    max_length: 64
    batch_size: 4
    max_steps: 2
"""


def test_glan_build_goes_through_the_checkpoint_and_glan_chat_answers(project, tmp_path):
    recipes = tmp_path / "recipes.yaml"
    recipes.write_text(TINY_RECIPE)
    # The evaluation on a few items: its own test runs it in full (tests/test_eval.py).
    project.env |= {"GLAN_RECIPES": str(recipes), "OMP_NUM_THREADS": "1", "GLAN_EVAL_MC_ITEMS": "2",
                    "GLAN_EVAL_GEN_ITEMS": "1", "GLAN_EVAL_MAX_NEW_TOKENS": "4", "GLAN_EVAL_FEWSHOT": "0"}

    built = glan(project, "build", "--recipe", "tiny")

    assert built.returncode == 0, built.stdout + built.stderr
    assert "build  training_set (new)" in built.stdout and "build  model_checkpoint[tiny] (new)" in built.stdout
    assert "heldout_loss_tuned" in built.stdout
    assert "build  model_eval[tiny] (new)" in built.stdout and "| glan_mmlu | acc,none | 2 |" in built.stdout
    shown = glan(project, "eval", "--recipe", "tiny")
    assert shown.returncode == 0 and "| glan_gsm8k |" in shown.stdout and "**glan_mmlu**" in shown.stdout
    again = glan(project, "build", "--recipe", "tiny", "--dry-run")
    assert again.returncode == 0 and "model_checkpoint" not in again.stdout and "model_eval" not in again.stdout
    log = next(line.split(None, 1)[1] for line in built.stdout.splitlines() if line.startswith("log:"))
    assert os.path.isfile(log)  # Dagster's own log of the build
    checkpoint = project.db.parent / "checkpoints" / "tiny"
    assert (checkpoint / "adapter_model.safetensors").is_file()

    answered = glan(project, "chat", "--checkpoint", "tiny", "--max-new-tokens", "8", "What is a vector?")
    assert answered.returncode == 0, answered.stderr
    assert answered.stdout.strip()

    release = tmp_path / "release"
    exported = glan(project, "export", "--layout", "dataset", str(release))
    assert exported.returncode == 0, exported.stderr
    assert (release / "README.md").is_file() and (release / "data" / "train.jsonl").is_file()
