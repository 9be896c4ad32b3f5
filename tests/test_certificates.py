"""Exact rational certificates: near-degenerate and badly scaled inputs never get a false bound."""

from fractions import Fraction
from unittest import mock

import flint
import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from gaptheory import certificates
from gaptheory._integer_matrix import IntegerMatrix
from gaptheory.gap import (
    KIND_LOWER,
    KIND_UPPER,
    GapCertificate,
    certify_gap,
    enumerate_codes,
    gap_lower_bound,
    relu_minimax_gap,
    relu_minimax_gap_codes,
    verify_certificate,
)
from gaptheory.instances import normalize_atoms, random_dictionary

#: Two LP solves of the same optimum at unit code scale agree to this (HiGHS tolerances 1e-7),
#: relative to the largest code magnitude.
LP_RTOL = 1e-7


def _fraction_check(certificate, check, D):
    """Re-check the exact weights with Python's Fraction, independently of python-flint."""
    codes, kinds = (certificate.codes, certificate.kinds) if check.codes is None else (check.codes, check.kinds)
    Z = [[Fraction(float(v)) for v in row] for row in codes.toarray()]
    Dq = [[Fraction(float(v)) for v in row] for row in D]
    y = check.exact_weights
    sign = [1 if kind == KIND_LOWER else -1 for kind in kinds]
    assert all(w >= 0 for w in y) and sum(y) == 1
    assert sum(s * w for s, w in zip(sign, y)) == 0
    for m in range(D.shape[1]):
        assert sum(s * w * sum(z[j] * Dq[j][m] for j in range(len(z))) for s, w, z in zip(sign, y, Z)) == 0
    i = certificate.latent
    bound = sum(
        (w * z[i] if kind == KIND_LOWER else -w * z[i] if kind == KIND_UPPER else 0) for w, z, kind in zip(y, Z, kinds)
    )
    lower = [z[i] for z, kind in zip(Z, kinds) if kind == KIND_LOWER]
    assert check.exact_bound == max(min([bound] + lower), 0)
    assert check.lower_bound <= check.exact_bound  # rounded down


def test_invertible_but_nearly_singular_dictionary_is_not_certified():
    D = normalize_atoms([[1.0, 0.0], [1.0, 1e-9]])  # invertible: eps* = 0 for every latent
    result = relu_minimax_gap(D, 2)
    report = certify_gap(D, 2)
    assert not report.passed and not report.exact.any() and not result.exact.any()
    # Whatever is certified is a true lower bound on eps* = 0.
    assert (report.certified_lower <= 0).all()
    for certificate in result.certificates:
        check = verify_certificate(certificate, D, k=2)
        assert not check.valid or check.lower_bound <= 0


def test_scaled_dictionary_fails_the_unit_norm_check():
    D = random_dictionary(6, 3, seed=0)
    result = relu_minimax_gap(D, 2)
    for certificate in result.certificates:
        assert verify_certificate(certificate, D, k=2).valid
        scaled = verify_certificate(certificate, D * 1e-10, k=2)
        assert not scaled.valid and "normalize_atoms" in scaled.reason


def test_a_certificate_claiming_more_than_eps_star_is_rejected_at_any_scale():
    D = random_dictionary(6, 3, seed=0)
    result = relu_minimax_gap(D, 2)
    certificate = result.certificates[0]
    # Drop the zero/upper rows: the weights then cannot balance exactly (any bound "proved" would be 1).
    keep = certificate.kinds == KIND_LOWER
    forged = GapCertificate(certificate.latent, certificate.codes[keep], certificate.kinds[keep], certificate.weights[keep])
    for scale in (1.0, 1e-10):
        check = verify_certificate(forged, D * scale, k=2)
        assert not check.valid or check.lower_bound <= result.eps[0] + LP_RTOL


def test_unit_norm_tolerance_accepts_float64_normalisation():
    rng = np.random.default_rng(0)
    for M in (2, 64, 1024):
        D = normalize_atoms(rng.normal(size=(50, M)) * 10.0 ** rng.uniform(-200, 200, size=(50, 1)))
        assert certificates.unit_norm_deviation(D).max() <= certificates.unit_norm_tolerance(M)
        assert certificates.unit_norm_deviation(D * (1 + 1e-12)).max() > certificates.unit_norm_tolerance(M)


def test_t2_refuses_a_representation_that_only_holds_to_the_solver_tolerance():
    D = normalize_atoms([[1.0, 0.0], [1.0, 1e-7]])  # invertible: eps* = 0
    assert relu_minimax_gap(D, 2).eps.max() <= LP_RTOL
    assert (gap_lower_bound(D) == 0).all() and (gap_lower_bound(D, exact=True) == 0).all()
    # A genuine representation is kept, confirmed exactly.
    D3 = np.array([[1.0, 0.0], [0.0, 1.0], [0.6, 0.8]])
    # exact rationals against float64 HiGHS: the LP values are of order 1 and exact to the
    # LP tolerance of the float solve, LP_RTOL
    np.testing.assert_allclose(gap_lower_bound(D3, exact=True), gap_lower_bound(D3), rtol=0, atol=LP_RTOL)
    assert (gap_lower_bound(D3, exact=True) <= relu_minimax_gap(D3, 2).eps + LP_RTOL).all()


def test_tiny_magnitudes_scale_eps_exactly():
    D = random_dictionary(6, 3, seed=0)
    unit = relu_minimax_gap(D, 2)
    tiny = relu_minimax_gap(D, 2, magnitudes=(1e-10, 1e-10))
    assert (tiny.eps > 0).all()
    np.testing.assert_allclose(tiny.eps, unit.eps * 1e-10, rtol=LP_RTOL)
    assert tiny.exact.all() and (np.abs(tiny.certified_lower - tiny.eps) <= tiny.tolerance).all()
    codes = enumerate_codes(6, 2)
    np.testing.assert_allclose(relu_minimax_gap_codes(D, codes * 1e-10).eps, unit.eps * 1e-10, rtol=LP_RTOL)


def test_enumeration_lp_gives_zero_for_a_latent_never_active():
    D = random_dictionary(6, 3, seed=0)
    Z = np.array([[0, 0, 0, 0, 0, 0], [1, 0, 0, 0, 0, 0], [0, 1, 0, 0, 0, 0], [1, 1, 0, 0, 0, 0.0]])
    result = relu_minimax_gap_codes(D, Z)
    assert result.success and (result.eps[2:] == 0).all() and result.exact[2:].all()
    assert (result.encoder.encode(Z @ D)[:, 2:] == 0).all()


def test_solve_exact_finds_a_solution_or_proves_inconsistency():
    assert certificates.solve_exact(np.array([[1, 2], [2, 4]], dtype=object), [3, 6]) == [Fraction(3), Fraction(0)]
    assert certificates.solve_exact(np.array([[1, 2], [2, 4]], dtype=object), [3, 7]) is None
    ints, exponent = certificates.to_integers([0.1, -3.0, 0.0])
    assert [Fraction(int(v)) * Fraction(2) ** exponent for v in ints] == [Fraction(0.1), Fraction(-3), 0]
    assert certificates.floor_float(Fraction(1, 3)) <= Fraction(1, 3) <= certificates.ceil_float(Fraction(1, 3))


@st.composite
def small_problems(draw):
    kind = draw(st.sampled_from(["gaussian", "rademacher", "dct"]))
    N = draw(st.integers(3, 7))
    M = draw(st.integers(2, N))
    K = draw(st.integers(1, min(3, N)))
    magnitudes = draw(st.sampled_from([(1.0, 1.0), (0.5, 1.5), (3e-9, 3e-9)]))
    return random_dictionary(N, M, kind, seed=draw(st.integers(0, 2**31))), K, magnitudes


@settings(max_examples=20, deadline=None)
@given(small_problems())
def test_every_exact_latent_has_an_exact_certificate_that_matches_the_enumeration_lp(problem):
    D, K, magnitudes = problem
    result = relu_minimax_gap(D, K, magnitudes=magnitudes)
    codes = enumerate_codes(D.shape[0], K, magnitudes=magnitudes)
    enumerated = relu_minimax_gap_codes(D, codes)
    tolerance = LP_RTOL * magnitudes[1]
    for certificate in result.certificates:
        i = certificate.latent
        check = result.checks[i]
        if check.valid and check.exact_weights:
            _fraction_check(certificate, check, D)
        if result.exact[i]:
            assert abs(result.eps[i] - enumerated.eps[i]) <= 2 * tolerance
            assert result.certified_lower[i] <= enumerated.eps[i] + tolerance
        if check.valid:  # sound whether or not eps is matched
            assert check.lower_bound <= enumerated.eps[i] + tolerance
    assert (result.certified_lower <= result.eps + tolerance).all()


@pytest.mark.parametrize("N, M, K", [(8, 4, 2), (12, 6, 3)])
def test_generic_dictionaries_are_certified_exactly(N, M, K):
    report = certify_gap(random_dictionary(N, M, seed=N), K)
    assert report.passed and report.exact.all() and report.certificate_valid.all()


def test_round_off_broken_relations_are_certified_with_correction_codes():
    # Partial DCT with two atoms equal in the reals, 1 ulp apart in float64: HiGHS's binding codes
    # balance for the real matrix; correction codes hi e_i, hi (e_i + e_j) balance them exactly.
    D = random_dictionary(3, 2, "dct", seed=11)
    assert 0 < np.abs(D[0] - D[2]).max() <= 2 * np.finfo(float).eps
    result = relu_minimax_gap(D, 3)
    corrected = [c for c in result.certificates if result.checks[c.latent].codes is not None]
    assert corrected and result.exact.all()
    for certificate in corrected:
        check = result.checks[certificate.latent]
        _fraction_check(certificate, check, D)
        assert check.codes.shape[0] > certificate.codes.shape[0] and "round-off" in check.reason
        assert abs(check.lower_bound - result.eps[certificate.latent]) <= LP_RTOL
        assert verify_certificate(certificate, D, k=3).codes is not None
    # K = 1 has no correction codes (they need two nonzeros): the same latents stay unproven.
    single = relu_minimax_gap(D, 1)
    assert not all(check.valid for check in single.checks if check is not None)


def test_correction_needs_the_residual_in_the_span_of_the_extra_codes():
    D = normalize_atoms([[1.0, 0.0], [1.0, 1e-9]])  # invertible: eps* = 0, so no certificate of 0.5 may pass
    result = relu_minimax_gap(D, 2)
    assert not any(check.valid and check.lower_bound > 0 for check in result.checks)


def _exact_solution(A_int, exponent, b):
    """A^{-1} b for A = A_int 2^exponent, in python-flint's exact rationals (None if singular)."""
    A = flint.fmpz_mat([[int(v) for v in row] for row in A_int])
    if A.det() == 0:
        return None
    x = A.solve(flint.fmpz_mat([[int(v)] for v in b]))
    return [Fraction(int(x[k, 0].p), int(x[k, 0].q)) / Fraction(2) ** exponent for k in range(len(b))]


@st.composite
def integer_systems(draw):
    n = draw(st.integers(1, 6))
    entries = st.integers(-50, 50)
    A = [[draw(entries) for _ in range(n)] for _ in range(n)]
    b = [draw(entries) for _ in range(n)]
    return A, draw(st.integers(-80, 80)), b, draw(st.sampled_from(["inverse", "perturbed", "random"]))


@settings(max_examples=200, deadline=None)
@given(integer_systems(), st.integers(0, 2**31))
def test_enclosure_contains_the_exact_solution_whatever_approximation_it_is_given(system, seed):
    A, exponent, b, approximation = system
    A_float = np.ldexp(np.array(A, dtype=np.float64), exponent)
    rng = np.random.default_rng(seed)
    approximate = {"inverse": A_float, "perturbed": A_float * (1 + 1e-3 * rng.standard_normal(A_float.shape)),
                   "random": rng.standard_normal(A_float.shape)}[approximation]
    enclosure = certificates.enclose_solution(IntegerMatrix.from_integers(A), exponent, b, approximate)
    exact = _exact_solution(A, exponent, b)
    if enclosure is None:
        return
    assert exact is not None  # an enclosure proves A nonsingular
    x, radius = enclosure
    assert all(abs(Fraction(float(v)) - w) <= radius for v, w in zip(x, exact))


def test_enclosure_of_a_well_conditioned_system_is_tight_and_of_a_singular_one_is_refused():
    rng = np.random.default_rng(0)
    n = 40
    A = (rng.integers(-1000, 1000, size=(n, n)) + 60000 * np.eye(n, dtype=np.int64)).tolist()
    b = rng.integers(-1000, 1000, size=n).tolist()
    x, radius = certificates.enclose_solution(IntegerMatrix.from_integers(A), -3, b, np.ldexp(np.array(A, float), -3))
    exact = _exact_solution(A, -3, b)
    assert all(abs(Fraction(float(v)) - w) <= radius for v, w in zip(x, exact))
    # diagonally dominant: cond_inf(A) < 2, so the refined x is within a few ulps of |x|
    assert radius <= 8 * certificates.UNIT_ROUNDOFF * max(abs(w) for w in exact)
    singular = [row[:] for row in A]
    singular[-1] = [u + v for u, v in zip(A[0], A[1])]
    assert certificates.enclose_solution(IntegerMatrix.from_integers(singular), 0, b, np.array(singular, float)) is None


def test_large_dual_systems_are_enclosed_and_agree_with_the_exact_solve():
    D = random_dictionary(160, 62, seed=3)  # square dual systems of M + 2 = 64 = ENCLOSURE_MIN_SIZE rows
    result = relu_minimax_gap(D, 3, latents=[0, 1, 2])
    assert any(certificate.codes.shape[0] == D.shape[1] + 2 for certificate in result.certificates)
    for certificate in result.certificates:
        enclosed = verify_certificate(certificate, D, k=3)
        with mock.patch.object(certificates, "ENCLOSURE_MIN_SIZE", 10**9):
            solved = verify_certificate(certificate, D, k=3)
        assert enclosed.valid and solved.valid and solved.exact_weights is not None
        if certificate.codes.shape[0] == D.shape[1] + 2:
            assert enclosed.exact_weights is None and "enclosed" in enclosed.reason
        # sound (never above the exact value the weights prove) and, the system being well
        # conditioned, as good to the LP tolerance
        assert enclosed.exact_bound <= solved.exact_bound
        assert float(solved.exact_bound - enclosed.exact_bound) <= LP_RTOL


@settings(max_examples=20, deadline=None)
@given(small_problems())
def test_the_enclosure_settles_every_small_certificate_as_the_exact_solve_does(problem):
    D, K, magnitudes = problem
    result = relu_minimax_gap(D, K, magnitudes=magnitudes)
    for certificate in result.certificates:
        solved = verify_certificate(certificate, D, k=K, magnitudes=magnitudes)
        with mock.patch.object(certificates, "ENCLOSURE_MIN_SIZE", 1):
            enclosed = verify_certificate(certificate, D, k=K, magnitudes=magnitudes)
        assert enclosed.valid == solved.valid
        if solved.valid:
            assert enclosed.exact_bound <= solved.exact_bound
            assert float(solved.exact_bound - enclosed.exact_bound) <= LP_RTOL * magnitudes[1]


@pytest.mark.parametrize("support_size", [64, 10])
def test_l1_representation_bound_is_sound_and_tight_also_on_a_degenerate_support(support_size):
    rng = np.random.default_rng(support_size)
    others = normalize_atoms(rng.standard_normal((100, 64)))
    support = rng.choice(100, size=support_size, replace=False)
    coefficients = rng.uniform(0.5, 1.5, size=support_size)
    atom = coefficients @ others[support]  # in the span of 10 rows in the reals, not exactly in float64
    bound = certificates.l1_representation_bound(others, atom, support)
    assert bound is not None
    if support_size == 64:  # square: the exact representation on the support is unique
        exact = certificates.exact_l1_representation(others, atom, support)
    else:  # completed to a square support, on which the exact representation is unique
        assert certificates.exact_l1_representation(others, atom, support) is None
        square = list(support) + certificates._independent_rows(others, list(support), 64 - support_size)
        exact = certificates.exact_l1_representation(others, atom, square)
    norm = sum((abs(v) for v in exact), Fraction(0))
    assert norm <= bound
    # well conditioned: the enclosure costs a few ulps of the norm per row
    assert float(bound - norm) <= 64 * 8 * certificates.UNIT_ROUNDOFF * float(norm)
    assert abs(float(norm) - coefficients.sum()) <= 1e-9 * coefficients.sum()


@settings(max_examples=25, deadline=None)
@given(small_problems(), st.integers(0, 2**31), st.floats(-0.05, 0.05))
def test_enclosed_dual_weights_agree_with_flints_exact_solve(problem, seed, shift):
    # Square systems: the certificate's codes (M + 2 of them when nondegenerate) and, pinned, those
    # plus one more code with the bound equation added. Whatever the enclosure concludes (a bound,
    # "a weight is negative", or nothing), the exact solution computed by python-flint agrees.
    D, K, magnitudes = problem
    result = relu_minimax_gap(D, K, magnitudes=magnitudes)
    rng = np.random.default_rng(seed)
    n_dims = D.shape[1]
    for certificate in result.certificates:
        sign = np.where(certificate.kinds == KIND_LOWER, 1.0, -1.0)
        labels = certificate.labels
        values = np.where(certificate.kinds == KIND_LOWER, labels, np.where(certificate.kinds == KIND_UPPER, -labels, 0.0))
        codes, pin = certificate.codes.toarray(), None
        if len(codes) == n_dims + 2 and rng.random() < 0.5:
            extra = enumerate_codes(D.shape[0], K, magnitudes=magnitudes)[[rng.integers(0, 2)]]
            codes, sign, values = np.vstack([codes, extra]), np.r_[sign, -1.0], np.r_[values, 0.0]
            pin = float(values[:-1] @ certificate.weights / certificate.weights.sum()) * (1 + shift)
        if len(codes) != n_dims + 2 + (pin is not None):
            continue
        settled = certificates._enclosed_weights(codes, sign, values, D, pin)
        A_int, exponent = certificates._dual_matrix(codes, sign, D, None if pin is None else values)
        target = [Fraction(0)] * n_dims + [Fraction(0), Fraction(1)] + ([Fraction(pin)] if pin is not None else [])
        A_int = flint.fmpz_mat(A_int.to_objects().tolist())
        A = flint.fmpq_mat(A_int) * flint.fmpq(2) ** int(exponent)
        if A_int.det() == 0:
            assert settled is None  # an enclosure proves A nonsingular
            continue
        y = A.solve(flint.fmpq_mat([[flint.fmpq(t.numerator, t.denominator)] for t in target]))
        y = [Fraction(int(y[k, 0].p), int(y[k, 0].q)) for k in range(len(target))]
        if settled is False:
            assert min(y) < 0
        elif settled is not None:
            assert min(y) >= 0
            proven = sum(Fraction(float(v)) * w for v, w in zip(values, y))
            assert settled <= proven and (pin is None or settled == proven == Fraction(pin))


def test_sparse_rows_is_canonical_and_refuses_what_it_cannot_hold():
    import scipy.sparse

    from gaptheory._validation import sparse_rows

    dense = np.array([[0.0, 1.5, 0.0], [np.nan, 0.0, -2.0]])
    from_dense = sparse_rows(dense, "codes")
    duplicated = scipy.sparse.coo_array(([1.0, 0.5, np.nan, -2.0, 0.0], ([0, 0, 1, 1, 0], [1, 1, 0, 2, 2])), shape=(2, 3))
    from_sparse = sparse_rows(duplicated, "codes")
    for rows in (from_dense, from_sparse):
        assert rows.format == "csr" and rows.dtype == np.float64 and rows.has_canonical_format
        assert rows.nnz == 3  # the explicit zero is dropped, NaN kept for the check to report
    np.testing.assert_array_equal(from_dense.toarray(), from_sparse.toarray())
    from gaptheory._validation import times_power_of_two

    scaled = times_power_of_two(from_dense, -1074)  # 1.5 * 2^-1074 rounds to a subnormal, as ldexp's does
    assert scaled.format == "csr" and (scaled.indices == from_dense.indices).all()
    np.testing.assert_array_equal(scaled.toarray(), np.ldexp(dense, -1074))
    with pytest.raises(TypeError, match="complex"):
        sparse_rows(dense + 1j, "codes")
    with pytest.raises(TypeError, match="real numbers"):
        sparse_rows(dense > 0, "codes")
    with pytest.raises(ValueError, match="2 dimensions"):
        sparse_rows(np.ones(3), "codes")


@pytest.mark.parametrize("N, M, K", [(12, 6, 3), (40, 12, 2)])
def test_certificate_codes_are_stored_sparse_and_verify_as_the_dense_codes_do(N, M, K):
    D = random_dictionary(N, M, seed=N + K)
    result = relu_minimax_gap(D, K)
    assert result.certificates
    for certificate in result.certificates:
        assert certificate.codes.format == "csr"
        # a code has at most K nonzeros; a correction code adds one more
        assert np.diff(certificate.codes.indptr).max() <= K + 1
        dense = GapCertificate(certificate.latent, certificate.codes.toarray(), certificate.kinds, certificate.weights)
        sparse_check = verify_certificate(certificate, D, k=K)
        dense_check = verify_certificate(dense, D, k=K)
        assert sparse_check.valid == dense_check.valid
        assert sparse_check.exact_bound == dense_check.exact_bound
        assert sparse_check.lower_bound == dense_check.lower_bound
