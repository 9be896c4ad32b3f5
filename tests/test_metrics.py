import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from gaptheory.instances import random_dictionary, sparse_codes
from gaptheory.metrics import (
    align_codes,
    code_metrics,
    correlation_matrix,
    dead_latents,
    dictionary_recovery,
    explained_variance,
    mcc,
    mean_l0,
    relative_code_error,
    support_scores,
)

from conftest import EPS64, sum_atol

#: A Pearson correlation of B <= 64 rows: centring and norms are B-term sums, so two
#: evaluations differ by about B eps times the columns' conditioning 1 + |mean| / std, which
#: the rescalings drawn below (scale >= 0.1 of a unit-variance column, shift <= 1) keep
#: below 11. MCC and explained variance are means of such ratios.
SCORE_ATOL = sum_atol(64, 11.0)
#: A ratio of integer counts, or F1 = 2 p r / (p + r) from two of them: a few roundings.
RATIO_RTOL = 4 * EPS64


@settings(max_examples=25, deadline=None)
@given(N=st.integers(2, 12), seed=st.integers(0, 2**32 - 1))
def test_mcc_is_one_for_any_permutation_and_positive_rescaling(N, seed):
    rng = np.random.default_rng(seed)
    Z = rng.standard_normal((64, N))
    perm = rng.permutation(N)
    scaled = Z[:, perm] * rng.uniform(0.1, 10.0, size=N) - rng.uniform(-1, 1, size=N)
    score, (rows, cols) = mcc(Z, scaled, return_matching=True)
    assert score == pytest.approx(1.0, abs=SCORE_ATOL)
    np.testing.assert_array_equal(perm[cols], rows)


def test_mcc_matches_a_brute_force_search_over_permutations():
    import itertools

    rng = np.random.default_rng(3)
    Z_true, Z_hat = rng.standard_normal((50, 4)), rng.standard_normal((50, 4))
    C = correlation_matrix(Z_true, Z_hat)
    best = max(C[np.arange(4), list(p)].mean() for p in itertools.permutations(range(4)))
    assert mcc(Z_true, Z_hat) == pytest.approx(best, abs=SCORE_ATOL)


def test_mcc_counts_a_constant_latent_as_zero_not_nan():
    Z = sparse_codes(40, 3, 1, seed=0)
    Z_hat = Z.copy()
    Z_hat[:, 2] = 0.7
    score = mcc(Z, Z_hat)
    assert np.isfinite(score)
    assert score == pytest.approx(2 / 3, abs=SCORE_ATOL)


def test_mcc_with_fewer_inferred_latents_counts_unmatched_true_latents_as_zero():
    Z = sparse_codes(40, 4, 2, seed=1)
    assert mcc(Z, Z[:, :2]) == pytest.approx(0.5, abs=SCORE_ATOL)
    assert mcc(Z, np.hstack([Z, Z[:, :1] * 0.0 + 1.0])) == pytest.approx(1.0, abs=SCORE_ATOL)


@pytest.mark.parametrize(
    "Z_true, Z_hat, match",
    [
        (np.ones((3, 2)), np.ones((4, 2)), "same number of rows"),
        (np.ones(3), np.ones((3, 2)), "2 dimensions"),
        (np.array([[np.nan, 1.0]]), np.ones((1, 2)), "NaN"),
    ],
)
def test_mcc_rejects_bad_shapes_and_nan(Z_true, Z_hat, match):
    with pytest.raises(ValueError, match=match):
        mcc(Z_true, Z_hat)


def test_align_codes_puts_matched_latents_in_true_order():
    Z = sparse_codes(30, 5, 2, seed=2)
    perm = np.array([3, 0, 4, 1, 2])
    _, matching = mcc(Z, Z[:, perm], return_matching=True)
    np.testing.assert_array_equal(align_codes(Z[:, perm], matching, 5), Z)


def test_dictionary_recovery_is_perfect_up_to_sign_and_order_and_beats_chance():
    D = random_dictionary(16, 8, seed=0)
    result = dictionary_recovery(D, -D[np.random.default_rng(1).permutation(16)], seed=0)
    assert result.score == pytest.approx(1.0, abs=SCORE_ATOL)
    assert result.chance < result.score
    assert result.chance_std > 0


def test_dictionary_recovery_chance_is_the_score_of_a_random_dictionary():
    D = random_dictionary(16, 8, seed=0)
    random = random_dictionary(16, 8, seed=99)
    result = dictionary_recovery(D, random, seed=5)
    assert abs(result.score - result.chance) < 4 * result.chance_std + 0.1


def test_dictionary_recovery_rejects_mismatched_dimension():
    with pytest.raises(ValueError, match="same number of columns"):
        dictionary_recovery(np.eye(3), np.eye(4))


def test_support_scores_count_hits_misses_and_false_alarms():
    scores = support_scores([[1.0, 1.0, 0.0, 0.0]], [[1.0, 0.0, 1.0, 1.0]])
    assert scores.precision == pytest.approx(1 / 3, rel=RATIO_RTOL, abs=0)
    assert scores.recall == pytest.approx(1 / 2, rel=RATIO_RTOL, abs=0)
    assert scores.f1 == pytest.approx(2 * (1 / 3) * (1 / 2) / (1 / 3 + 1 / 2), rel=RATIO_RTOL, abs=0)


def test_support_scores_of_all_zero_prediction_are_zero_not_nan():
    assert support_scores([[1.0, 0.0]], [[0.0, 0.0]]).to_dict() == {"precision": 0.0, "recall": 0.0, "f1": 0.0}


def test_relative_code_error_and_explained_variance_of_exact_codes():
    Z = sparse_codes(20, 6, 2, seed=4)
    assert relative_code_error(Z, Z) == 0.0
    assert explained_variance(Z, Z) == 1.0
    assert explained_variance(Z, np.zeros_like(Z) + Z.mean(axis=0)) == pytest.approx(0.0, abs=SCORE_ATOL)


def test_relative_code_error_rejects_zero_truth_and_shape_mismatch():
    with pytest.raises(ValueError, match="all zeros"):
        relative_code_error(np.zeros((2, 2)), np.ones((2, 2)))
    with pytest.raises(ValueError, match="same shape"):
        relative_code_error(np.ones((2, 2)), np.ones((2, 3)))


def test_mean_l0_and_dead_latents_use_the_activity_threshold():
    Z = np.array([[1.0, 1e-6, 0.0], [2.0, 0.5, 0.0]])
    assert mean_l0(Z) == 1.5
    assert dead_latents(Z) == 1
    assert dead_latents(Z, threshold=0.0) == 1
    assert mean_l0(Z, threshold=0.0) == 2.0


def test_code_metrics_aligns_permuted_codes_before_support_and_error():
    Z = sparse_codes(50, 8, 3, seed=6)
    D = random_dictionary(8, 5, seed=6)
    perm = np.random.default_rng(0).permutation(8)
    result = code_metrics(Z, Z[:, perm], Z @ D, Z @ D)
    assert result.mcc == pytest.approx(1.0, abs=SCORE_ATOL)
    assert result.f1 == 1.0
    assert result.relative_code_error == pytest.approx(0.0, abs=SCORE_ATOL)
    assert result.mean_l0 == 3.0
    assert set(result.to_dict()) >= {"mcc", "f1", "dead_latents"}
