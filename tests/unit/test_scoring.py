"""SelectIT formulas against values worked out by hand (numbers in the comments)."""

import numpy as np
import pytest

from selectray.scoring import (
    model_score,
    row_scores,
    selectit_levels,
    sentence_score,
    token_score,
)

# P = (0.1, 0.1, 0.2, 0.4, 0.2), sum 1.
#   paper: Q = P, base = 4, sum(Q_base - Q_i) = 0.3 + 0.3 + 0.2 + 0 + 0.2 = 1.0, S = 4 * 1.0 / 4 = 1.0
#   code:  Q = softmax(P): Z = 2e^.1 + 2e^.2 + e^.4 = 2(1.1051709181) + 2(1.2214027582) + 1.4918246976
#          = 6.1449720501; Q4 = 1.4918246976 / 6.1449720501 = 0.2427716002;
#          S = 4 * (5 * Q4 - 1) / 4 = 0.2138580009
P_MIXED = [0.1, 0.1, 0.2, 0.4, 0.2]
# One-hot on "5": paper Q = P, S = 5 * 4 / 4 = 5.
#   code: Q = (1, 1, 1, 1, e) / (4 + e), S = 5 * 4 (e - 1) / (4 + e) / 4 = 5 * 1.7182818285 / 6.7182818285
#         = 1.2788104699
P_ONEHOT5 = [0.0, 0.0, 0.0, 0.0, 1.0]


@pytest.mark.parametrize(
    ("probs", "paper", "code"),
    [
        (P_MIXED, 1.0, 0.2138580009),
        # Raw probabilities need not sum to 1: halving them changes nothing.
        ([0.05, 0.05, 0.1, 0.2, 0.1], 1.0, 0.2138580009),
        (P_ONEHOT5, 5.0, 1.2788104699),
        # Uniform: base = 1 (first of the ties), every Q_base - Q_i = 0.
        ([0.2] * 5, 0.0, 0.0),
    ],
)
def test_token_score_by_hand(probs, paper, code):
    assert token_score(probs, "paper") == pytest.approx(paper, abs=1e-9)
    assert token_score(probs, "code") == pytest.approx(code, abs=1e-9)
    assert token_score(probs) == pytest.approx(code, abs=1e-9)  # "code" is the default


def test_token_score_ties_resolve_to_lowest_rating():
    # (0.3, 0.3, 0.1, 0.1, 0.2): "1" and "2" tie, base = 1: S = 1 * (0 + 0 + 0.2 + 0.2 + 0.1) / 4 = 0.125
    # (with base = 2 it would be 0.25).
    assert token_score([0.3, 0.3, 0.1, 0.1, 0.2], "paper") == pytest.approx(0.125)
    # (0.1, 0.35, 0.1, 0.1, 0.35): "2" and "5" tie, base = 2: S = 2 * (0.25 + 0 + 0.25 + 0.25 + 0) / 4 = 0.375
    assert token_score([0.1, 0.35, 0.1, 0.1, 0.35], "paper") == pytest.approx(0.375)


@pytest.mark.parametrize(
    "probs",
    [[0, 0, 0, 0, 0], [np.nan, 0.1, 0.1, 0.1, 0.1], [np.inf, 0, 0, 0, 0], [-0.1, 0.5, 0.1, 0.1, 0.1]],
)
def test_degenerate_vectors_score_zero(probs):
    for norm in ("code", "paper"):
        assert token_score(probs, norm) == 0.0


def test_token_score_is_vectorised_and_never_nan():
    batch = np.array([[P_MIXED, P_ONEHOT5, [0] * 5], [[np.nan] * 5, [0.2] * 5, P_MIXED]])
    out = token_score(batch, "paper")
    assert out.shape == (2, 3)
    np.testing.assert_allclose(out, [[1.0, 5.0, 0.0], [0.0, 0.0, 1.0]], atol=1e-12)
    assert np.isfinite(token_score(np.random.default_rng(0).random((4, 7, 5)))).all()


def test_token_score_rejects_bad_input():
    with pytest.raises(ValueError, match="shape"):
        token_score([0.1, 0.2, 0.3])
    with pytest.raises(ValueError, match="normalization"):
        token_score(P_MIXED, "softmax")


def test_sentence_score_by_hand():
    # Token scores 1..5: mean 3, population std sqrt((4 + 1 + 0 + 1 + 4) / 5) = sqrt(2) = 1.4142135624;
    # alpha 0.2: 3 / (1 + 0.2828427125) = 2.3385563724 (ddof=1 would give 3 / 1.3162277660 = 2.2792).
    assert sentence_score([1.0, 2.0, 3.0, 4.0, 5.0], 0.2) == pytest.approx(2.3385563724)
    # Equal scores (ties): std 0, the mean is kept.
    assert sentence_score([2.0, 2.0, 2.0], 0.2) == pytest.approx(2.0)
    # alpha 0: the plain mean; last axis reduced.
    np.testing.assert_allclose(sentence_score([[1.0, 3.0], [0.0, 0.0]], 0.0), [2.0, 0.0])
    # Non-finite token scores count as 0: (0, 4) -> mean 2, std 2, 2 / (1 + 0.5 * 2) = 1.
    assert sentence_score([np.nan, 4.0], 0.5) == pytest.approx(1.0)


def test_model_score_by_hand():
    # theta (1, 3) -> weights (0.25, 0.75): row 0: 0.25 * 1 + 0.75 * 3 = 2.5; row 1: 0.25 * 2 + 0.75 * 4 = 3.5
    np.testing.assert_allclose(model_score([[1.0, 2.0], [3.0, 4.0]], [1, 3]), [2.5, 3.5])
    # One model: its own scores.
    np.testing.assert_allclose(model_score([[0.5, 1.5]], [135e6]), [0.5, 1.5])
    with pytest.raises(ValueError):
        model_score([[1.0, 2.0]], [0])
    with pytest.raises(ValueError):
        model_score([1.0, 2.0], [1])


def test_row_scores_composes_the_levels():
    # Row of K=2 prompts: P_MIXED (paper 1.0) and P_ONEHOT5 (paper 5.0): mean 3, std 2,
    # alpha 0.2: 3 / 1.4 = 2.1428571429.
    assert row_scores([[P_MIXED, P_ONEHOT5]], 0.2, "paper") == pytest.approx([2.1428571429])


def test_selectit_levels_gives_every_level_as_columns():
    # Two rows (a, b), K=2 prompts, two models with 1 and 3 parameters.
    m1 = np.array([[P_MIXED, P_ONEHOT5], [P_ONEHOT5, P_ONEHOT5]])
    m2 = np.array([[P_MIXED, P_MIXED], [P_MIXED, P_ONEHOT5]])
    cols = selectit_levels([m1, m2], ["m1", "m2"], [1, 3], alpha=0.2, normalization="paper")
    assert set(cols) == {"score_token_m1_p0", "score_token_m1_p1", "score_token_m2_p0", "score_token_m2_p1",
                         "score_sentence_m1", "score_sentence_m2", "score_model"}
    np.testing.assert_allclose(cols["score_token_m1_p0"], [1.0, 5.0])
    # m1: a = (1, 5) -> 2.1428571429; b = (5, 5) -> 5.   m2: a = (1, 1) -> 1; b = (1, 5) -> 2.1428571429.
    np.testing.assert_allclose(cols["score_sentence_m1"], [2.1428571429, 5.0])
    np.testing.assert_allclose(cols["score_sentence_m2"], [1.0, 2.1428571429])
    # weights 0.25 / 0.75: a = 0.5357142857 + 0.75 = 1.2857142857; b = 1.25 + 1.6071428571 = 2.8571428571
    np.testing.assert_allclose(cols["score_model"], [1.2857142857, 2.8571428571])


def test_the_released_weights_rank_differently_from_parameter_counts():
    # Sentence scores of rows a and b by a 7B and a 70B rater.
    sentences = np.array([[5.0, 1.0], [1.0, 2.0]])
    by_size = model_score(sentences, [7e9, 70e9])  # a = (35 + 70) / 77, b = (7 + 140) / 77
    released = model_score(sentences, [7 / 20, 70 / 90])  # a = (1.75 + 0.778) / 1.128, b = (0.35 + 1.556) / 1.128
    np.testing.assert_allclose(by_size, [105 / 77, 147 / 77])
    np.testing.assert_allclose(released, [(5 * 7 / 20 + 70 / 90) / (7 / 20 + 70 / 90), (7 / 20 + 2 * 70 / 90) / (7 / 20 + 70 / 90)])
    assert np.argmax(by_size) == 1 and np.argmax(released) == 0
