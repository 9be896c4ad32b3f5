import itertools
import math

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from gaptheory.instances import (
    DICTIONARY_KINDS,
    MAX_EXHAUSTIVE_SUPPORTS,
    coherence_recovery_sparsity,
    make_instance,
    mutual_coherence,
    normalize_atoms,
    random_dictionary,
    rip_constant,
    sparse_codes,
    spark,
    welch_bound,
)

from conftest import frequency_atol, sum_atol


def _unit_norm_atol(M):
    """A float64 row normalised to unit norm: an M-term sum, a sqrt and a division from 1."""
    return sum_atol(M + 2, 1.0)


def _gram_atol(M):
    """Entries of D D^T for unit rows: M-term dot products of entries that each carry a few
    roundings (cos or a Gaussian draw, the scaling, the normalisation)."""
    return sum_atol(2 * M, 1.0)


@pytest.mark.parametrize("kind", ["gaussian", "rademacher", "dct"])
def test_random_dictionary_has_unit_rows_and_shape(kind):
    D = random_dictionary(20, 8, kind, seed=3)
    assert D.shape == (20, 8) and D.dtype == np.float64
    np.testing.assert_allclose(np.linalg.norm(D, axis=1), 1.0, rtol=0, atol=_unit_norm_atol(8))


@pytest.mark.parametrize("kind", ["gaussian", "rademacher", "dct"])
def test_random_dictionary_is_reproducible_from_seed(kind):
    np.testing.assert_array_equal(random_dictionary(12, 5, kind, seed=7), random_dictionary(12, 5, kind, seed=7))
    assert not np.array_equal(random_dictionary(12, 5, kind, seed=7), random_dictionary(12, 5, kind, seed=8))


def test_identity_dct_is_two_orthonormal_bases_with_known_coherence():
    D = random_dictionary(32, 16, "identity_dct", seed=0)
    np.testing.assert_allclose(D[:16] @ D[:16].T, np.eye(16), rtol=0, atol=_gram_atol(16))
    np.testing.assert_allclose(D[16:] @ D[16:].T, np.eye(16), rtol=0, atol=_gram_atol(16))
    # max |DCT-II entry| = sqrt(2/M) * max|cos| over the grid
    assert mutual_coherence(D) == pytest.approx(np.abs(D[16:]).max(), abs=_gram_atol(16))
    assert mutual_coherence(D) <= math.sqrt(2 / 16) + _gram_atol(16)


def test_dct_dictionary_is_partial_orthonormal_basis():
    D = random_dictionary(16, 16, "dct", seed=0)
    np.testing.assert_allclose(D @ D.T, np.eye(16), rtol=0, atol=_gram_atol(16))


@pytest.mark.parametrize(
    "args, kwargs, match",
    [
        ((10, 4, "fourier"), {}, "kind='fourier' is not supported"),
        ((4, 10, "dct"), {}, "N >= M"),
        ((10, 4, "identity_dct"), {}, "N = 2M"),
        ((0, 4), {}, "N=0 must be >= 1"),
    ],
)
def test_random_dictionary_rejects_bad_arguments(args, kwargs, match):
    with pytest.raises(ValueError, match=match):
        random_dictionary(*args, seed=0, **kwargs)


def test_random_dictionary_rejects_bad_seed():
    with pytest.raises(TypeError, match="seed must be an int"):
        random_dictionary(4, 2, seed=1.5)


@settings(max_examples=30)
@given(B=st.integers(1, 20), N=st.integers(1, 30), data=st.data(), seed=st.integers(0, 2**32 - 1),
       nonnegative=st.booleans())
def test_sparse_codes_have_exactly_k_nonzeros_in_range(B, N, data, seed, nonnegative):
    k = data.draw(st.integers(1, N))
    Z = sparse_codes(B, N, k, seed=seed, nonnegative=nonnegative, magnitudes=(0.5, 1.5))
    assert Z.shape == (B, N)
    assert ((Z != 0).sum(axis=1) == k).all()
    magnitudes = np.abs(Z[Z != 0])
    assert (magnitudes >= 0.5).all() and (magnitudes <= 1.5).all()
    if nonnegative:
        assert (Z >= 0).all()


def test_sparse_codes_supports_are_uniform():
    Z = sparse_codes(20000, 5, 2, seed=0)
    frequency = (Z != 0).mean(axis=0)
    np.testing.assert_allclose(frequency, 2 / 5, rtol=0, atol=frequency_atol(2 / 5, 20000))


def test_sparse_codes_signed_have_both_signs():
    Z = sparse_codes(200, 10, 3, seed=0, nonnegative=False)
    assert (Z > 0).any() and (Z < 0).any()


@pytest.mark.parametrize("k", [0, -1, 11])
def test_sparse_codes_rejects_k_outside_one_to_n(k):
    with pytest.raises(ValueError, match=r"1 <= K <= N"):
        sparse_codes(4, 10, k, seed=0)


@pytest.mark.parametrize("magnitudes", [(0, 1), (2, 1), (1, float("nan")), (1,)])
def test_sparse_codes_rejects_bad_magnitudes(magnitudes):
    with pytest.raises(ValueError, match="magnitudes"):
        sparse_codes(4, 10, 2, seed=0, magnitudes=magnitudes)


def test_make_instance_ties_x_to_z_and_d():
    inst = make_instance(16, 8, 3, 10, seed=0)
    np.testing.assert_array_equal(inst.X, inst.Z @ inst.D)  # X is defined as that product
    assert (inst.N, inst.M, inst.B, inst.K) == (16, 8, 10, 3)
    again = make_instance(16, 8, 3, 10, seed=0)
    np.testing.assert_array_equal(inst.X, again.X)


@pytest.mark.parametrize("K", [0, -1, 65])
def test_make_instance_rejects_K_outside_one_to_N(K):
    with pytest.raises(ValueError, match=r"1 <= K <= N"):
        make_instance(64, 32, K, seed=0)


@settings(max_examples=40)
@given(N=st.integers(3, 40), data=st.data(), seed=st.integers(0, 2**32 - 1),
       kind=st.sampled_from(["gaussian", "rademacher", "dct"]))
def test_mutual_coherence_is_never_below_the_welch_bound(N, data, seed, kind):
    M = data.draw(st.integers(2, N - 1))
    D = random_dictionary(N, M, kind, seed=seed)
    # coherence from M-term dot products; the bound's sqrt of a ratio: a few roundings
    assert mutual_coherence(D) >= welch_bound(N, M) - _gram_atol(M) - sum_atol(4, 1.0)


def test_welch_bound_is_attained_by_the_mercedes_frame():
    angles = 2 * np.pi * np.arange(3) / 3
    D = np.stack([np.cos(angles), np.sin(angles)], axis=1)
    assert mutual_coherence(D) == pytest.approx(welch_bound(3, 2), abs=_gram_atol(2) + sum_atol(4, 1.0))


def test_welch_bound_is_zero_without_overcompleteness():
    assert welch_bound(4, 4) == 0.0 and welch_bound(3, 5) == 0.0


def test_mutual_coherence_rejects_non_unit_atoms():
    with pytest.raises(ValueError, match="unit-norm rows"):
        mutual_coherence(np.array([[1.0, 0.0], [0.0, 2.0]]))


@pytest.mark.parametrize("bad", [np.array([[np.nan, 1.0], [0.0, 1.0]]), np.array([[np.inf, 0.0], [0, 1.0]])])
def test_mutual_coherence_rejects_nan_and_inf(bad):
    with pytest.raises(ValueError, match="NaN/inf"):
        mutual_coherence(bad)


def test_normalize_atoms_rejects_zero_rows():
    with pytest.raises(ValueError, match="zero rows"):
        normalize_atoms(np.array([[0.0, 0.0], [1.0, 1.0]]))


def _spark_by_definition(D):
    N, M = D.shape
    for size in range(1, N + 1):
        for subset in itertools.combinations(range(N), size):
            if np.linalg.matrix_rank(D[list(subset)], tol=1e-9) < size:
                return size
    return math.inf


@settings(max_examples=20)
@given(N=st.integers(2, 8), data=st.data(), seed=st.integers(0, 2**32 - 1))
def test_spark_matches_definition_and_coherence_bound(N, data, seed):
    M = data.draw(st.integers(1, 5))
    D = random_dictionary(N, M, "rademacher" if seed % 2 else "gaussian", seed=seed)
    value = spark(D)
    assert value == _spark_by_definition(D)
    mu = mutual_coherence(D)
    if mu > 0:  # orthogonal atoms: the bound reads spark >= inf, and spark is inf
        assert value >= 1 + 1 / mu - _gram_atol(M) / mu**2  # mu's round-off, amplified by d(1/mu)/dmu
    else:
        assert value == math.inf


def test_spark_detects_a_repeated_atom():
    D = normalize_atoms(np.array([[1.0, 0.0, 0.0], [0.0, 1.0, 0.0], [1.0, 0.0, 0.0]]))
    assert spark(D) == 2


def test_spark_refuses_an_enumeration_over_budget():
    D = random_dictionary(60, 30, seed=0)
    with pytest.raises(ValueError, match="max_subsets.*1 \\+ 1/mutual_coherence"):
        spark(D)


def _rip_by_definition(D, k, n_directions=4000, seed=0):
    """Brute force: extremes of |zD|^2/|z|^2 over all supports via eigen of each Gram."""
    worst = 0.0
    for subset in itertools.combinations(range(D.shape[0]), k):
        singular = np.linalg.svd(D[list(subset)], compute_uv=False)
        squares = np.concatenate([singular**2, np.zeros(k - len(singular))])
        worst = max(worst, squares.max() - 1, 1 - squares.min())
    return worst


@settings(max_examples=20)
@given(N=st.integers(3, 9), data=st.data(), seed=st.integers(0, 2**32 - 1))
def test_exact_rip_matches_definition_and_sampled_never_exceeds_it(N, data, seed):
    M = data.draw(st.integers(2, 6))
    k = data.draw(st.integers(1, N))
    D = random_dictionary(N, M, seed=seed)
    exact = rip_constant(D, k)
    # eigenvalues of k x k Grams (||G_S|| <= k) by two backward-stable LAPACK routines, each
    # within p(k) eps ||G_S||, p a modest polynomial (k^2 + M here; Demmel 1997, sec. 5.2)
    assert exact == pytest.approx(_rip_by_definition(D, k), abs=2 * sum_atol(k * k + M, float(k)))
    assert rip_constant(D, k, "sampled", n_subsets=50, seed=seed) <= exact


def test_rip_of_order_two_equals_coherence():
    D = random_dictionary(10, 5, seed=1)
    # the eigenvalues 1 +- |<d_i, d_j>| of 2 x 2 Grams against the same M-term dot products
    assert rip_constant(D, 2) == pytest.approx(mutual_coherence(D), abs=_gram_atol(5) + 2 * sum_atol(4 + 5, 2.0))


def test_rip_exact_refuses_over_budget_and_names_sampled():
    D = random_dictionary(200, 100, seed=0)
    with pytest.raises(ValueError, match="method='sampled'"):
        rip_constant(D, 5, max_subsets=MAX_EXHAUSTIVE_SUPPORTS)


def test_coherence_recovery_sparsity_formula():
    D = random_dictionary(32, 16, "identity_dct", seed=0)
    expected = 0.5 * (1 + 1 / mutual_coherence(D))
    assert coherence_recovery_sparsity(D) == pytest.approx(expected, rel=sum_atol(3, 1.0), abs=0)
    assert coherence_recovery_sparsity(np.eye(3)) == math.inf


def test_all_documented_kinds_are_buildable():
    for kind in DICTIONARY_KINDS:
        random_dictionary(16, 8, kind, seed=0)
