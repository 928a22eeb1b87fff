"""How well a selection covers the pool: distances from a sample of the pool to the nearest selected row."""

from __future__ import annotations

import numpy as np


def coverage(embeddings, positions: np.ndarray, usable: np.ndarray, sample_size: int, seed: int) -> dict:
    """How well the selected rows cover the pool, next to a random subset of the same size.

    Distances from a seeded sample of the pool to the nearest selected row: the
    radius (max) and the mean, against the same for a random subset.
    """
    from selectray.embeddings import read_embeddings
    from selectray.kcenter.distances import nearest_distances

    rng = np.random.default_rng(seed + 1)
    pool = np.flatnonzero(usable)
    sample = rng.choice(pool, size=min(len(pool), sample_size), replace=False)
    random_subset = rng.choice(pool, size=len(positions), replace=False)
    wanted = np.unique(np.concatenate([sample, positions, random_subset]))
    pos, vectors = read_embeddings(embeddings.files(), wanted)
    lookup = np.empty(len(usable), dtype=np.int64)
    lookup[pos] = np.arange(len(pos))
    sel = nearest_distances(vectors[lookup[sample]], vectors[lookup[positions]])
    rnd = nearest_distances(vectors[lookup[sample]], vectors[lookup[random_subset]])
    return {"sample_rows": int(len(sample)), "radius": float(sel.max()), "mean_distance": float(sel.mean()),
            "random_radius": float(rnd.max()), "random_mean_distance": float(rnd.mean())}
