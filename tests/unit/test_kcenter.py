"""Greedy k-center core (no Ray): the fast path against plain float64 loops."""

from __future__ import annotations

import itertools
import tracemalloc

import numpy as np
import pytest

from selectray import kcenter as K
from selectray.kcenter import KCenterError, greedy_k_center

NEAR_TIE = 1e-5  # relative gap in squared distance below which two rows count as tied


# ----------------------------------------------------------------------------- references


def sq_dists(x64: np.ndarray, c: np.ndarray) -> np.ndarray:
    """float64 squared distances from every row to one point, from difference vectors."""
    diff = x64 - c
    return (diff * diff).sum(axis=1)


def plain_greedy(x: np.ndarray, k: int, first: list[int]) -> tuple[list[int], list[float]]:
    """Obviously correct greedy: recompute every min-distance from scratch each round."""
    x64 = x.astype(np.float64)
    centers: list[int] = []
    radii: list[float] = []
    for t in range(k):
        if t < len(first):
            centers.append(first[t])
        else:
            d = np.min([sq_dists(x64, x64[c]) for c in centers], axis=0)
            d[centers] = -1.0
            centers.append(int(np.argmax(d)))  # first maximum = smallest position
        d = np.min([sq_dists(x64, x64[c]) for c in centers], axis=0)
        radii.append(float(np.sqrt(d.max())))
    return centers, radii


def min_sq_dist(x64: np.ndarray, centers) -> np.ndarray:
    return np.min([sq_dists(x64, x64[c]) for c in centers], axis=0)


def assert_same_as_plain(x: np.ndarray, result: K.KCenterResult, first: list[int]) -> None:
    """The fast result equals the plain loop; where they part, both choices must be tied."""
    k = len(result.centers)
    ref, ref_radii = plain_greedy(x, k, first)
    ours = result.centers.tolist()
    assert ours[: len(first)] == first
    x64 = x.astype(np.float64)
    for t in range(len(first), k):
        if ours[t] == ref[t]:
            continue
        d = min_sq_dist(x64, ours[:t])
        gap = abs(d[ours[t]] - d[ref[t]]) / max(d[ours[t]], d[ref[t]])
        assert gap < NEAR_TIE, f"center {t}: {ours[t]} instead of {ref[t]} (relative gap {gap:.2e})"
        return  # after a legitimate tie the two sequences may differ: checked up to here
    np.testing.assert_allclose(result.radii, ref_radii, rtol=1e-12)


def assert_assignment_nearest(x: np.ndarray, result: K.KCenterResult) -> None:
    """Every row's assigned center is its nearest, distance is its distance.

    The assignment comes from float32 |x|^2 - 2x.c + |c|^2, whose error is bounded
    relative to the squared norms, not to the distance; so "nearest" allows a gap up
    to that documented bound (distance_error_bound, twice: both distances err).
    """
    x64 = x.astype(np.float64)
    d = np.stack([sq_dists(x64, x64[c]) for c in result.centers], axis=1)
    usable = result.assignment >= 0
    rows = np.flatnonzero(usable)
    assigned = d[rows, result.assignment[rows]]
    nearest = d[rows].min(axis=1)
    bound = K.distance_error_bound(x.shape[1], float((x64[rows] ** 2).sum(axis=1).max()))
    assert np.all(assigned <= nearest + 2 * bound)
    assert np.mean(assigned == nearest) > 0.999  # in practice the bound is far from reached
    np.testing.assert_allclose(result.distance[rows], np.sqrt(assigned), rtol=1e-5, atol=1e-6)
    # every center is its own cluster, at distance zero
    np.testing.assert_array_equal(result.assignment[result.centers], np.arange(len(result.centers)))
    assert np.all(result.distance[result.centers] == 0)


# ----------------------------------------------------------------------------- data


def gaussian(n: int, d: int, seed: int) -> np.ndarray:
    return np.random.default_rng(seed).standard_normal((n, d)).astype(np.float32)


def clustered(n: int, d: int, seed: int, blobs: int = 8) -> np.ndarray:
    rng = np.random.default_rng(seed)
    means = rng.standard_normal((blobs, d)) * 4
    x = means[rng.integers(0, blobs, n)] + rng.standard_normal((n, d)) * 0.3
    x /= np.linalg.norm(x, axis=1, keepdims=True)  # like L2-normalised embeddings
    return x.astype(np.float32)


CASES = [
    # (data, n, d, k, lookahead)
    ("gaussian", 400, 5, 30, 1),
    ("gaussian", 800, 16, 60, 8),
    ("gaussian", 1000, 48, 80, 64),
    ("clustered", 1200, 32, 80, 16),
    ("clustered", 700, 384, 30, 256),
    ("clustered", 600, 3, 200, 4),
]


@pytest.mark.parametrize(("kind", "n", "d", "k", "m"), CASES)
def test_equals_plain_float64_greedy(kind, n, d, k, m):
    x = (gaussian if kind == "gaussian" else clustered)(n, d, seed=n + d)
    result = greedy_k_center(x, k, lookahead=m)
    assert result.centers[0] == 0
    assert_same_as_plain(x, result, [0])
    assert_assignment_nearest(x, result)
    assert np.all(np.diff(result.radii) <= 0)  # the coverage curve never rises


@pytest.mark.parametrize("m", [2, 32, 10_000])
def test_with_seeds_and_start(m):
    x = clustered(900, 24, seed=5)
    seeds = [17, 400, 3, 899]
    result = greedy_k_center(x, 40, seeds=seeds, lookahead=m)
    assert result.n_seeds == 4
    assert_same_as_plain(x, result, seeds)
    assert_assignment_nearest(x, result)
    started = greedy_k_center(x, 25, start=321, lookahead=m)
    assert_same_as_plain(x, started, [321])


def test_lookahead_and_threads_do_not_change_the_result():
    x = clustered(1500, 20, seed=11)
    results = [greedy_k_center(x, 70, lookahead=m) for m in (1, 5, 100, 5000)]
    results.append(greedy_k_center(x, 70, lookahead=64, threads=3))
    for r in results[1:]:
        np.testing.assert_array_equal(r.centers, results[0].centers)
        np.testing.assert_array_equal(r.radii, results[0].radii)
    assert results[0].passes > results[3].passes  # a larger lookahead needs fewer passes


def test_exact_ties_go_to_the_smallest_position():
    # Integer lattice points, every row twice: squared distances are exact small
    # integers, so ties are exact and the plain loop's first maximum is the rule.
    grid = np.array(list(itertools.product(range(5), range(5), range(3))), np.float32)
    x = np.concatenate([grid, grid])[np.random.default_rng(0).permutation(2 * len(grid))]
    for m in (1, 4, 1000):
        result = greedy_k_center(x, 40, lookahead=m)
        ref, ref_radii = plain_greedy(x, 40, [0])
        assert result.centers.tolist() == ref
        np.testing.assert_array_equal(result.radii, ref_radii)
        # float32 is exact on these small integers too: equally near centers -> the earlier
        x64 = x.astype(np.float64)
        d = np.stack([sq_dists(x64, x64[c]) for c in ref], axis=1)
        expect = d.argmin(axis=1)
        expect[ref] = np.arange(len(ref))  # a duplicate of a center is not that center
        np.testing.assert_array_equal(result.assignment, expect)


@pytest.mark.parametrize("m", [3, 50])
def test_float32_near_ties_are_resolved_exactly(m):
    # From the origin, every min-distance is |x|^2 = 1 +- 1e-7 for float32 unit vectors:
    # float32 cannot order them, float64 can. The result must be the float64 loop's,
    # exactly, not just up to a near-tie (this is what certification guarantees).
    x = gaussian(3000, 16, seed=14)
    x /= np.linalg.norm(x, axis=1, keepdims=True)
    x[0] = 0.0
    result = greedy_k_center(x, 25, lookahead=m)
    ref, ref_radii = plain_greedy(x, 25, [0])
    assert result.centers.tolist() == ref
    np.testing.assert_array_equal(result.radii, ref_radii)


def test_two_approximation_against_brute_force_optimum():
    rng = np.random.default_rng(2)
    for trial in range(6):
        x = rng.standard_normal((9, 2)).astype(np.float32)
        x64 = x.astype(np.float64)
        for k in (2, 3):
            optimum = min(
                np.sqrt(min_sq_dist(x64, list(subset)).max()) for subset in itertools.combinations(range(9), k)
            )
            result = greedy_k_center(x, k, start=trial)
            assert result.radii[-1] <= 2 * optimum + 1e-9
            assert result.radii[-1] >= optimum - 1e-9


def test_error_bound_covers_float32_expansion():
    rng = np.random.default_rng(4)
    for scale, d in ((1.0, 384), (1e3, 64), (1e-3, 7)):
        a = (rng.standard_normal((300, d)) * scale).astype(np.float32)
        a[:20] = a[20:40]  # exact duplicates: true distance zero
        an = K.sq_norms(a)
        d32 = K.expand_dist(a, an, a, an).astype(np.float64)
        a64 = a.astype(np.float64)
        exact = ((a64[:, None, :] - a64[None, :, :]) ** 2).sum(-1)
        delta = K.distance_error_bound(d, float(an.max()))
        assert np.abs(d32 - exact).max() <= delta


def test_nearest_exact_picks_true_nearest_and_smallest_index_on_ties():
    rng = np.random.default_rng(8)
    c = rng.standard_normal((50, 6)).astype(np.float32)
    c[30] = c[10]  # a duplicated center: ties go to index 10
    v = np.concatenate([c[[10, 3]], rng.standard_normal((20, 6)).astype(np.float32)])
    delta = K.distance_error_bound(6, float(max(K.sq_norms(c).max(), K.sq_norms(v).max())))
    best, arg = K.nearest_exact(v, K.sq_norms(v), c, K.sq_norms(c), delta)
    d = ((v.astype(np.float64)[:, None] - c.astype(np.float64)[None]) ** 2).sum(-1)
    np.testing.assert_array_equal(best, d.min(axis=1))
    np.testing.assert_array_equal(arg, d.argmin(axis=1))
    assert arg[0] == 10 and best[0] == 0.0


def test_nearest_exact_resolves_what_float32_cannot():
    # Each row has two centers whose squared distances differ by ~1e-9, far below the
    # float32 expansion's rounding (~1e-7): float32 gets the order wrong about half
    # the time, the exact resolution never.
    rng = np.random.default_rng(13)
    n, d = 300, 64
    v = rng.standard_normal((n, d))
    v /= np.linalg.norm(v, axis=1, keepdims=True)
    c1 = v + 0.3 * rng.standard_normal((n, d)) / np.sqrt(d)
    w = rng.standard_normal((n, d))
    w -= ((w * (v - c1)).sum(1) / ((v - c1) ** 2).sum(1))[:, None] * (v - c1)  # w orthogonal to v - c1
    c2 = c1 + 3e-5 * w / np.linalg.norm(w, axis=1, keepdims=True)
    v, c = v.astype(np.float32), np.concatenate([c1, c2]).astype(np.float32)
    truth = ((v.astype(np.float64)[:, None] - c.astype(np.float64)[None]) ** 2).sum(-1)
    delta = K.distance_error_bound(d, float(max(K.sq_norms(c).max(), K.sq_norms(v).max())))
    best, arg = K.nearest_exact(v, K.sq_norms(v), c, K.sq_norms(c), delta)
    np.testing.assert_array_equal(arg, truth.argmin(axis=1))
    np.testing.assert_array_equal(best, truth.min(axis=1))
    float32_arg = K.expand_dist(v, K.sq_norms(v), c, K.sq_norms(c)).argmin(axis=1)
    assert np.mean(float32_arg != truth.argmin(axis=1)) > 0.1  # the case is a real test


def test_in_process_shards_equal_one_shard_and_composable_is_within_4x():
    x = clustered(1700, 12, seed=9)
    single = greedy_k_center(x, 60, lookahead=32)
    rows = K.validate_rows(x)
    for cuts in ([0, 1700], [0, 1, 1700], [0, 300, 1000, 1001, 1700]):
        def group(r, cuts=cuts):
            shards = [K.ShardState(_slice(r, a, b)) for a, b in itertools.pairwise(cuts)]
            return K.LocalGroup(shards, threads=len(shards))  # shards computed in parallel threads

        sharded = K.run_k_center(group, rows, 60, lookahead=32)
        np.testing.assert_array_equal(sharded.centers, single.centers)
        np.testing.assert_array_equal(sharded.radii, single.radii)
        np.testing.assert_array_equal(sharded.assignment, single.assignment)
        composable = K.run_k_center(group, rows, 60, lookahead=32, mode="composable")
        assert composable.centers[0] == 0 and len(set(composable.centers.tolist())) == 60
        assert composable.radii[-1] <= 4 * single.radii[-1]
        assert_assignment_nearest(x, composable)
        true_radius = np.sqrt(min_sq_dist(x.astype(np.float64), composable.centers).max())
        assert composable.radii[-1] == pytest.approx(true_radius, rel=1e-5)


def _slice(rows: K.VectorRows, a: int, b: int) -> K.VectorRows:
    return K.VectorRows(rows.x[a:b], rows.pos[a:b], rows.norms[a:b], np.empty(0, np.int64), np.empty(0, object))


def test_rejected_rows_take_no_part():
    x = clustered(500, 8, seed=3)
    x[[0, 7]] = np.nan
    x[42, 3] = np.inf
    result = greedy_k_center(x, 20)
    assert result.rejected == {0: "nonfinite_embedding", 7: "nonfinite_embedding", 42: "nonfinite_embedding"}
    assert result.centers[0] == 1  # row 0 is rejected: start from the first usable row
    assert np.all(result.assignment[[0, 7, 42]] == -1) and np.all(np.isnan(result.distance[[0, 7, 42]]))
    keep = np.setdiff1d(np.arange(500), [0, 7, 42])
    alone = greedy_k_center(x[keep], 20)
    np.testing.assert_array_equal(keep[alone.centers], result.centers)
    np.testing.assert_array_equal(alone.radii, result.radii)


def test_sequence_input_with_missing_and_wrong_dimension_rows():
    rng = np.random.default_rng(1)
    rows = [rng.standard_normal(4) for _ in range(30)]
    rows[3] = None
    rows[5] = np.ones(5)
    rows[9] = [1.0, float("nan"), 0.0, 0.0]
    result = greedy_k_center(rows, 6)
    assert result.rejected == {3: "missing_embedding", 5: "bad_dimension", 9: "nonfinite_embedding"}
    assert len(result.assignment) == 30


def test_float16_storage_equals_float64_on_the_same_values():
    x = clustered(700, 32, seed=12).astype(np.float16)
    result = greedy_k_center(x, 30, lookahead=8)
    assert_same_as_plain(x.astype(np.float32), result, [0])


@pytest.mark.parametrize(
    ("call", "message"),
    [
        (lambda x: greedy_k_center(x, 0), "k must be positive"),
        (lambda x: greedy_k_center(x, -3), "k must be positive"),
        (lambda x: greedy_k_center(x, 2.5), "k must be an integer"),
        (lambda x: greedy_k_center(x, 51), "exceeds the 50 usable rows"),
        (lambda x: greedy_k_center(x, 5, seeds=[1, 99]), "not in the pool"),
        (lambda x: greedy_k_center(x, 5, seeds=[1, 2, 1]), "repeat"),
        (lambda x: greedy_k_center(x, 2, seeds=[1, 2, 3]), "3 seeds exceed k=2"),
        (lambda x: greedy_k_center(x, 5, seeds=[1], start=2), "either seeds or start"),
        (lambda x: greedy_k_center(x, 5, start=50), "not in the pool"),
        (lambda x: greedy_k_center(x[:, 0], 5), "2-D array"),
        (lambda x: greedy_k_center(np.full((4, 3), np.nan), 1), "no usable rows"),
    ],
)
def test_bad_input_is_a_one_line_value_error(call, message):
    x = gaussian(50, 3, seed=0)
    with pytest.raises(ValueError, match=message) as err:
        call(x)
    assert isinstance(err.value, KCenterError) and "\n" not in str(err.value)


def test_seed_on_a_rejected_row_is_an_error():
    x = gaussian(50, 3, seed=0)
    x[4] = np.nan
    with pytest.raises(KCenterError, match="rejected"):
        greedy_k_center(x, 5, seeds=[4])


def test_k_equal_to_usable_rows_covers_everything():
    x = gaussian(40, 3, seed=6)
    x[5] = np.nan
    result = greedy_k_center(x, 39, lookahead=3)
    assert sorted(result.centers.tolist()) == [i for i in range(40) if i != 5]
    assert result.radii[-1] == 0.0


def test_never_holds_an_n_by_k_matrix():
    n, k = 20_000, 300
    x = gaussian(n, 8, seed=7)
    tracemalloc.start()
    try:
        greedy_k_center(x, k, lookahead=64, block_rows=256)
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert peak < n * k * 4 / 4  # a quarter of one float32 N x k matrix


def test_progress_bar_counts_centers(capsys):
    x = clustered(300, 6, seed=2)
    result = greedy_k_center(x, 12, progress=True)
    err = capsys.readouterr().err
    assert "k-center" in err and "12/12" in err
    assert len(result.centers) == 12


def test_torch_backend_equals_numpy():
    pytest.importorskip("torch")
    x = clustered(800, 16, seed=21)
    x[3] = np.nan
    ours = greedy_k_center(x, 40, lookahead=16, device="cpu")
    ref = greedy_k_center(x, 40, lookahead=16, device="numpy")
    np.testing.assert_array_equal(ours.centers, ref.centers)
    np.testing.assert_array_equal(ours.radii, ref.radii)
    assert ours.rejected == ref.rejected
    assert_assignment_nearest(x, ours)
