"""The DuckLake backend (GLAN_STORAGE=ducklake) on a real PostgreSQL catalog: the storage's
guarantees, then build, incremental build and concurrent writers through the real pipeline.

One server for the module (Debian's postgresql, `make db-deps`); each test its own catalog
(a fresh database) and its own data path.
"""

import json
import logging
import subprocess
import sys
import threading

import pytest

from glan_assets.glan import method as glan
from glan_assets.glan.schemas import AnswerRow, SessionRow
from glan_assets.rows import RejectRow
from resources import storage
from resources.storage import DuckDBStore, Slice, write_stats

pytestmark = pytest.mark.ducklake

@pytest.fixture
def store(lake_env) -> DuckDBStore:
    return DuckDBStore(backend="ducklake", catalog_dsn=lake_env["GLAN_CATALOG_DSN"],
                       data_path=lake_env["GLAN_DATA_PATH"], lock_timeout_s=60)


def session(i: int, discipline: str = "Physics", title: str = "t") -> SessionRow:
    return SessionRow(session_id=f"ses_{i}", syllabus_id="syl_1", discipline=discipline,
                      session_index=i, title=title, key_concepts=["a", "b"], extracted_by="outline")


def reject(reject_id: str = "rej_1") -> RejectRow:
    return RejectRow(reject_id=reject_id, parent_id="syl_1", partition_key="Physics", asset="sessions",
                     stage="sessions", reason="no JSON found", raw_output="prose", attempts=3)


def replace_partition(store: DuckDBStore, discipline: str, rows: list[SessionRow]) -> None:
    store.replace([Slice(SessionRow, rows, where={"discipline": discipline})])


# --- DuckLake's own: Parquet under the data path, commit conflicts, settings ------------------
# (the storage's guarantees run on both backends in test_storage.py)


def test_the_tables_live_in_the_lake_as_parquet(store, lake_env):
    replace_partition(store, "Physics", [session(1)])
    with store.connect() as con:
        assert con.execute("SELECT current_database()").fetchone()[0] == storage.LAKE
        files = con.execute("SELECT data_file FROM ducklake_list_files('lake', 'sessions')").fetchall()
    assert files and all(f.endswith(".parquet") and f.startswith(lake_env["GLAN_DATA_PATH"]) for (f,) in files)


def test_a_commit_conflict_is_retried_not_raised(store, monkeypatch, caplog):
    """Two writers create the same table: the one that commits second conflicts, and is run again."""
    ensure_table, raced = DuckDBStore._ensure_table, threading.Event()

    def racing(self, con, row_type):
        ensure_table(self, con, row_type)
        if not raced.is_set():  # another writer commits the same new table while this one is open
            raced.set()
            replace_partition(store, "Astronomy", [session(2, "Astronomy")])

    monkeypatch.setattr(DuckDBStore, "_ensure_table", racing)
    before = write_stats()["commit_retries"]
    with caplog.at_level(logging.WARNING):
        replace_partition(store, "Physics", [session(1)])

    assert [s.discipline for s in store.read(SessionRow)] == ["Physics", "Astronomy"]
    assert write_stats()["commit_retries"] == before + 1
    assert any("DuckLake commit conflict writing sessions; retry 1" in r.getMessage() for r in caplog.records)


def test_a_table_another_writer_created_two_commits_later_is_not_created_twice(store, monkeypatch):
    """The extension's own commit retry misses a table created two or more snapshots after the
    transaction began (fixed upstream in duckdb/ducklake cb30c0d, after the 1.4.4 build): both
    commits kept their `sessions`, and the first writer's rows vanished behind the second."""
    ensure_table, raced = DuckDBStore._ensure_table, threading.Event()

    def racing(self, con, row_type):
        ensure_table(self, con, row_type)
        if not raced.is_set():  # two commits land while this transaction holds its new table
            raced.set()
            store.replace([Slice(RejectRow, [reject()], where={"partition_key": "Physics"})])
            replace_partition(store, "Astronomy", [session(2, "Astronomy")])

    monkeypatch.setattr(DuckDBStore, "_ensure_table", racing)
    replace_partition(store, "Physics", [session(1)])

    assert [s.discipline for s in store.read(SessionRow)] == ["Physics", "Astronomy"]
    live = store.query(f"SELECT count(*) AS n FROM __ducklake_metadata_{storage.LAKE}.ducklake_table "
                       "WHERE table_name = 'sessions' AND end_snapshot IS NULL")
    assert live == [{"n": 1}]


def test_an_unknown_backend_is_a_settings_error():
    from glan_assets.registry import resources_from_env
    from glan_assets.settings import SettingsError

    with pytest.raises(SettingsError, match="GLAN_STORAGE='lake'"):
        resources_from_env({"GLAN_STORAGE": "lake"})
    with pytest.raises(SettingsError, match="GLAN_CATALOG_DSN"):
        resources_from_env({"GLAN_STORAGE": "ducklake"})
    assert resources_from_env({})["store"].backend == "duckdb"


# --- the pipeline on DuckLake ----------------------------------------------------------------


@pytest.fixture
def lake_project(project, lake_env, monkeypatch):
    for k, v in lake_env.items():
        project.env[k] = v
        monkeypatch.setenv(k, v)
    return project


def counts(store: DuckDBStore) -> dict[str, dict[str, int]]:
    """Rows per level per discipline."""
    found = {}
    for lv in glan.METHOD.levels:
        col = lv.row_type.partition_column
        rows = store.query(f"SELECT {col} AS k, count(*) AS n FROM {lv.row_type.table} GROUP BY {col}")
        found[lv.name] = {r["k"]: r["n"] for r in rows}
    return found


def snapshot(store: DuckDBStore, discipline: str) -> str:
    """Every stored row of a discipline, serialized, for a byte-for-byte comparison."""
    return json.dumps({lv.name: sorted(json.dumps(r.model_dump(), sort_keys=True)
                                       for r in store.read(lv.row_type, discipline))
                       for lv in glan.METHOD.levels})


def test_build_fills_every_level_in_the_lake(lake_project):
    summaries = lake_project.build()
    assert [s.success for s in summaries] == [True, True], [s.error for s in summaries]

    store = lake_project.resources()["store"]
    assert store.backend == "ducklake"
    found = counts(store)
    for level, per_discipline in found.items():
        assert set(per_discipline) == {"Physics", "Astronomy"} and all(per_discipline.values()), level
    assert sum(found["answers"].values()) == 8  # 2 subjects x 2 questions x 2 disciplines
    assert not lake_project.db.exists(), "nothing goes to the DuckDB file"


def test_adding_a_discipline_builds_only_it(lake_project, fake_llm):
    assert all(s.success for s in lake_project.build())
    store = lake_project.resources()["store"]
    before = {d: snapshot(store, d) for d in ("Physics", "Astronomy")}

    fake_llm.requests.clear()
    lake_project.add_discipline("Optics")
    summaries = lake_project.build()

    assert [s.partition for s in summaries] == ["Optics"] and summaries[0].success
    assert fake_llm.requests and all("Optics" in p for p in fake_llm.prompts())
    assert {d: snapshot(store, d) for d in ("Physics", "Astronomy")} == before
    assert len(store.read(AnswerRow, "Optics")) == 4

    fake_llm.requests.clear()
    assert lake_project.build() == [] and fake_llm.requests == []  # nothing missing or stale


DISCIPLINES = ("Physics", "Astronomy", "Optics", "Acoustics")


def test_four_processes_build_at_once_with_the_counts_of_a_sequential_build(project, lake_env):
    project.add_discipline("Optics")
    project.add_discipline("Acoustics")
    sequential = project.build()  # the file backend, one partition after another
    assert [s.success for s in sequential] == [True] * 4
    expected = counts(DuckDBStore(path=str(project.db)))

    procs = []
    for d in DISCIPLINES:
        # Each writer its own Dagster home (as on its own machine) and LLM cache (so it calls
        # the endpoint instead of replaying the sequential build); one lake for all.
        home = project.root / f"home_{d}"
        env = project.subprocess_env() | lake_env | {
            "DAGSTER_HOME": str(home), "GLAN_CACHE": str(project.root / f"cache_{d}.sqlite"),
        }
        procs.append(subprocess.Popen(
            [sys.executable, "-m", "glan_assets.cli", "build", "--discipline", d, "--until", "answers",
             "--workers", "1"],
            env=env, cwd=project.root, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
        ))
    outputs = [p.communicate(timeout=600)[0] for p in procs]
    for d, p, out in zip(DISCIPLINES, procs, outputs):
        assert p.returncode == 0, f"{d}:\n{out}"
        assert "Traceback" not in out, f"{d}:\n{out}"

    lake = DuckDBStore(backend="ducklake", catalog_dsn=lake_env["GLAN_CATALOG_DSN"],
                       data_path=lake_env["GLAN_DATA_PATH"])
    assert counts(lake) == expected
