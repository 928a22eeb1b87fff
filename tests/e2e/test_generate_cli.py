"""`selectray generate` from the command line, and its planted rows through the real read stage."""

from __future__ import annotations

import json
import subprocess
import sys
from collections import Counter

import pytest

from selectray.generate import MANIFEST


def selectray(*args):
    return subprocess.run([sys.executable, "-m", "selectray", *args], capture_output=True, text=True, timeout=300)


def test_generate_prints_and_records_what_it_wrote(tmp_path):
    out = tmp_path / "pool"
    proc = selectray("generate", "--rows", "2500", "--out", str(out), "--seed", "9", "--shard-rows", "1000",
                     "--bad-share", "0.02")
    assert proc.returncode == 0, proc.stderr
    summary = json.loads((out / MANIFEST).read_text())
    assert summary["files"] == ["part-00000.parquet", "part-00001.parquet", "part-00002.parquet"]
    assert sorted(p.name for p in out.iterdir()) == sorted([*summary["files"], MANIFEST])
    assert "wrote 2,500 rows in 3 files" in proc.stdout
    assert "planted bad rows: 50 (empty_instruction 10, missing_output 10, missing_id 10, duplicate_id 10, too_long 10)" in proc.stdout
    assert summary["planted"] == dict.fromkeys(("empty_instruction", "missing_output", "missing_id", "duplicate_id", "too_long"), 10)


@pytest.mark.parametrize("args,needle", [
    (["--rows", "10", "--bad-share", "0.9"], "--bad-share must be between 0 and 0.5"),
    (["--rows", "ten"], "invalid int value"), (["--rows", "10", "--format", "csv"], "invalid choice"),
])
def test_bad_arguments_exit_2_with_one_line(tmp_path, args, needle):
    proc = selectray("generate", "--out", str(tmp_path / "pool"), *args)
    assert proc.returncode == 2, proc.stderr
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1 and needle in lines[0] and "Traceback" not in proc.stderr, proc.stderr


def test_existing_pool_is_kept_without_overwrite(tmp_path):
    assert selectray("generate", "--rows", "100", "--out", str(tmp_path)).returncode == 0
    before = (tmp_path / "part-00000.parquet").read_bytes()
    proc = selectray("generate", "--rows", "200", "--out", str(tmp_path), "--seed", "1")
    assert proc.returncode == 2 and "--overwrite" in proc.stderr and len(proc.stderr.strip().splitlines()) == 1
    assert (tmp_path / "part-00000.parquet").read_bytes() == before


@pytest.mark.parametrize("fmt", ["parquet", "jsonl"])
def test_read_stage_rejects_exactly_what_was_planted(ray_local, tmp_path, fmt):
    from selectray.config import parse_config
    from selectray.generate import write_pool
    from selectray.pipeline import run
    from selectray.stages.read import read_pool, resolve_inputs

    summary = write_pool(tmp_path / "pool", 4_000, seed=11, bad_share=0.02, fmt=fmt, shard_rows=1_500)
    planted = {k: v for k, v in summary["planted"].items() if v}
    files = [str(tmp_path / "pool" / f) for f in summary["files"]]
    cfg = parse_config({"input": files, "output": str(tmp_path / "out"), "method": "random", "budget": 100,
                        "embed": {"model": "hash"}, "report": {"coverage": False}, "ray": {"progress": False}})
    report = run(cfg, quiet=True)
    # random needs no responses: the rows without one are usable
    expected = {k: v for k, v in planted.items() if k != "missing_output"}
    assert report["rejected_by_reason"] == expected
    assert report["input_rows"] == 4_000 and report["rejected"] == sum(expected.values())
    assert report["selected"] + report["not_selected"] + report["rejected"] == 4_000
    # a method that needs responses rejects them too
    pool = read_pool(resolve_inputs(files, "auto"), cfg.columns, cfg.read, need_output=True)
    assert Counter(pool.rejected["_reject"].to_pylist()) == planted
    assert pool.num_usable == 4_000 - sum(planted.values())
