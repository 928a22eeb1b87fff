"""How well a selection covers the pool: distances from a sample of the pool to the nearest selected row.

The figure reads three sets of rows, all drawn with the run's seed: a sample of the pool
(`report.coverage_sample` rows), the selection (a sample of the same size when the
selection is larger) and a random subset of the pool as large as that. So a method that
needs no embeddings of its own only has to embed those rows (`coverage_rows`), a few
thousand however large the pool.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np


@dataclass(frozen=True)
class CoverageRows:
    """Positions the coverage figure reads."""

    sample: np.ndarray  # of the pool
    selected: np.ndarray  # the selection, or a sample of it
    random: np.ndarray  # a random subset of the pool, as large as `selected`

    def all(self) -> np.ndarray:
        return np.unique(np.concatenate([self.sample, self.selected, self.random]))


def coverage_rows(positions: np.ndarray, usable: np.ndarray, sample_size: int, seed: int) -> CoverageRows:
    """The rows the coverage of `positions` (the selection) reads, over the `usable` rows."""
    rng = np.random.default_rng(seed + 1)
    pool = np.flatnonzero(usable)
    sample = rng.choice(pool, size=min(len(pool), sample_size), replace=False)
    selected = np.asarray(positions, dtype=np.int64)
    if len(selected) > sample_size:
        selected = rng.choice(selected, size=sample_size, replace=False)
    random_subset = rng.choice(pool, size=len(selected), replace=False)
    return CoverageRows(sample, selected, random_subset)


def coverage(embeddings, positions: np.ndarray, usable: np.ndarray, sample_size: int, seed: int, read=None) -> dict:
    """Radius (max) and mean distance from the sampled pool rows to the nearest selected row,
    next to the same for a random subset of the same size; and which rows were embedded for it.
    `read(positions) -> (pos, vectors)`: where the vectors come from (default: the checkpoint)."""
    from selectray.embeddings import read_embeddings
    from selectray.kcenter.distances import nearest_distances

    rows = coverage_rows(positions, usable, sample_size, seed)
    pos, vectors = (read or (lambda p: read_embeddings(embeddings.files(), p)))(rows.all())
    lookup = np.full(len(usable), -1, dtype=np.int64)
    lookup[pos] = np.arange(len(pos))
    if (lookup[rows.all()] < 0).any():
        raise RuntimeError("the embeddings checkpoint lacks rows the coverage figure reads")
    sel = nearest_distances(vectors[lookup[rows.sample]], vectors[lookup[rows.selected]])
    rnd = nearest_distances(vectors[lookup[rows.sample]], vectors[lookup[rows.random]])
    return {"sample_rows": int(len(rows.sample)), "selected_rows": int(len(rows.selected)),
            "radius": float(sel.max()), "mean_distance": float(sel.mean()),
            "random_radius": float(rnd.max()), "random_mean_distance": float(rnd.mean()),
            "embedded_rows": int(embeddings.rows), "pool_embedded": bool(embeddings.complete)}
