"""The pool's blocks of local Parquet files stay in the files; opened, they are the rows the object-store
path holds, and the rejects (duplicate ids included, read again from the file) are the same."""

import json

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import ray

from selectray.settings import ColumnsConfig, ReadConfig
from selectray.stages.read import read_pool
from selectray.stages.read_files import DiskBlock, open_block, resolve_inputs


def _opened(pool) -> pa.Table:
    return pa.concat_tables(ray.get([ray.remote(open_block).remote(b) for b in pool.blocks]), promote_options="permissive")


def test_parquet_blocks_in_their_files_equal_the_object_store_blocks(ray_local, tmp_path, clean_rows):
    rows = [dict(r, n=i) for i, r in enumerate(clean_rows[:90])]
    for i in (7, 40, 41):  # three reused ids, one of them across files
        rows[i]["id"] = rows[i - 5]["id"]
    rows[12]["instruction"] = "  "
    pq.write_table(pa.Table.from_pylist(rows[:50]), tmp_path / "a.parquet", row_group_size=16)
    pq.write_table(pa.Table.from_pylist([{k: v for k, v in r.items() if k != "input"} for r in rows[50:]]),
                   tmp_path / "b.parquet")
    (tmp_path / "c.jsonl").write_text("".join(json.dumps(dict(r, id=f"j{i}")) + "\n" for i, r in enumerate(rows[:5])))
    files = resolve_inputs([str(tmp_path)], "auto")
    on_disk = read_pool(files, ColumnsConfig(), ReadConfig(), need_output=True, text_in_file=True)
    stored = read_pool(files, ColumnsConfig(), ReadConfig(), need_output=True, text_in_file=False)

    kinds = [type(ray.get(b)).__name__ for b in on_disk.blocks]
    assert kinds.count("DiskBlock") == 2 and kinds[-1] == "Table"  # the JSON Lines block is held in memory
    assert not any(isinstance(ray.get(b), DiskBlock) for b in stored.blocks)
    assert on_disk.fingerprint == stored.fingerprint and on_disk.num_usable == stored.num_usable == 90 + 5 - 4
    a, b = _opened(on_disk), _opened(stored)
    assert a.column_names == b.column_names == on_disk.column_names()
    for name in a.column_names:
        assert a[name].to_pylist() == b[name].to_pylist(), name
    assert a["pos"].to_pylist() == list(range(on_disk.num_usable))
    rej_a, rej_b = on_disk.rejected.sort_by("_row"), stored.rejected.sort_by("_row")
    assert rej_a["_reject"].to_pylist() == rej_b["_reject"].to_pylist() == \
        ["duplicate_id", "empty_instruction", "duplicate_id", "duplicate_id"]
    for name in rej_b.column_names:
        assert rej_a[name].to_pylist() == rej_b[name].to_pylist(), name
    some = np.array([3, 50, 88])
    picked = on_disk.dataset(["id", "pos"], some).take_all()
    assert picked == stored.dataset(["id", "pos"], some).take_all() and [r["pos"] for r in picked] == [3, 50, 88]
