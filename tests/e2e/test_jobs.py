"""cluster.yaml against Ray's own cluster-config schema; the job configs parse."""

import json
import os
from pathlib import Path

import jsonschema
import yaml

from selectray.config import load_config

ROOT = Path(__file__).resolve().parents[2]


def test_cluster_yaml_is_a_valid_ray_cluster_config():
    import ray.autoscaler
    from ray.autoscaler._private.util import prepare_config, validate_config

    config = yaml.safe_load((ROOT / "cluster.yaml").read_text())
    schema = json.loads((Path(os.path.dirname(ray.autoscaler.__file__)) / "ray-schema.json").read_text())
    jsonschema.validate(config, schema)
    validate_config(prepare_config(config))  # the launcher's own checks, after filling defaults

    nodes = config["available_node_types"]
    head = nodes[config["head_node_type"]]
    assert head["resources"].get("CPU") == 0  # no work scheduled on the head
    workers = [n for name, n in nodes.items() if name != config["head_node_type"]]
    assert all(n["min_workers"] == 0 for n in workers)  # autoscales from zero
    assert any("selectray[gpu]" in cmd for cmd in config["setup_commands"])


def test_job_configs_parse():
    for path in (ROOT / "jobs" / "cluster.yaml", ROOT / "examples" / "demo.yaml"):
        cfg = load_config(path)
        assert cfg.input
