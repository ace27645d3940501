"""A file that cannot be read as its format names the format, the file and the first bad line
or byte (not the reading library's text); a Dynosaur JSONL dataset keeps its good lines and
records each bad one as a reject naming its file and line, as UIT does."""

import json
from pathlib import Path

import pytest

from glan_assets import bad_input
from glan_assets.bad_input import BadLine, first_bad_text, json_lines
from glan_assets.dynosaur.instances import LEVEL as INSTANCES
from glan_assets.dynosaur.metadata import LEVEL as METADATA
from glan_assets.dynosaur.schemas import InstanceRow
from glan_assets.dynosaur.sources import DatasetError, open_source
from glan_assets.rows import RejectRow
from glan_assets.uit.formats import Bad, FormatError
from glan_assets.uit.reading import read_collection
from resources.storage import DuckDBStore
from tests.test_dynosaur import build_datasets, entry_for, latest_metadata, registry  # noqa: F401 (a fixture)

ROWS = [{"question": f"q{i}", "answer": f"a{i}"} for i in range(6)]


def jsonl(rows: list, bad: dict[int, bytes] | None = None) -> bytes:
    """The rows as JSONL, line i (0-based) replaced by `bad[i]`."""
    lines = [json.dumps(r).encode() for r in rows]
    for i, text in (bad or {}).items():
        lines[i] = text
    return b"".join(line + b"\n" for line in lines)


def source_error(tmp_path: Path, filename: str, content: bytes) -> str:
    (tmp_path / filename).write_bytes(content)
    with pytest.raises(DatasetError) as err:
        with open_source(entry_for(tmp_path, "bad", filename)):
            pass
    message = str(err.value)
    assert "Error:" not in message and "Exception" not in message  # no library text
    assert message.startswith(f"dataset 'bad' ({tmp_path / 'bad.yaml'}:2 (entry 1, 'bad')): {tmp_path / filename} ")
    return message.split(f"{tmp_path / filename} ", 1)[1]


# --- one line naming format, file and place ----------------------------------------------------


def test_a_binary_file_named_csv_names_its_first_nul_byte(tmp_path):
    zipped = b"PK\x03\x04\x14\x00\x08\x00" + bytes(range(256))  # a zip archive's first bytes
    assert source_error(tmp_path, "data.csv", zipped) == "cannot be read as csv at line 1 (byte 5): binary data (a NUL byte), not text"


def test_a_csv_with_a_broken_quote_names_the_line_the_quote_opens(tmp_path):
    text = 'question,answer\n"Where, then?","here"\n"What is "this","that"\n"q","a"\n'
    message = source_error(tmp_path, "quotes.csv", text.encode())
    assert message.startswith("cannot be read as csv at line 3: a quoted field is not closed")


def test_a_quote_that_never_closes_names_its_line_not_the_end_of_the_file(tmp_path):
    text = 'question,answer\n"a","b"\n"never closed,x\nc,d\ne,f\n'
    assert source_error(tmp_path, "open.csv", text.encode()).startswith("cannot be read as csv at line 3: a quoted field")


def test_a_non_utf8_csv_names_the_line_and_byte(tmp_path):
    content = "question,answer\nx,1\ncafé,2\n".encode("latin-1")
    offset = content.index(b"\xe9")
    message = source_error(tmp_path, "latin.csv", content)
    assert message == f"cannot be read as csv at line 3 (byte {offset}): not UTF-8 text (byte 0xe9): binary data, or another encoding"


def test_a_parquet_file_cut_short_says_so(tmp_path):
    import duckdb

    whole = tmp_path / "whole.parquet"
    duckdb.execute(f"COPY (SELECT 'q' || i AS question, 'a' || i AS answer FROM range(50) t(i)) TO '{whole}'")
    cut = whole.read_bytes()[:-20]
    assert source_error(tmp_path, "cut.parquet", cut) == f"cannot be read as parquet at byte {len(cut)}: the Parquet file is cut short (no footer)"
    assert source_error(tmp_path, "text.parquet", b"question,answer\n") == "cannot be read as parquet at byte 0: not a Parquet file (it does not start with PAR1)"


def test_a_jsonl_of_only_bad_lines_names_the_first(tmp_path):
    message = source_error(tmp_path, "all_bad.jsonl", b"\n{broken\nnot json\n")
    assert message == "cannot be read as jsonl at line 2 (byte 2): malformed JSON line: Expecting property name enclosed in double quotes"


def test_a_dynosaur_json_array_is_not_read_line_by_line(tmp_path):
    text = '[\n {"question": "q0", "answer": "a0"},\n {"question": "q1", "answer": }\n]\n'
    message = source_error(tmp_path, "qa.json", text.encode())
    expected = text.index("}\n]")  # where the answer's value should be
    assert message == f"cannot be read as json at line 3 (byte {expected}): Expecting value"


def test_uit_json_and_yaml_files_name_format_file_and_place(tmp_path):
    bad_json = tmp_path / "task.json"
    bad_json.write_bytes('{"Definition": "Say it in French.",\n "Instances": "caf\xe9"}'.encode("latin-1"))
    with pytest.raises(FormatError) as err:
        list(read_collection(bad_json))
    offset = bad_json.read_bytes().index(b"\xe9")
    assert str(err.value).startswith(f"{bad_json} cannot be read as json at line 2 (byte {offset}): not UTF-8 text (byte 0xe9)")

    bad_yaml = tmp_path / "templates.yaml"
    bad_yaml.write_text("templates:\n  - name: a\n    jinja: [unclosed\ndata: rows.jsonl\n")
    with pytest.raises(FormatError) as err:
        list(read_collection(bad_yaml))
    assert str(err.value).startswith(f"{bad_yaml} cannot be read as yaml at line 4, column ")


# --- the shared readers (pure) -----------------------------------------------------------------


def test_a_character_cut_by_a_chunk_is_no_error_and_offsets_count_across_chunks(tmp_path, monkeypatch):
    monkeypatch.setattr(bad_input, "CHUNK", 3)  # every multi-byte character below straddles a chunk
    path = tmp_path / "t.txt"
    path.write_bytes("añé\nü€x\n".encode())
    assert first_bad_text(path) is None
    content = "añé\nü€x\n".encode() + b"ok\xffz"
    path.write_bytes(content)
    where = f"line 3 (byte {len(content) - 2})"
    assert first_bad_text(path) == (where, "not UTF-8 text (byte 0xff): binary data, or another encoding")


def test_json_lines_keeps_good_lines_and_names_each_bad_one(tmp_path):
    path = tmp_path / "mixed.jsonl"
    content = jsonl(ROWS, {2: b'{"question": "q2", "answer": ', 4: '{"question": "caf\xe9"}'.encode("latin-1")})
    path.write_bytes(b"\xef\xbb\xbf" + content.replace(b"\n", b"\n\n", 1))  # a BOM, and a blank line 2
    read = list(json_lines(path))
    good = [v for _, _, v in read if not isinstance(v, BadLine)]
    bad = [v for _, _, v in read if isinstance(v, BadLine)]
    assert good == [ROWS[i] for i in (0, 1, 3, 5)]
    assert [b.line for b in bad] == [4, 6]  # file lines, the blank one counted
    cut = 3 + 1 + content.index(b'{"question": "q2"') + len('{"question": "q2", "answer": ')  # after the BOM and blank line
    assert bad[0].reason == f"malformed JSON line: mixed.jsonl:4 (byte {cut}): Expecting value"
    assert bad[1].reason.startswith("not UTF-8 text: mixed.jsonl:6 (byte ") and bad[1].reason.endswith("byte 0xe9")


def test_uit_keeps_the_good_lines_of_a_non_utf8_jsonl(tmp_path):
    path = tmp_path / "alpaca.jsonl"
    rows = [{"instruction": f"Say {i}.", "output": str(i)} for i in range(3)]
    path.write_bytes(jsonl(rows, {1: '{"instruction": "Say caf\xe9.", "output": "1"}'.encode("latin-1")}))
    items = list(read_collection(path))
    assert [i.output for i in items if not isinstance(i, Bad)] == ["0", "2"]
    (bad,) = [i for i in items if isinstance(i, Bad)]
    assert bad.source_row == "alpaca.jsonl:2" and bad.reason.startswith("not UTF-8 text: alpaca.jsonl:2 (byte ")


def test_a_dynosaur_jsonl_keeps_its_good_lines_at_their_places(tmp_path):
    (tmp_path / "qa.jsonl").write_bytes(jsonl(ROWS, {2: b'{"question": "q2", "answer": '}))
    with open_source(entry_for(tmp_path, "qa", "qa.jsonl")) as source:
        rows = source.con.execute("SELECT __glan_row, question, answer FROM source ORDER BY __glan_row").fetchall()
        assert source.row_count == len(ROWS) - 1
        assert [b.reason.split(" (byte")[0] for b in source.rejected] == ["malformed JSON line: qa.jsonl:3"]
    # The row after the bad line keeps its index: its instance keeps its id.
    assert rows == [(i, f"q{i}", f"a{i}") for i in (0, 1, 3, 4, 5)]


def test_a_value_past_the_type_sample_is_read_not_a_late_failure(tmp_path):
    # DuckDB types a CSV column from its first 20,480 rows; a count alone would pass, and the
    # instances would fail on the value later.
    lines = ["question,n"] + [f"q{i},{i}" for i in range(25_000)] + ["q-last,not a number"]
    (tmp_path / "late.csv").write_text("\n".join(lines) + "\n")
    with open_source(entry_for(tmp_path, "late", "late.csv")) as source:
        assert source.row_count == 25_001
        assert [(c.name, c.type) for c in source.columns] == [("question", "VARCHAR"), ("n", "VARCHAR")]
        assert source.con.execute("SELECT max(__glan_row), list(n)[-1] FROM source").fetchone() == (25_000, "not a number")


# --- through the real path: a DuckDB file and the Dagster assets ------------------------------


def test_a_bad_line_becomes_a_reject_and_a_bad_file_keeps_what_was_stored(project, registry, fake_llm):  # noqa: F811
    data = registry.parent / "capitals_qa.jsonl"
    lines = data.read_bytes().splitlines(keepends=True)
    build_datasets(project, "capitals_qa")
    store = DuckDBStore(path=str(project.db))
    clean = {r.instance_id: r for r in store.read(InstanceRow, "capitals_qa")}

    data.write_bytes(b"".join(lines[:3] + [b'{"context": "cut here\n'] + lines[4:]))
    _, (summary,) = build_datasets(project, "capitals_qa")

    assert summary.success, summary.error
    kept = store.read(InstanceRow, "capitals_qa")
    assert len(kept) == len(clean) - 2  # the line's instance under each of the two tasks
    assert {r.source_row for r in kept} == set(range(len(lines))) - {3}
    assert all(clean[r.instance_id] == r for r in kept)  # the others keep their ids and values
    (reject,) = store.read(RejectRow, "capitals_qa", where="asset = ?", params=[METADATA.name])
    assert reject.stage == "import" and reject.reason.startswith("malformed JSON line: capitals_qa.jsonl:4 (byte ")
    assert reject.raw_output == '{"context": "cut here\n'
    assert latest_metadata(project.instance, METADATA.name, "capitals_qa")["rejected_lines"] == 1

    data.write_bytes(b"\x89PNG\r\n\x1a\n\x00\x00")  # the file turns binary
    _, (summary,) = build_datasets(project, "capitals_qa")

    assert not summary.success
    assert f"{data} cannot be read as jsonl at line 1 (byte 0): not UTF-8 text (byte 0x89)" in summary.error
    assert "the rows stored before were kept" in summary.error and "_duckdb" not in summary.error
    assert store.read(InstanceRow, "capitals_qa") == kept
    assert latest_metadata(project.instance, INSTANCES.name, "capitals_qa")["instances"] == len(kept)
