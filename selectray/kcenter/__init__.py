"""Greedy k-center (farthest-point) selection, exact and sharded. Pure numpy/torch except `ray_shards`.

Modules, in the order the data meets them:

* `vectors`: input checks (usable vectors, rejected rows, k, seeds);
* `distances`: the float32 hot-path distances and the float64 reference;
* `shard`, `torch_shard`: one shard's rows and greedy state (numpy, torch);
* `group`: the `ShardGroup` interface and `LocalGroup` (shards in this process);
* `greedy`: the drivers, exact (certified lookahead) and composable;
* `core`: `greedy_k_center`, `run_k_center`, `KCenterResult`;
* `ray_shards`: shards on Ray actors, `distributed_k_center`.

The method, and why the exact mode equals textbook greedy: docs/methods.md.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from selectray.kcenter.core import KCenterResult, greedy_k_center, run_k_center
from selectray.kcenter.distances import (
    distance_error_bound,
    exact_sq_dist,
    expand_dist,
    nearest_distances,
    nearest_exact,
    sq_norms,
)
from selectray.kcenter.group import LocalGroup, ShardGroup
from selectray.kcenter.shard import ShardState
from selectray.kcenter.vectors import KCenterError, VectorRows, validate_rows

__all__ = [
    "KCenterError", "KCenterResult", "LocalGroup", "ShardGroup", "ShardState", "VectorRows",
    "distance_error_bound", "distributed_k_center", "exact_sq_dist", "expand_dist", "greedy_k_center",
    "nearest_distances", "nearest_exact", "run_k_center", "sq_norms", "validate_rows",
]


def distributed_k_center(
    data: Any,
    k: int,
    *,
    num_shards: int,
    seeds: Sequence[int] = (),
    start: int | None = None,
    mode: str = "exact",
    **options: Any,
) -> KCenterResult:
    """Greedy k-center with the rows sharded over Ray actors (`selectray.kcenter.ray_shards`).

    `data` is an (N, d) array (pos = row index) or an embeddings checkpoint (folder or
    files). mode="exact" equals `greedy_k_center` on the same data; mode="composable"
    runs greedy on each shard, then greedy on the union of their centers
    (4-approximation, one round). Options: lookahead, progress, device, block_rows,
    num_cpus_per_shard, num_gpus_per_shard, dim, stats_memory.
    """
    from selectray.kcenter import ray_shards  # Ray is imported only when asked for

    return ray_shards.distributed_k_center(data, k, num_shards=num_shards, seeds=seeds, start=start, mode=mode, **options)
