"""End to end on a local Ray: accounting, reject reasons, resume, formats, outputs."""

import json
import os
from collections import Counter
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from selectray.errors import ConfigError
from selectray.pipeline import run
from selectray.stages.read import read_pool, resolve_inputs


def test_demo_pool_every_row_accounted_for(ray_local, tmp_path, make_cfg, demo_pool):
    report = run(make_cfg(tmp_path, method="length"), quiet=True)
    out = tmp_path / "out"
    assert report["input_rows"] == demo_pool["lines"]
    assert report["selected"] + report["not_selected"] + report["rejected"] == demo_pool["lines"]
    assert report["rejected_by_reason"] == demo_pool["planted"]
    selected = pq.read_table(out / "selected.parquet")
    rejected = pq.read_table(out / "rejected.parquet")
    assert selected.num_rows == report["selected"] == round(0.1 * (demo_pool["lines"] - sum(demo_pool["planted"].values())))
    assert rejected.num_rows == report["rejected"]
    assert Counter(rejected["reason"].to_pylist()) == demo_pool["planted"]
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


def test_missing_output_rejected_when_method_needs_responses(ray_local, tmp_path, make_cfg, demo_pool):
    c = make_cfg(tmp_path)
    rows = read_pool(resolve_inputs(c.input, "auto"), c.columns, c.read, need_output=True)
    reasons = Counter(rows.rejected["_reject"].to_pylist())
    assert reasons["missing_output"] == 6
    assert rows.num_usable + rows.rejected.num_rows == demo_pool["lines"]


def test_embeddings_checkpoint_is_reused_and_resumed_part_by_part(ray_local, tmp_path, make_cfg):
    c = make_cfg(tmp_path, embed={"batch_size": 100})
    emb = tmp_path / "out" / "embeddings"
    first = run(c, quiet=True)
    usable = first["input_rows"] - first["rejected"]
    assert first["stages"]["embed"]["computed_rows"] == usable and first["stages"]["embed"]["reused"] is False
    parts = sorted(emb.glob("*.parquet"))
    sizes = [pq.read_metadata(p).num_rows for p in parts]
    assert sum(sizes) == usable and max(sizes) <= 100 and len(list((emb / "_parts").glob("*.json"))) == len(parts)
    stamps = {p.name: p.stat().st_mtime_ns for p in parts}

    second = run(c, quiet=True)
    assert second["stages"]["embed"]["reused"] is True and second["stages"]["embed"]["computed_rows"] == 0
    assert {p.name: p.stat().st_mtime_ns for p in emb.glob("*.parquet")} == stamps  # nothing rewritten
    selected = pq.read_table(tmp_path / "out" / "selected.parquet")["id"].to_pylist()

    # A part whose data file is gone, and one whose record is gone (a writer cut short
    # between the two), are embedded again; the other parts are kept as they are.
    lost = pq.read_table(parts[0], columns=["pos"]).num_rows
    parts[0].unlink()
    unrecorded = pq.read_table(parts[1], columns=["pos"]).num_rows
    (emb / "_parts" / (parts[1].stem + ".json")).unlink()
    (emb / "_manifest.json").unlink()
    third = run(c, quiet=True)
    assert third["stages"]["embed"]["computed_rows"] == lost + unrecorded
    assert third["stages"]["embed"]["reused_rows"] == usable - lost - unrecorded
    assert {p.name: p.stat().st_mtime_ns for p in emb.glob("*.parquet")}.items() >= {
        n: t for n, t in stamps.items() if n not in (parts[0].name, parts[1].name)}.items()
    assert pq.read_table(tmp_path / "out" / "selected.parquet")["id"].to_pylist() == selected

    # A change of embedder settings starts over, and the old parts are removed.
    fourth = run(make_cfg(tmp_path, embed={"hash_dim": 32, "batch_size": 100}), quiet=True)
    assert fourth["stages"]["embed"]["computed_rows"] == usable
    assert all(pq.read_schema(f).field("embedding").type.list_size == 32 for f in emb.glob("*.parquet"))
    manifest = json.loads((emb / "_manifest.json").read_text())
    assert manifest["hash_dim"] == 32 and manifest["rows"] == usable and manifest["complete"] is True


def test_jsonl_and_parquet_give_the_same_selection(ray_local, tmp_path, clean_rows, make_cfg, write_jsonl):
    jsonl = write_jsonl(tmp_path / "rows.jsonl", clean_rows)
    parquet = tmp_path / "rows.parquet"
    pq.write_table(pa.Table.from_pylist(clean_rows), parquet)
    picked = {}
    for name, path in (("jsonl", jsonl), ("parquet", parquet)):
        for method in ("random", "length"):
            run(make_cfg(tmp_path, input=str(path), output=str(tmp_path / f"{name}-{method}"), method=method,
                    budget=15, seed=3, report={"coverage": False}), quiet=True)
            picked[name, method] = pq.read_table(tmp_path / f"{name}-{method}" / "selected.parquet")["id"].to_pylist()
    assert picked["jsonl", "random"] == picked["parquet", "random"]
    assert picked["jsonl", "length"] == picked["parquet", "length"]
    assert len(picked["jsonl", "random"]) == 15


def test_random_selection_depends_on_seed_not_on_order(ray_local, tmp_path, clean_rows, make_cfg, write_jsonl):
    a = write_jsonl(tmp_path / "a.jsonl", clean_rows)
    b = write_jsonl(tmp_path / "b.jsonl", list(reversed(clean_rows)))
    sel = {}
    for name, path, seed in (("a", a, 1), ("b", b, 1), ("c", a, 2)):
        run(make_cfg(tmp_path, input=str(path), output=str(tmp_path / name), budget=20, seed=seed,
                report={"coverage": False}), quiet=True)
        sel[name] = pq.read_table(tmp_path / name / "selected.parquet")["id"].to_pylist()
    assert sel["a"] == sel["b"]
    assert set(sel["a"]) != set(sel["c"])


def test_folder_input_and_user_id_column(ray_local, tmp_path, clean_rows, make_cfg):
    folder = tmp_path / "pool"
    folder.mkdir()
    renamed = [{"uid": r["id"], "prompt": r["instruction"], "completion": r["output"]} for r in clean_rows]
    pq.write_table(pa.Table.from_pylist(renamed[:70]), folder / "part-0.parquet")
    pq.write_table(pa.Table.from_pylist(renamed[70:]), folder / "part-1.parquet")
    c = make_cfg(tmp_path, input=str(folder), budget=10, columns={"instruction": "prompt", "input": None,
                                                           "output": "completion", "id": "uid"})
    report = run(c, quiet=True)
    assert report["input_rows"] == len(clean_rows) and report["rejected"] == 0
    sel = pq.read_table(tmp_path / "out" / "selected.parquet")
    assert sel["id"].to_pylist() == sel["uid"].to_pylist()
    assert {"prompt", "completion", "uid", "rank"} <= set(sel.column_names)


def test_budget_larger_than_pool_is_a_clear_error(ray_local, tmp_path, clean_rows, make_cfg, write_jsonl):
    path = write_jsonl(tmp_path / "few.jsonl", clean_rows[:10])
    with pytest.raises(ConfigError, match="budget 50 is more than the 10 usable rows"):
        run(make_cfg(tmp_path, input=str(path), budget=50), quiet=True)


def test_missing_instruction_column_is_named(ray_local, tmp_path, clean_rows, make_cfg):
    path = tmp_path / "p.parquet"
    pq.write_table(pa.Table.from_pylist([{"question": r["instruction"]} for r in clean_rows]), path)
    with pytest.raises(Exception, match="no column 'instruction'"):
        run(make_cfg(tmp_path, input=str(path)), quiet=True)


@pytest.mark.slow
def test_minilm_pipeline_reports_coverage(ray_local, tmp_path, make_cfg):
    report = run(make_cfg(tmp_path, embed={"model": "all-MiniLM-L6-v2"}, method="random"), quiet=True)
    cov = report["coverage"]
    assert 0 < cov["mean_distance"] <= cov["radius"] <= 2.0
    assert cov["sample_rows"] == report["input_rows"] - report["rejected"]
    assert os.path.exists(Path(report["output"]) / "embeddings" / "_manifest.json")


def _coverage_by_hand(out, positions, usable_n, sample_size, seed):
    """The coverage figure recomputed from the embeddings files with plain numpy (float64 brute force)."""
    from selectray.embeddings import read_embeddings

    rng = np.random.default_rng(seed + 1)
    pool = np.arange(usable_n)
    sample = rng.choice(pool, size=min(usable_n, sample_size), replace=False)
    sel = np.asarray(positions)
    if len(sel) > sample_size:
        sel = rng.choice(sel, size=sample_size, replace=False)
    rnd = rng.choice(pool, size=len(sel), replace=False)
    pos, vec = read_embeddings(out / "embeddings")
    v = {int(p): x.astype(np.float64) for p, x in zip(pos, vec)}

    def dist(a, b):
        A, B = np.stack([v[i] for i in a]), np.stack([v[i] for i in b])
        return np.sqrt(((A[:, None, :] - B[None]) ** 2).sum(-1)).min(axis=1)

    d_sel, d_rnd = dist(sample, sel), dist(sample, rnd)
    return {"radius": d_sel.max(), "mean_distance": d_sel.mean(), "random_radius": d_rnd.max(),
            "random_mean_distance": d_rnd.mean()}


def test_coverage_embeds_only_what_it_reads_when_the_method_needs_no_embeddings(ray_local, tmp_path, make_cfg,
                                                                                 write_jsonl):
    from make_pool import make_rows

    rows = [r for r in make_rows(1000, seed=11) if r["instruction"].strip()]
    path = write_jsonl(tmp_path / "pool.jsonl", rows)
    n = len(rows)
    # A pool within the sample size: every row is embedded and the figure is the full one.
    full = run(make_cfg(tmp_path, input=str(path), output=str(tmp_path / "full"), method="random", budget=100), quiet=True)
    sel = pq.read_table(tmp_path / "full" / "selected.parquet")
    assert full["coverage"]["pool_embedded"] is True and full["stages"]["embed"]["computed_rows"] == n
    ids = [r["id"] for r in rows]
    positions = [ids.index(i) for i in sel["id"].to_pylist()]
    by_hand = _coverage_by_hand(tmp_path / "full", positions, n, 5000, 0)
    for key, value in by_hand.items():
        assert full["coverage"][key] == pytest.approx(value, rel=1e-5)
    # A larger pool than the sample (and a selection over the cap): only the sampled rows are embedded.
    part = run(make_cfg(tmp_path, input=str(path), output=str(tmp_path / "part"), method="random", budget=300,
                        report={"coverage_sample": 150}), quiet=True)
    sel = pq.read_table(tmp_path / "part" / "selected.parquet")
    cov = part["coverage"]
    assert cov["pool_embedded"] is False and cov["sample_rows"] == 150 and cov["selected_rows"] == 150
    assert part["stages"]["embed"]["computed_rows"] == cov["embedded_rows"] <= 450 < n
    positions = [ids.index(i) for i in sel["id"].to_pylist()]
    # The selection's rank order is its draw order: the figure samples from it the same way.
    by_hand = _coverage_by_hand(tmp_path / "part", positions, n, 150, 0)
    for key, value in by_hand.items():
        assert cov[key] == pytest.approx(value, rel=1e-5)
