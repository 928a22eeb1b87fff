"""selectray on a Ray cluster of two nodes on this machine (`ray start` twice, ended by process id):
a run spread over both nodes with output on object storage, real job submission, and a run with
`ray.address: null` that never attaches to the running head."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time

import pyarrow.parquet as pq
import pytest
import yaml

from selectray.config import load_config
from selectray.pipeline import run

pytestmark = pytest.mark.slow


def _cli(args, cwd, env=None):
    return subprocess.run([sys.executable, "-m", "selectray", *args], capture_output=True, text=True,
                          env={**os.environ, **(env or {})}, cwd=cwd, timeout=900)


def _driver_jobs(dashboard: str) -> list:
    from ray.job_submission import JobSubmissionClient

    return [j for j in JobSubmissionClient(dashboard).list_jobs() if str(j.type).endswith("DRIVER")]


def test_a_null_address_starts_a_new_local_ray_and_never_attaches(ray_cluster, tmp_path, root):
    before = len(_driver_jobs(ray_cluster["dashboard"]))
    common = ["--config", str(root / "examples" / "demo.yaml"), "--method", "random", "--quiet",
              "--set", "embed.model=hash", "--set", "report.coverage=false", "--set", "ray.progress=false"]
    local = _cli(["run", *common, "--output", str(tmp_path / "local"), "--set", "ray.num_cpus=1"], root)
    assert local.returncode == 0, local.stderr[-2000:]
    assert len(_driver_jobs(ray_cluster["dashboard"])) == before  # the head never saw this run
    # The same run told to attach does show up on the head: the check above can see an attach.
    attached = _cli(["run", *common, "--output", str(tmp_path / "attached"), "--set",
                     f"ray.address={ray_cluster['address']}"], root)
    assert attached.returncode == 0, attached.stderr[-2000:]
    assert len(_driver_jobs(ray_cluster["dashboard"])) == before + 1
    a = pq.read_table(tmp_path / "local" / "selected.parquet")["id"].to_pylist()
    assert a == pq.read_table(tmp_path / "attached" / "selected.parquet")["id"].to_pylist()


def test_two_nodes_with_output_on_object_storage_select_what_one_node_selects(
        ray_local, ray_cluster, s3_server, tmp_path, root, clean_rows, tiny_llama_dir):
    fs, bucket, env = s3_server["fs"], s3_server["bucket"], s3_server["env"]
    pool = tmp_path / "rows.jsonl"
    pool.write_text("".join(json.dumps(r) + "\n" for r in clean_rows[:60]))
    config = tmp_path / "hybrid.yaml"
    config.write_text(yaml.safe_dump({
        "input": str(pool), "method": "hybrid", "budget": 6, "hybrid": {"num_clusters": 3},
        "embed": {"model": "hash", "batch_size": 20}, "kcenter": {"mode": "exact", "num_shards": 2},
        "selectit": {"models": [{"name": tiny_llama_dir, "batch_size": 8}]}, "ray": {"progress": False},
    }))
    multi = _cli(["run", "--config", str(config), "--quiet", "--output", f"s3://{bucket}/two-nodes",
                  "--set", f"ray.address={ray_cluster['address']}"], root, env)
    assert multi.returncode == 0, multi.stderr[-3000:]
    # The same config on one node: this session's local Ray, in this process.
    run(load_config(config, {"output": str(tmp_path / "one-node")}), quiet=True)

    with fs.open_input_stream(f"{bucket}/two-nodes/kcenter/_manifest.json") as f:
        assert json.loads(f.read())["shard_nodes"] == 2  # the shards ran on different nodes
    with fs.open_input_file(f"{bucket}/two-nodes/selected.parquet") as f:
        spread = pq.read_table(f)
    alone = pq.read_table(tmp_path / "one-node" / "selected.parquet")
    assert spread["id"].to_pylist() == alone["id"].to_pylist()
    assert spread["cluster_id"].to_pylist() == alone["cluster_id"].to_pylist()
    assert spread["score_model"].to_pylist() == pytest.approx(alone["score_model"].to_pylist(), abs=1e-6)


def test_job_submission_succeeds_and_a_bad_config_fails_with_one_line(ray_cluster, tmp_path, root):
    from ray.job_submission import JobStatus, JobSubmissionClient

    client = JobSubmissionClient(ray_cluster["dashboard"])
    runtime_env = {"working_dir": str(root), "excludes": [".venv", ".git", "out", "**/__pycache__", ".pytest_cache",
                                                          ".ruff_cache", "*.egg-info", ".hypothesis", "docs/*.png"]}
    entry = (f"{sys.executable} jobs/run_selection.py --config jobs/configs/kcenter-cpu.yaml --quiet "
             f"--output {tmp_path / 'job-out'} --set embed.model=hash --set ray.progress=false")

    def finished(job):
        end = time.time() + 600
        while time.time() < end and not client.get_job_status(job).is_terminal():
            time.sleep(2)
        return client.get_job_status(job)

    # One after the other: two jobs unpacking the same working_dir at once can race on this machine.
    good = client.submit_job(entrypoint=entry, runtime_env=runtime_env)
    assert finished(good) == JobStatus.SUCCEEDED, client.get_job_logs(good)[-3000:]
    logs = client.get_job_logs(good)
    assert "selectray job: running on the cluster Ray" in logs
    report = json.loads((tmp_path / "job-out" / "report.json").read_text())
    assert report["method"] == "kcenter" and report["selected"] + report["not_selected"] + report["rejected"] == report["input_rows"]

    bad = client.submit_job(entrypoint=entry.replace("kcenter-cpu.yaml", "kcenter-cpu.yaml --set budget=-3"),
                            runtime_env=runtime_env)
    assert finished(bad) == JobStatus.FAILED
    bad_logs = client.get_job_logs(bad)
    errors = [line for line in bad_logs.splitlines() if line.startswith("selectray: error:")]
    assert len(errors) == 1 and "'budget'" in errors[0] and "Traceback" not in bad_logs
