"""What a stage asks of the cluster, and the one place that turns it into Ray options.

A stage declares `Resources` (CPUs, GPUs, actor pool size, batch size); it never calls
Ray's option names itself. GPUs left unset mean one per actor (a model's tensor-parallel
size) when the cluster has GPUs, none otherwise; a fraction (e.g. 0.25 for an embedder)
lets several actors share a GPU.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from typing import Any


@dataclass(frozen=True)
class Resources:
    """One stage's needs. `num_gpus=None`: 1 per actor on a GPU cluster, else 0."""

    num_cpus: float | None = None
    num_gpus: float | None = None
    concurrency: tuple[int, int] = (1, 1)  # actor pool (min, max)
    batch_size: int | None = None
    actors: bool = True  # False: nothing to load once per actor, so plain tasks (selectray.stages.blocks)
    gpus_when_present: float = 1  # GPUs per actor when `num_gpus` is unset and the cluster has GPUs

    def gpus(self, cluster_has_gpus: bool) -> float:
        """GPUs each actor reserves."""
        if self.num_gpus is not None:
            return self.num_gpus
        return self.gpus_when_present if cluster_has_gpus else 0


def map_batches_options(res: Resources, cluster_has_gpus: bool) -> dict[str, Any]:
    """Keyword arguments for `Dataset.map_batches` with a callable class on an actor pool."""
    import ray.data

    opts: dict[str, Any] = {
        "compute": ray.data.ActorPoolStrategy(min_size=res.concurrency[0], max_size=res.concurrency[1]),
        "num_gpus": res.gpus(cluster_has_gpus),
    }
    if res.num_cpus is not None:
        opts["num_cpus"] = res.num_cpus
    if res.batch_size is not None:
        opts["batch_size"] = res.batch_size
    return opts


def task_options(res: Resources, cluster_has_gpus: bool) -> dict[str, Any]:
    """`.options()` of one task of a stage that runs as plain tasks (no actor pool)."""
    return actor_options(res, cluster_has_gpus)


def actor_options(res: Resources, cluster_has_gpus: bool) -> dict[str, Any]:
    """`ray_actor_options` / `.options()` of one actor (a Serve replica, a k-center shard)."""
    opts: dict[str, Any] = {"num_gpus": res.gpus(cluster_has_gpus)}
    if res.num_cpus is not None:
        opts["num_cpus"] = res.num_cpus
    return opts


def usable_cpus() -> int:
    """Cores this process may run on (its affinity mask, which containers and Ray narrow)."""
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:
        return os.cpu_count() or 1


def use_cpu_threads(threads: int | None, actors_per_node: int) -> int:
    """Set torch's CPU thread count in this (actor) process; returns it.

    Ray starts a worker with OMP_NUM_THREADS=1 for each CPU it reserves, so a model
    actor on a laptop would use one core however many are idle. `threads` (from the
    model spec) wins; otherwise the node's cores are shared among the pool's actors.
    """
    import torch

    n = threads or max(1, usable_cpus() // max(1, actors_per_node))
    torch.set_num_threads(n)
    return n


def return_freed_memory() -> None:
    """Hand freed heap pages back to the operating system.

    Arrow's allocator and glibc's malloc keep pages freed after a large read for reuse;
    a process that then holds its data for a long time (the driver after the read stage,
    a k-center shard after loading its vectors) would count them in its resident memory
    for the rest of the run: about 80-100 MB each at 1M rows (docs/methods.md "Speed").
    """
    import contextlib
    import ctypes

    import pyarrow as pa

    pa.default_memory_pool().release_unused()
    with contextlib.suppress(OSError, AttributeError):  # not glibc (macOS, musl): nothing to trim
        ctypes.CDLL("libc.so.6").malloc_trim(0)


def cuda_available() -> bool:
    """True when torch sees a CUDA device; never imports torch (2+ s) on a machine without a driver."""
    import sys
    from pathlib import Path

    if "torch" not in sys.modules and not (Path("/proc/driver/nvidia").exists() or Path("/dev/nvidia0").exists()):
        return False
    try:
        import torch
    except ImportError:
        return False
    return bool(torch.cuda.is_available())
