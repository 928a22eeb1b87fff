"""The greedy k-center drivers over a `ShardGroup`: exact (certified lookahead) and composable.

Certified lookahead computes exactly the textbook greedy sequence with far fewer
passes over the data: the m rows with the largest min-distance are candidates, U is
the largest min-distance of any other row (min-distances only shrink, so no other row
can exceed U again), greedy runs among the candidates while the winner beats U plus
the float32 error bound, and all certified centers are then applied to the shards in
one blocked product. Why this equals plain float64 greedy whatever the sharding,
lookahead, BLAS or device: docs/methods.md, "Exactness of certified greedy".
"""

from __future__ import annotations

import math
import time
from typing import Any

import numpy as np

from selectray.kcenter.distances import (
    distance_error_bound,
    exact_sq_dist,
    expand_dist,
    nearest_exact,
    sq_norms,
)
from selectray.kcenter.group import LocalGroup, ShardGroup
from selectray.kcenter.shard import ShardState
from selectray.kcenter.vectors import KCenterError, VectorRows, preview

DEFAULT_LOOKAHEAD = 2048  # candidates per pass (m); adapts between this and MAX_LOOKAHEAD
MAX_LOOKAHEAD = 32768
SLOW_PASS = 4  # a pass certifying fewer centers doubles the lookahead
MAX_LIKELY = 2048  # first block of candidate-distance columns: the centers expected this pass
COLUMN_BLOCK = 128  # further candidate-distance columns computed together
RESOLVE_BATCH = 32  # candidates resolved exactly together


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


def forced_vectors(group: ShardGroup, forced) -> np.ndarray:
    """The vectors of the rows at positions `forced`, in that order, gathered from the shards."""
    got_pos, got_vec = group.vectors(np.asarray(forced, np.int64))
    lookup = {int(p): i for i, p in enumerate(got_pos)}
    missing = [p for p in forced if p not in lookup]
    if missing:
        raise KCenterError(f"positions not in the pool: {preview(missing)}")
    return got_vec[[lookup[p] for p in forced]]


def certified_greedy(
    group: ShardGroup,
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
    group: ShardGroup, k: int, forced: list[int], *, lookahead: int | None = None, progress: bool = False
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
        parts = group.map(local_greedy, k, fvec, forced_pos, lookahead)
        bar.update(1)
        upos = np.concatenate([forced_pos] + [p for p, _ in parts])
        uvec = np.concatenate([fvec] + [v for _, v in parts]).astype(np.float32)
        order = np.argsort(upos, kind="stable")  # row index order = pos order: same tie-breaks
        upos, uvec = upos[order], uvec[order]
        # Inside the union, positions are row indices; sorted by pos, ties break the same way.
        urows = VectorRows(uvec, np.arange(len(upos)), sq_norms(uvec), np.empty(0, np.int64), np.empty(0, object))
        where = {int(p): i for i, p in enumerate(upos)}
        sub = LocalGroup([ShardState(urows)])
        chosen, _, _ = certified_greedy(sub, min(k, len(upos)), [where[int(p)] for p in forced], lookahead=lookahead)
        bar.update(1)
        centers = [int(upos[i]) for i in chosen]
        tracked = group.map(_assign_all, uvec[chosen], np.asarray(centers, np.int64))
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


def local_greedy(shard: ShardState, k: int, forced_vecs: np.ndarray, forced_pos: np.ndarray, lookahead: int | None):
    """Composable mode, first round: exact greedy on one shard's rows alone.

    Starts from the forced centers (seeds or start, wherever they live) and returns
    (pos, vectors) of the centers picked here, forced ones excluded. Leaves the
    shard reset.
    """
    shard.reset()
    own = int(np.count_nonzero(shard.local_index(forced_pos)[0]))
    k_local = min(k, len(forced_pos) + len(shard.pos) - own)
    if k_local <= len(forced_pos):
        return np.empty(0, np.int64), np.empty((0, shard.x.shape[1]), np.float32)
    centers, _, _ = certified_greedy(
        LocalGroup([shard]), k_local, [int(p) for p in forced_pos], lookahead=lookahead, forced_vecs=forced_vecs
    )
    shard.reset()
    picked = np.asarray(centers[len(forced_pos) :], np.int64)
    return picked, shard.vectors(picked)[1]


def _assign_all(shard: ShardState, vecs: np.ndarray, positions: np.ndarray) -> np.ndarray:
    return shard.assign_all(vecs, positions)


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
