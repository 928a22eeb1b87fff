"""Faults: a worker killed mid-stage, the driver killed mid-stage; the run recovers to the
outputs an undisturbed run gives. Every process killed here is one this test started (the
driver) or one of its descendants, recorded before the kill and ended by process id."""

from __future__ import annotations

import contextlib
import json
import os
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import psutil
import pyarrow.parquet as pq
import pytest
import yaml

from selectray.pipeline import run

pytestmark = pytest.mark.slow


def _records(folder: Path) -> int:
    return len(list(folder.glob("_parts/*.json"))) if folder.exists() else 0


def _kill_driver_when(proc: subprocess.Popen, ready, timeout: float = 600) -> bool:
    """SIGKILL the driver once `ready()` holds, then end the local Ray it left behind (its
    descendants, recorded just before the kill). False when the run finished first."""
    end = time.time() + timeout
    while time.time() < end and proc.poll() is None and not ready():
        time.sleep(0.02)
    if proc.poll() is not None:
        return False
    left = psutil.Process(proc.pid).children(recursive=True)
    proc.send_signal(signal.SIGKILL)
    proc.wait(30)
    for p in left:
        with contextlib.suppress(psutil.NoSuchProcess):
            p.kill()
    psutil.wait_procs(left, timeout=30)
    return True


def _driver(config: Path, cwd: Path, *extra: str) -> subprocess.Popen:
    return subprocess.Popen([sys.executable, "-m", "selectray", "run", "--config", str(config), "--quiet", *extra],
                            cwd=cwd, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)


def _config(tmp_path: Path, **cfg) -> Path:
    path = tmp_path / f"{cfg['output'].rsplit('/', 1)[-1]}.yaml"
    path.write_text(yaml.safe_dump({"ray": {"progress": False, "num_cpus": 2}, **cfg}))
    return path


def _run_to_the_end(config: Path) -> dict:
    """Run a config in this process, on the session's Ray (what must be a process is the killed driver)."""
    from selectray.config import load_config

    return run(load_config(config), quiet=True)


def _resumed_and_undisturbed(tmp_path: Path, base: dict):
    """(the selection of the run that was killed and resumed, that of an undisturbed run of the same config)."""
    _run_to_the_end(_config(tmp_path, output=str(tmp_path / "whole"), **base))
    return (pq.read_table(tmp_path / "killed" / "selected.parquet"), pq.read_table(tmp_path / "whole" / "selected.parquet"))


def test_a_driver_killed_mid_embed_resumes_with_the_missing_rows(ray_local, tmp_path, root):
    base = {"input": str(root / "examples" / "pool.jsonl"), "method": "kcenter", "proportion": 0.1,
            # Four rows per batch and part: ~140 parts, so the embed stage lasts long enough to be cut short.
            "embed": {"model": "hash", "batch_size": 4, "concurrency": [1, 1]}}
    killed = _config(tmp_path, output=str(tmp_path / "killed"), **base)
    emb = tmp_path / "killed" / "embeddings"
    proc = _driver(killed, root)
    assert _kill_driver_when(proc, lambda: _records(emb) >= 20), "the run ended before it could be interrupted"
    done_before = _records(emb)
    assert not (tmp_path / "killed" / "selected.parquet").exists()

    report = _run_to_the_end(killed)
    usable = report["input_rows"] - report["rejected"]
    embed = report["stages"]["embed"]
    assert embed["reused_rows"] >= done_before and embed["computed_rows"] == usable - embed["reused_rows"] < usable

    resumed, undisturbed = _resumed_and_undisturbed(tmp_path, base)
    assert resumed["id"].to_pylist() == undisturbed["id"].to_pylist()
    assert resumed["rank"].to_pylist() == undisturbed["rank"].to_pylist()


def test_a_driver_killed_mid_score_reuses_every_recorded_part(ray_local, tmp_path, root, clean_rows, write_jsonl,
                                                              tiny_llama_dir):
    rows = clean_rows[:80]  # five parts of 16 rows: cut short after three, cheaper to score three times than 120
    pool = write_jsonl(tmp_path / "rows.jsonl", rows)
    base = {"input": str(pool), "method": "selectit", "budget": 10, "report": {"coverage": False},
            "selectit": {"models": [{"name": tiny_llama_dir, "batch_size": 2}]}}
    killed = _config(tmp_path, output=str(tmp_path / "killed"), **base)
    scores = tmp_path / "killed" / "scores"

    def some_parts():
        return sum(_records(d) for d in scores.iterdir()) >= 3 if scores.exists() else False

    proc = _driver(killed, root)
    assert _kill_driver_when(proc, some_parts), "the run ended before it could be interrupted"
    recorded = sum(_records(d) for d in scores.iterdir())

    stats = _run_to_the_end(killed)["selectit"]["models"][tiny_llama_dir]
    assert stats["cached_parts_reused"] >= recorded
    assert 0 < stats["pairs_scored_this_run"] < len(rows) * 5  # the recorded parts were not scored again

    resumed, undisturbed = _resumed_and_undisturbed(tmp_path, base)
    assert resumed["id"].to_pylist() == undisturbed["id"].to_pylist()
    assert resumed["score_model"].to_pylist() == pytest.approx(undisturbed["score_model"].to_pylist(), abs=1e-9)


def test_an_embed_worker_killed_mid_stage_is_retried(ray_local, tmp_path, make_cfg):
    emb = tmp_path / "out" / "embeddings"
    cfg = make_cfg(tmp_path, method="kcenter", embed={"batch_size": 4})  # the hash embedder: one task per block
    killed: list[int] = []

    def kill_an_embedder():
        end = time.time() + 600
        while time.time() < end and not killed:
            if _records(emb) >= 20:
                for p in psutil.process_iter(["pid", "cmdline"]):
                    cmd = " ".join(p.info["cmdline"] or [])
                    # A worker of this session's Ray (a descendant of this process) running an embed task.
                    if "ray::Embedder-block" in cmd and _descends_from(p, os.getpid()):
                        p.send_signal(signal.SIGKILL)
                        killed.append(p.pid)
                        return
            time.sleep(0.02)

    watcher = threading.Thread(target=kill_an_embedder, daemon=True)
    watcher.start()
    report = run(cfg, quiet=True)
    watcher.join(10)
    assert killed, "no embed task was found to kill"
    usable = report["input_rows"] - report["rejected"]
    assert report["stages"]["embed"]["computed_rows"] == usable  # every row was embedded, once, by retries
    other = make_cfg(tmp_path, method="kcenter", output=str(tmp_path / "whole"))
    run(other, quiet=True)
    assert pq.read_table(tmp_path / "out" / "selected.parquet")["id"].to_pylist() == \
        pq.read_table(tmp_path / "whole" / "selected.parquet")["id"].to_pylist()
    manifest = json.loads((emb / "_manifest.json").read_text())
    assert manifest["rows"] == usable


def _descends_from(proc: psutil.Process, ancestor: int) -> bool:
    try:
        return any(p.pid == ancestor for p in proc.parents())
    except psutil.NoSuchProcess:
        return False
