"""Storage avoids the stock IO manager's faults, on the DuckDB file and on DuckLake."""

import multiprocessing
import os
import threading
from pathlib import Path
from typing import ClassVar

import dagster as dg
import duckdb
import pytest

from glan_assets.glan import sessions
from glan_assets.glan.schemas import SessionRow
from glan_assets.results import store_partition
from glan_assets.rows import RejectRow, TableRow
from glan_assets.registry import settings_from_env
from resources import storage
from resources.storage import DuckDBStore, Slice


def session(i: int, discipline: str = "Physics", title: str = "t") -> SessionRow:
    return SessionRow(session_id=f"ses_{i}", syllabus_id="syl_1", discipline=discipline,
                      session_index=i, title=title, key_concepts=["a", "b"], extracted_by="outline")


def replace_partition(store: DuckDBStore, discipline: str, rows: list[SessionRow]) -> None:
    store.replace([Slice(SessionRow, rows, where={"discipline": discipline})])


def reject(reject_id: str = "rej_1") -> RejectRow:
    return RejectRow(reject_id=reject_id, parent_id="syl_1", partition_key="Physics", asset="sessions",
                     stage="sessions", reason="no JSON found", raw_output="prose", attempts=3)


@pytest.fixture
def file_store(tmp_path) -> DuckDBStore:
    return DuckDBStore(path=str(tmp_path / "glan.duckdb"))


@pytest.fixture(params=["duckdb", pytest.param("ducklake", marks=pytest.mark.ducklake)])
def store(request, tmp_path) -> DuckDBStore:
    """Each guarantee on the default file, and on DuckLake with a real PostgreSQL catalog."""
    if request.param == "duckdb":
        return DuckDBStore(path=str(tmp_path / "glan.duckdb"))
    lake = request.getfixturevalue("lake_env")
    return DuckDBStore(backend="ducklake", catalog_dsn=lake["GLAN_CATALOG_DSN"], data_path=lake["GLAN_DATA_PATH"],
                       lock_timeout_s=60)


def test_a_partition_is_replaced_and_others_are_untouched(store):
    replace_partition(store, "Physics", [session(1), session(2)])
    replace_partition(store, "Astronomy", [session(3, "Astronomy")])
    replace_partition(store, "Physics", [session(4)])
    assert [s.session_id for s in store.read(SessionRow)] == ["ses_3", "ses_4"]


def test_rows_are_inserted_by_name_whatever_the_table_column_order(store):
    with store.connect() as con:  # a table whose columns are in another order
        con.execute("CREATE TABLE sessions (title VARCHAR, key_concepts VARCHAR[], session_index BIGINT, "
                    "discipline VARCHAR, syllabus_id VARCHAR, session_id VARCHAR, extracted_by VARCHAR)")
    replace_partition(store, "Physics", [session(1, title="Kinematics")])
    (row,) = store.read(SessionRow, "Physics")
    assert (row.session_id, row.title, row.key_concepts) == ("ses_1", "Kinematics", ["a", "b"])


def test_a_failed_write_keeps_the_old_rows(store, monkeypatch):
    replace_partition(store, "Physics", [session(1)])
    monkeypatch.setattr(DuckDBStore, "_insert", staticmethod(lambda *a: (_ for _ in ()).throw(RuntimeError("disk full"))))
    with pytest.raises(RuntimeError, match="disk full"):
        replace_partition(store, "Physics", [session(2)])
    monkeypatch.undo()
    assert [s.session_id for s in store.read(SessionRow, "Physics")] == ["ses_1"]


def test_tables_replaced_together_all_change_or_none(store, monkeypatch):
    store.replace([Slice(SessionRow, [session(1)]), Slice(RejectRow, [reject("rej_1")])])
    insert = DuckDBStore._insert

    def fail_on_rejects(con, row_type, rows):  # the second table's insert fails after the first's
        if row_type is RejectRow:
            raise duckdb.ConversionException("bad reject")
        insert(con, row_type, rows)

    monkeypatch.setattr(DuckDBStore, "_insert", staticmethod(fail_on_rejects))
    with pytest.raises(duckdb.ConversionException):
        store.replace([Slice(SessionRow, [session(2)]), Slice(RejectRow, [reject("rej_2")])])
    monkeypatch.undo()

    assert [s.session_id for s in store.read(SessionRow)] == ["ses_1"]
    assert [r.reject_id for r in store.read(RejectRow)] == ["rej_1"]


class Note(TableRow):
    table: ClassVar[str] = "notes"
    id_column: ClassVar[str] = "note_id"
    partition_column: ClassVar[str | None] = "discipline"
    note_id: str
    discipline: str


class NoteWithTags(Note):
    tags: list[str] | None = None


def test_a_model_that_gains_a_field_gains_a_column(store):
    store.replace([Slice(Note, [Note(note_id="n1", discipline="Physics")], {"discipline": "Physics"})])
    store.replace([Slice(NoteWithTags, [NoteWithTags(note_id="n2", discipline="Optics", tags=["x"])],
                         {"discipline": "Optics"})])
    assert store.read(NoteWithTags) == [NoteWithTags(note_id="n1", discipline="Physics"),
                                        NoteWithTags(note_id="n2", discipline="Optics", tags=["x"])]
    columns = store.query("SELECT column_name, data_type FROM duckdb_columns() WHERE table_name = 'notes' "
                          "AND database_name = current_database()")
    assert {c["column_name"]: c["data_type"] for c in columns}["tags"] == "VARCHAR[]"


def test_removing_a_discipline_deletes_it_from_every_table(store):
    replace_partition(store, "Physics", [session(1)])
    replace_partition(store, "Astronomy", [session(2, "Astronomy")])
    store.replace([Slice(RejectRow, [reject()])])
    assert store.delete_partition("discipline", "Physics") == {"sessions": 1, "rejects": 1}
    assert store.read(RejectRow) == []
    assert [s.discipline for s in store.read(SessionRow)] == ["Astronomy"]


def test_empty_output_keeps_stored_rows_but_records_rejects(store):
    replace_partition(store, "Physics", [session(1)])
    context = dg.build_asset_context(partition_key="Physics")
    with pytest.raises(dg.Failure, match=r"sessions\[Physics\]: no usable rows \(1 rejects.*kept"):
        store_partition(context, store, sessions.LEVEL, [], rejects=[reject()])
    assert [s.session_id for s in store.read(SessionRow, "Physics")] == ["ses_1"]
    assert store.read(RejectRow, "Physics") == [reject()]


def _open_in_other_process(path: str, queue) -> None:
    con = duckdb.connect(path)
    queue.put(con.execute("SELECT count(*) FROM sessions").fetchone()[0])
    con.close()


def test_a_new_database_another_process_is_creating_is_waited_for(file_store, tmp_path):
    """A database being created exists for a moment with only part of DuckDB's headers."""
    whole = DuckDBStore(path=str(tmp_path / "whole.duckdb"))
    replace_partition(whole, "Physics", [session(1)])
    (tmp_path / "glan.duckdb").write_bytes(Path(whole.path).read_bytes()[:4096])  # headers half written
    done = threading.Timer(0.5, os.replace, (whole.path, file_store.path))
    done.start()
    try:
        assert [s.session_id for s in file_store.read(SessionRow)] == ["ses_1"]
    finally:
        done.join()


def test_runs_starting_at_once_on_a_new_database_all_write_to_it(file_store, tmp_path, monkeypatch):
    """Eight runs starting at once had each failed with "not a valid DuckDB database file": one
    process created the file, another took DuckDB's lock on it to read its headers, so the
    creator could not lock it, and no process wrote them. This is the empty file it left."""
    monkeypatch.setattr(storage, "CREATION_WAIT_S", 0.2)
    (tmp_path / "glan.duckdb").write_bytes(b"")
    ctx = multiprocessing.get_context("spawn")
    procs = [ctx.Process(target=_write_partition, args=(file_store.path, i)) for i in range(4)]
    for proc in procs:
        proc.start()
    for proc in procs:
        proc.join(120)
    assert [proc.exitcode for proc in procs] == [0] * 4
    assert sorted(s.discipline for s in file_store.read(SessionRow)) == ["D0", "D1", "D2", "D3"]


def _write_partition(path: str, i: int) -> None:
    replace_partition(DuckDBStore(path=path), f"D{i}", [session(i, f"D{i}")])


def test_a_file_that_is_not_a_database_is_an_error(file_store, tmp_path, monkeypatch):
    monkeypatch.setattr(storage, "CREATION_WAIT_S", 0.2)
    (tmp_path / "glan.duckdb").write_text("notes, not a database\n" * 1000)
    with pytest.raises(duckdb.IOException, match="not a valid DuckDB database file"):
        file_store.read(SessionRow)


def test_the_file_is_released_after_an_error(file_store):
    replace_partition(file_store, "Physics", [session(1)])
    with pytest.raises(duckdb.Error):
        file_store.query("SELECT * FROM no_such_table")
    queue = multiprocessing.get_context("spawn").Queue()
    proc = multiprocessing.get_context("spawn").Process(target=_open_in_other_process, args=(file_store.path, queue))
    proc.start()
    proc.join(60)
    assert queue.get(timeout=5) == 1


def test_an_export_larger_than_its_memory_limit_spills_to_disk(store, tmp_path):
    target = tmp_path / "sorted.jsonl"
    with store.connect() as con:  # ~900 MB of text
        con.execute("CREATE TABLE big AS SELECT i, repeat('x', 440) || (i * 7919 % 2000003) AS text FROM range(2000000) t(i)")
    with store.connect(memory_limit="512MB") as con:
        assert con.execute("SELECT current_setting('memory_limit')").fetchone()[0] == "488.2 MiB"
        # Sorted as `glan export` sorts: past 512 MB it runs out of memory unless it spills.
        con.execute(f"COPY (SELECT * FROM big ORDER BY text) TO '{target}' (FORMAT JSON)")
    with target.open() as f:
        assert sum(1 for _ in f) == 2_000_000
    with store.connect() as con:  # the limit was the export's
        assert con.execute("SELECT current_setting('memory_limit')").fetchone()[0] != "488.2 MiB"


def test_an_export_memory_limit_duckdb_cannot_read_is_a_clear_error(tmp_path, monkeypatch):
    monkeypatch.setenv("GLAN_DB", str(tmp_path / "glan.duckdb"))
    monkeypatch.setenv("GLAN_EXPORT_MEMORY_LIMIT", "lots")
    store = settings_from_env().store()
    with pytest.raises(ValueError, match="memory limit 'lots' \\(GLAN_EXPORT_MEMORY_LIMIT\\)"):
        with store.connect(memory_limit=store.export_memory_limit):
            pass
