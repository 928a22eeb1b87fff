"""SelectLLM candidate groups: what one rater prompt shows. Pure numpy (and scikit-learn's KMeans), no Ray.

Two groupings (docs/methods.md, "SelectLLM"):
* `kcenter_groups`: one group per k-center cluster, up to r members drawn with the
  run's seed, stratified by distance to the center (so a group shows both typical and
  outlying members of its cluster, not only the ones hugging the center).
* `kmeans_regions`: the released SelectLLM code's final method (`get_diverse_kmeans` and
  `selectllm_final`): for R regions, k-means with K = ceil(N / R) clusters; the pool,
  padded to K * R rows with its first rows, is assigned to the clusters in balanced
  rounds (each cluster in turn takes its nearest row not yet taken), and region p holds
  the p-th member (in row order) of every cluster. The released code finds "nearest not
  yet taken" with an argsort over all rows per assignment (quadratic); `balanced_regions`
  keeps a window of each cluster's nearest rows, sorted once and widened when used up.
"""

from __future__ import annotations

import math

import numpy as np


def stratified_sample(members: np.ndarray, distance: np.ndarray, r: int, rng: np.random.Generator) -> np.ndarray:
    """At most `r` of `members`: sorted by `distance`, cut into `r` equal strata, one drawn from each."""
    if len(members) <= r:
        return members
    members = members[np.argsort(distance[members], kind="stable")]
    edges = np.linspace(0, len(members), r + 1).astype(np.int64)
    return members[[rng.integers(lo, hi) for lo, hi in zip(edges[:-1], edges[1:])]]


def kcenter_groups(assignment: np.ndarray, distance: np.ndarray, num_clusters: int, r: int, seed: int) -> list[np.ndarray]:
    """Candidate positions for each cluster (index = cluster id), at most `r` each.

    Members are sorted by distance to their center and cut into `r` strata of equal
    size; one member is drawn from each stratum. A cluster with at most `r` members
    shows all of them. The shown order is shuffled (seeded): raters favour early slots.
    """
    rng = np.random.default_rng(seed)
    pos = np.flatnonzero(assignment >= 0)
    pos = pos[np.lexsort((pos, distance[pos], assignment[pos]))]  # by cluster, then distance
    bounds = np.searchsorted(assignment[pos], np.arange(num_clusters + 1))
    return [rng.permutation(stratified_sample(pos[bounds[c]:bounds[c + 1]], distance, r, rng))
            for c in range(num_clusters)]


def region_shape(n_rows: int, n_regions: int) -> tuple[int, list[int]]:
    """(K clusters, padded row list) of the released code for `n_regions` regions of `n_rows` rows.

    K = ceil(N / R); the pool is padded to K * R rows by repeating its first rows, so a
    few rows sit in two regions when R does not divide N.
    """
    k = math.ceil(n_rows / n_regions)
    gap = k * n_regions - n_rows
    return k, list(range(n_rows)) + list(range(gap))


def balanced_regions(dist: np.ndarray, n_regions: int, window: int | None = None) -> list[np.ndarray]:
    """Regions from an (M, K) distance matrix over the padded rows (M = K * n_regions).

    Round j = 0..R-1, cluster i = 0..K-1 in turn takes its nearest row not yet taken (ties:
    the lowest row index); then region p holds, for every cluster, the p-th row it took in
    row order. Returns R arrays of K padded-row indices. Each cluster's nearest rows are
    sorted once, a window at a time (`window`, default 4R, doubled when used up), so the
    cost is a few partitions of each column instead of a sort per assignment.
    """
    m, k = dist.shape
    if m != k * n_regions:
        raise ValueError(f"need K * R = {k * n_regions} rows, got {m}")
    size = min(m, window or 4 * n_regions)
    taken = np.zeros(m, dtype=bool)
    labels = np.full(m, -1, dtype=np.int64)
    lists = [np.empty(0, np.int64)] * k
    cursor = np.zeros(k, dtype=np.int64)
    shown = np.zeros(k, dtype=np.int64)  # how many of each column's nearest rows `lists` holds
    for _ in range(n_regions):
        for i in range(k):
            while True:
                if cursor[i] == len(lists[i]):
                    lists[i], shown[i] = _next_window(dist[:, i], shown[i], max(size, 2 * shown[i]))
                    cursor[i] = 0
                row = lists[i][cursor[i]]
                cursor[i] += 1
                if not taken[row]:
                    break
            taken[row] = True
            labels[row] = i
    order = np.argsort(labels, kind="stable")  # rows of each cluster, in row order
    members = order.reshape(k, n_regions)
    return [members[:, p].copy() for p in range(n_regions)]


def _next_window(col: np.ndarray, done: int, upto: int) -> tuple[np.ndarray, int]:
    """Rows ranked done..upto-1 by (distance, row): the next slice of a column's nearest rows."""
    upto = min(upto, len(col))
    rows = np.arange(len(col))
    if upto < len(col):
        cut = np.partition(col, upto - 1)[upto - 1]
        # Everything strictly nearer than the cut, then ties at the cut by row index.
        near = rows[col < cut]
        ties = rows[col == cut][: upto - len(near)]
        rows = np.concatenate([near, ties])
    ranked = rows[np.lexsort((rows, col[rows]))]
    return ranked[done:upto], upto


def kmeans_regions(x: np.ndarray, n_regions: int, seed: int = 0, fit_rows: int = 50_000) -> tuple[list[np.ndarray], np.ndarray]:
    """The released code's regions over the rows of `x`: (R arrays of pool rows, each row's
    distance to its own k-means centroid).

    k-means (scikit-learn, `random_state=seed`) with K = ceil(N / R) clusters is fitted on
    all rows, or on a seeded sample of `fit_rows` of them for larger pools; distances are
    its `transform` of the padded rows.
    """
    from sklearn.cluster import KMeans

    x = np.asarray(x)
    n = len(x)
    k, padded = region_shape(n, n_regions)
    fit = x
    if n > fit_rows:
        fit = x[np.sort(np.random.default_rng(seed).choice(n, size=fit_rows, replace=False))]
    km = KMeans(n_clusters=k, random_state=seed, n_init="auto").fit(fit)
    dist = km.transform(x[np.asarray(padded, np.int64)])
    regions = [np.asarray(padded, np.int64)[r] for r in balanced_regions(dist, n_regions)]
    own = dist[np.arange(n), km.predict(x)] if n else np.empty(0)
    return regions, np.asarray(own, np.float64)
