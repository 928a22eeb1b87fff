"""End to end on a local Ray: accounting, reject reasons, resume, formats, outputs."""

import json
import os
from collections import Counter
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from conftest import ROOT, write_jsonl

from selectray.config import parse_config
from selectray.errors import ConfigError
from selectray.io import read_rows, resolve_inputs
from selectray.pipeline import run

POOL = ROOT / "examples" / "pool.jsonl"
# What examples/make_pool.py plants: 5 empty instructions, 6 missing outputs, 5 reused
# ids, 4 overlong rows, 1 number as instruction, 1 line of broken UTF-8, 1 broken JSON line.
PLANTED = {"empty_instruction": 5, "duplicate_id": 5, "too_long": 4, "bad_type": 1, "bad_encoding": 1, "bad_json": 1}
POOL_LINES = sum(1 for line in POOL.read_bytes().splitlines() if line.strip())


def cfg(tmp_path, **over):
    base = {"input": str(POOL), "output": str(tmp_path / "out"), "embed": {"model": "hash"},
            "ray": {"progress": False}, "proportion": 0.1}
    for k, v in over.items():
        base[k] = {**base[k], **v} if isinstance(v, dict) and isinstance(base.get(k), dict) else v
    return parse_config(base)


def test_demo_pool_every_row_accounted_for(ray_local, tmp_path):
    report = run(cfg(tmp_path, method="length"), quiet=True)
    out = tmp_path / "out"
    assert report["input_rows"] == POOL_LINES
    assert report["selected"] + report["not_selected"] + report["rejected"] == POOL_LINES
    assert report["rejected_by_reason"] == PLANTED
    selected = pq.read_table(out / "selected.parquet")
    rejected = pq.read_table(out / "rejected.parquet")
    assert selected.num_rows == report["selected"] == round(0.1 * (POOL_LINES - sum(PLANTED.values())))
    assert rejected.num_rows == report["rejected"]
    assert Counter(rejected["reason"].to_pylist()) == PLANTED
    # Rejected rows point back at distinct input lines; the broken lines keep their raw text.
    assert len(set(rejected["input_row"].to_pylist())) == rejected.num_rows
    raw = [r for r in rejected.to_pylist() if r["reason"] in ("bad_json", "bad_encoding")]
    assert all(r["raw_line"] for r in raw)
    # Selected ids are unique, not rejected, and carry every original column plus rank.
    ids = selected["id"].to_pylist()
    assert len(set(ids)) == len(ids)
    assert {"instruction", "input", "output", "domain", "planted_quality", "id", "rank"} <= set(selected.column_names)
    assert not [c for c in selected.column_names if c.startswith("_") or c == "pos"]
    assert selected["rank"].to_pylist() == list(range(1, selected.num_rows + 1))
    lengths = [len(r["instruction"]) + len(r["input"] or "") + len(r["output"] or "") for r in selected.to_pylist()]
    assert lengths == sorted(lengths, reverse=True)
    assert json.loads((out / "report.json").read_text())["stages"]["read"]["rows_per_second"] > 0
    assert "<img" in (out / "report.html").read_text()


def test_missing_output_rejected_when_method_needs_responses(ray_local, tmp_path):
    c = cfg(tmp_path)
    rows = read_rows(c, resolve_inputs(c.input, "auto"), need_output=True)
    reasons = Counter(rows.rejected["_reject"].to_pylist())
    assert reasons["missing_output"] == 6
    assert rows.num_usable + rows.rejected.num_rows == POOL_LINES


def test_resume_reuses_embeddings_and_distrusts_partial_checkpoints(ray_local, tmp_path):
    c = cfg(tmp_path)
    emb = tmp_path / "out" / "embeddings"
    first = run(c, quiet=True)
    assert first["stages"]["embed"]["reused"] is False
    stamps = {p.name: p.stat().st_mtime_ns for p in emb.iterdir()}

    second = run(c, quiet=True)
    assert second["stages"]["embed"]["reused"] is True
    assert {p.name: p.stat().st_mtime_ns for p in emb.iterdir()} == stamps  # nothing rewritten
    assert second["selected"] == first["selected"]

    # A checkpoint missing one of its files (an interrupted copy) is recomputed.
    next(emb.glob("*.parquet")).unlink()
    third = run(c, quiet=True)
    assert third["stages"]["embed"]["reused"] is False
    # So is one without its manifest (an interrupted write).
    (emb / "_manifest.json").unlink()
    assert run(c, quiet=True)["stages"]["embed"]["reused"] is False
    # And a change of embedder settings invalidates it.
    assert run(cfg(tmp_path, embed={"hash_dim": 32}), quiet=True)["stages"]["embed"]["reused"] is False


def test_jsonl_and_parquet_give_the_same_selection(ray_local, tmp_path, clean_rows):
    jsonl = write_jsonl(tmp_path / "rows.jsonl", clean_rows)
    parquet = tmp_path / "rows.parquet"
    pq.write_table(pa.Table.from_pylist(clean_rows), parquet)
    picked = {}
    for name, path in (("jsonl", jsonl), ("parquet", parquet)):
        for method in ("random", "length"):
            run(cfg(tmp_path, input=str(path), output=str(tmp_path / f"{name}-{method}"), method=method,
                    budget=15, seed=3, report={"coverage": False}), quiet=True)
            picked[name, method] = pq.read_table(tmp_path / f"{name}-{method}" / "selected.parquet")["id"].to_pylist()
    assert picked["jsonl", "random"] == picked["parquet", "random"]
    assert picked["jsonl", "length"] == picked["parquet", "length"]
    assert len(picked["jsonl", "random"]) == 15


def test_random_selection_depends_on_seed_not_on_order(ray_local, tmp_path, clean_rows):
    a = write_jsonl(tmp_path / "a.jsonl", clean_rows)
    b = write_jsonl(tmp_path / "b.jsonl", list(reversed(clean_rows)))
    sel = {}
    for name, path, seed in (("a", a, 1), ("b", b, 1), ("c", a, 2)):
        run(cfg(tmp_path, input=str(path), output=str(tmp_path / name), budget=20, seed=seed,
                report={"coverage": False}), quiet=True)
        sel[name] = pq.read_table(tmp_path / name / "selected.parquet")["id"].to_pylist()
    assert sel["a"] == sel["b"]
    assert set(sel["a"]) != set(sel["c"])


def test_folder_input_and_user_id_column(ray_local, tmp_path, clean_rows):
    folder = tmp_path / "pool"
    folder.mkdir()
    renamed = [{"uid": r["id"], "prompt": r["instruction"], "completion": r["output"]} for r in clean_rows]
    pq.write_table(pa.Table.from_pylist(renamed[:70]), folder / "part-0.parquet")
    pq.write_table(pa.Table.from_pylist(renamed[70:]), folder / "part-1.parquet")
    c = cfg(tmp_path, input=str(folder), budget=10, columns={"instruction": "prompt", "input": None,
                                                           "output": "completion", "id": "uid"})
    report = run(c, quiet=True)
    assert report["input_rows"] == len(clean_rows) and report["rejected"] == 0
    sel = pq.read_table(tmp_path / "out" / "selected.parquet")
    assert sel["id"].to_pylist() == sel["uid"].to_pylist()
    assert {"prompt", "completion", "uid", "rank"} <= set(sel.column_names)


def test_budget_larger_than_pool_is_a_clear_error(ray_local, tmp_path, clean_rows):
    path = write_jsonl(tmp_path / "few.jsonl", clean_rows[:10])
    with pytest.raises(ConfigError, match="budget 50 is more than the 10 usable rows"):
        run(cfg(tmp_path, input=str(path), budget=50), quiet=True)


def test_missing_instruction_column_is_named(ray_local, tmp_path, clean_rows):
    path = tmp_path / "p.parquet"
    pq.write_table(pa.Table.from_pylist([{"question": r["instruction"]} for r in clean_rows]), path)
    with pytest.raises(Exception, match="no column 'instruction'"):
        run(cfg(tmp_path, input=str(path)), quiet=True)


@pytest.mark.slow
def test_minilm_pipeline_reports_coverage(ray_local, tmp_path):
    report = run(cfg(tmp_path, embed={"model": "all-MiniLM-L6-v2"}, method="random"), quiet=True)
    cov = report["coverage"]
    assert 0 < cov["mean_distance"] <= cov["radius"] <= 2.0
    assert cov["sample_rows"] == report["input_rows"] - report["rejected"]
    assert os.path.exists(Path(report["output"]) / "embeddings" / "_manifest.json")
