"""The read stage's input parts: cutting files into parts never changes the rows or their order."""

from __future__ import annotations

import json

import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from selectray.errors import InputError
from selectray.stages.read_files import _line_range, plan_parts, read_part, resolve_inputs
from selectray.stages.validate import TextColumns, parse_jsonl

COLS = TextColumns("instruction", "input", "output", "id")

_line = st.one_of(
    st.just(b""),  # blank line
    st.just(b"\xff\xfe broken"),  # not UTF-8
    st.just(b"not json"),
    st.text(max_size=12).map(lambda t: json.dumps({"instruction": t}).encode()),
)


@settings(max_examples=60, deadline=None)
@given(lines=st.lists(_line, max_size=12), crlf=st.booleans(), trailing=st.booleans(),
       part_bytes=st.integers(1, 40))
def test_jsonl_ranges_hold_every_byte_once_and_parse_as_the_whole_file(tmp_path_factory, lines, crlf, trailing, part_bytes):
    sep = b"\r\n" if crlf else b"\n"
    data = sep.join(lines) + (sep if trailing and lines else b"")
    path = tmp_path_factory.mktemp("jsonl") / "pool.jsonl"
    path.write_bytes(data)
    parts = plan_parts([(str(path), "jsonl")], part_bytes=part_bytes)
    assert len(parts) == max(1, -(-len(data) // part_bytes))
    pieces = [_line_range(p) for p in parts]
    assert b"".join(pieces) == data  # each byte in exactly one range, in order
    starts = [sum(map(len, pieces[:i])) for i, piece in enumerate(pieces) if piece]
    assert all(s == 0 or data[s - 1:s] == b"\n" for s in starts)  # each range starts a line
    whole = parse_jsonl(data, COLS.text)
    by_part = pa.concat_tables([read_part(p, COLS) for p in parts], promote_options="permissive")
    assert by_part.num_rows == whole.num_rows
    for name in whole.column_names:
        assert by_part[name].to_pylist() == whole[name].to_pylist()


def test_parquet_row_groups_are_gathered_into_parts_in_order(tmp_path):
    rows = [{"id": f"r{i}", "instruction": f"do {i}"} for i in range(50)]
    path = tmp_path / "a.parquet"
    pq.write_table(pa.Table.from_pylist(rows), path, row_group_size=7)  # 8 groups: 7 x 7 + 1
    parts = plan_parts([(str(path), "parquet")], part_rows=15)
    assert [p.row_groups for p in parts] == [(0, 1, 2), (3, 4, 5), (6, 7)]
    tables = [read_part(p, COLS) for p in parts]
    assert pa.concat_tables(tables)["id"].to_pylist() == [r["id"] for r in rows]
    # A file without an `input`/`output` column reads with them as null text, so parts line up.
    assert tables[0]["input"].type == pa.string() and tables[0]["input"].null_count == tables[0].num_rows


def test_empty_parquet_file_is_one_empty_part(tmp_path):
    path = tmp_path / "empty.parquet"
    pq.write_table(pa.table({"id": pa.array([], pa.string()), "instruction": pa.array([], pa.string())}), path)
    parts = plan_parts([(str(path), "parquet")])
    assert len(parts) == 1 and read_part(parts[0], COLS).num_rows == 0


def test_inputs_are_parquet_first_then_jsonl_each_sorted_and_folders_walked(tmp_path):
    (tmp_path / "sub").mkdir()
    for name in ("b.jsonl", "sub/a.jsonl"):
        (tmp_path / name).write_text('{"instruction": "x"}\n')
    for name in ("z.parquet", "sub/y.parquet"):
        pq.write_table(pa.table({"instruction": ["x"]}), tmp_path / name)
    (tmp_path / "notes.txt").write_text("ignored")
    (tmp_path / "_generate.json").write_text("{}")  # metadata, as `selectray generate` writes
    (tmp_path / ".cache").mkdir()
    (tmp_path / ".cache" / "old.parquet").write_bytes(b"")
    files = resolve_inputs([str(tmp_path)], "auto")
    assert [(p[len(str(tmp_path)) + 1:], k) for p, k in files] == [
        ("sub/y.parquet", "parquet"), ("z.parquet", "parquet"), ("b.jsonl", "jsonl"), ("sub/a.jsonl", "jsonl")]


@pytest.mark.parametrize("make, message", [
    (lambda d: d / "missing.jsonl", "input not found"),
    (lambda d: (d / "empty").mkdir() or d / "empty", "holds no .parquet or .jsonl files"),
    (lambda d: (d / "bad.parquet").write_bytes(b"not parquet") and d / "bad.parquet", "cannot read"),
    (lambda d: (d / "pool.csv").write_text("a,b") and d / "pool.csv", "cannot tell the format"),
])
def test_bad_inputs_are_one_line_errors(tmp_path, make, message):
    with pytest.raises(InputError, match=message) as e:
        resolve_inputs([str(make(tmp_path))], "auto")
    assert "\n" not in str(e.value)


def test_a_disk_block_opens_its_usable_rows_and_refuses_a_changed_file(tmp_path):
    import numpy as np

    from selectray.stages.read_files import DiskBlock, block_columns, open_block

    path = tmp_path / "a.parquet"
    pq.write_table(pa.table({"id": ["a", "b", "c", "d"], "instruction": ["w", "x", "y", "z"], "n": [1, 2, 3, 4]}), path)
    (part,) = plan_parts([(str(path), "parquet")])
    assert part.rereadable
    block = DiskBlock(part, COLS, np.array([1, 3]), row_start=10, pos_start=5, ids=pa.array(["b", "d"]),
                      hashes=pa.array(["hb", "hd"]))
    t = open_block(block)
    assert t.column_names == block_columns(block) == ["instruction", "n", "input", "output", "id", "_hash", "_row", "pos"]
    assert t["instruction"].to_pylist() == ["x", "z"] and t["n"].to_pylist() == [2, 4]
    assert t["_row"].to_pylist() == [11, 13] and t["pos"].to_pylist() == [5, 6] and t["id"].to_pylist() == ["b", "d"]
    assert open_block(block, ["instruction", "pos"]).column_names == ["instruction", "pos"]  # only what is asked
    pq.write_table(pa.table({"id": ["a"], "instruction": ["changed"], "n": [0]}), path)
    with pytest.raises(InputError, match="changed during the run"):
        open_block(block)
