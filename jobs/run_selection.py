"""Ray job entry point for a selection run.

    ray job submit --working-dir . -- python jobs/run_selection.py --config jobs/configs/hybrid-gpu.yaml [run options]

Attaches to the cluster the job was submitted to (or any Ray cluster this machine is
part of); with none to attach to it starts a local Ray. Takes the same options as
`selectray run`. Named so that it shadows no standard-library module: a script's own
folder comes first on the module path.
"""

from __future__ import annotations

import sys

import ray

from selectray.cli import main
from selectray.session import init_args
from selectray.settings import RayConfig


def attach() -> str:
    """Connect to the cluster this job was submitted to, or start a local Ray."""
    try:
        ray.init(**init_args(RayConfig(address="auto")))
        return "cluster"
    except ConnectionError:
        ray.init(**init_args(RayConfig()))
        return "local"


if __name__ == "__main__":
    where = attach()
    resources = ray.cluster_resources()
    print(f"selectray job: running on the {where} Ray ({resources.get('CPU', 0):.0f} CPUs, "
          f"{resources.get('GPU', 0):.0f} GPUs)", flush=True)
    sys.exit(main(["run", *sys.argv[1:]]))
