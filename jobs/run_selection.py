"""Ray job entry point for a selection run.

    ray job submit --working-dir . -- python jobs/run_selection.py --config jobs/cluster.yaml [run options]

Attaches to the running cluster (the job's RAY_ADDRESS, or `auto`); with no
cluster to attach to, it starts a local Ray and runs there. Takes the same
options as `selectray run`.
"""

from __future__ import annotations

import sys

import ray

from selectray.cli import main


def attach() -> str:
    """Connect to the cluster this job was submitted to, or start a local Ray."""
    try:
        ray.init(address="auto", include_dashboard=False, logging_level="WARNING")
        return "cluster"
    except ConnectionError:
        ray.init(include_dashboard=False, logging_level="WARNING")
        return "local"


if __name__ == "__main__":
    where = attach()
    print(f"selectray job: running on the {where} Ray ({ray.cluster_resources().get('CPU', 0):.0f} CPUs, "
          f"{ray.cluster_resources().get('GPU', 0):.0f} GPUs)", flush=True)
    sys.exit(main(["run", *sys.argv[1:]]))
