"""Commands that only read (rejects, lineage, export, taxonomy list, a dry run's plan) open the
store read-only: they read a database whose file and folder cannot be written, change none of
its bytes, create no database where there is none, and fail in one line naming the cause."""

import hashlib
import os
import subprocess
from pathlib import Path

import duckdb
import pytest

from glan_assets.glan.schemas import AnswerRow
from glan_assets.rows import RejectRow
from resources.storage import DuckDBStore, Slice
from tests.conftest import TINY_TAXONOMY
from tests.test_cli import glan


def snapshot(folder: Path) -> dict[str, tuple[str, int]]:
    """Every file under `folder`: its bytes' hash and its mtime."""
    return {
        str(p.relative_to(folder)): (hashlib.sha256(p.read_bytes()).hexdigest(), p.stat().st_mtime_ns)
        for p in sorted(folder.rglob("*"))
        if p.is_file()
    }


def one_line_error(proc: subprocess.CompletedProcess) -> str:
    assert proc.returncode == 1, proc.stdout + proc.stderr
    assert "Traceback" not in proc.stderr and proc.stderr.count("\n") == 1, proc.stderr
    return proc.stderr


@pytest.fixture
def built(project):
    out = glan(project, "build", "--until", "answers")
    assert out.returncode == 0, out.stdout + out.stderr
    return project


@pytest.fixture
def read_only(built):
    """The built database file and its folder without write permission. Root ignores
    permissions, so as root both are also made immutable (`chattr +i`)."""
    db, folder = built.db, built.db.parent
    paths = [db, folder]
    modes = {p: p.stat().st_mode for p in paths}
    db.chmod(0o444)
    folder.chmod(0o555)
    immutable = os.geteuid() == 0 and subprocess.run(["chattr", "+i", *map(str, paths)]).returncode == 0
    try:
        try:
            open(db, "r+b").close()
            pytest.skip("cannot make a file read-only here")
        except OSError:
            pass
        yield built
    finally:
        if immutable:
            subprocess.run(["chattr", "-i", *map(str, paths)], check=True)
        for p, mode in modes.items():
            p.chmod(mode)


def test_read_only_commands_read_a_database_that_cannot_be_written(read_only, tmp_path):
    project = read_only
    before = snapshot(project.db.parent)
    answer = DuckDBStore(path=str(project.db), read_only=True).read(AnswerRow)[0]

    rejects = glan(project, "rejects")
    assert rejects.returncode == 0, rejects.stderr
    assert rejects.stdout == "no rejects\n"

    chain = glan(project, "lineage", answer.answer_id)
    assert chain.returncode == 0, chain.stderr
    assert chain.stdout.splitlines()[0].startswith(f"answer {answer.answer_id}:")

    for fmt, reader in (("jsonl", "read_json_auto"), ("parquet", "read_parquet")):
        out = tmp_path / "out" / f"pairs.{fmt}"
        exported = glan(project, "export", "--format", fmt, str(out))
        assert exported.returncode == 0, exported.stderr
        ids = [r[0] for r in duckdb.sql(f"SELECT answer_id FROM {reader}('{out}')").fetchall()]
        stored = sorted(a.answer_id for a in DuckDBStore(path=str(project.db), read_only=True).read(AnswerRow))
        assert ids == stored and exported.stdout == f"wrote {len(stored)} pairs to {out}\n"

    listed = glan(project, "taxonomy", "list")
    assert listed.returncode == 0, listed.stderr
    assert listed.stdout == "no pending proposals; run `glan taxonomy propose`\n"

    # No training set yet: one line that names the database, and no release folder.
    release = tmp_path / "release"
    no_training_set = one_line_error(glan(project, "export", "--layout", "dataset", str(release)))
    assert f"{project.db} has no training set" in no_training_set
    assert not release.exists()

    assert snapshot(project.db.parent) == before


def test_a_new_home_gets_no_database(project, tmp_path):
    out = tmp_path / "pairs.jsonl"
    for args in (("taxonomy", "list"), ("rejects",), ("export", str(out)), ("lineage", "ans_0123456789abcdef")):
        error = one_line_error(glan(project, *args))
        assert error == f"error: no data at {project.db} yet: run `glan build`\n", args
    assert not project.db.parent.exists()
    assert not out.exists()


def test_an_unreadable_database_is_blamed_not_the_export_path(built, tmp_path):
    built.db.write_bytes(b"not a database " * 1000)
    out = tmp_path / "pairs.jsonl"

    for args in (("rejects",), ("export", str(out))):
        error = one_line_error(glan(built, *args))
        assert error.startswith(f"error: cannot read {built.db}: ") and "not a valid DuckDB database file" in error
        assert str(out) not in error
    assert not out.exists()


def test_an_export_before_any_pair_is_one_line(project, tmp_path):
    DuckDBStore(path=str(project.db)).replace([Slice(RejectRow, [RejectRow(
        reject_id="rej_1", parent_id="syl_1", partition_key="Physics", asset="sessions", stage="sessions",
        reason="no JSON found", raw_output="prose", attempts=3)])])
    out = tmp_path / "pairs.jsonl"

    error = one_line_error(glan(project, "export", str(out)))

    assert error == f"error: no pairs in {project.db} yet: run `glan build`\n"
    assert not out.exists()


@pytest.mark.parametrize("fmt", ["jsonl", "parquet"])
def test_an_export_to_a_full_disk_is_one_line(built, fmt):
    before = snapshot(built.db.parent)

    error = one_line_error(glan(built, "export", "--format", fmt, "/dev/full"))

    assert error == "error: cannot write /dev/full: No space left on device\n"
    assert snapshot(built.db.parent) == before


def test_a_dry_run_prune_lists_what_it_would_delete(built):
    built.taxonomy.write_text(TINY_TAXONOMY.replace("          - name: Astronomy\n", ""))
    with duckdb.connect(str(built.db), read_only=True) as con:
        tables = [t for (t,) in con.execute(
            "SELECT table_name FROM duckdb_columns() "
            "JOIN duckdb_tables() USING (database_name, schema_name, table_name) "
            "WHERE column_name = 'discipline' ORDER BY table_name").fetchall()]
        counts = {t: con.execute(f"SELECT count(*) FROM {t} WHERE discipline = 'Astronomy'").fetchone()[0]
                  for t in tables}
    assert all(counts.values()) and len(counts) > 3
    before = snapshot(built.db.parent)

    plan = glan(built, "build", "--until", "answers", "--dry-run", "--prune")

    assert plan.returncode == 0, plan.stderr
    line = next(x for x in plan.stdout.splitlines() if "would prune discipline Astronomy" in x)
    assert line.startswith(f"  would prune discipline Astronomy: delete {sum(counts.values())} rows (")
    assert line.endswith(") and its partition")
    tables_part = line.split(" rows (", 1)[1].removesuffix(") and its partition")
    listed = dict(part.rsplit(" ", 1) for part in tables_part.split(", "))
    assert {t: int(n) for t, n in listed.items()} == counts
    assert "rows kept" not in plan.stdout
    assert snapshot(built.db.parent) == before

    pruned = glan(built, "build", "--until", "answers", "--prune")
    assert pruned.returncode == 0, pruned.stderr
    with duckdb.connect(str(built.db), read_only=True) as con:
        assert all(con.execute(f"SELECT count(*) FROM {t} WHERE discipline = 'Astronomy'").fetchone()[0] == 0
                   for t in tables)


@pytest.mark.ducklake
def test_a_lake_is_read_without_a_commit(project, lake_env, monkeypatch, tmp_path):
    """On DuckLake the catalog is attached READ_ONLY: a new catalog is not created, and an
    export adds no snapshot (it had committed the lineage view)."""
    for k, v in lake_env.items():
        project.env[k] = v
        monkeypatch.setenv(k, v)
    store = project.resources()["store"]
    error = one_line_error(glan(project, "taxonomy", "list"))
    assert error == f"error: no data in {store.location} yet: run `glan build`\n"
    assert not Path(lake_env["GLAN_DATA_PATH"]).exists()

    assert all(s.success for s in project.build())

    def snapshots() -> int:
        return store.query("SELECT max(snapshot_id) AS n FROM ducklake_snapshots('lake')")[0]["n"]

    before = snapshots()
    out = tmp_path / "pairs.jsonl"
    exported = glan(project, "export", str(out))
    assert exported.returncode == 0, exported.stderr
    assert exported.stdout == f"wrote {len(store.read(AnswerRow))} pairs to {out}\n"
    assert glan(project, "rejects").stdout == "no rejects\n"
    assert snapshots() == before
    assert not project.db.exists()
