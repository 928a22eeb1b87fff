"""Selection quality numbers for the report: how well a selection covers the pool."""

from __future__ import annotations

import numpy as np


def nearest_distances(points: np.ndarray, centers: np.ndarray, block: int = 4096) -> np.ndarray:
    """Euclidean distance from each point to its nearest center, blocked over centers."""
    best = np.full(len(points), np.inf, dtype=np.float64)
    p_sq = np.einsum("ij,ij->i", points, points)
    for start in range(0, len(centers), block):
        c = centers[start:start + block]
        d2 = p_sq[:, None] - 2.0 * (points @ c.T) + np.einsum("ij,ij->i", c, c)[None, :]
        np.minimum(best, d2.min(axis=1), out=best)
    return np.sqrt(np.maximum(best, 0.0))


def coverage_stats(sample: np.ndarray, selected: np.ndarray, random_subset: np.ndarray) -> dict:
    """Radius (max) and mean distance from sampled pool rows to the selection, next to a random subset of the same size."""
    sel = nearest_distances(sample, selected)
    rnd = nearest_distances(sample, random_subset)
    return {
        "sample_rows": int(len(sample)),
        "radius": float(sel.max()),
        "mean_distance": float(sel.mean()),
        "random_radius": float(rnd.max()),
        "random_mean_distance": float(rnd.mean()),
    }
