"""Greedy k-center (farthest-point) selection: exact, with certified lookahead. No Ray here.

The textbook algorithm (Gonzalez 1985) starts from seed centers and repeatedly adds
the row farthest from its nearest center (ties: smallest row position `pos`). Done
plainly, every new center costs one pass over all N x d numbers (a memory-bound
matrix-vector product). This module computes exactly the same sequence with far
fewer passes:

1. Take the m rows with the largest current min-distance (the candidates) and
   U = the largest min-distance of any other row. Min-distances only shrink, so no
   other row can ever exceed U again.
2. Run greedy among the candidates only, updating their min-distances with each
   new center. The best candidate is exactly the center plain greedy would pick
   as long as its min-distance is still greater than U ("certified").
3. Apply all certified centers to the whole data with one blocked matrix-matrix
   product (compute-bound GEMM), update min-distances and assignments, repeat.

Exactness. Distances on the hot path are float32 `|x|^2 - 2 x.c + |c|^2` (precomputed
norms, clamped at zero). Their rounding depends on the BLAS kernel and on the shape
of the product: OpenBLAS returns different last bits for the same row multiplied
inside differently shaped blocks, so float32 values alone could never make a sharded
run equal a single-process one, or pick the smallest `pos` among exact duplicates.
Every decision is therefore certified against a rigorous bound `delta` on the
float32 error (`distance_error_bound`):

* a row outside the candidates has min-distance at most U + delta, so a candidate
  is accepted only when its exact min-distance is greater than U + delta;
* a candidate that could be the farthest row is resolved exactly: its min-distance
  is recomputed in float64 from difference vectors, over every center whose float32
  distance is within 2 delta of the nearest (the only ones that can be nearest).

So the centers and radii are those of plain greedy run in float64 on the same
vectors (ties in that value to the smallest `pos`), whatever the sharding,
lookahead, BLAS or device. Row assignments are the float32 nearest center: they can
differ from the float64 nearest only when two centers are equally near within
`delta`. The reported `distance` is computed from the difference vector to the
assigned center (no cancellation, independent of blocking).

Rows with NaN/inf, missing or wrong-dimension vectors take no part; they are listed
in `KCenterResult.rejected_pos` / `rejected_reason`, with assignment -1 and distance
NaN. `pos` of an in-memory array is the row index.
"""

from __future__ import annotations

import contextlib
import itertools
import math
import sys
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from selectray.cpus import usable_cpus
from selectray.errors import SelectrayError

UNIT_ROUNDOFF = 2.0**-24  # float32
DEFAULT_LOOKAHEAD = 2048  # candidates per pass (m); adapts between this and MAX_LOOKAHEAD
MAX_LOOKAHEAD = 32768
SLOW_PASS = 4  # a pass certifying fewer centers doubles the lookahead
DEFAULT_BLOCK_ROWS = 4096  # most rows per GEMM block (fewer when many centers: SCRATCH_BYTES)
SCRATCH_BYTES = 1 << 20  # one block's distance matrix: about the L2 cache of a core
GPU_BLOCK_ROWS = 16384  # rows per block on CUDA (a 16384 x 1024 block is 64 MiB)
MAX_GEMM_COLS = 1024  # centers per GEMM call: bounds the block_rows x cols scratch matrix
MAX_LIKELY = 2048  # first block of candidate-distance columns: the centers expected this pass
COLUMN_BLOCK = 128  # further candidate-distance columns computed together
RESOLVE_BATCH = 32  # candidates resolved exactly together

REASON_NONFINITE = "nonfinite_embedding"
REASON_DIMENSION = "bad_dimension"
REASON_MISSING = "missing_embedding"


class KCenterError(SelectrayError, ValueError):
    """Bad k-center input (k, seeds, start, data); the message is one user-facing line."""


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

    def centers_table(self):
        """pyarrow Table: `order` (0-based), `pos`, `radius` (coverage radius after adding it)."""
        import pyarrow as pa

        return pa.table(
            {
                "order": np.arange(len(self.centers), dtype=np.int64),
                "pos": self.centers.astype(np.int64),
                "radius": self.radii.astype(np.float64),
            }
        )

    def rows_table(self):
        """pyarrow Table over all rows: `pos`, `cluster_id` (-1 if rejected), `distance`."""
        import pyarrow as pa

        return pa.table(
            {
                "pos": np.arange(len(self.assignment), dtype=np.int64),
                "cluster_id": self.assignment.astype(np.int64),
                "distance": self.distance.astype(np.float32),
            }
        )


# --------------------------------------------------------------------------- math


def sq_norms(x: np.ndarray, block_rows: int = 65536) -> np.ndarray:
    """Squared L2 norms of the rows of `x`, computed and stored in float32."""
    out = np.empty(len(x), np.float32)
    for s in range(0, len(x), block_rows):
        xb = x[s : s + block_rows]
        if xb.dtype != np.float32:
            xb = xb.astype(np.float32)
        np.einsum("ij,ij->i", xb, xb, out=out[s : s + len(xb)])
    return out


def exact_sq_dist(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """Squared distances between paired rows a[i], b[i], in float64 from difference vectors.

    The value of a pair depends only on the two vectors (a row-wise reduction over a
    contiguous axis), never on how many pairs are computed together: the deterministic
    reference that every certified decision rests on.
    """
    diff = np.asarray(a, dtype=np.float64) - np.asarray(b, dtype=np.float64)
    return (diff * diff).sum(axis=1)


def distance_error_bound(dim: int, max_sq_norm: float) -> float:
    """Bound on |float32 expansion - exact| for squared distances of rows with |x|^2 <= S.

    With S the max squared norm: the dot product over `dim` terms errs by at most
    dim*u*2|x||c| <= 2*dim*u*S after the factor -2 (any summation order, FMA or
    not); each float32 norm by dim*u*S; the two additions by 7*u*S. (4*dim + 32)*u*S
    covers it with room to spare, and the absolute term covers the float64
    reference's own ~1e-16 relative error.
    """
    s = max(float(max_sq_norm), 1e-30)
    return (4 * dim + 32) * UNIT_ROUNDOFF * s + 1e-12 * s


def expand_dist(a: np.ndarray, an: np.ndarray, b: np.ndarray, bn: np.ndarray) -> np.ndarray:
    """float32 squared distances |a|^2 - 2 a.b + |b|^2, clamped at zero, (len(a), len(b))."""
    d = np.matmul(a, b.T)
    d *= np.float32(-2.0)
    d += an[:, None]
    d += bn[None, :]
    return np.maximum(d, 0.0, out=d)


def nearest_exact(
    v: np.ndarray, vn: np.ndarray, c: np.ndarray, cn: np.ndarray, delta: float
) -> tuple[np.ndarray, np.ndarray]:
    """For each row of `v`, the float64 min squared distance to the rows of `c` and its argmin.

    Only centers whose float32 distance is within 2*delta of the row's float32 minimum
    can be nearest, so only those are recomputed exactly. Ties: smallest center index.
    """
    r = len(v)
    if len(c) == 0:
        return np.full(r, np.inf), np.full(r, -1, np.int64)
    d32 = expand_dist(v, vn, c, cn)
    window = d32.min(axis=1) + np.float32(2.0 * delta)
    rows, cols = np.nonzero(d32 <= window[:, None])
    exact = exact_sq_dist(v[rows], c[cols])
    order = np.lexsort((cols, exact, rows))  # per row: smallest value, then smallest index
    rows, cols, exact = rows[order], cols[order], exact[order]
    first = np.ones(len(rows), bool)
    first[1:] = rows[1:] != rows[:-1]
    best = np.full(r, np.inf)
    arg = np.full(r, -1, np.int64)
    best[rows[first]] = exact[first]
    arg[rows[first]] = cols[first]
    return best, arg


# --------------------------------------------------------------------------- input checks


def storage_dtype(dtype) -> np.dtype:
    """float16 is kept as storage (computed in float32); anything else is stored float32."""
    return np.dtype(np.float16) if np.dtype(dtype) == np.float16 else np.dtype(np.float32)


@dataclass
class Rows:
    """Usable vectors, their positions and squared norms, and the rejected rows."""

    x: np.ndarray
    pos: np.ndarray
    norms: np.ndarray
    rejected_pos: np.ndarray
    rejected_reason: np.ndarray

    @property
    def n_total(self) -> int:
        return len(self.pos) + len(self.rejected_pos)


def validate_rows(rows: Any, dim: int | None = None, pos: np.ndarray | None = None) -> Rows:
    """Split input rows into usable vectors and rejected rows.

    `rows` is an (N, d) array, or a sequence of vectors (None or ragged allowed);
    `pos` their positions (default 0..N-1). A row is rejected as
    `nonfinite_embedding` when a value is NaN/inf (or so large that its squared norm
    overflows float32), `bad_dimension` when its length is not `dim` (default: the
    array's width, or the most common length of a sequence), `missing_embedding`
    when it is None.
    """
    if isinstance(rows, np.ndarray) and rows.dtype != object:
        if rows.ndim != 2:
            raise KCenterError(f"vectors must be a 2-D array (rows x dimensions), got shape {rows.shape}")
        if not (np.issubdtype(rows.dtype, np.floating) or np.issubdtype(rows.dtype, np.integer)):
            raise KCenterError(f"vectors must be numeric, got dtype {rows.dtype}")
        x = np.ascontiguousarray(rows, dtype=storage_dtype(rows.dtype))
        pos = np.arange(len(x), dtype=np.int64) if pos is None else np.asarray(pos, np.int64)
        if dim is not None and x.shape[1] != dim:
            return Rows(x[:0], pos[:0], np.empty(0, np.float32), pos, _reasons(REASON_DIMENSION, len(pos)))
        return _drop_nonfinite(x, pos)
    if not isinstance(rows, Sequence | np.ndarray):
        raise KCenterError(f"vectors must be an array or a sequence of vectors, got {type(rows).__name__}")
    return _validate_sequence(list(rows), dim, pos)


def _reasons(reason: str, n: int) -> np.ndarray:
    return np.full(n, reason, dtype=object)


def _drop_nonfinite(x: np.ndarray, pos: np.ndarray) -> Rows:
    # A NaN/inf anywhere in a row makes its float32 squared norm non-finite, so the
    # norms (needed anyway) double as the validity check: no extra pass over x.
    with np.errstate(over="ignore", invalid="ignore"):
        norms = sq_norms(x)
    ok = np.isfinite(norms)
    if ok.all():
        return Rows(x, pos, norms, np.empty(0, np.int64), np.empty(0, object))
    return Rows(x[ok], pos[ok], norms[ok], pos[~ok], _reasons(REASON_NONFINITE, int((~ok).sum())))


def _validate_sequence(rows: list, dim: int | None, pos: np.ndarray | None) -> Rows:
    pos = np.arange(len(rows), dtype=np.int64) if pos is None else np.asarray(pos, np.int64)
    vecs = [None if r is None else np.asarray(r).reshape(-1) for r in rows]
    if dim is None:
        lengths = [len(v) for v in vecs if v is not None]
        if not lengths:
            raise KCenterError("no vectors in the input")
        values, counts = np.unique(lengths, return_counts=True)
        dim = int(values[np.argmax(counts)])
    ok, bad, why = [], [], []
    for i, v in enumerate(vecs):
        if v is None:
            reason = REASON_MISSING
        elif len(v) != dim:
            reason = REASON_DIMENSION
        elif not (np.issubdtype(v.dtype, np.floating) or np.issubdtype(v.dtype, np.integer)):
            reason = REASON_NONFINITE
        else:
            ok.append(i)
            continue
        bad.append(i)
        why.append(reason)
    store = np.float16 if ok and all(vecs[i].dtype == np.float16 for i in ok) else np.float32
    x = np.array([vecs[i] for i in ok], dtype=store).reshape(len(ok), dim)
    good = _drop_nonfinite(x, pos[np.asarray(ok, np.int64)])
    rej_pos = np.concatenate([pos[np.asarray(bad, np.int64)], good.rejected_pos])
    rej_why = np.concatenate([np.asarray(why, dtype=object), good.rejected_reason])
    order = np.argsort(rej_pos, kind="stable")
    return Rows(good.x, good.pos, good.norms, rej_pos[order], rej_why[order])


def check_k(k: Any, usable: int, n_forced: int) -> int:
    """k as an int, or a KCenterError saying why it cannot be used."""
    if isinstance(k, bool) or not isinstance(k, int | np.integer):
        raise KCenterError(f"k must be an integer, got {k!r}")
    k = int(k)
    if k <= 0:
        raise KCenterError(f"k must be positive, got {k}")
    if k > usable:
        raise KCenterError(f"k={k} exceeds the {usable} usable rows")
    if n_forced > k:
        raise KCenterError(f"{n_forced} seeds exceed k={k}")
    return k


def check_seeds(seeds: Any, start: Any, usable_pos: np.ndarray, n_rows: int, rejected: dict[int, str]) -> list[int]:
    """The forced first centers as positions: the seeds, else [start], else [smallest usable pos].

    Raises KCenterError for non-integer, repeated or out-of-range positions, rejected
    rows, or seeds and start given together.
    """
    seeds = [] if seeds is None else list(np.asarray(seeds, dtype=object).reshape(-1))
    if seeds and start is not None:
        raise KCenterError("give either seeds or start, not both")
    if seeds:
        forced = seeds
    elif start is not None:
        forced = [start]
    else:
        forced = [int(usable_pos.min())]
    out = []
    for p in forced:
        if isinstance(p, bool) or not isinstance(p, int | np.integer):
            raise KCenterError(f"seed and start positions must be integers, got {p!r}")
        out.append(int(p))
    outside = [p for p in out if not 0 <= p < n_rows]
    if outside:
        raise KCenterError(f"seed/start positions not in the pool of {n_rows} rows: {_preview(outside)}")
    bad = [f"{p} ({rejected[p]})" for p in out if p in rejected]
    if bad:
        raise KCenterError(f"seed/start rows were rejected: {_preview(bad)}")
    if len(set(out)) != len(out):
        seen: set[int] = set()
        dup = [p for p in out if p in seen or seen.add(p)]
        raise KCenterError(f"seed positions repeat: {_preview(dup)}")
    return out


def _preview(items: list, n: int = 5) -> str:
    more = f" and {len(items) - n} more" if len(items) > n else ""
    return ", ".join(str(i) for i in items[:n]) + more


# --------------------------------------------------------------------------- shard state


class ShardState:
    """One shard's rows and their greedy state; numpy on CPU.

    Holds the vectors (float32, or float16 computed in float32), their squared norms,
    each row's float32 squared min-distance `f` to the centers applied so far and the
    index of that nearest center. Rows that are centers carry f = -1 so they are never
    candidates again. Used in-process by `greedy_k_center` and inside the Ray actors
    of `selectray.cluster`; `TorchShardState` is the same on a torch device.
    """

    def __init__(self, rows: Rows, *, block_rows: int = DEFAULT_BLOCK_ROWS):
        self.x = rows.x
        self.pos = np.asarray(rows.pos, dtype=np.int64)
        self.norms = rows.norms
        self.block_rows = int(block_rows)
        self.rejected_pos = rows.rejected_pos
        self.rejected_reason = rows.rejected_reason
        self._pos_order = np.argsort(self.pos, kind="stable")
        self._pos_sorted = self.pos[self._pos_order]
        self._scratch = np.empty(0, np.float32)
        self.seconds = {"apply": 0.0, "top": 0.0, "finalize": 0.0}  # where this shard's time went
        self.reset()

    # ---- bookkeeping
    def info(self) -> dict[str, Any]:
        """Rows, dimension and max squared norm of this shard."""
        return {
            "rows": len(self.pos),
            "dim": int(self.x.shape[1]),
            "max_sq_norm": float(self.norms.max()) if len(self.pos) else 0.0,
            "rejected": len(self.rejected_pos),
            "seconds": dict(self.seconds),
        }

    def reset(self) -> None:
        """Forget all centers."""
        n = len(self.pos)
        self.f = np.full(n, np.inf, np.float32)
        self.assign = np.full(n, -1, np.int64)
        self._centers: list[np.ndarray] = []
        self._n_centers = 0
        self._n_center_rows = 0

    def local_index(self, positions: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """(mask of `positions` held here, their local row indices)."""
        positions = np.asarray(positions, dtype=np.int64)
        if len(self._pos_sorted) == 0:
            return np.zeros(len(positions), bool), np.empty(0, np.int64)
        i = np.minimum(np.searchsorted(self._pos_sorted, positions), len(self._pos_sorted) - 1)
        held = self._pos_sorted[i] == positions
        return held, self._pos_order[i[held]]

    def vectors(self, positions: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """(positions held here, their vectors as float32)."""
        held, local = self.local_index(positions)
        return np.asarray(positions, np.int64)[held], self._gather(local)

    def _gather(self, local: np.ndarray) -> np.ndarray:
        return np.asarray(self.x[local], np.float32)

    # ---- the hot path
    def apply(self, vecs: np.ndarray, positions: np.ndarray, track_radii: bool = False) -> np.ndarray | None:
        """Add centers (in order): update every row's min-distance and nearest center.

        Blocked GEMM over row blocks and chunks of at most MAX_GEMM_COLS centers, so
        only about SCRATCH_BYTES of distances exist at once (never N x k). With
        `track_radii`, also return for each new center the max over rows of the
        float32 min-distance right after it was added.
        """
        t0 = time.perf_counter()
        vecs = np.ascontiguousarray(vecs, dtype=np.float32)
        first = self._n_centers
        self._centers.append(vecs)
        self._n_centers += len(vecs)
        radii = np.full(len(vecs), -np.inf) if track_radii else None
        # Even chunks: 1077 centers as 2 x 539, not 1024 + a slow 53-column product.
        n_chunks = -(-len(vecs) // MAX_GEMM_COLS)
        for chunk_idx in np.array_split(np.arange(len(vecs)), max(1, n_chunks)):
            c0, chunk = int(chunk_idx[0]), vecs[chunk_idx[0] : chunk_idx[-1] + 1]
            part = self._apply_chunk(chunk, sq_norms(chunk), first + c0, track_radii)
            if track_radii:
                radii[c0 : c0 + len(chunk)] = part
        held, local = self.local_index(positions)
        if held.any():
            self._n_center_rows += self._mark_centers(local, first + np.flatnonzero(held))
        self.seconds["apply"] += time.perf_counter() - t0
        return radii

    def _mark_centers(self, local: np.ndarray, idx: np.ndarray) -> int:
        new = int(np.count_nonzero(self.f[local] >= 0))
        self.f[local] = -1.0
        self.assign[local] = idx
        return new

    def rows_per_block(self, a: int) -> int:
        """Rows per GEMM block for `a` centers: a ~1 MiB distance block stays in L2 cache.

        `block_rows` is the upper limit (for few centers, large blocks amortise calls).
        """
        return int(min(self.block_rows, max(256, (SCRATCH_BYTES // 4 // max(a, 1)) // 64 * 64)))

    def _apply_chunk(self, c: np.ndarray, cn: np.ndarray, first: int, track: bool) -> np.ndarray | None:
        a = len(c)
        cm2t = np.ascontiguousarray(c.T * np.float32(-2.0))  # scaling by -2 is exact
        b = self.rows_per_block(a)
        if self._scratch.size < b * a:
            self._scratch = np.empty(b * a, np.float32)
        col_max = np.full(a, -np.inf, np.float32) if track else None
        rows = np.arange(b)
        for s in range(0, len(self.x), b):
            xb = self.x[s : s + b]
            nb = len(xb)
            if xb.dtype != np.float32:
                xb = xb.astype(np.float32)
            g = self._scratch[: nb * a].reshape(nb, a)
            np.matmul(xb, cm2t, out=g)
            g += cn
            j = g.argmin(axis=1)
            v = g[rows[:nb], j]
            v += self.norms[s : s + nb]
            np.maximum(v, 0.0, out=v)
            fb = self.f[s : s + nb]
            if track:
                g += self.norms[s : s + nb, None]
                np.maximum(g, 0.0, out=g)
                np.minimum(g[:, 0], fb, out=g[:, 0])
                np.minimum.accumulate(g, axis=1, out=g)
                np.maximum(col_max, g.max(axis=0), out=col_max)
            better = v < fb
            fb[better] = v[better]
            self.assign[s : s + nb][better] = first + j[better]
        return col_max

    def top(self, m: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """(pos, f, float32 vectors) of the min(m+1, non-center rows) rows with the largest f."""
        n = len(self.f)
        q = min(m + 1, n - self._n_center_rows)
        if q <= 0:
            return np.empty(0, np.int64), np.empty(0, np.float32), np.empty((0, self.x.shape[1]), np.float32)
        idx = np.arange(n) if q >= n else np.argpartition(self.f, n - q)[n - q :]
        return self.pos[idx], self.f[idx], self._gather(idx)

    def step(self, vecs: np.ndarray, positions: np.ndarray, m: int):
        """One pass: apply the new centers, then report the top rows (see `top`)."""
        if len(vecs):
            self.apply(vecs, positions)
        t0 = time.perf_counter()
        out = self.top(m)
        self.seconds["top"] += time.perf_counter() - t0
        return out

    def finalize(self, vecs: np.ndarray, positions: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """Apply the last centers, then (pos, assignment, Euclidean distance) for every row.

        The distance is recomputed from the difference vector to the assigned center:
        no cancellation error, and the same value however the rows were blocked.
        """
        if len(vecs):
            self.apply(vecs, positions)
        t0 = time.perf_counter()
        centers = np.concatenate(self._centers) if self._centers else np.empty((0, self.x.shape[1]), np.float32)
        dist = np.empty(len(self.pos), np.float32)
        b = 1024  # rows per block: the difference vectors stay in cache
        for s in range(0, len(self.pos), b):
            diff = np.asarray(self.x[s : s + b], np.float32) - centers[self.assign[s : s + b]]
            dist[s : s + b] = np.sqrt(np.einsum("ij,ij->i", diff, diff))
        self.seconds["finalize"] += time.perf_counter() - t0
        return self.pos, self.assign.copy(), dist

    def local_greedy(self, k: int, forced_vecs: np.ndarray, forced_pos: np.ndarray, lookahead: int | None):
        """Composable mode, first round: exact greedy on this shard's rows alone.

        Starts from the forced centers (seeds or start, wherever they live) and returns
        (pos, vectors) of the centers picked here, forced ones excluded. Leaves the
        shard reset.
        """
        self.reset()
        own = int(np.count_nonzero(self.local_index(forced_pos)[0]))
        k_local = min(k, len(forced_pos) + len(self.pos) - own)
        if k_local <= len(forced_pos):
            return np.empty(0, np.int64), np.empty((0, self.x.shape[1]), np.float32)
        centers, _, _ = certified_greedy(
            LocalGroup([self]), k_local, [int(p) for p in forced_pos], lookahead=lookahead, forced_vecs=forced_vecs
        )
        self.reset()
        picked = np.asarray(centers[len(forced_pos) :], np.int64)
        return picked, self.vectors(picked)[1]


class TorchShardState(ShardState):
    """ShardState with vectors and state on a torch device (CUDA, or "cpu" for testing).

    Same arithmetic, same certification: only the float32 rounding differs, which
    the error bound covers. TF32 is switched off around the products, since its
    10-bit mantissa would break that bound.
    """

    def __init__(self, rows: Rows, *, block_rows: int = DEFAULT_BLOCK_ROWS, device: str = "cuda"):
        import torch

        self.torch = torch
        self.device = torch.device(device)
        self.xt = torch.from_numpy(np.ascontiguousarray(rows.x)).to(self.device)
        self.nt = torch.from_numpy(rows.norms).to(self.device)
        if self.device.type == "cuda":
            block_rows = max(block_rows, GPU_BLOCK_ROWS)  # fewer, larger kernels
        super().__init__(rows, block_rows=block_rows)

    def reset(self) -> None:
        super().reset()
        torch = self.torch
        n = len(self.pos)
        self.ft = torch.full((n,), float("inf"), dtype=torch.float32, device=self.device)
        self.at = torch.full((n,), -1, dtype=torch.int64, device=self.device)

    def _gather(self, local: np.ndarray) -> np.ndarray:
        idx = self.torch.from_numpy(np.asarray(local, np.int64)).to(self.device)
        return self.xt[idx].float().cpu().numpy()

    def _mark_centers(self, local: np.ndarray, idx: np.ndarray) -> int:
        torch = self.torch
        lt = torch.from_numpy(np.asarray(local, np.int64)).to(self.device)
        new = int((self.ft[lt] >= 0).sum())
        self.ft[lt] = -1.0
        self.at[lt] = torch.from_numpy(np.asarray(idx, np.int64)).to(self.device)
        return new

    def _apply_chunk(self, c: np.ndarray, cn: np.ndarray, first: int, track: bool) -> np.ndarray | None:
        torch = self.torch
        cm2t = torch.from_numpy(np.ascontiguousarray(c.T * np.float32(-2.0))).to(self.device)
        cnt = torch.from_numpy(cn).to(self.device)
        col_max = torch.full((len(c),), float("-inf"), device=self.device) if track else None
        tf32 = torch.backends.cuda.matmul.allow_tf32
        torch.backends.cuda.matmul.allow_tf32 = False
        try:
            for s in range(0, len(self.pos), self.block_rows):
                e = min(len(self.pos), s + self.block_rows)
                g = torch.addmm(cnt, self.xt[s:e].float(), cm2t)
                v, j = g.min(dim=1)
                v = (v + self.nt[s:e]).clamp_min_(0.0)
                fb = self.ft[s:e]
                if track:
                    g = (g + self.nt[s:e, None]).clamp_min_(0.0)
                    g[:, 0] = torch.minimum(g[:, 0], fb)
                    g = torch.cummin(g, dim=1).values
                    col_max = torch.maximum(col_max, g.max(dim=0).values)
                better = v < fb
                self.ft[s:e] = torch.where(better, v, fb)
                self.at[s:e] = torch.where(better, first + j, self.at[s:e])
        finally:
            torch.backends.cuda.matmul.allow_tf32 = tf32
        return None if col_max is None else col_max.cpu().numpy()

    def top(self, m: int):
        n = len(self.pos)
        q = min(m + 1, n - self._n_center_rows)
        if q <= 0:
            return np.empty(0, np.int64), np.empty(0, np.float32), np.empty((0, self.x.shape[1]), np.float32)
        vals, idx = self.torch.topk(self.ft, q, sorted=False)
        idx_np = idx.cpu().numpy()
        return self.pos[idx_np], vals.cpu().numpy(), self.xt[idx].float().cpu().numpy()

    def finalize(self, vecs, positions):
        if len(vecs):
            self.apply(vecs, positions)
        torch = self.torch
        centers = torch.from_numpy(np.concatenate(self._centers)).to(self.device)
        dist = torch.empty(len(self.pos), dtype=torch.float32, device=self.device)
        for s in range(0, len(self.pos), self.block_rows):
            e = min(len(self.pos), s + self.block_rows)
            diff = self.xt[s:e].float() - centers[self.at[s:e]]
            dist[s:e] = (diff * diff).sum(dim=1).sqrt()
        self.assign = self.at.cpu().numpy()
        return self.pos, self.assign.copy(), dist.cpu().numpy()


def make_shard(rows: Rows, *, block_rows: int = DEFAULT_BLOCK_ROWS, device: str | None = None) -> ShardState:
    """A ShardState: numpy on CPU, torch when `device` names one or a CUDA GPU is present.

    device: None (CUDA if available, else numpy), "numpy", or a torch device string
    such as "cuda", "cuda:1" or "cpu" (torch on CPU, mainly for testing).
    """
    if device is None:
        device = "cuda" if cuda_available() else "numpy"
    if device == "numpy":
        return ShardState(rows, block_rows=block_rows)
    return TorchShardState(rows, block_rows=block_rows, device=device)


def cuda_available() -> bool:
    """True when torch sees a CUDA device; never imports torch (2+ s) on a machine without a driver."""
    if "torch" not in sys.modules and not (Path("/proc/driver/nvidia").exists() or Path("/dev/nvidia0").exists()):
        return False
    try:
        import torch
    except ImportError:
        return False
    return bool(torch.cuda.is_available())


# --------------------------------------------------------------------------- driver


class LocalGroup:
    """Shards in this process (the Ray version is in cluster.py).

    With threads > 1 the shards are called in parallel threads (run_k_center limits
    BLAS to one thread each): numpy releases the GIL in the products, and independent
    single-threaded products scale better than one multi-threaded BLAS call per small
    block, above all on a machine shared with other work. The interface the drivers
    below need:
    rows, dim, max_sq_norm, vectors(), step(), finalize(), local_greedy(), assign_all().
    """

    def __init__(self, shards: list[ShardState], threads: int = 1):
        self.shards = shards
        self.threads = max(1, min(int(threads), len(shards)))
        infos = [s.info() for s in shards]
        self.rows = sum(i["rows"] for i in infos)
        self.dim = infos[0]["dim"]
        self.max_sq_norm = max(i["max_sq_norm"] for i in infos)

    def _map(self, fn) -> list:
        if self.threads == 1:
            return [fn(s) for s in self.shards]
        from concurrent.futures import ThreadPoolExecutor

        with ThreadPoolExecutor(self.threads) as pool:
            return list(pool.map(fn, self.shards))

    def vectors(self, positions):
        return merge_vectors(self._map(lambda s: s.vectors(positions)), self.dim)

    def step(self, vecs, positions, m):
        return concat_top(self._map(lambda s: s.step(vecs, positions, m)), self.dim)

    def finalize(self, vecs, positions):
        return self._map(lambda s: s.finalize(vecs, positions))

    def local_greedy(self, k, forced_vecs, forced_pos, lookahead):
        return [s.local_greedy(k, forced_vecs, forced_pos, lookahead) for s in self.shards]

    def assign_all(self, vecs, positions):
        """Reset, apply all centers tracking radii; per-shard column maxima."""

        def one(s):
            s.reset()
            return s.apply(vecs, positions, track_radii=True)

        return self._map(one)


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


def split_rows(rows: Rows, parts: int) -> list[Rows]:
    """Contiguous, near-equal slices of `rows` (views, no copies); rejections go with the first."""
    bounds = np.linspace(0, len(rows.pos), max(1, parts) + 1).astype(np.int64)
    out = []
    for i, (a, b) in enumerate(itertools.pairwise(bounds)):
        rej = (rows.rejected_pos, rows.rejected_reason) if i == 0 else (np.empty(0, np.int64), np.empty(0, object))
        out.append(Rows(rows.x[a:b], rows.pos[a:b], rows.norms[a:b], *rej))
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


class _Candidates:
    """The top-m rows of one pass and upper bounds on their current min-distances.

    `hi` is the float32 min-distance plus `delta` (an upper bound on the exact value),
    or the exact float64 value once resolved. Candidates are kept in `pos` order, so
    the first maximum of `hi` is the one with the smallest position. The distances
    between candidates are computed by blocks of columns, first for the `likely`
    number of centers this pass, for the candidates with the best bounds at the time.
    """

    def __init__(self, pos, f, vecs, m: int, delta: float, likely: int):
        order = np.lexsort((pos, -f.astype(np.float64)))
        take, rest = order[:m], order[m:]
        # Every row not taken (here, or left on a shard by its own top) has f <= U.
        self.U = float(f[rest].max()) if len(rest) else -np.inf
        take = take[np.argsort(pos[take], kind="stable")]
        self.pos = pos[take]
        self.vec = np.ascontiguousarray(vecs[take], dtype=np.float32)
        self.norm = sq_norms(self.vec)
        self.hi = f[take].astype(np.float64) + delta
        self.exact = np.full(len(take), np.nan)
        self.is_exact = np.zeros(len(take), bool)
        self.exact_idx = np.empty(0, np.int64)  # candidates with an exact value, not yet centers
        self.delta = delta
        self.index = {int(p): i for i, p in enumerate(self.pos)}
        # Distances between candidates, computed by blocks of columns when first needed.
        self.blocks: list[np.ndarray] = []
        self.col_block = np.full(len(take), -1, np.int64)
        self.col_off = np.zeros(len(take), np.int64)
        self.first_block = likely

    def _column(self, i: int) -> np.ndarray:
        """float32 distances from every candidate to candidate i.

        Computed together with those of the candidates with the best bounds that have
        none yet (the likeliest next centers): one compute-bound GEMM per block
        instead of one memory-bound product per center.
        """
        if self.col_block[i] < 0:
            size = self.first_block if not self.blocks else COLUMN_BLOCK
            need = np.flatnonzero((self.col_block < 0) & (self.hi > -np.inf))
            need = need[np.argsort(-self.hi[need], kind="stable")[:size]]
            if i not in need:
                need[-1] = i
            self.col_block[need] = len(self.blocks)
            self.col_off[need] = np.arange(len(need))
            self.blocks.append(expand_dist(self.vec, self.norm, self.vec[need], self.norm[need]))
        return self.blocks[self.col_block[i]][:, self.col_off[i]]

    def add_center(self, v: np.ndarray, vn: np.float32, p: int) -> None:
        """Lower the bounds with a new center (vector v, squared norm vn, position p)."""
        if len(self.pos) == 0:
            return
        i = self.index.get(int(p))
        if i is not None:
            d = self._column(i).astype(np.float64)
        else:
            d = expand_dist(self.vec, self.norm, v[None, :], np.atleast_1d(vn))[:, 0].astype(np.float64)
        # An exact value can drop only where the float32 distance says it might.
        ex = self.exact_idx
        check = ex[d[ex] - self.delta <= self.exact[ex]]
        d += self.delta
        np.minimum(self.hi, d, out=self.hi)
        if len(check):
            e = exact_sq_dist(self.vec[check], np.broadcast_to(v, (len(check), len(v))))
            self.exact[check] = np.minimum(self.exact[check], e)
            self.hi[check] = self.exact[check]
        if i is not None:
            self.hi[i] = -np.inf
            if self.is_exact[i]:
                self.exact_idx = self.exact_idx[self.exact_idx != i]

    def certified_max(self, centers: np.ndarray, cnorms: np.ndarray) -> tuple[int | None, float]:
        """(candidate index, exact squared distance) of the farthest row, if certified.

        Resolves the best bounds exactly until the best one is exact; that row is the
        farthest of all rows when it beats U + delta. Returns (None, nan) when that
        cannot be certified, (-1, 0.0) when every row is a center.
        """
        while True:
            i = int(np.argmax(self.hi)) if len(self.hi) else -1
            top = self.hi[i] if i >= 0 else -np.inf
            if top == -np.inf:
                return (-1, 0.0) if np.isneginf(self.U) else (None, math.nan)
            if top <= self.U + self.delta:
                return None, math.nan
            if self.is_exact[i]:
                return i, float(top)
            todo = np.flatnonzero(~self.is_exact & (self.hi > self.U + self.delta))
            todo = todo[np.argsort(-self.hi[todo], kind="stable")[:RESOLVE_BATCH]]
            self.exact[todo], _ = nearest_exact(self.vec[todo], self.norm[todo], centers, cnorms, self.delta)
            self.is_exact[todo] = True
            self.hi[todo] = self.exact[todo]
            self.exact_idx = np.concatenate([self.exact_idx, todo])


def forced_vectors(group, forced) -> np.ndarray:
    """The vectors of the rows at positions `forced`, in that order, gathered from the shards."""
    got_pos, got_vec = group.vectors(np.asarray(forced, np.int64))
    lookup = {int(p): i for i, p in enumerate(got_pos)}
    missing = [p for p in forced if p not in lookup]
    if missing:
        raise KCenterError(f"positions not in the pool: {_preview(missing)}")
    return got_vec[[lookup[p] for p in forced]]


def certified_greedy(
    group,
    k: int,
    forced: list[int],
    *,
    lookahead: int | None = None,
    progress: bool = False,
    forced_vecs: np.ndarray | None = None,
    desc: str = "k-center",
) -> tuple[list[int], list[float], dict[str, Any]]:
    """Exact greedy k-center over a group of shards; returns (centers, radii, stats).

    `forced` are positions that become the first centers, in order (the seeds, or
    the start row); their vectors come from the shards unless `forced_vecs` is given.
    After the forced ones, each center is the certified farthest row. The radius
    after center t is the certified exact max min-distance, i.e. the value of the
    next greedy pick. stats["pending_vectors"] / ["pending_pos"] are centers the
    shards have not applied yet (pass them to `finalize`).
    """
    m0 = m = max(1, int(lookahead or DEFAULT_LOOKAHEAD))
    dim = group.dim
    delta = distance_error_bound(dim, group.max_sq_norm)
    if forced_vecs is None:
        forced_vecs = forced_vectors(group, forced)
    forced_vecs = np.ascontiguousarray(forced_vecs, dtype=np.float32)

    centers: list[int] = []
    radii: list[float] = []
    cvec = np.empty((k, dim), np.float32)
    cnorm = np.empty(k, np.float32)
    pending: list[int] = []  # indices into centers not yet applied on the shards
    stats: dict[str, Any] = {
        "passes": 0,
        "centers_per_pass": [],
        "exact_resolved": 0,
        "seconds_shards": 0.0,
        "seconds_driver": 0.0,
    }
    bar = _progress_bar(progress, k, desc)

    def add(p: int, v: np.ndarray, cands: _Candidates | None) -> None:
        t = len(centers)
        centers.append(p)
        cvec[t] = v
        cnorm[t] = sq_norms(v[None, :])[0]
        pending.append(t)
        if cands is not None:
            cands.add_center(cvec[t], cnorm[t], p)

    likely = 64  # candidates expected to become centers this pass; follows the last pass
    add(forced[0], forced_vecs[0], None)
    next_forced = 1
    try:
        while len(radii) < k:
            t0 = time.perf_counter()
            sent = np.asarray(pending, np.int64)
            pos, f, vecs = group.step(cvec[sent], np.asarray([centers[i] for i in sent], np.int64), m)
            t1 = time.perf_counter()
            pending.clear()
            cands = _Candidates(pos, f, vecs, m, delta, likely)
            before = len(centers)
            while len(radii) < len(centers):
                i, value = cands.certified_max(cvec[: len(centers)], cnorm[: len(centers)])
                if i is None:
                    break
                radii.append(math.sqrt(value))
                if len(centers) == k:
                    break
                if next_forced < len(forced):
                    add(forced[next_forced], forced_vecs[next_forced], cands)
                    next_forced += 1
                else:
                    add(int(cands.pos[i]), cands.vec[i], cands)
            added = len(centers) - before
            # Few certified (early on, or ties straddling the boundary): look further next
            # time; back towards the default once passes certify plenty.
            if added < SLOW_PASS and len(radii) < k:
                m = min(2 * m, max(MAX_LOOKAHEAD, m))
            elif added > m // 4 and m > m0:
                m //= 2
            likely = min(MAX_LIKELY, max(64, added))
            stats["passes"] += 1
            stats["centers_per_pass"].append(added)
            stats["exact_resolved"] += int(cands.is_exact.sum())
            stats["seconds_shards"] += t1 - t0
            stats["seconds_driver"] += time.perf_counter() - t1
            bar.update(len(radii) - bar.n)
            if radii:
                bar.set_postfix(radius=f"{radii[-1]:.4g}", passes=stats["passes"], refresh=False)
    finally:
        bar.close()
    stats["lookahead"] = m
    stats["pending_vectors"] = cvec[np.asarray(pending, np.int64)]
    stats["pending_pos"] = np.asarray([centers[i] for i in pending], np.int64)
    return centers, radii, stats


def composable_greedy(
    group, k: int, forced: list[int], *, lookahead: int | None = None, progress: bool = False
) -> tuple[list[int], list[float], dict[str, Any]]:
    """Composable k-center (Malkomes et al. 2015): one round, 4-approximation.

    Every shard runs exact greedy on its own rows (from the forced centers), the
    driver runs exact greedy on the union of their centers (forced first), then every
    shard assigns its rows to the final centers. Radii are the float32 max
    min-distances over all rows after each center. Leaves all centers applied on the
    shards (finalize with no pending centers).
    """
    bar = _progress_bar(progress, 3, "k-center (composable)")
    try:
        fvec = forced_vectors(group, forced)
        forced_pos = np.asarray(forced, np.int64)
        parts = group.local_greedy(k, fvec, forced_pos, lookahead)
        bar.update(1)
        upos = np.concatenate([forced_pos] + [p for p, _ in parts])
        uvec = np.concatenate([fvec] + [v for _, v in parts]).astype(np.float32)
        order = np.argsort(upos, kind="stable")  # row index order = pos order: same tie-breaks
        upos, uvec = upos[order], uvec[order]
        # Inside the union, positions are row indices; sorted by pos, ties break the same way.
        urows = Rows(uvec, np.arange(len(upos)), sq_norms(uvec), np.empty(0, np.int64), np.empty(0, object))
        where = {int(p): i for i, p in enumerate(upos)}
        sub = LocalGroup([ShardState(urows)])
        chosen, _, _ = certified_greedy(sub, min(k, len(upos)), [where[int(p)] for p in forced], lookahead=lookahead)
        bar.update(1)
        centers = [int(upos[i]) for i in chosen]
        tracked = group.assign_all(uvec[chosen], np.asarray(centers, np.int64))
        radii = np.sqrt(np.maximum(np.max(np.stack(tracked), axis=0), 0.0)).tolist()
        bar.update(1)
    finally:
        bar.close()
    stats = {
        "passes": 1,
        "union_size": len(upos),
        "pending_vectors": np.empty((0, group.dim), np.float32),
        "pending_pos": np.empty(0, np.int64),
    }
    return centers, radii, stats


def _progress_bar(enabled: bool, total: int, desc: str):
    if not enabled:
        return _NoBar()
    from tqdm.auto import tqdm

    return tqdm(total=total, desc=desc, unit="center")


class _NoBar:
    n = 0

    def update(self, n):
        self.n += n

    def set_postfix(self, **_):
        pass

    def close(self):
        pass


# --------------------------------------------------------------------------- public API


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
    vectors, whatever lookahead, threads or device (see the module docstring).
    """
    rows = validate_rows(x)
    if device is None and cuda_available():
        device = "cuda"
    if threads is None:
        threads = 1 if device not in (None, "numpy") else default_threads(len(rows.pos))

    def group(r: Rows) -> LocalGroup:
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
    make_group,
    rows: Rows,
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
    """Greedy k-center with the rows sharded over Ray actors (see `selectray.cluster`).

    `data` is an (N, d) array (pos = row index) or the path of an embeddings
    checkpoint (Parquet files with `pos` and `embedding`). mode="exact" equals
    `greedy_k_center` on the same data; mode="composable" runs greedy on each shard,
    then greedy on the union of their centers (4-approximation, one round). Options:
    lookahead, progress, device, block_rows, num_cpus_per_shard, dim.
    """
    from selectray import cluster  # Ray is imported only when asked for

    return cluster.distributed_k_center(data, k, num_shards=num_shards, seeds=seeds, start=start, mode=mode, **options)
