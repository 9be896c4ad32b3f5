"""Scale equivariance of the metrics and of the gap, from 1e-150 to 1e150 (hypothesis).

The solvers have their own property in test_solvers.py. Here each score is compared at a
random scale ``c = 10**p`` with the unscaled one. Multiplying by c rounds each entry once
(relative error u = eps/2), so a score formed from sums of n such products moves by at most
about ``gamma_n = n u / (1 - n u)`` relative to the sizes summed (Higham 2002, Lemma 3.1 and
Section 3.1); the tolerances below are that bound with a small constant for the few further
roundings (centring, the square root, the division).
"""

import numpy as np
from hypothesis import given, settings
from hypothesis import strategies as st

from gaptheory import metrics
from gaptheory._validation import times_power_of_two
from gaptheory.gap import JumpReLUEncoder, relu_minimax_gap, worst_case_error
from gaptheory.instances import make_instance, random_dictionary

U = np.finfo(np.float64).eps / 2

scales = st.floats(-150, 150).map(lambda power: 10.0**power)


def gamma(n: int) -> float:
    """Higham's gamma_n: the relative error bound of a sum or dot product of n terms."""
    return n * U / (1 - n * U)


def _codes(seed: int, B: int = 64, N: int = 6):
    rng = np.random.default_rng(seed)
    Z_true = rng.exponential(size=(B, N)) * (rng.random((B, N)) < 0.4)
    Z_hat = Z_true[:, rng.permutation(N)] + 0.3 * rng.standard_normal((B, N))
    X = Z_true @ random_dictionary(N, 4, seed=rng)
    return Z_true, Z_hat, X


@settings(max_examples=25, deadline=None)
@given(seed=st.integers(0, 2**32 - 1), c=scales, d=scales)
def test_correlation_scores_are_invariant_to_either_scale(seed, c, d):
    Z_true, Z_hat, _ = _codes(seed)
    B = Z_true.shape[0]
    # each correlation is a dot product of B standardised entries, bounded by 1 in size:
    # its absolute error is a few gamma_B; the MCC averages matched ones.
    tolerance = 8 * gamma(B)
    np.testing.assert_allclose(metrics.correlation_matrix(c * Z_true, d * Z_hat),
                               metrics.correlation_matrix(Z_true, Z_hat), rtol=0, atol=tolerance)
    assert abs(metrics.mcc(c * Z_true, d * Z_hat) - metrics.mcc(Z_true, Z_hat)) <= tolerance


@settings(max_examples=25, deadline=None)
@given(seed=st.integers(0, 2**32 - 1), c=scales)
def test_ratio_and_support_scores_are_invariant_to_a_common_scale(seed, c):
    Z_true, Z_hat, X = _codes(seed)
    X_hat = X + 0.1 * np.random.default_rng(seed).standard_normal(X.shape)
    # ratios of sums of squares over all B N (or B M) entries
    tolerance = 8 * gamma(Z_true.size)
    reference = metrics.relative_code_error(Z_true, Z_hat)
    assert abs(metrics.relative_code_error(c * Z_true, c * Z_hat) - reference) <= tolerance * reference
    reference = metrics.explained_variance(X, X_hat)
    assert abs(metrics.explained_variance(c * X, c * X_hat) - reference) <= tolerance * max(1.0, abs(reference))
    # Supports are compared to a threshold scaled with the data. An entry within rounding of
    # the threshold could flip, so the data are drawn away from it: |z| is 0 or >= 1e-2 > 1e-3.
    Z_away = np.where(np.abs(Z_hat) < 1e-2, 0.0, Z_hat)
    threshold = metrics.ACTIVE_THRESHOLD
    assert metrics.mean_l0(c * Z_away, threshold=c * threshold) == metrics.mean_l0(Z_away, threshold=threshold)
    assert metrics.dead_latents(c * Z_away, threshold=c * threshold) == metrics.dead_latents(Z_away, threshold=threshold)
    assert (metrics.support_scores(c * Z_true, c * Z_away, threshold=c * threshold)
            == metrics.support_scores(Z_true, Z_away, threshold=threshold))


@settings(max_examples=6, deadline=None)
@given(seed=st.integers(0, 2**31 - 1), c=scales, k=st.integers(1, 3))
def test_the_gap_scales_with_the_code_magnitudes(seed, c, k):
    D = random_dictionary(7, 4, seed=seed)
    unit = relu_minimax_gap(D, k, magnitudes=(0.5, 1.5))
    scaled = relu_minimax_gap(D, k, magnitudes=(0.5 * c, 1.5 * c))
    assert unit.success and scaled.success
    # Each LP is solved at magnitudes rescaled into [1, 2) by a power of two; the scaled
    # problem's magnitudes differ from the unit ones by one rounding each, so the two optima
    # agree within the sum of the two results' tolerances (each is ENCODER_ATOL times the
    # largest magnitude, where HiGHS's absolute tolerances act), plus that rounding times the
    # optimum's size.
    tolerance = 2 * unit.tolerance + 8 * U * float(unit.eps.max())
    np.testing.assert_allclose(scaled.eps / c, unit.eps, rtol=0, atol=tolerance)
    # The worst case of the unit encoder, with its bias scaled by c, on the scaled code set is
    # c times its worst case on the unit set (a ReLU layer is positively homogeneous).
    encoder = unit.encoder
    scaled_encoder = type(encoder)(W_enc=encoder.W_enc, b_enc=c * encoder.b_enc)
    np.testing.assert_allclose(worst_case_error(scaled_encoder, D, k, magnitudes=(0.5 * c, 1.5 * c)) / c,
                               worst_case_error(encoder, D, k, magnitudes=(0.5, 1.5)),
                               rtol=8 * gamma(4 * 7), atol=8 * gamma(4 * 7) * 1.5)
    # So is a JumpReLU's, with its threshold scaled by c too (a comparison pre > threshold that the
    # scaling's rounding could flip needs the two equal to round-off, which random thresholds are not).
    threshold = np.random.default_rng(seed).uniform(0.05, 0.5, size=7)
    jump = JumpReLUEncoder(W_enc=encoder.W_enc, b_enc=encoder.b_enc, threshold=threshold)
    scaled_jump = JumpReLUEncoder(W_enc=encoder.W_enc, b_enc=c * encoder.b_enc, threshold=c * threshold)
    np.testing.assert_allclose(worst_case_error(scaled_jump, D, k, magnitudes=(0.5 * c, 1.5 * c)) / c,
                               worst_case_error(jump, D, k, magnitudes=(0.5, 1.5)),
                               rtol=8 * gamma(4 * 7), atol=8 * gamma(4 * 7) * 1.5)


def test_make_instance_codes_scale_with_the_magnitudes():
    # the instance at magnitudes (c lo, c hi) draws the same supports and uniforms: codes scale by c
    base = make_instance(12, 6, 3, 20, seed=5, magnitudes=(0.5, 1.5))
    scaled = make_instance(12, 6, 3, 20, seed=5, magnitudes=(0.5e100, 1.5e100))
    np.testing.assert_array_equal(base.Z != 0, scaled.Z != 0)
    np.testing.assert_allclose(scaled.Z / 1e100, base.Z, rtol=8 * U, atol=0)


@settings(max_examples=50, deadline=None)
@given(seed=st.integers(0, 2**32 - 1), low=st.integers(-1100, 1100), width=st.integers(0, 60),
       dtype=st.sampled_from([np.float64, np.float32]))
def test_times_power_of_two_is_ldexp_bit_for_bit(seed, low, width, dtype):
    # the solvers and metrics rescale by this; it must round (to subnormals, past the largest
    # float) exactly where ldexp does, for exponents inside and outside the normal range
    rng = np.random.default_rng(seed)
    A = (rng.standard_normal((5, 7)) * np.exp2(rng.integers(-30, 30, (5, 7)))).astype(dtype)
    A[0, 0] = np.finfo(dtype).smallest_subnormal
    exponent = rng.integers(low, low + width + 1, size=(5, 1))
    with np.errstate(over="ignore", under="ignore"):
        expected, got = np.ldexp(A, exponent), times_power_of_two(A, exponent)
    assert got.dtype == expected.dtype
    np.testing.assert_array_equal(got.view(np.uint8), expected.view(np.uint8))
