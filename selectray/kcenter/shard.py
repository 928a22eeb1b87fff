"""One shard's rows and their greedy k-center state, numpy on the CPU (torch: torch_shard.py).

The hot path: applying new centers to every row is a blocked matrix-matrix product
(compute-bound) over row blocks sized to stay in cache, never an N x k matrix.
"""

from __future__ import annotations

import time
from typing import Any

import numpy as np

from selectray.kcenter.distances import sq_norms
from selectray.kcenter.vectors import VectorRows

DEFAULT_BLOCK_ROWS = 4096  # most rows per GEMM block (fewer when many centers: SCRATCH_BYTES)
SCRATCH_BYTES = 1 << 20  # one block's distance matrix: about the L2 cache of a core
MAX_GEMM_COLS = 1024  # centers per GEMM call: bounds the block_rows x cols scratch matrix


class ShardState:
    """One shard's rows and their greedy state; numpy on CPU.

    Holds the vectors (float32, or float16 computed in float32), their squared norms,
    each row's float32 squared min-distance `f` to the centers applied so far and the
    index of that nearest center. Rows that are centers carry f = -1 so they are never
    candidates again. Used in-process by `greedy_k_center` and inside the Ray actors
    of `selectray.kcenter.ray_shards`; `TorchShardState` is the same on a torch device.
    """

    def __init__(self, rows: VectorRows, *, block_rows: int = DEFAULT_BLOCK_ROWS):
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

    def assign_all(self, vecs: np.ndarray, positions: np.ndarray) -> np.ndarray:
        """Forget all centers, apply these (in order) tracking the coverage radius after each."""
        self.reset()
        return self.apply(vecs, positions, track_radii=True)
