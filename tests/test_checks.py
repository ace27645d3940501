"""The data-quality checks against a real DuckDB file: a built discipline passes them all,
and each planted fault fails exactly the check meant to catch it, for that partition."""

import dagster as dg
import duckdb

from glan_assets.glan import method as glan
from glan_assets.checks import all_checks
from glan_assets.registry import resources_from_env

LEVELS = [lv.name for lv in glan.LEVELS]  # fields ... answers


def run_checks(project, discipline: str, env: dict | None = None) -> dict[str, dg.AssetCheckEvaluation]:
    """Every level's checks on one partition, as a checks-only run: "asset:check" -> result.
    `env` adds settings (the thresholds are the `check_thresholds` resource)."""
    result = dg.materialize(
        [*dg.load_assets_from_modules(glan.MODULES), *all_checks(glan.LEVELS)],
        selection=dg.AssetSelection.all_asset_checks(),
        # `partition_key=` needs a partitioned asset in the selection; the run tag is what
        # names a checks-only run's partition.
        tags={"dagster/partition": discipline},
        instance=project.instance,
        resources=resources_from_env(project.env | (env or {})),
    )
    return {f"{e.asset_key.to_user_string()}:{e.check_name}": e for e in result.get_asset_check_evaluations()}


def failed(evaluations: dict[str, dg.AssetCheckEvaluation]) -> list[str]:
    return sorted(key for key, e in evaluations.items() if not e.passed)


def sql(project, statement: str) -> None:
    with duckdb.connect(str(project.db)) as con:
        con.execute(statement)


def test_a_built_discipline_passes_every_check_of_every_level(project):
    project.build("Physics")

    checks = run_checks(project, "Physics")

    assert failed(checks) == []
    assert all(e.description is None for e in checks.values())  # nothing to do
    assert {e.partition for e in checks.values()} == {"Physics"}
    levels = LEVELS
    assert {key.split(":")[0] for key in checks} == set(levels)
    for name in ("not_empty", "reject_rate", "schema_matches_model"):
        assert all(f"{level}:{name}" in checks for level in levels)
    assert all(f"{level}:no_orphans" in checks for level in levels[1:])
    assert all(f"{level}:duplicate_rate" in checks for level in ("subjects", "questions", "answers"))
    assert checks["answers:not_empty"].metadata["rows"].value == 4


def test_a_row_whose_parent_is_missing_fails_no_orphans(project):
    project.build("Physics")
    sql(project, "INSERT INTO sessions SELECT * REPLACE ('ses_orphan' AS session_id, 'syl_gone' AS syllabus_id) "
                 "FROM sessions WHERE discipline = 'Physics' LIMIT 1")

    checks = run_checks(project, "Physics")

    assert failed(checks) == ["sessions:no_orphans"]
    assert checks["sessions:no_orphans"].metadata["orphans"].value == 1
    assert "ses_orphan" in checks["sessions:no_orphans"].metadata["sample"].value


def test_a_parent_in_another_discipline_counts_as_an_orphan(project):
    project.build("Physics", "Astronomy")
    sql(project, "UPDATE questions SET session_id = "
                 "(SELECT min(session_id) FROM sessions WHERE discipline = 'Astronomy') "
                 "WHERE question_id = (SELECT min(question_id) FROM questions WHERE discipline = 'Physics')")

    assert failed(run_checks(project, "Physics")) == ["questions:no_orphans"]
    assert "questions:no_orphans" not in failed(run_checks(project, "Astronomy"))


def test_many_rejected_outputs_fail_reject_rate_unless_the_threshold_allows_them(project):
    project.build("Physics")
    # Four answers stored, four unusable replies: half the outputs were rejected.
    sql(project, "INSERT INTO rejects BY NAME SELECT 'rej_' || question_id AS reject_id, question_id AS parent_id, "
                 "discipline AS partition_key, 'answers' AS asset, 'answers' AS stage, 'empty reply' AS reason, '' AS raw_output, "
                 "3 AS attempts FROM questions WHERE discipline = 'Physics'")

    checks = run_checks(project, "Physics")

    assert failed(checks) == ["answers:reject_rate"]
    result = checks["answers:reject_rate"]
    assert result.metadata["reject_rate"].value == 0.5
    # It says what it found and where to look. The demo profile (the default) warns: its tiny
    # model misses the rates by design. Other profiles fail.
    assert result.description == "4 of 8 outputs unusable (50% > 20%): see `glan rejects --level answers --partition 'Physics'`"
    assert result.severity == dg.AssetCheckSeverity.WARN
    paper = run_checks(project, "Physics", {"GLAN_PROFILE": "paper"})["answers:reject_rate"]
    assert not paper.passed and paper.severity == dg.AssetCheckSeverity.ERROR
    assert failed(run_checks(project, "Physics", {"GLAN_MAX_REJECT_RATE": "0.6"})) == []


def test_a_repeated_question_fails_duplicate_rate_and_names_it(project):
    project.build("Physics")
    # The same text apart from case and spacing is still a repeat.
    sql(project, "UPDATE questions SET question = upper(q.question) || '  ' FROM "
                 "(SELECT min(question) AS question FROM questions WHERE discipline = 'Physics') q "
                 "WHERE questions.question_id = (SELECT max(question_id) FROM questions WHERE discipline = 'Physics')")

    checks = run_checks(project, "Physics")

    assert failed(checks) == ["questions:duplicate_rate"]
    metadata = checks["questions:duplicate_rate"].metadata
    assert (metadata["duplicates"].value, metadata["duplicate_rate"].value) == (1, 0.25)
    assert "| 2 |" in metadata["most_repeated"].value
    assert failed(run_checks(project, "Physics", {"GLAN_MAX_DUPLICATE_RATE": "0.3"})) == []


def test_a_table_drifting_from_its_row_model_fails_schema_matches_model(project):
    project.build("Physics")
    sql(project, "ALTER TABLE answers ADD COLUMN score DOUBLE")

    checks = run_checks(project, "Physics")

    assert failed(checks) == ["answers:schema_matches_model"]
    differences = checks["answers:schema_matches_model"].metadata["differences"].value
    assert "| score | (none) | DOUBLE |" in differences


def test_a_partition_without_rows_fails_not_empty(project):
    project.build("Physics")
    sql(project, "DELETE FROM answers WHERE discipline = 'Physics'")

    checks = run_checks(project, "Physics")

    assert failed(checks) == ["answers:not_empty"]
    assert checks["answers:not_empty"].metadata["rows"].value == 0
