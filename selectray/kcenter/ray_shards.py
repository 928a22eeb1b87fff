"""Sharded greedy k-center on Ray actors, exact or composable: the one k-center module that uses Ray.

Each shard is a Ray actor that owns its rows: vectors, squared norms, min-distances
and nearest-center indices (a `ShardState`). The driver never holds all vectors: per
pass it receives every shard's top m+1 rows, certifies centers (`greedy.certified_greedy`)
and sends them back to be applied, one call per shard per pass.

Input is an in-memory (N, d) array (pos = row index; each shard gets a contiguous
slice through the object store) or an embeddings checkpoint (`selectray.embeddings`):
whole files are assigned to shards, balanced by their row counts, and each actor
reads its own files, from a shared filesystem or object storage.
"""

from __future__ import annotations

import resource
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import ray

from selectray.columns import POS
from selectray.embeddings import embedding_files, embedding_layout, plan_shards, read_vectors
from selectray.kcenter.core import KCenterResult, run_k_center
from selectray.kcenter.group import concat_top, make_shard, merge_vectors
from selectray.kcenter.shard import DEFAULT_BLOCK_ROWS
from selectray.kcenter.vectors import KCenterError, VectorRows, check_k, validate_rows
from selectray.resources import Resources, actor_options, return_freed_memory
from selectray.storage import Location


def _is_checkpoint(data: Any) -> bool:
    """A checkpoint folder, or a list of its files (as opposed to an array of vectors)."""
    if isinstance(data, list | tuple):
        return bool(data) and all(isinstance(f, str | Path | Location) for f in data)
    return isinstance(data, str | Path | Location)


@ray.remote
class ShardActor:
    """One shard: reads or receives its rows and keeps their greedy state."""

    def __init__(self, source: dict, *, block_rows: int, device: str | None, threads: int):
        from threadpoolctl import threadpool_limits

        threadpool_limits(limits=max(1, threads))  # BLAS threads = the CPUs this actor holds
        # A user error here is kept and raised by info(): an error in __init__ reaches the
        # driver only as text, one in a method as the exception itself.
        self.error: KCenterError | None = None
        try:
            if source["kind"] == "files":
                rows = read_vectors(source["files"], source["dim"], np.dtype(source["dtype"]))
            else:
                x = ray.get(source["array"])  # refs nested in a dict are not resolved for us
                rows = validate_rows(x, pos=np.arange(source["offset"], source["offset"] + len(x), dtype=np.int64))
            self.state = make_shard(rows, block_rows=block_rows, device=device)
            return_freed_memory()  # the read's buffers: this actor holds its vectors for the whole run
        except KCenterError as e:
            self.error = e

    def info(self) -> dict[str, Any]:
        if self.error is not None:
            raise self.error
        return {**self.state.info(), "node": ray.get_runtime_context().get_node_id()}

    def positions(self) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """(usable positions, rejected positions, rejection reasons)."""
        return self.state.pos, self.state.rejected_pos, self.state.rejected_reason

    def vectors(self, positions):
        return self.state.vectors(positions)

    def step(self, vecs, positions, m):
        return self.state.step(vecs, positions, m)

    def finalize(self, vecs, positions):
        return self.state.finalize(vecs, positions)

    def call(self, fn, *args):
        """`fn(shard_state, *args)` here (ShardGroup.map)."""
        return fn(self.state, *args)

    def peak_rss_bytes(self) -> int:
        return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024

    def cpu_seconds(self) -> float:
        """CPU time this actor's process has used (user + system)."""
        usage = resource.getrusage(resource.RUSAGE_SELF)
        return usage.ru_utime + usage.ru_stime


class RayGroup:
    """The shard actors, called in parallel: a `ShardGroup`, like `LocalGroup` in this process."""

    def __init__(self, actors: list):
        self.actors = actors
        infos = ray.get([a.info.remote() for a in actors])
        self.rows = sum(i["rows"] for i in infos)
        self.dim = max(i["dim"] for i in infos)
        self.max_sq_norm = max(i["max_sq_norm"] for i in infos)

    def _all(self, method: str, *args) -> list:
        refs = [ray.put(a) if isinstance(a, np.ndarray) and a.nbytes > 100_000 else a for a in args]
        return ray.get([getattr(actor, method).remote(*refs) for actor in self.actors])

    def vectors(self, positions):
        return merge_vectors(self._all("vectors", positions), self.dim)

    def step(self, vecs, positions, m):
        return concat_top(self._all("step", vecs, positions, m), self.dim)

    def finalize(self, vecs, positions):
        return self._all("finalize", vecs, positions)

    def map(self, fn, *args):
        return self._all("call", fn, *args)

    def peak_rss_bytes(self) -> list[int]:
        return ray.get([a.peak_rss_bytes.remote() for a in self.actors])

    def close(self) -> None:
        for a in self.actors:
            ray.kill(a)
        self.actors = []


def start_shards(
    data: Any,
    num_shards: int,
    *,
    num_cpus_per_shard: float | None = None,
    num_gpus_per_shard: float = 0,
    block_rows: int = DEFAULT_BLOCK_ROWS,
    device: str | None = None,
    dim: int | None = None,
    startup_timeout_s: float = 600.0,
) -> tuple[RayGroup, VectorRows]:
    """Start one actor per shard on `data` (array or checkpoint folder).

    Returns the group and a vector-less VectorRows with every usable and rejected position
    (checked to be a dense, unique 0..N-1 numbering).
    """
    if isinstance(num_shards, bool) or not isinstance(num_shards, int | np.integer) or num_shards < 1:
        raise KCenterError(f"num_shards must be a positive integer, got {num_shards!r}")
    if not ray.is_initialized():
        ray.init(include_dashboard=False)
    if num_cpus_per_shard is None:
        # One free core per shard where there are enough, else a fair share of what is
        # free (other work, e.g. a Serve app, may hold CPUs), so all shards start at once.
        share = ray.available_resources().get("CPU", 0.0) / num_shards
        num_cpus_per_shard = min(1.0, share) if share >= 0.05 else 0
    sources = _sources(data, num_shards, dim)
    options = actor_options(Resources(num_cpus=num_cpus_per_shard, num_gpus=num_gpus_per_shard), False)
    actors = [
        # SPREAD: on a cluster the shards (and their memory) go to different nodes.
        ShardActor.options(**options, scheduling_strategy="SPREAD").remote(
            s, block_rows=block_rows, device=device, threads=max(1, int(num_cpus_per_shard))
        )
        for s in sources
    ]
    try:
        try:
            ray.get([a.info.remote() for a in actors], timeout=startup_timeout_s)
        except ray.exceptions.RayTaskError as e:
            if isinstance(e.cause, KCenterError):
                raise e.cause from None
            raise
        except ray.exceptions.GetTimeoutError:
            raise KCenterError(
                f"the {len(actors)} k-center shard actors did not start within {startup_timeout_s:.0f} s"
                f" ({num_cpus_per_shard} CPUs and {num_gpus_per_shard} GPUs each): is the cluster big enough?"
            ) from None
        group = RayGroup(actors)
        rows = _gather_positions(actors, group.dim)
    except BaseException:
        for a in actors:
            ray.kill(a)
        raise
    return group, rows


def _sources(data: Any, num_shards: int, dim: int | None) -> list[dict]:
    if _is_checkpoint(data):
        files = embedding_files(data)
        layout_dim, dtype = embedding_layout(files)
        plan = [[f.uri for f in p] for p in plan_shards(files, num_shards) if p]
        return [{"kind": "files", "files": p, "dim": dim or layout_dim, "dtype": dtype.str} for p in plan]
    if isinstance(data, np.ndarray) and data.dtype != object:
        if data.ndim != 2:
            raise KCenterError(f"vectors must be a 2-D array (rows x dimensions), got shape {data.shape}")
        bounds = np.linspace(0, len(data), min(num_shards, max(1, len(data))) + 1).astype(np.int64)
        out = []
        for a, b in zip(bounds[:-1], bounds[1:], strict=True):
            part = data[a:b]
            if part.dtype not in (np.float16, np.float32):
                part = part.astype(np.float32)
            out.append({"kind": "array", "array": ray.put(np.ascontiguousarray(part)), "offset": int(a)})
        return out
    raise KCenterError(
        f"data must be an (N, d) array, an embeddings checkpoint folder or a list of its files, got {type(data).__name__}"
    )


def _gather_positions(actors: list, dim: int) -> VectorRows:
    parts = ray.get([a.positions.remote() for a in actors])
    usable = np.concatenate([p for p, _, _ in parts])
    rej_pos = np.concatenate([r for _, r, _ in parts]).astype(np.int64)
    rej_why = np.concatenate([w for _, _, w in parts]).astype(object)
    every = np.concatenate([usable, rej_pos])
    n = len(every)
    if n and (every.min() < 0 or every.max() >= n or np.bincount(every, minlength=n).max() > 1):
        raise KCenterError(f"column '{POS}' is not a unique 0..N-1 numbering of the {n} rows")
    order = np.argsort(rej_pos, kind="stable")
    return VectorRows(
        np.empty((0, dim), np.float32),
        np.sort(usable),
        np.empty(0, np.float32),
        rej_pos[order],
        rej_why[order],
    )


def distributed_k_center(
    data: Any,
    k: int,
    *,
    num_shards: int,
    seeds: Sequence[int] = (),
    start: int | None = None,
    mode: str = "exact",
    lookahead: int | None = None,
    progress: bool = False,
    device: str | None = None,
    block_rows: int = DEFAULT_BLOCK_ROWS,
    num_cpus_per_shard: float | None = None,
    num_gpus_per_shard: float = 0,
    dim: int | None = None,
    stats_memory: bool = False,
) -> KCenterResult:
    """Greedy k-center with rows sharded over `num_shards` Ray actors.

    data: (N, d) array (pos = row index), an embeddings checkpoint folder (path, URI or
    Location; see selectray.embeddings) or a list of its files.
    mode="exact": the same result as `kcenter.greedy_k_center` on the same data.
    mode="composable": greedy per shard, then greedy on the union (4-approximation).
    seeds/start: positions of the first centers (`selectray.embeddings.seed_positions` maps ids).
    num_cpus_per_shard: CPUs each actor reserves (default: 1, or a fair share of a
    smaller cluster); it also sets the actor's BLAS threads. num_gpus_per_shard: GPUs
    per actor; with one, the actor computes with torch on CUDA (device=None).
    With stats_memory, result.stats["peak_rss_bytes_shards"] lists each actor's peak RSS.
    The actors are killed before returning.
    """
    # Cheap checks before any actor starts: k against all rows (footers / array
    # length); against the usable rows once the shards have read them.
    if mode not in ("exact", "composable"):
        raise KCenterError(f"mode must be 'exact' or 'composable', got {mode!r}")
    n_seeds = 0 if seeds is None else len(seeds)
    if _is_checkpoint(data):
        check_k(k, sum(n for _, n in embedding_files(data)), n_seeds)
    elif isinstance(data, np.ndarray):
        check_k(k, len(data), n_seeds)
    t_start = time.perf_counter()
    group, rows = start_shards(
        data,
        num_shards,
        num_cpus_per_shard=num_cpus_per_shard,
        num_gpus_per_shard=num_gpus_per_shard,
        block_rows=block_rows,
        device=device,
        dim=dim,
    )
    t_ready = time.perf_counter()
    try:
        result = run_k_center(
            lambda _: group,
            rows,
            k,
            seeds=seeds,
            start=start,
            mode=mode,
            lookahead=lookahead,
            progress=progress,
        )
        result.stats["num_shards"] = len(group.actors)
        result.stats["seconds_startup"] = t_ready - t_start
        infos = ray.get([a.info.remote() for a in group.actors])
        result.stats["shard_seconds"] = [i["seconds"] for i in infos]
        result.stats["shard_nodes"] = len({i["node"] for i in infos})
        result.stats["shard_cpu_seconds"] = ray.get([a.cpu_seconds.remote() for a in group.actors])
        if stats_memory:
            result.stats["peak_rss_bytes_shards"] = group.peak_rss_bytes()
    finally:
        group.close()
    return result
