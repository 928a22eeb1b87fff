"""SelectLLM's selection from the rater's picks: every row a pick or a fallback with its reason."""

import numpy as np

from selectray.methods.selectllm import choose_rows


def test_rank_order_is_first_picks_then_second_picks():
    picked = [np.array([3, 1]), np.array([7, 5])]
    order = [np.array([1, 3, 2]), np.array([5, 7, 6])]
    owner = np.array([-1, 0, 0, 0, -1, 1, 1, 1])
    rows, how = choose_rows(picked, order, ["ok", "ok"], 2, owner, np.zeros(8), budget=3)
    assert rows.tolist() == [3, 7, 1] and how == ["rater"] * 3


def test_short_answers_are_filled_nearest_first_with_the_groups_reason():
    picked = [np.array([], np.int64), np.array([4]), np.array([], np.int64)]
    order = [np.array([1, 0, 2]), np.array([3, 4, 5]), np.array([6, 7])]
    owner = np.array([0, 0, 0, 1, 1, 1, 2, 2])
    status = ["unparsable", "unparsable", "failed_request"]
    rows, how = choose_rows(picked, order, status, 2, owner, np.zeros(8), budget=6)
    # first row of each group, then second: group 1 kept its pick 4 and filled with 3.
    assert rows.tolist() == [1, 4, 6, 0, 3, 7]
    assert how == ["unparsable", "rater", "failed_request", "unparsable", "unparsable", "failed_request"]


def test_a_row_in_two_groups_counts_once_and_the_shortfall_is_topped_up():
    picked = [np.array([2]), np.array([2]), np.array([5])]
    order = [np.array([2, 0]), np.array([2, 1]), np.array([5, 4])]
    owner = np.array([0, 0, 0, 1, 1, 1])
    distance = np.array([0.5, 0.1, 0.0, 0.3, 0.2, 0.0])
    rows, how = choose_rows(picked, order, ["ok"] * 3, 1, owner, distance, budget=3)
    assert rows.tolist() == [2, 5, 1]  # cluster 0 (three rows) tops up first, nearest first
    assert how == ["rater", "rater", "short_group"]
    assert len(set(rows.tolist())) == len(rows)


def test_small_groups_and_rejected_rows():
    picked = [np.array([0]), np.array([3])]
    order = [np.array([0]), np.array([3, 2])]  # group 0 has one candidate for two picks
    owner = np.array([0, -1, 1, 1])  # row 1 was rejected by a later stage
    rows, how = choose_rows(picked, order, ["ok", "ok"], 2, owner, np.zeros(4), budget=3)
    assert rows.tolist() == [0, 3, 2] and how == ["rater", "rater", "unparsable"]
    rows, _ = choose_rows(picked, order, ["ok", "ok"], 2, owner, np.zeros(4), budget=5)
    assert sorted(rows.tolist()) == [0, 2, 3]  # the pool has no more usable rows
