"""The Ray session a run works in: attach to a cluster or start a local Ray."""

from __future__ import annotations

import logging


def connect(ray_cfg) -> bool:
    """Attach to the configured Ray cluster (or start a local one); True when it has GPUs.

    `ray_cfg` is the `ray` section. A Ray already initialised in this process is used as is.
    """
    import ray
    import ray.data

    if not ray.is_initialized():
        ray.init(
            address=ray_cfg.address,
            num_cpus=ray_cfg.num_cpus if ray_cfg.address is None else None,
            include_dashboard=False,
            logging_level=logging.WARNING,
            log_to_driver=True,
        )
    ray.data.DataContext.get_current().enable_progress_bars = ray_cfg.progress
    return ray.cluster_resources().get("GPU", 0) > 0
