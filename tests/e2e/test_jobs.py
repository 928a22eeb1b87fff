"""cluster.yaml against Ray's own cluster-config schema; every job config parses; the CPU ones run."""

import json
import os
from pathlib import Path

import jsonschema
import pyarrow.parquet as pq
import pytest
import yaml

from selectray.config import load_config
from selectray.pipeline import run


def _configs(root, kind):
    return sorted((root / "jobs" / "configs").glob(f"*-{kind}.yaml"))


def test_cluster_yaml_is_a_valid_ray_cluster_config(root):
    import ray.autoscaler
    from ray.autoscaler._private.util import prepare_config, validate_config

    config = yaml.safe_load((root / "cluster.yaml").read_text())
    schema = json.loads((Path(os.path.dirname(ray.autoscaler.__file__)) / "ray-schema.json").read_text())
    jsonschema.validate(config, schema)
    validate_config(prepare_config(config))  # the launcher's own checks, after filling defaults

    nodes = config["available_node_types"]
    head = nodes[config["head_node_type"]]
    assert head["resources"].get("CPU") == 0  # no work scheduled on the head
    workers = [n for name, n in nodes.items() if name != config["head_node_type"]]
    assert all(n["min_workers"] == 0 for n in workers)  # autoscales from zero
    assert any("selectray[gpu]" in cmd for cmd in config["setup_commands"])


def test_every_method_has_a_cpu_and_a_gpu_job_config(root):
    from selectray.methods import METHODS

    for kind in ("cpu", "gpu"):
        assert sorted(p.name.rsplit("-", 1)[0] for p in _configs(root, kind)) == sorted(METHODS)
    for path in [*_configs(root, "cpu"), *_configs(root, "gpu"), root / "examples" / "demo.yaml"]:
        cfg = load_config(path)
        assert cfg.input and cfg.method
    for path in _configs(root, "gpu"):
        cfg = load_config(path)
        assert cfg.output.startswith("s3://")  # every node writes its parts there
        if cfg.method in ("selectit", "hybrid"):
            sizes = [m.name for m in cfg.selectit.models]
            assert len(sizes) == 3 and all(m.backend == "vllm" and "/" in m.name for m in cfg.selectit.models)
        if cfg.method == "selectllm":
            assert cfg.selectllm.model.backend == "vllm" and "7B" in cfg.selectllm.model.name


@pytest.mark.slow
@pytest.mark.parametrize("name", ["random", "length", "kcenter", "selectit", "selectllm", "hybrid"])
def test_cpu_job_configs_run_here(ray_local, name, root, tmp_path, clean_rows, write_jsonl):
    path = write_jsonl(tmp_path / "rows.jsonl", clean_rows[:12])
    over = {"input": [str(path)], "output": str(tmp_path / "out"), "budget": 2, "embed.model": "hash",
            "ray.progress": False}
    cfg = load_config(root / "jobs" / "configs" / f"{name}-cpu.yaml", over)
    report = run(cfg, quiet=True)
    assert report["selected"] == 2 and report["input_rows"] == 12
    assert pq.read_table(tmp_path / "out" / "selected.parquet").num_rows == 2
