"""The Ray session a run works in: a new local Ray, or a cluster it attaches to.

`ray.address: null` means a new local Ray (`address="local"`), never whatever Ray happens
to run on the machine; `auto` or an explicit address attaches. The settings that reach
the models and the storage (Hugging Face hub, object-store credentials and endpoint) go
to every worker through the run's runtime environment.
"""

from __future__ import annotations

import logging
import os

# Environment the workers need to see as the driver does: hub access and cache, object
# storage endpoint and credentials (secrets travel in the runtime env, never into logs).
FORWARDED_ENV = (
    "HF_TOKEN", "HF_HOME", "HF_HUB_OFFLINE", "HF_HUB_CACHE", "HF_ENDPOINT", "TRANSFORMERS_OFFLINE",
    "SELECTRAY_CACHE", "AWS_ENDPOINT_URL", "AWS_ENDPOINT_URL_S3", "AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY",
    "AWS_SESSION_TOKEN", "AWS_DEFAULT_REGION", "AWS_REGION", "AWS_PROFILE", "GOOGLE_APPLICATION_CREDENTIALS",
)


def forwarded_env() -> dict[str, str]:
    """The driver's values of `FORWARDED_ENV` that are set."""
    return {k: os.environ[k] for k in FORWARDED_ENV if k in os.environ}


def in_ray_job() -> bool:
    """True in the driver of a submitted Ray job (`ray job submit`)."""
    return "RAY_JOB_CONFIG_JSON_ENV_VAR" in os.environ


def init_args(ray_cfg) -> dict:
    """Keyword arguments of `ray.init` for the `ray` section.

    A submitted job's driver passes no runtime environment: the job's own (its working_dir,
    its env_vars, where the submitter puts HF_TOKEN and object-store credentials) reaches
    every worker, and a runtime environment given here would replace it, after which Ray
    deletes the job's unpacked working_dir under the running driver.
    """
    address = ray_cfg.address or "local"
    args = {
        "address": address,
        "include_dashboard": False,
        "logging_level": logging.WARNING,
        "log_to_driver": True,
    }
    env = forwarded_env()
    if env and not in_ray_job():
        args["runtime_env"] = {"env_vars": env}
    if address == "local" and ray_cfg.num_cpus is not None:
        args["num_cpus"] = ray_cfg.num_cpus
    return args


def connect(ray_cfg) -> bool:
    """Start or attach to Ray as the `ray` section says; True when the cluster has GPUs.

    A Ray already initialised in this process (a Ray job's driver, a notebook, the
    tests) is used as it is.
    """
    import ray
    import ray.data

    if not ray.is_initialized():
        ray.init(**init_args(ray_cfg))
    ray.data.DataContext.get_current().enable_progress_bars = ray_cfg.progress
    return ray.cluster_resources().get("GPU", 0) > 0


def check_output_shared(out) -> None:
    """On a cluster of more than one node, a plain output path must be one folder every node sees.

    The driver writes a marker file there and a task on each node reads it back; a node
    that cannot is a one-line ConfigError before any work (object-store URIs need no check).
    """
    import uuid

    import ray
    from ray.util.scheduling_strategies import NodeAffinitySchedulingStrategy

    from selectray.errors import ConfigError

    nodes = [n for n in ray.nodes() if n.get("Alive")]
    if not out.is_local or len(nodes) < 2:
        return
    token = uuid.uuid4().hex
    marker = out / f".selectray-shared-{token[:8]}"
    marker.write_text(token)

    @ray.remote(num_cpus=0)
    def read_back(path: str) -> str:
        try:
            with open(path) as f:
                return f.read()
        except OSError:
            return ""

    try:
        seen = ray.get([read_back.options(scheduling_strategy=NodeAffinitySchedulingStrategy(n["NodeID"], soft=False))
                        .remote(marker.path) for n in nodes])
    finally:
        marker.delete()
    blind = [n["NodeManagerAddress"] for n, s in zip(nodes, seen, strict=True) if s != token]
    if blind:
        raise ConfigError(f"output '{out}' is a local folder that {len(blind)} of the cluster's {len(nodes)} nodes "
                          f"cannot see ({', '.join(sorted(set(blind)))}); use a shared filesystem or object storage "
                          "(s3://, gs://) for output")
