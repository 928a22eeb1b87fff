"""SelectLLM candidate groups against simple references."""

import numpy as np
import pytest

from selectray.groups import kcenter_groups, kmeans_regions, kmeans_regions_naive


def test_kcenter_groups_cover_each_cluster_and_stratify():
    rng = np.random.default_rng(0)
    assignment = np.repeat(np.arange(4), [3, 40, 10, 25])
    rng.shuffle(assignment)
    distance = rng.random(len(assignment))
    groups = kcenter_groups(assignment, distance, 4, r=10, seed=1)
    assert [len(g) for g in groups] == [3, 10, 10, 10]
    for c, g in enumerate(groups):
        assert (assignment[g] == c).all() and len(set(g.tolist())) == len(g)
    # Stratified: the 40-member cluster's picks hit each distance decile exactly once.
    members = np.flatnonzero(assignment == 1)
    deciles = np.searchsorted(np.sort(distance[members]), distance[groups[1]], side="right") - 1
    assert sorted(deciles // 4) == list(range(10))
    # Seeded: same seed same groups, other seed other draws.
    again = kcenter_groups(assignment, distance, 4, r=10, seed=1)
    assert all(np.array_equal(a, b) for a, b in zip(groups, again))
    other = kcenter_groups(assignment, distance, 4, r=10, seed=2)
    assert any(not np.array_equal(np.sort(a), np.sort(b)) for a, b in zip(groups, other))


def test_kcenter_groups_skip_rejected_rows_and_keep_empty_clusters():
    assignment = np.array([0, -1, 0, 2, 2])
    distance = np.array([0.0, np.nan, 0.5, 0.1, 0.0])
    groups = kcenter_groups(assignment, distance, 3, r=5, seed=0)
    assert sorted(groups[0].tolist()) == [0, 2] and len(groups[1]) == 0 and sorted(groups[2].tolist()) == [3, 4]


@pytest.mark.parametrize("n,r,regions", [(50, 5, 4), (30, 3, 10), (20, 4, 8), (7, 3, 5)])
def test_kmeans_regions_equal_the_quadratic_reference(n, r, regions):
    rng = np.random.default_rng(n)
    d = rng.random((n, r))
    fast = kmeans_regions(d, regions)
    slow = kmeans_regions_naive(d, regions)
    assert len(fast) == len(slow)
    assert all(np.array_equal(a, b) for a, b in zip(fast, slow))
    used = np.concatenate(fast)
    assert len(set(used.tolist())) == len(used) == min(n, r * regions)


def test_kmeans_region_members_come_from_distinct_clusters():
    rng = np.random.default_rng(3)
    centers = rng.normal(size=(4, 8)) * 10
    x = np.concatenate([c + rng.normal(size=(25, 8)) for c in centers])
    d = np.linalg.norm(x[:, None, :] - centers[None], axis=2)
    for region in kmeans_regions(d, 5):
        assert sorted(np.argmin(d[region], axis=1).tolist()) == [0, 1, 2, 3]
