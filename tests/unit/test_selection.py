"""Selection methods (pure)."""

import numpy as np
import pytest

from selectray.stages.selection import (
    proportional_quotas,
    select_hybrid,
    select_length,
    select_random,
    top_scores,
)


def test_random_is_seeded_and_order_free():
    ids = np.array([f"row-{i}" for i in range(100)], dtype=object)
    a = select_random(ids, 10, seed=1).positions
    b = select_random(ids[::-1], 10, seed=1).positions
    assert sorted(ids[a]) == sorted(ids[::-1][b])
    assert list(ids[a]) == list(ids[::-1][b])  # same rank order too
    assert set(a) != set(select_random(ids, 10, seed=2).positions)
    assert len(set(a)) == 10


def test_length_and_top_scores_break_ties_by_position():
    assert select_length(np.array([5, 9, 9, 1]), 3).positions.tolist() == [1, 2, 0]
    assert top_scores(np.array([0.5, 0.9, 0.9, np.float64(0.1)]), 2).tolist() == [1, 2]


@pytest.mark.parametrize("sizes,budget,expected", [
    ([50, 30, 20], 10, [5, 3, 2]),           # exact proportions
    ([45, 35, 20], 10, [5, 3, 2]),           # 4.5/3.5/2.0: remainders .5 vs .5 -> larger cluster
    ([97, 1, 1, 1], 8, [5, 1, 1, 1]),        # each cluster at least one, taken from the largest
    ([10, 5, 3, 0], 2, [1, 1, 0, 0]),        # budget below the cluster count: the largest first
    ([1, 1, 1], 3, [1, 1, 1]),
    ([7, 0, 3], 10, [7, 0, 3]),              # never more than a cluster has
])
def test_proportional_quotas(sizes, budget, expected):
    q = proportional_quotas(np.array(sizes), budget)
    assert q.tolist() == expected and q.sum() == budget


def test_quotas_property_random():
    rng = np.random.default_rng(0)
    for _ in range(200):
        sizes = rng.integers(0, 40, size=rng.integers(1, 12))
        if sizes.sum() == 0:
            continue
        budget = int(rng.integers(1, sizes.sum() + 1))
        q = proportional_quotas(sizes, budget)
        assert q.sum() == budget and (q <= sizes).all() and (q >= 0).all()
        if budget >= (sizes > 0).sum():
            assert (q[sizes > 0] >= 1).all()


def test_hybrid_takes_best_per_cluster():
    assignment = np.array([0, 0, 0, 1, 1, 2, -1])
    scores = np.array([0.1, 0.9, 0.5, 0.7, 0.8, 0.2, 5.0])
    sel = select_hybrid(assignment, scores, np.array([2, 1, 1]))
    assert sel.positions.tolist() == [1, 4, 2, 5]  # rejected row 6 never chosen, ranked by score
