"""Greedy k-center in one process, and the run that checks arguments and assembles a `KCenterResult`."""

from __future__ import annotations

import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from selectray.kcenter.greedy import certified_greedy, composable_greedy
from selectray.kcenter.group import (
    LocalGroup,
    ShardGroup,
    default_threads,
    make_shard,
    one_blas_thread,
    split_rows,
)
from selectray.kcenter.shard import DEFAULT_BLOCK_ROWS
from selectray.kcenter.vectors import KCenterError, VectorRows, check_k, check_seeds, validate_rows
from selectray.resources import cuda_available


@dataclass
class KCenterResult:
    """Outcome of a k-center run. Arrays over rows are indexed by the row position `pos`.

    centers: positions of the centers, in the order chosen (seeds first).
    radii: after each center is added, the max over usable rows of the distance to
        the nearest center (the coverage curve), float64. Exact mode: the float64
        value; composable mode: float32 precision.
    assignment: for each row, the index into `centers` of its nearest center
        (-1 for rejected rows).
    distance: for each row, the Euclidean distance to that center (NaN if rejected).
    rejected_pos / rejected_reason: rows that took no part and why
        (`nonfinite_embedding`, `bad_dimension`, `missing_embedding`).
    n_seeds: how many of `centers` were given as seeds.
    passes: passes over the data (exact mode) or rounds (composable).
    stats: counters and timings, e.g. centers_per_pass, lookahead (final m),
        exact_resolved, seconds (k-center), seconds_shards / seconds_driver; the
        distributed run adds num_shards, seconds_startup, shard_seconds,
        shard_cpu_seconds (and peak_rss_bytes_shards when asked).
    """

    centers: np.ndarray
    radii: np.ndarray
    assignment: np.ndarray
    distance: np.ndarray
    rejected_pos: np.ndarray = field(default_factory=lambda: np.empty(0, np.int64))
    rejected_reason: np.ndarray = field(default_factory=lambda: np.empty(0, object))
    n_seeds: int = 0
    mode: str = "exact"
    passes: int = 0
    stats: dict[str, Any] = field(default_factory=dict)

    @property
    def rejected(self) -> dict[int, str]:
        """Rejected rows as {pos: reason}."""
        return dict(zip(self.rejected_pos.tolist(), self.rejected_reason.tolist(), strict=True))


def greedy_k_center(
    x: Any,
    k: int,
    *,
    seeds: Sequence[int] = (),
    start: int | None = None,
    lookahead: int | None = None,
    block_rows: int = DEFAULT_BLOCK_ROWS,
    device: str | None = None,
    threads: int | None = None,
    progress: bool = False,
) -> KCenterResult:
    """Exact greedy k-center on in-memory vectors; row positions are row indices.

    x: (N, d) float array (float16 is kept as storage), or a sequence of vectors.
    The first centers are `seeds` (positions, in order), else `start`, else row 0
    (the first usable row). Then each new center is the row farthest from its
    nearest center, ties to the smallest position, until there are k. `lookahead`
    is the number m of candidate rows per pass (default 2048); `device`: None (CUDA
    if available, else numpy), "numpy", or a torch device; `threads`: numpy shards
    computed in parallel threads, each with one BLAS thread (default: the CPUs
    available, at most one per 20,000 rows; BLAS is limited to one thread per calling
    thread while this runs). The result equals plain greedy in float64 on the same
    vectors, whatever lookahead, threads or device (docs/methods.md).
    """
    rows = validate_rows(x)
    if device is None and cuda_available():
        device = "cuda"
    if threads is None:
        threads = 1 if device not in (None, "numpy") else default_threads(len(rows.pos))

    def group(r: VectorRows) -> LocalGroup:
        parts = split_rows(r, threads)
        return LocalGroup([make_shard(p, block_rows=block_rows, device=device) for p in parts], threads)

    return run_k_center(
        group,
        rows,
        k,
        seeds=seeds,
        start=start,
        lookahead=lookahead,
        progress=progress,
    )


def run_k_center(
    make_group: Callable[[VectorRows], ShardGroup],
    rows: VectorRows,
    k: int,
    *,
    seeds: Sequence[int] = (),
    start: int | None = None,
    mode: str = "exact",
    lookahead: int | None = None,
    progress: bool = False,
) -> KCenterResult:
    """Check k/seeds against validated `rows`, run `mode` on make_group(rows), assemble the result.

    `rows` needs only the usable and rejected positions (the vectors may live in
    shards); make_group is called once the arguments have been checked. The caller
    owns the group (closing actors is its business).
    """
    if mode not in ("exact", "composable"):
        raise KCenterError(f"mode must be 'exact' or 'composable', got {mode!r}")
    n_rows = rows.n_total
    if len(rows.pos) == 0:
        raise KCenterError("no usable rows (all vectors rejected)" if n_rows else "no rows")
    rejected = dict(zip(rows.rejected_pos.tolist(), rows.rejected_reason.tolist(), strict=True))
    n_seeds = len(seeds) if seeds is not None else 0
    forced = check_seeds(seeds, start, rows.pos, n_rows, rejected)
    k = check_k(k, len(rows.pos), n_seeds)
    group = make_group(rows)
    t0 = time.perf_counter()
    run = certified_greedy if mode == "exact" else composable_greedy
    with one_blas_thread():
        centers, radii, stats = run(group, k, forced, lookahead=lookahead, progress=progress)
        parts = group.finalize(stats.pop("pending_vectors"), stats.pop("pending_pos"))
    stats["seconds"] = time.perf_counter() - t0
    assignment = np.full(n_rows, -1, np.int64)
    distance = np.full(n_rows, np.nan, np.float32)
    for pos, a, d in parts:
        assignment[pos] = a
        distance[pos] = d
    return KCenterResult(
        centers=np.asarray(centers, np.int64),
        radii=np.asarray(radii, np.float64),
        assignment=assignment,
        distance=distance,
        rejected_pos=np.asarray(rows.rejected_pos, np.int64),
        rejected_reason=np.asarray(rows.rejected_reason, dtype=object),
        n_seeds=n_seeds,
        mode=mode,
        passes=int(stats.get("passes", 0)),
        stats=stats,
    )

