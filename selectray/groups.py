"""SelectLLM candidate groups: what one rater prompt shows. Pure numpy, no Ray.

Two groupings (docs/methods.md, "SelectLLM"):
* `kcenter_groups`: one group per k-center cluster, up to r members drawn with the
  run's seed, stratified by distance to the center (so a group shows both typical and
  outlying members of its cluster, not only the ones hugging the center).
* `kmeans_regions`: the released SelectLLM code's final method: k-means with r
  clusters, then every region takes one member of each k-means cluster (each
  cluster in turn takes its nearest point not yet taken), so every region spans the
  whole space; region j holds what the clusters took in round j. The released code
  finds "nearest not yet taken" with an argsort over all rows per assignment
  (quadratic); here each cluster's order is sorted once and walked with a pointer:
  the same choices (`kmeans_regions_naive` is the reference) in O(r N log N).
"""

from __future__ import annotations

import numpy as np


def kcenter_groups(assignment: np.ndarray, distance: np.ndarray, num_clusters: int, r: int, seed: int) -> list[np.ndarray]:
    """Candidate positions for each cluster (index = cluster id), at most `r` each.

    Members are sorted by distance to their center and cut into `r` strata of equal
    size; one member is drawn from each stratum. A cluster with at most `r` members
    shows all of them. The shown order is shuffled (seeded): raters favour early slots.
    """
    rng = np.random.default_rng(seed)
    valid = assignment >= 0
    pos = np.flatnonzero(valid)
    order = np.lexsort((distance[pos], assignment[pos]))  # by cluster, then distance
    pos = pos[order]
    bounds = np.searchsorted(assignment[pos], np.arange(num_clusters + 1))
    groups = []
    for c in range(num_clusters):
        members = pos[bounds[c]:bounds[c + 1]]
        if len(members) > r:
            edges = np.linspace(0, len(members), r + 1).astype(np.int64)
            picks = [rng.integers(lo, hi) for lo, hi in zip(edges[:-1], edges[1:])]
            members = members[picks]
        groups.append(rng.permutation(members))
    return groups


def kmeans_regions(dist_to_centers: np.ndarray, n_regions: int) -> list[np.ndarray]:
    """Regions of one member per k-means cluster, from an (N, r) distance matrix.

    Round j, cluster i (in order) takes its nearest row not yet taken; region j gets the
    j-th row each cluster took. Rows run out before regions do only when N < r * n_regions;
    then the last regions are smaller.
    """
    n, r = dist_to_centers.shape
    by_cluster = np.argsort(dist_to_centers, axis=0, kind="stable").T  # (r, N): each cluster's rows, nearest first
    taken = np.zeros(n, dtype=bool)
    cursor = np.zeros(r, dtype=np.int64)
    regions: list[list[int]] = [[] for _ in range(n_regions)]
    for j in range(n_regions):
        for i in range(r):
            order = by_cluster[i]
            k = cursor[i]
            while k < n and taken[order[k]]:
                k += 1
            cursor[i] = k
            if k == n:
                continue
            row = order[k]
            taken[row] = True
            regions[j].append(int(row))
    return [np.asarray(g, dtype=np.int64) for g in regions if g]


def kmeans_regions_naive(dist_to_centers: np.ndarray, n_regions: int) -> list[np.ndarray]:
    """The quadratic reference: an argsort over every row for every assignment."""
    d = dist_to_centers.astype(np.float64, copy=True)
    n, r = d.shape
    regions: list[list[int]] = [[] for _ in range(n_regions)]
    for j in range(n_regions):
        for i in range(r):
            if np.isinf(d[:, i]).all():
                continue
            row = int(np.argsort(d[:, i], kind="stable")[0])
            regions[j].append(row)
            d[row] = np.inf
    return [np.asarray(g, dtype=np.int64) for g in regions if g]
