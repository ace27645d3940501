"""DuckDB storage avoids the stock IO manager's faults."""

import multiprocessing

import duckdb
import pytest

from glan_assets.schemas import RejectRow, SessionRow
from resources.storage import DuckDBStore, EmptyOutputError


def session(i: int, discipline: str = "Physics", title: str = "t") -> SessionRow:
    return SessionRow(session_id=f"ses_{i}", syllabus_id="syl_1", discipline=discipline,
                      session_index=i, title=title, key_concepts=["a", "b"], extracted_by="outline")


@pytest.fixture
def store(tmp_path) -> DuckDBStore:
    return DuckDBStore(path=str(tmp_path / "glan.duckdb"))


def test_a_partition_is_replaced_and_others_are_untouched(store):
    store.replace_partition(SessionRow, "Physics", [session(1), session(2)])
    store.replace_partition(SessionRow, "Astronomy", [session(3, "Astronomy")])
    store.replace_partition(SessionRow, "Physics", [session(4)])
    assert [s.session_id for s in store.read(SessionRow)] == ["ses_3", "ses_4"]


def test_rows_are_inserted_by_name_whatever_the_table_column_order(store):
    with store.connect() as con:  # a table whose columns are in another order
        con.execute("CREATE TABLE sessions (title VARCHAR, key_concepts VARCHAR[], session_index BIGINT, "
                    "discipline VARCHAR, syllabus_id VARCHAR, session_id VARCHAR)")
    store.replace_partition(SessionRow, "Physics", [session(1, title="Kinematics")])
    (row,) = store.read(SessionRow, "Physics")
    assert (row.session_id, row.title, row.key_concepts) == ("ses_1", "Kinematics", ["a", "b"])


def test_a_failed_write_keeps_the_old_rows(store, monkeypatch):
    store.replace_partition(SessionRow, "Physics", [session(1)])
    monkeypatch.setattr(DuckDBStore, "_insert", staticmethod(lambda *a: (_ for _ in ()).throw(RuntimeError("disk full"))))
    with pytest.raises(RuntimeError, match="disk full"):
        store.replace_partition(SessionRow, "Physics", [session(2)])
    monkeypatch.undo()
    assert [s.session_id for s in store.read(SessionRow, "Physics")] == ["ses_1"]


def _open_in_other_process(path: str, queue) -> None:
    con = duckdb.connect(path)
    queue.put(con.execute("SELECT count(*) FROM sessions").fetchone()[0])
    con.close()


def test_the_connection_is_released_after_an_error(store):
    store.replace_partition(SessionRow, "Physics", [session(1)])
    with pytest.raises(duckdb.Error):
        store.query("SELECT * FROM no_such_table")
    queue = multiprocessing.get_context("spawn").Queue()
    proc = multiprocessing.get_context("spawn").Process(target=_open_in_other_process, args=(store.path, queue))
    proc.start()
    proc.join(60)
    assert queue.get(timeout=5) == 1


def test_empty_output_keeps_stored_rows_but_records_rejects(store):
    store.replace_partition(SessionRow, "Physics", [session(1)])
    reject = RejectRow(reject_id="rej_1", parent_id="syl_1", discipline="Physics", asset="sessions",
                       stage="sessions", reason="no JSON found", raw_output="prose", attempts=3)
    with pytest.raises(EmptyOutputError, match=r"sessions\[Physics\]: no usable rows \(1 rejects"):
        store.replace_partition(SessionRow, "Physics", [], [reject])
    assert [s.session_id for s in store.read(SessionRow, "Physics")] == ["ses_1"]
    assert store.read(RejectRow, "Physics") == [reject]


def test_removing_a_discipline_deletes_it_from_every_table(store):
    store.replace_partition(SessionRow, "Physics", [session(1)])
    store.replace_partition(SessionRow, "Astronomy", [session(2, "Astronomy")])
    assert store.delete_discipline("Physics")["sessions"] == 1
    assert [s.discipline for s in store.read(SessionRow)] == ["Astronomy"]


def test_tables_replaced_together_all_change_or_none(store):
    def reject(reject_id: str) -> RejectRow:
        return RejectRow(reject_id=reject_id, parent_id="syl_1", discipline="Physics", asset="sessions",
                         stage="sessions", reason="no JSON found", raw_output="prose", attempts=3)

    with store.connect() as con:  # a rejects table that refuses a repeated id; the store adds the other columns
        con.execute("CREATE TABLE rejects (reject_id VARCHAR PRIMARY KEY)")
    store.replace_tables({SessionRow: [session(1)], RejectRow: [reject("rej_1")]})

    with pytest.raises(duckdb.ConstraintException):
        store.replace_tables({SessionRow: [session(2)], RejectRow: [reject("rej_2"), reject("rej_2")]})

    assert [s.session_id for s in store.read(SessionRow)] == ["ses_1"]
    assert [r.reject_id for r in store.read(RejectRow)] == ["rej_1"]
