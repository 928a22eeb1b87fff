"""The one checkpoint scheme: parts written whole then recorded, a manifest written last."""

import json

import pyarrow as pa
import pytest

from selectray.checkpoint import MANIFEST, RECORDS, Checkpoint, fingerprint
from selectray.storage import Location


def _table(n, start=0):
    return pa.table({"pos": list(range(start, start + n))})


def test_parts_are_recorded_and_the_manifest_seals(tmp_path):
    ck = Checkpoint(tmp_path / "stage", "k1", model="m")
    assert ck.manifest() is None and not ck.is_sealed() and ck.parts() == []
    ck.write_part(_table(3), "part-b")
    ck.write_part(_table(2, 3), "part-a")
    assert [p.file for p in ck.parts()] == ["part-a.parquet", "part-b.parquet"]
    assert not ck.is_sealed()
    m = ck.seal(complete=True)
    assert m["rows"] == 5 and m["model"] == "m" and m["complete"] is True
    assert [p["file"] for p in m["parts"]] == ["part-a.parquet", "part-b.parquet"]
    assert ck.is_sealed() and json.loads((tmp_path / "stage" / MANIFEST).read_text())["key"] == "k1"
    assert [f.name for f in ck.files()] == ["part-a.parquet", "part-b.parquet"]


def test_unrecorded_files_and_other_keys_do_not_count(tmp_path):
    folder = tmp_path / "stage"
    old = Checkpoint(folder, "old")
    old.write_part(_table(4), "part-old")
    old.seal()
    (folder / "part-orphan.parquet").write_bytes(b"half a file")  # a writer cut short before its record
    new = Checkpoint(folder, "new")
    assert new.manifest() is None and not new.is_sealed() and new.parts() == []
    new.reset()  # another key's manifest and parts go; nothing of this key to keep
    assert not (folder / MANIFEST).exists() and not (folder / "part-old.parquet").exists()
    assert not (folder / "part-orphan.parquet").exists() and not list((folder / RECORDS).glob("*.json"))
    new.write_part(_table(1), "part-x")
    (folder / "part-y.parquet").write_bytes(b"no record")
    assert [p.file for p in new.parts()] == ["part-x.parquet"]
    new.seal()
    assert sorted(p.name for p in folder.glob("*.parquet")) == ["part-x.parquet"]


def test_a_part_whose_file_is_gone_is_not_counted_and_unseals(tmp_path):
    ck = Checkpoint(tmp_path / "s", "k")
    ck.write_part(_table(2), "part-1")
    ck.write_part(_table(2, 2), "part-2")
    ck.seal()
    (tmp_path / "s" / "part-1.parquet").unlink()
    assert not ck.is_sealed() and [p.file for p in ck.parts()] == ["part-2.parquet"]
    (tmp_path / "s" / RECORDS / "part-2.json").write_text("{not json")  # a record cut short
    assert ck.parts() == []


def test_a_checkpoint_pickles_to_its_location(tmp_path):
    import pickle

    ck = Checkpoint(Location(str(tmp_path / "s")), "k", a=1)
    back = pickle.loads(pickle.dumps(ck))
    assert back.folder == ck.folder and back.key == "k" and back.settings == {"a": 1}
    back.write_part(_table(1), "p")
    assert [p.file for p in ck.parts()] == ["p.parquet"]


def test_fingerprint_is_stable_and_order_free_in_mappings():
    assert fingerprint({"a": 1, "b": 2}, "x") == fingerprint({"b": 2, "a": 1}, "x")
    assert fingerprint({"a": 1}) != fingerprint({"a": 2})
    assert len(fingerprint("x")) == 32


def test_location_writes_whole_files_and_lists(tmp_path):
    loc = Location(str(tmp_path / "d"))
    (loc / "b.json").write_json({"x": 1})
    (loc / "a.txt").write_text("hi")
    assert [f.name for f in loc.list()] == ["a.txt", "b.json"] and [f.name for f in loc.list(".json")] == ["b.json"]
    assert (loc / "b.json").read_json() == {"x": 1} and (loc / "a.txt").read_bytes() == b"hi"
    assert not list(tmp_path.glob("d/*.tmp-*"))  # no temporary file left behind
    (loc / "t.parquet").write_parquet(_table(3))
    assert (loc / "t.parquet").parquet_rows() == 3
    assert Location(f"file://{tmp_path}/d") == loc
    (loc / "a.txt").delete()
    assert not (loc / "a.txt").exists() and (loc / "b.json").is_file() and loc.is_dir()
    assert Location(str(tmp_path / "nothing")).list() == []


def test_location_of_an_unknown_scheme_is_a_one_line_error():
    from selectray.errors import InputError

    with pytest.raises(InputError, match="cannot open 'nope://bucket/x'"):
        Location("nope://bucket/x")


def test_read_vectors_reads_every_batch_of_every_file(tmp_path, monkeypatch):
    """A shard's rows are its files' rows in file order, however many batches each takes."""
    import numpy as np
    import pyarrow.parquet as pq

    from selectray import embeddings

    monkeypatch.setattr(embeddings, "READ_BATCH_ROWS", 3)  # several batches per file and row group
    rng = np.random.default_rng(0)
    x = rng.standard_normal((23, 4)).astype(np.float32)
    vectors: list = [list(map(float, v)) for v in x]
    vectors[4], vectors[11], vectors[20] = None, [1.0, 2.0], [float("inf")] * 4  # in the 2nd, 4th, 7th batch
    pos = rng.permutation(23)
    files = []
    for i, (a, b) in enumerate([(0, 14), (14, 23)]):
        files.append(str(tmp_path / f"part-{i}.parquet"))
        table = pa.table({"pos": pa.array(pos[a:b], pa.int64()), "embedding": pa.array(vectors[a:b], pa.list_(pa.float32()))})
        pq.write_table(table, files[-1], row_group_size=5)
    rows = embeddings.read_vectors(files, 4)
    good = np.setdiff1d(np.arange(23), [4, 11, 20])
    np.testing.assert_array_equal(rows.pos, pos[good])
    np.testing.assert_array_equal(rows.x, x[good])
    np.testing.assert_allclose(rows.norms, (x[good].astype(np.float64) ** 2).sum(1), rtol=1e-6)
    assert dict(zip(rows.rejected_pos.tolist(), rows.rejected_reason.tolist(), strict=True)) == {
        pos[4]: "missing_embedding", pos[11]: "bad_dimension", pos[20]: "nonfinite_embedding"}
