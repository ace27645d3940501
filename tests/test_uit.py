"""UIT: reading every format (and bad files), format transfer once per task, perplexity
denoising on real model scores, and building collections as partitions."""

import json
import os
import subprocess
import sys
import tracemalloc
from pathlib import Path

import dagster as dg
import pytest
import torch

from glan_assets.build import build, plan_build
from glan_assets.definitions import defs
from glan_assets.lineage import chain, ensure_lineage_views
from glan_assets.registry import LEVELS as ALL_LEVELS
from glan_assets.uit.collections_file import DEFAULT_REGISTRY, RegistryError, load_collections
from glan_assets.uit.formats import Bad, FormatError, Instance, detect_format
from glan_assets.uit.reading import read_collection
from glan_assets.uit.schemas import CandidateRow, RawInstructionRow, UnifiedRow
from glan_assets.uit.tasks import (
    copied_example,
    group_tasks,
    instance_input,
    score_candidates,
    source_view,
    unify,
    winners,
)
from resources.local_models import local_model_dir
from resources.scorer import load_scorer
from resources.storage import DuckDBStore

DEMO = DEFAULT_REGISTRY.parent
LEVELS = ("instructions_raw", "uit_candidates", "instructions_unified")


@pytest.fixture(autouse=True)
def one_torch_thread():
    """The scorer on one thread: on a shared CPU two OpenMP threads stall on each other."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


def read(path: Path, fmt: str | None = None) -> tuple[list[Instance], list[Bad]]:
    items = list(read_collection(path, fmt))
    return [i for i in items if isinstance(i, Instance)], [i for i in items if isinstance(i, Bad)]


def write_lines(path: Path, lines: list[object]) -> Path:
    path.write_text("".join((x if isinstance(x, str) else json.dumps(x)) + "\n" for x in lines))
    return path


# --- formats -----------------------------------------------------------------------------


@pytest.mark.parametrize(
    "keys, fmt",
    [
        ({"instruction", "input", "output"}, "alpaca"),
        ({"instruction", "output"}, "alpaca"),
        ({"conversations", "id"}, "sharegpt"),
        ({"messages"}, "sharegpt"),
        ({"inputs", "targets", "task_name"}, "flan"),
        ({"Definition", "Positive Examples", "Negative Examples", "Instances"}, "super_ni"),
        ({"templates", "data", "dataset"}, "promptsource"),
        ({"question", "answer"}, None),
    ],
)
def test_the_format_is_detected_from_the_keys(keys, fmt):
    assert detect_format(keys) == fmt


def test_every_demo_format_parses():
    alpaca, bad = read(DEMO / "alpaca.jsonl")
    assert not bad and len(alpaca) == 6 and len({i.task for i in alpaca}) == 2
    assert (alpaca[0].instruction, alpaca[0].output, alpaca[0].source_row) == (
        "Classify the sentiment of the review as positive or negative.", "positive", "alpaca.jsonl:1")

    flan, _ = read(DEMO / "flan.jsonl")
    assert {i.task for i in flan} == {"antonyms", "capitals"} and flan[0].output == "cold" and flan[0].input == ""

    chats, _ = read(DEMO / "sharegpt.json")  # a JSON array, streamed by DuckDB
    assert [c.source_row for c in chats] == ["sharegpt.json:0", "sharegpt.json:1"]
    assert [t["role"] for t in chats[0].turns] == ["user", "assistant", "user", "assistant"]  # every turn kept
    assert (chats[0].instruction, chats[0].output) == ("Name the three primary colors of paint.", "Red, yellow and blue.")
    assert chats[1].turns[0] == {"role": "system", "content": "You are a concise assistant."}
    openai, _ = read(DEMO / "openai_chat.jsonl")
    assert [(c.instruction, c.output) for c in openai] == [('Give a synonym of "quick".', "fast"), ("What is frozen water called?", "ice")]

    (task_file,) = [DEMO / "super_ni"]
    super_ni, _ = read(task_file)  # a folder of task files
    assert len(super_ni) == 3 and {i.task for i in super_ni} == {"task_demo_plural"}
    assert super_ni[0].instruction.startswith("Definition: In this task, you are given an English noun")
    assert "Positive Example 2 -\nInput: box\nOutput: boxes" in super_ni[0].instruction
    assert (super_ni[1].input, super_ni[1].output) == ("city", "cities")  # the first reference

    prompts, _ = read(DEMO / "promptsource" / "templates.yaml")
    assert len(prompts) == 6 and {i.task for i in prompts} == {"does_it_follow", "true_or_false"}
    first = prompts[0]
    assert first.instruction == 'A man is playing a guitar on stage.\nDoes it follow that "A man is performing music."? Yes or no?'
    assert first.output == "Yes"


def test_the_registry_format_overrides_detection(tmp_path):
    # Records that look like Alpaca but are read as FLAN: every record is then a mixed-format reject.
    instances, bad = read(DEMO / "alpaca.jsonl", "flan")
    assert not instances and len(bad) == 6 and all(b.reason.startswith("mixed formats") for b in bad)


def test_a_file_matching_no_format_names_its_keys_and_every_format(tmp_path):
    path = write_lines(tmp_path / "qa.jsonl", [{"question": "q", "answer": "a"}])
    with pytest.raises(FormatError) as err:
        list(read_collection(path))
    message = str(err.value)
    assert "answer, question" in message
    for fmt, expected in [("alpaca", "instruction, output"), ("sharegpt", "conversations"), ("flan", "inputs, targets"),
                          ("super_ni", "Definition, Positive Examples"), ("promptsource", "templates")]:
        assert f"{fmt}: {expected}" in message


def test_bad_lines_are_rejected_with_their_reason_and_the_rest_kept(tmp_path):
    path = write_lines(tmp_path / "mixed.jsonl", [
        '{"instruction": "broken", "output": ',
        {"instruction": "Say hi.", "output": "hi"},
        {"instruction": "   ", "output": "nothing asked"},
        {"messages": [{"role": "user", "content": "hello"}, {"role": "assistant", "content": "hi"}]},
        "[1, 2]",
        {"instruction": "Say bye.", "input": "", "output": "bye"},
    ])
    instances, bad = read(path)
    assert [i.output for i in instances] == ["hi", "bye"]
    reasons = {b.source_row: b.reason for b in bad}
    assert reasons["mixed.jsonl:1"].startswith("malformed JSON line: mixed.jsonl:1 (byte ")
    assert reasons["mixed.jsonl:3"] == "empty instruction"
    assert reasons["mixed.jsonl:4"].startswith("mixed formats: this record is sharegpt")
    assert reasons["mixed.jsonl:5"] == f"line is not a JSON object: mixed.jsonl:5 (byte {path.read_text().index('[1, 2]')})"


def test_a_broken_json_array_is_a_clear_error(tmp_path):
    path = tmp_path / "broken.json"
    path.write_text('[{"instruction": "a", "output": "b"}, {"instruction": "c", "output": ]')
    cut = path.read_text().rindex("]")  # where a value was expected
    with pytest.raises(FormatError, match=rf"broken.json cannot be read as json at line 1 \(byte {cut}\): Expecting value"):
        list(read_collection(path))


def test_a_chat_without_an_assistant_turn_is_rejected(tmp_path):
    path = write_lines(tmp_path / "chats.jsonl", [
        {"conversations": [{"from": "human", "value": "Anyone there?"}]},
        {"conversations": [{"from": "human", "value": "Hi"}, {"from": "gpt", "value": "Hello!"}]},
    ])
    instances, bad = read(path)
    assert len(instances) == 1
    assert bad[0].reason == "chat has no assistant turn after its first user turn"


def test_a_template_that_fails_to_render_is_rejected_per_row(tmp_path):
    write_lines(tmp_path / "rows.jsonl", [{"text": "a cat", "label": "animal"}, {"label": "plant"}])
    (tmp_path / "templates.yaml").write_text(
        "data: rows.jsonl\ntemplates:\n"
        "  - name: topic\n    jinja: \"What is this about? {{text}} ||| {{label}}\"\n"
        "  - name: broken\n    jinja: \"{% if %} ||| x\"\n"
        "  - name: no_target\n    jinja: \"{{label}}\"\n"
    )
    instances, bad = read(tmp_path / "templates.yaml")
    assert [(i.task, i.instruction, i.output) for i in instances] == [("topic", "What is this about? a cat", "animal")]
    reasons = sorted(b.reason for b in bad)
    assert any(r.startswith("template 'broken' does not compile") for r in reasons)
    assert any(r.startswith("template 'topic' failed to render: 'text' is undefined") for r in reasons)
    assert sum("rendered no '|||'" in r for r in reasons) == 2  # no_target, on both rows


def test_a_large_jsonl_file_is_streamed_in_bounded_memory(tmp_path):
    path = tmp_path / "big.jsonl"
    record = json.dumps({"instruction": "Repeat the input.", "input": "x" * 200, "output": "x" * 200}) + "\n"
    with open(path, "w") as fh:
        fh.writelines(record for _ in range(50_000))  # ~22 MB
    tracemalloc.start()
    count = sum(1 for _ in read_collection(path))
    _, peak = tracemalloc.get_traced_memory()
    tracemalloc.stop()
    assert count == 50_000 and peak < 2 * 2**20, peak


def test_registry_errors_name_the_file_and_the_problem(tmp_path):
    with pytest.raises(RegistryError, match="does not exist"):
        load_collections(tmp_path / "missing.yaml")
    bad = tmp_path / "bad.yaml"
    bad.write_text("collections:\n  - name: a\n    path: a.jsonl\n    format: csv\n  - name: a\n    path: b.jsonl\n")
    with pytest.raises(RegistryError, match=r"bad.yaml: collections.0.format"):
        load_collections(bad)
    bad.write_text("collections:\n  - name: a\n    path: a.jsonl\n  - name: a\n    path: b.jsonl\n")
    with pytest.raises(RegistryError, match="repeated: a"):
        load_collections(bad)


# --- tasks and denoising -----------------------------------------------------------------


def raw(i: int, task: str, instruction: str, input_: str, output: str, fmt: str = "alpaca") -> RawInstructionRow:
    return RawInstructionRow(raw_id=f"uraw_{i:04d}", task_id=f"utask_{task}", collection="c", task=task,
                             instruction=instruction, input=input_, output=output, source_format=fmt,
                             source_row=str(i), turns="[]", license="")


def test_a_task_shows_its_shared_instruction_or_its_fused_instances():
    shared, fused = group_tasks([
        raw(1, "a", "Translate into French.", "Good morning.", "Bonjour."),
        raw(2, "a", "Translate into French.", "Thanks.", "Merci."),
        raw(3, "b", 'What is the opposite of "hot"?', "", "cold", "flan"),
    ])
    assert source_view(shared) == (
        "Instruction: Translate into French.\n\nExample 1 -\nInput: Good morning.\nOutput: Bonjour.\n\n"
        "Example 2 -\nInput: Thanks.\nOutput: Merci."
    )
    assert source_view(fused) == 'Example 1 -\nWhat is the opposite of "hot"?\nOutput: cold'
    # Under a new instruction, a fused instance keeps its own text as its input.
    assert instance_input(shared, shared.instances[0]) == "Good morning."
    assert instance_input(fused, fused.instances[0]) == 'What is the opposite of "hot"?'
    assert unify("template", "Review: {input}\nPositive or negative?", "Great!") == ("Review: Great!\nPositive or negative?", "")
    assert unify("definition", "Definition: classify.", "Great!") == ("Definition: classify.", "Great!")
    assert winners([("t", 0, 2.0), ("t", 1, 1.5), ("t", 2, 1.5), ("u", 0, 3.0)]) == {("t", 1), ("u", 0)}
    # A rewrite that copies the worked example's text is caught, unless the task itself has it.
    shown = ("I loved every minute of it",)
    assert copied_example("Input: I loved every minute of it.", "capitals of countries", shown) == shown[0]
    assert copied_example("Input: I loved every minute of it.", "Review: I loved every minute of it", shown) is None


ANTONYMS = [("hot", "cold"), ("tall", "short"), ("happy", "sad"), ("big", "small"), ("fast", "slow"),
            ("open", "closed"), ("light", "dark"), ("early", "late")]
OFF_TASK = "Definition: Translate the given sentence into German."


@pytest.fixture(scope="module")
def scorer():
    return load_scorer(str(local_model_dir("smollm2-135m-instruct")))


def test_an_off_task_candidate_loses_on_real_model_scores(scorer):
    (task,) = group_tasks([raw(i, "antonyms", "Write the antonym of the word.", a, b) for i, (a, b) in enumerate(ANTONYMS)])
    candidates = [
        "Definition: You are given an English adjective. Write its antonym: the word with the opposite meaning.",
        OFF_TASK,
        "Definition: Write the opposite of the given word.",
    ]
    scores = score_candidates(lambda pairs: scorer.score(pairs, 8), [(task, c) for c in candidates], "definition", 32)
    losses = [s.loss for s in scores]
    assert all(s.instances == len(ANTONYMS) for s in scores)
    assert losses[1] > max(losses[0], losses[2]) + 1.0, losses  # clearly worse, in nats per token
    assert winners([(task.task_id, i, loss) for i, loss in enumerate(losses)]) == {(task.task_id, losses.index(min(losses)))}


def test_batched_scores_equal_one_at_a_time(scorer):
    pairs = [("Translate to French: Hello", "Bonjour"), ("Summarize: The cat sat on the mat all afternoon.", "A cat sat."),
             ("What is 2 + 2?", "4"), ("Name a color.", "Blue is a color that many people like a lot.")]
    batched, single = scorer.score(pairs, batch_size=4), scorer.score(pairs, batch_size=1)
    assert [b.tokens for b in batched] == [s.tokens for s in single]
    assert all(abs(b.mean - s.mean) < 1e-3 for b, s in zip(batched, single)), (batched, single)
    # Only the target's tokens count: the same target after another prompt has as many.
    assert scorer.score([("A much longer prompt " * 20, "Bonjour")])[0].tokens == batched[0].tokens


# --- building collections ----------------------------------------------------------------


def registry(path: Path, names: list[str]) -> Path:
    entries = {
        "alpaca-demo": f"  - name: alpaca-demo\n    path: {DEMO / 'alpaca.jsonl'}\n    license: apache-2.0\n",
        "flan-demo": f"  - name: flan-demo\n    path: {DEMO / 'flan.jsonl'}\n    format: flan\n",
        "super-ni-demo": f"  - name: super-ni-demo\n    path: {DEMO / 'super_ni'}\n",
    }
    path.write_text("collections:\n" + "".join(entries[n] for n in names))
    return path


@pytest.fixture
def uit_project(project, monkeypatch):
    path = registry(project.root / "collections.yaml", ["alpaca-demo", "flan-demo"])
    project.env["GLAN_COLLECTIONS"] = str(path)
    monkeypatch.setenv("GLAN_COLLECTIONS", str(path))
    return project


def plan(project, *collections: str, force: bool = False):
    return plan_build(project.instance, project.resources(), only={"collection": collections}, force=force,
                      until="instructions_unified")


def build_collections(project, *collections: str, force: bool = False):
    summaries = build(project.instance, plan(project, *collections, force=force).partitions, workers=1)
    assert all(s.success for s in summaries), [s.error for s in summaries]
    return summaries


def transfer_requests(fake_llm) -> list[str]:
    return [p for p in fake_llm.prompts() if "Rewrite it as a definition" in p]


def test_candidates_are_written_once_per_task_scored_and_cached(uit_project, fake_llm):
    build_collections(uit_project)
    store = DuckDBStore(path=str(uit_project.db))
    raw_rows = store.read(RawInstructionRow, "alpaca-demo") + store.read(RawInstructionRow, "flan-demo")
    tasks = {r.task_id for r in raw_rows}
    assert len(raw_rows) == 12 and len(tasks) == 4
    assert len(transfer_requests(fake_llm)) == 4 * 3  # one request per task and sample, none per instance

    candidates = store.read(CandidateRow, "alpaca-demo") + store.read(CandidateRow, "flan-demo")
    assert sorted(c.candidate_index for c in candidates) == sorted([0, 1, 2] * 4)
    for task_id in tasks:
        mine = [c for c in candidates if c.task_id == task_id]
        (chosen,) = [c for c in mine if c.chosen]
        assert chosen.loss == min(c.loss for c in mine) and chosen.loss > 0
        assert chosen.scored_instances == 3 and chosen.scorer_model == "smollm2-135m-instruct"

    unified = store.read(UnifiedRow, "flan-demo")
    assert len(unified) == 6
    winner = {c.task_id: c for c in candidates if c.chosen}
    for row in unified:
        assert row.instruction == winner[row.task_id].instruction and row.candidate_id == winner[row.task_id].candidate_id
    capital = next(r for r in unified if r.output == "Rome")
    assert capital.input == "Country: Italy\nWhich city is the capital of this country?"  # FLAN's fused text, now the input
    alpaca = store.read(UnifiedRow, "alpaca-demo")
    assert {r.license for r in alpaca} == {"apache-2.0"} and {r.input for r in alpaca} >= {"Good morning."}

    # lineage: a unified row resolves to its raw row and collection
    ensure_lineage_views(store, ALL_LEVELS)
    (traced,) = store.query("SELECT * FROM uit_lineage WHERE unified_id = ?", [capital.unified_id])
    assert (traced["collection"], traced["source_row"], traced["source_format"]) == ("flan-demo", "flan.jsonl:4", "flan")
    assert [type(r).__name__ for r in chain(store, capital.unified_id, ALL_LEVELS)] == ["UnifiedRow", "RawInstructionRow"]

    # up to date: nothing planned; forced: every call answered from the cache
    assert plan(uit_project).partitions == []
    asked = len(fake_llm.requests)
    build_collections(uit_project, "alpaca-demo", "flan-demo", force=True)
    assert len(fake_llm.requests) == asked
    assert store.read(CandidateRow, "flan-demo") == [c for c in candidates if c.collection == "flan-demo"]


def test_adding_a_collection_builds_only_its_partitions(uit_project, fake_llm):
    registry(Path(uit_project.env["GLAN_COLLECTIONS"]), ["flan-demo"])
    build_collections(uit_project)
    asked = len(transfer_requests(fake_llm))
    registry(Path(uit_project.env["GLAN_COLLECTIONS"]), ["flan-demo", "super-ni-demo"])

    (only,) = plan(uit_project).partitions
    assert (only.key, only.levels, only.reason) == ("super-ni-demo", LEVELS, "new")
    build_collections(uit_project)
    assert len(transfer_requests(fake_llm)) == asked + 3  # its one task, three samples
    assert len(DuckDBStore(path=str(uit_project.db)).read(UnifiedRow, "super-ni-demo")) == 3


def test_a_bad_collection_fails_alone(uit_project, fake_llm, tmp_path):
    broken = write_lines(tmp_path / "qa.jsonl", [{"question": "q", "answer": "a"}])
    path = registry(Path(uit_project.env["GLAN_COLLECTIONS"]), ["flan-demo"])
    path.write_text(path.read_text() + f"  - name: qa\n    path: {broken}\n")
    good, bad = build(uit_project.instance, plan(uit_project).partitions, workers=1)
    assert good.success and len(DuckDBStore(path=str(uit_project.db)).read(UnifiedRow, "flan-demo")) == 6
    assert not bad.success and "matches no instruction format: its keys are answer, question" in bad.error


def test_the_collection_sensor_adds_partitions_and_asks_for_their_runs(uit_project):
    # A Dagster home on disk, as the daemon has: a tick resolves its run requests through it.
    (uit_project.dagster_home / "dagster.yaml").write_text("telemetry:\n  enabled: false\n")
    instance = dg.DagsterInstance.from_config(str(uit_project.dagster_home))
    definitions = defs()
    try:
        with dg.build_sensor_context(
            instance_ref=instance.get_ref(), resources=uit_project.resources(), definitions=definitions
        ) as context:
            result = definitions.resolve_sensor_def("collection_sensor").evaluate_tick(context)
    finally:
        instance.dispose()
    (added,) = result.dynamic_partitions_requests
    assert list(added.partition_keys) == ["alpaca-demo", "flan-demo"]
    assert {(r.partition_key, r.job_name) for r in result.run_requests} == {
        ("alpaca-demo", "build_collection"), ("flan-demo", "build_collection")}


@pytest.mark.embedded
@pytest.mark.timeout(1200)
def test_uit_builds_end_to_end_on_the_embedded_model(tmp_path):
    (tmp_path / "dagster_home").mkdir()
    env = {k: v for k, v in os.environ.items() if k not in ("OPENAI_BASE_URL", "OPENAI_API_KEY")}
    env |= {
        "GLAN_DB": str(tmp_path / "glan.duckdb"),
        "DAGSTER_HOME": str(tmp_path / "dagster_home"),
        "GLAN_EMBEDDED_STATE": str(tmp_path / "embedded"),
        "GLAN_COLLECTIONS": str(registry(tmp_path / "collections.yaml", ["flan-demo"])),
    }
    proc = subprocess.run(
        [sys.executable, "-m", "glan_assets.cli", "build", "--collection", "flan-demo", "--until", "instructions_unified"],
        env=env, capture_output=True, text=True, timeout=1100,
    )
    assert proc.returncode == 0, proc.stdout + proc.stderr
    store = DuckDBStore(path=env["GLAN_DB"])
    candidates = store.read(CandidateRow, "flan-demo")
    assert candidates and all(c.model == "smollm2-135m-instruct" for c in candidates)
    assert sum(c.chosen for c in candidates) == len({c.task_id for c in candidates})
    unified = store.read(UnifiedRow, "flan-demo")
    assert unified and all(u.instruction.strip() and u.output for u in unified)
