"""The quality levels through the real path: `glan build`'s planning and Dagster runs on a real
DuckDB file and instance, the fake endpoint answering (and judging), the real local scorer.

Garbage planted through each source never reaches the training set or the release and is in
`training_removed` with the rule that caught it; released pairs carry their scores; a changed
threshold re-selects with no LLM call; a new discipline is scored alone; the judge's own
endpoint takes its requests and its key is stored nowhere."""

import json

import dagster as dg
import pytest
from click.testing import CliRunner

from glan_assets.build import build, plan_build, train
from glan_assets.checks import all_checks
from glan_assets.cli import main
from glan_assets.plan import CONFIG, NEW
from glan_assets.registry import COMPOSED, LEVELS, TRAINING, resources_from_env
from glan_assets.training.release import export_dataset
from glan_assets.training.schemas import RemovedPairRow, TrainingPairRow
from resources.storage import DuckDBStore
from tests.fake_llm import FakeLLM

# A GLAN answer the stub returns for one question: the cut-off answer.
CUT_ANSWER = "The answer to this question is: Science and Physical Science Justification:"
REFUSAL = "As an AI language model, I cannot answer questions about capitals."
COLLECTION = [
    {"instruction": "Translate the sentence into French.", "input": "Good morning.", "output": "Bonjour."},
    {"instruction": "Name the capital of the country.", "input": "Peru", "output": REFUSAL},
    {"instruction": "Give the plural of the noun.", "input": "mouse", "output": "mice"},
]
# The stub's first task reads the dish and gives the cuisine: the last row's answer is its input.
DATASET = "dish,cuisine\nramen,japanese\npaella,spanish\ntacos,mexican\nsame,same\n"


def setting(project, monkeypatch, name: str, value: str) -> None:
    project.env[name] = value
    monkeypatch.setenv(name, value)


def build_all(project, build_id: str) -> None:
    plan = plan_build(project.instance, project.resources(), until="training_set")
    summaries = build(project.instance, plan.partitions, workers=1)
    assert all(s.success for s in summaries), [s.error for s in summaries]
    assert all(r.success for _, r in train(project.instance, plan.training, None, build_id=build_id) if r)


def judge_requests(fake_llm) -> list[dict]:
    return [r for r in fake_llm.requests if "impartial judge" in r["messages"][0]["content"]]


@pytest.fixture
def three_sources(project, fake_llm, monkeypatch):
    """Physics, a collection and a dataset, each with one planted garbage pair; every pair judged."""
    project.taxonomy.write_text(project.taxonomy.read_text().replace("          - name: Astronomy\n", ""))
    (project.root / "qa.jsonl").write_text("".join(json.dumps(r) + "\n" for r in COLLECTION))
    (project.root / "collections.yaml").write_text("collections:\n  - name: qa\n    path: qa.jsonl\n")
    (project.root / "dishes.csv").write_text(DATASET)
    (project.root / "datasets.yaml").write_text("datasets:\n  - name: dishes\n    path: dishes.csv\n")
    fake_llm.replies = {"In Advanced Physics, explain units; open problems?": CUT_ANSWER}  # one question's answer
    setting(project, monkeypatch, "GLAN_JUDGE_SAMPLE", "1")
    build_all(project, "first")
    return project


def test_planted_garbage_is_removed_with_its_reason_and_released_pairs_carry_scores(three_sources, fake_llm, tmp_path):
    store = DuckDBStore(path=str(three_sources.db))
    kept = store.read(TrainingPairRow)
    removed = {r.source_id: r for r in store.read(RemovedPairRow) if r.reason == "quality"}
    planted = {
        "glan": store.query("SELECT answer_id AS id FROM answers WHERE answer = ?", [CUT_ANSWER]),
        "uit": store.query("SELECT unified_id AS id FROM instructions_unified WHERE output = ?", [REFUSAL]),
        "dynosaur": store.query("SELECT instance_id AS id FROM dynosaur_instances WHERE input IN ('dish: same', 'cuisine: same')"),  # both tasks,
    }
    rules = {"glan": "cut_off", "uit": "refusal", "dynosaur": "output_in_inputs"}
    for source, rows in planted.items():
        assert rows, source
        for row in rows:
            assert row["id"] in removed and removed[row["id"]].source == source, source
            assert rules[source] in removed[row["id"]].detail, removed[row["id"]]
    assert not {p.source_id for p in kept} & {r["id"] for rows in planted.values() for r in rows}
    # The GLAN garbage is caught by the rule first, and the stub judge scored it low too.
    glan_cut = removed[planted["glan"][0]["id"]]
    assert glan_cut.signal == "cut_off" and glan_cut.signal_value == 1.0
    (scored,) = store.query("SELECT judge_score, flag_cut_off, ifd FROM glan_quality WHERE source_id = ?",
                            [planted["glan"][0]["id"]])
    assert scored["judge_score"] == 2 and scored["flag_cut_off"] and scored["ifd"] > 0

    # Every pair was judged once, through the same transport, and every kept pair carries its scores.
    quality_rows = sum(store.query(f"SELECT count(*) AS n FROM {m}_quality")[0]["n"] for m in rules)
    assert len(judge_requests(fake_llm)) == quality_rows
    assert {p.source for p in kept} == set(rules)
    assert all(p.ifd is not None and p.judge_score == 8 and p.quality_flags == "" for p in kept)

    paths = export_dataset(store, tmp_path / "release", levels=LEVELS, sources=TRAINING.sources)
    released = [json.loads(line) for s in ("train", "test") for line in paths[s].read_text().splitlines()]
    assert len(released) == len(kept) and all(r["ifd"] is not None and r["judge_score"] == 8 for r in released)
    quality = paths["card"].read_text().split("## Quality", 1)[1]
    for source, rows in planted.items():  # the first rule each failed (the stub's UIT rewrite shows the answer)
        assert f"| {source} | {removed[rows[0]['id']].signal} | {len(rows)} |" in quality


def test_a_threshold_change_reselects_with_no_llm_call(three_sources, fake_llm, monkeypatch):
    store = DuckDBStore(path=str(three_sources.db))
    before = store.read(TrainingPairRow)
    calls = len(fake_llm.requests)
    setting(three_sources, monkeypatch, "GLAN_JUDGE_MIN", "9")  # above every score the stub judge gives
    plan = plan_build(three_sources.instance, three_sources.resources(), until="training_set")
    assert plan.partitions == [] and [(s.asset, s.reason) for s in plan.training] == [("training_set", CONFIG)]
    assert all(r.success for _, r in train(three_sources.instance, plan.training, None, build_id="reselect") if r)

    assert len(fake_llm.requests) == calls  # nothing scored or judged again
    assert store.read(TrainingPairRow) == []
    judged = {r.pair_id: r for r in store.read(RemovedPairRow) if r.signal == "judge"}
    assert {p.pair_id for p in before} <= set(judged)
    assert all(r.signal_value == 8 and "below 9" in r.detail for r in judged.values() if r.pair_id in {p.pair_id for p in before})


def test_a_new_discipline_is_scored_alone(project, fake_llm, monkeypatch):
    project.taxonomy.write_text(project.taxonomy.read_text().replace("          - name: Astronomy\n", ""))
    setting(project, monkeypatch, "GLAN_JUDGE_SAMPLE", "1")
    build_all(project, "first")
    physics = project.instance.fetch_materializations(
        dg.AssetRecordsFilter(dg.AssetKey("glan_quality"), asset_partitions=["Physics"]), limit=10
    ).records
    asked = len(judge_requests(fake_llm))

    project.add_discipline("Astronomy")
    plan = plan_build(project.instance, project.resources(), until="training_set")
    assert [(p.key, p.reason, p.levels[-1]) for p in plan.partitions] == [("Astronomy", NEW, "glan_quality")]
    build_all(project, "second")

    store = DuckDBStore(path=str(project.db))
    (astronomy,) = store.query("SELECT count(*) AS n FROM glan_quality WHERE discipline = 'Astronomy'")
    assert astronomy["n"] > 0 and len(judge_requests(fake_llm)) - asked == astronomy["n"]
    assert len(project.instance.fetch_materializations(
        dg.AssetRecordsFilter(dg.AssetKey("glan_quality"), asset_partitions=["Physics"]), limit=10
    ).records) == len(physics) == 1


def flagged_share(project, method: str, key: str, env: dict) -> dg.AssetCheckEvaluation:
    """The quality level's checks on one partition, as a checks-only run."""
    result = dg.materialize(
        [COMPOSED.quality(method).asset, *all_checks([COMPOSED.quality(method).level])],
        selection=dg.AssetSelection.checks_for_assets(COMPOSED.quality(method).asset),
        tags={"dagster/partition": key},
        instance=project.instance,
        resources=resources_from_env(project.env | env),
    )
    return next(e for e in result.get_asset_check_evaluations() if e.check_name == "flagged_share")


def test_flagged_share_check_and_glan_quality_show_the_scores(three_sources):
    # 2 of the 8 dishes pairs (one row, two tasks) are flagged: a share of 0.25
    check = flagged_share(three_sources, "dynosaur", "dishes", {})
    assert check.passed and check.metadata["flagged_share"].value == 0.25
    assert check.metadata["flags_by_rule"].value == {"copies_instruction": 2, "output_in_inputs": 2}
    assert not flagged_share(three_sources, "dynosaur", "dishes", {"GLAN_MAX_FLAGGED_SHARE": "0.2"}).passed

    out = CliRunner().invoke(main, ["quality", "--worst", "1"])
    assert out.exit_code == 0, out.output
    assert "glan: 4 pairs scored, 1 flagged" in out.output and "flags by rule: cut_off 1" in out.output
    assert "dynosaur: 8 pairs scored, 2 flagged" in out.output and "judge mean" in out.output
    assert "response:    The answer to this question is: Science" in out.output  # GLAN's worst pair, with its text
    only = CliRunner().invoke(main, ["quality", "--source", "uit", "--partition", "qa"])
    assert only.output.startswith("uit[qa]: 3 pairs scored, 1 flagged") and "\nglan:" not in only.output
    assert "no quality scores for nowhere" in CliRunner().invoke(main, ["quality", "-p", "nowhere"]).output


def test_the_judges_own_endpoint_and_key_and_its_unusable_verdicts(project, fake_llm, monkeypatch):
    project.taxonomy.write_text(project.taxonomy.read_text().replace("          - name: Astronomy\n", ""))
    with FakeLLM() as judge:
        setting(project, monkeypatch, "GLAN_JUDGE_BASE_URL", judge.base_url)
        setting(project, monkeypatch, "GLAN_JUDGE_API_KEY", "sk-judge-secret")
        setting(project, monkeypatch, "GLAN_JUDGE_SAMPLE", "1")
        setting(project, monkeypatch, "GLAN_JUDGE_MODEL", "judge-model")
        judge.garbage_for = "In Advanced Physics"  # no verdict for these pairs, however often asked
        build_all(project, "first")
    assert judge_requests(fake_llm) == [] and judge.requests
    store = DuckDBStore(path=str(project.db))
    unjudged = {r["source_id"] for r in store.query(
        "SELECT source_id FROM glan_quality WHERE judge_sampled AND judge_score IS NULL")}
    rejects = store.query("SELECT parent_id, reason FROM rejects WHERE asset = 'glan_quality' AND stage = 'judge'")
    assert unjudged and {r["parent_id"] for r in rejects} == unjudged
    assert all("unparseable after 3 attempts" in r["reason"] for r in rejects)
    removed = {r.source_id: r for r in store.read(RemovedPairRow)}
    assert all(removed[s].signal == "judge" and removed[s].signal_value is None for s in unjudged)
    assert {r["authorization"] for r in judge.requests} == {"Bearer sk-judge-secret"}
    assert {r["model"] for r in judge.requests} == {"judge-model"}
    assert {r["judge_model"] for r in store.query("SELECT judge_model FROM glan_quality")} == {"judge-model"}
    for path in project.root.rglob("*"):
        if path.is_file():
            assert b"sk-judge-secret" not in path.read_bytes(), path
    for run in project.instance.get_runs():
        assert "sk-judge-secret" not in str(run.run_config)
