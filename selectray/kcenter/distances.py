"""Squared Euclidean distances for greedy k-center: the float32 hot path and the float64 reference.

The hot path computes |x|^2 - 2 x.c + |c|^2 with precomputed norms (a GEMM or GEMV,
never a difference per pair); its rounding error is bounded by `distance_error_bound`,
and every decision that the bound cannot settle is made on `exact_sq_dist`, which
depends on the two vectors only (docs/methods.md, "Exactness of certified greedy").
"""

from __future__ import annotations

import numpy as np

UNIT_ROUNDOFF = 2.0**-24  # float32


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



def nearest_distances(points: np.ndarray, centers: np.ndarray, block: int = 4096) -> np.ndarray:
    """Euclidean distance from each point to its nearest center (float64), blocked over centers."""
    points = np.asarray(points, dtype=np.float64)
    centers = np.asarray(centers, dtype=np.float64)
    best = np.full(len(points), np.inf, dtype=np.float64)
    p_sq = np.einsum("ij,ij->i", points, points)
    for start in range(0, len(centers), block):
        c = centers[start : start + block]
        d2 = p_sq[:, None] - 2.0 * (points @ c.T) + np.einsum("ij,ij->i", c, c)[None, :]
        np.minimum(best, d2.min(axis=1), out=best)
    return np.sqrt(np.maximum(best, 0.0))
