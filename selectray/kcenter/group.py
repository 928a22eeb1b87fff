"""A group of shards, the one interface the greedy drivers use: in this process or on Ray actors.

`LocalGroup` holds `ShardState`s in this process; `selectray.kcenter.ray_shards.RayGroup`
holds them in Ray actors. Both implement `ShardGroup`.
"""

from __future__ import annotations

import contextlib
import itertools
from collections.abc import Callable
from typing import Any, Protocol

import numpy as np

from selectray.kcenter.shard import DEFAULT_BLOCK_ROWS, ShardState
from selectray.kcenter.vectors import VectorRows
from selectray.resources import cuda_available, usable_cpus


class ShardGroup(Protocol):
    """Shards of the rows, each with its greedy state; calls run on every shard in parallel."""

    rows: int  # usable rows over all shards
    dim: int
    max_sq_norm: float

    def vectors(self, positions: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """(positions found, their float32 vectors), from whichever shards hold them."""

    def step(self, vecs: np.ndarray, positions: np.ndarray, m: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """Apply new centers on every shard, then (pos, min-distance, vectors) of each shard's top m+1 rows."""

    def finalize(self, vecs: np.ndarray, positions: np.ndarray) -> list[tuple[np.ndarray, np.ndarray, np.ndarray]]:
        """Apply the last centers; per shard (pos, nearest center, distance) of every row."""

    def map(self, fn: Callable[..., Any], *args: Any) -> list:
        """`fn(shard_state, *args)` on every shard; the results in shard order."""


class LocalGroup:
    """Shards in this process.

    With threads > 1 the shards are called in parallel threads (run_k_center limits
    BLAS to one thread each): numpy releases the GIL in the products, and independent
    single-threaded products scale better than one multi-threaded BLAS call per small
    block, above all on a machine shared with other work.
    """

    def __init__(self, shards: list[ShardState], threads: int = 1):
        self.shards = shards
        self.threads = max(1, min(int(threads), len(shards)))
        infos = [s.info() for s in shards]
        self.rows = sum(i["rows"] for i in infos)
        self.dim = infos[0]["dim"]
        self.max_sq_norm = max(i["max_sq_norm"] for i in infos)

    def map(self, fn: Callable[..., Any], *args: Any) -> list:
        if self.threads == 1:
            return [fn(s, *args) for s in self.shards]
        from concurrent.futures import ThreadPoolExecutor

        with ThreadPoolExecutor(self.threads) as pool:
            return list(pool.map(lambda s: fn(s, *args), self.shards))

    def vectors(self, positions):
        return merge_vectors(self.map(lambda s: s.vectors(positions)), self.dim)

    def step(self, vecs, positions, m):
        return concat_top(self.map(lambda s: s.step(vecs, positions, m)), self.dim)

    def finalize(self, vecs, positions):
        return self.map(lambda s: s.finalize(vecs, positions))


def make_shard(rows: VectorRows, *, block_rows: int = DEFAULT_BLOCK_ROWS, device: str | None = None) -> ShardState:
    """A ShardState: numpy on CPU, torch when `device` names one or a CUDA GPU is present.

    device: None (CUDA if available, else numpy), "numpy", or a torch device string
    such as "cuda", "cuda:1" or "cpu" (torch on CPU, mainly for testing).
    """
    if device is None:
        device = "cuda" if cuda_available() else "numpy"
    if device == "numpy":
        return ShardState(rows, block_rows=block_rows)
    from selectray.kcenter.torch_shard import TorchShardState

    return TorchShardState(rows, block_rows=block_rows, device=device)


def one_blas_thread():
    """Context: one BLAS thread per calling thread, for the duration of a run.

    Parallelism comes from shards (threads here, actors in Ray). A multi-threaded
    BLAS call per small block synchronises its threads for little work, and on a
    shared machine its spinning threads slow down by 10x or more.
    """
    try:
        from threadpoolctl import threadpool_limits
    except ImportError:  # threadpoolctl comes with scikit-learn; without it, leave BLAS alone
        return contextlib.nullcontext()
    return threadpool_limits(limits=1, user_api="blas")


def split_rows(rows: VectorRows, parts: int) -> list[VectorRows]:
    """Contiguous, near-equal slices of `rows` (views, no copies); rejections go with the first."""
    bounds = np.linspace(0, len(rows.pos), max(1, parts) + 1).astype(np.int64)
    out = []
    for i, (a, b) in enumerate(itertools.pairwise(bounds)):
        rej = (rows.rejected_pos, rows.rejected_reason) if i == 0 else (np.empty(0, np.int64), np.empty(0, object))
        out.append(VectorRows(rows.x[a:b], rows.pos[a:b], rows.norms[a:b], *rej))
    return out


def default_threads(n_rows: int) -> int:
    """CPUs this process may use, but at least ~20,000 rows per thread."""
    return max(1, min(usable_cpus(), n_rows // 20_000))


def merge_vectors(parts, dim):
    """Concatenate per-shard (positions, vectors) answers."""
    pos = np.concatenate([p for p, _ in parts]) if parts else np.empty(0, np.int64)
    vec = np.concatenate([v for _, v in parts]) if parts else np.empty((0, dim), np.float32)
    return pos, vec.reshape(-1, dim)


def concat_top(parts, dim):
    """Concatenate per-shard (pos, f, vectors) top-row answers."""
    pos = np.concatenate([p[0] for p in parts])
    f = np.concatenate([p[1] for p in parts])
    vec = np.concatenate([p[2] for p in parts]).reshape(-1, dim)
    return pos, f, vec
