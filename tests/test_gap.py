from fractions import Fraction
from types import SimpleNamespace

import numpy as np
import scipy.optimize
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from gaptheory.bounds import four_code_lp
from gaptheory.gap import (
    ENCODER_ATOL,
    KIND_ZERO,
    GapCertificate,
    JumpReLUEncoder,
    MinimaxEncoder,
    _support_decomposition,
    atom_l1_cost,
    certify_gap,
    code_set_error,
    enumerate_codes,
    gap_lower_bound,
    relu_minimax_gap,
    relu_minimax_gap_codes,
    verify_certificate,
    worst_case_codes,
    worst_case_error,
)
from gaptheory.instances import random_dictionary
from gaptheory.solvers import basis_pursuit



def lp_atol(hi: float = 1.0) -> float:
    """Agreement of two LP solves of the same optimum: the LP's tolerance, which acts at the
    scale of the largest code magnitude ``hi`` (gap.ENCODER_ATOL per unit of hi: HiGHS's
    feasibility tolerance on rows whose entries are |u_j| hi with |u| up to ~10)."""
    return ENCODER_ATOL * hi


#: At unit magnitudes (the default code sets here).
LP_ATOL = lp_atol(1.0)
#: Closed-form and enumerated evaluations of the same encoder: sums of at most N + M <= 20
#: terms of size |w| hi <= ~30 (random weights, hi <= 3), so round-off below 20 * 30 * eps
#: ~ 1.3e-13; 1e-12 is that with a factor of 8.
IDENTITY_ATOL = 1e-12


@st.composite
def small_instances(draw, *, k_min=1, kinds=("gaussian", "rademacher", "dct")):
    """(D, K) with N <= 9 so every code can be enumerated.

    DCT frames have exact linear relations in the reals that float64 rounding breaks; correction
    codes repair most of their certificates, but not for K = 1 (the codes need two nonzeros) nor
    when the correction is large (valid, weaker bound); pass ``kinds`` without "dct" where every
    certificate must verify and match eps."""
    kind = draw(st.sampled_from(list(kinds)))
    N = draw(st.integers(3, 9))
    M = draw(st.integers(2, N))
    K = draw(st.integers(k_min, min(3, N)))
    D = random_dictionary(N, M, kind, seed=draw(st.integers(0, 2**31)))
    return D, K


@settings(max_examples=8, deadline=None)
@given(small_instances())
def test_compact_lp_equals_enumeration_lp_and_encoder_attains_eps(instance):
    D, K = instance
    compact = relu_minimax_gap(D, K)
    codes = enumerate_codes(D.shape[0], K)
    enumerated = relu_minimax_gap_codes(D, codes)
    assert compact.success and enumerated.success and compact.lp_exact.all()
    assert np.abs(compact.eps - enumerated.eps).max() <= LP_ATOL
    assert np.abs(code_set_error(compact.encoder, D, codes) - compact.eps).max() <= LP_ATOL
    assert (compact.eps <= 0.5 + LP_ATOL).all()


@settings(max_examples=8, deadline=None)
@given(small_instances(kinds=("gaussian", "rademacher")))
def test_certificates_verify_and_bracket_eps(instance):
    D, K = instance
    result = relu_minimax_gap(D, K)
    for certificate in result.certificates:
        check = verify_certificate(certificate, D, k=K)
        assert check.valid, check.reason
        assert abs(check.lower_bound - result.eps[certificate.latent]) <= LP_ATOL
    codes = enumerate_codes(D.shape[0], K)
    for certificate in relu_minimax_gap_codes(D, codes).certificates:
        check = verify_certificate(certificate, D, codes=codes)
        assert check.valid and abs(check.lower_bound - result.eps[certificate.latent]) <= LP_ATOL


@settings(max_examples=8, deadline=None)
@given(small_instances(k_min=2))
def test_t2_bound_never_exceeds_eps_star(instance):
    D, K = instance
    assert (gap_lower_bound(D) <= relu_minimax_gap(D, K).eps + LP_ATOL).all()


@settings(max_examples=8, deadline=None)
@given(small_instances(), st.data())
def test_lp_is_invariant_to_permuting_atoms(instance, data):
    D, K = instance
    permutation = np.array(data.draw(st.permutations(range(D.shape[0]))))
    assert np.abs(relu_minimax_gap(D[permutation], K).eps - relu_minimax_gap(D, K).eps[permutation]).max() <= LP_ATOL


@st.composite
def random_encoders(draw):
    """(D, K, a random ReLU encoder, magnitudes, the generator that drew it)."""
    D, K = draw(small_instances())
    rng = np.random.default_rng(draw(st.integers(0, 2**31)))
    N, M = D.shape
    encoder = MinimaxEncoder(W_enc=rng.normal(size=(M, N)), b_enc=rng.normal(size=N) * 0.3)
    return D, K, encoder, draw(st.sampled_from([(1.0, 1.0), (0.5, 1.5), (1.0, 3.0)])), rng


@settings(max_examples=15, deadline=None)
@given(random_encoders())
def test_worst_case_error_is_the_max_over_the_code_set_and_worst_case_codes_attain_it(case):
    D, K, encoder, magnitudes, rng = case
    N = D.shape[0]
    exact = worst_case_error(encoder, D, K, magnitudes=magnitudes)
    codes = worst_case_codes(encoder, D, K, magnitudes=magnitudes)
    nonzero = codes[codes != 0]
    assert codes.shape == (N, N) and ((codes != 0).sum(axis=1) <= K).all()
    assert ((nonzero >= magnitudes[0]) & (nonzero <= magnitudes[1])).all()
    np.testing.assert_allclose(np.diag(np.abs(encoder.encode(codes @ D) - codes)), exact, rtol=0, atol=IDENTITY_ATOL)
    vertices = enumerate_codes(N, K, magnitudes=magnitudes)
    assert (code_set_error(encoder, D, vertices) <= exact + IDENTITY_ATOL).all()
    # Interior magnitudes: every code of the box set errs by at most the closed form.
    scaled = vertices * rng.uniform(magnitudes[0], magnitudes[1], size=vertices.shape) / np.maximum(vertices, 1e-300)
    assert (code_set_error(encoder, D, np.where(vertices > 0, scaled, 0.0)) <= exact + IDENTITY_ATOL).all()
    if magnitudes[0] == magnitudes[1]:
        assert np.abs(code_set_error(encoder, D, vertices) - exact).max() <= IDENTITY_ATOL


def _grid_codes(n_latents: int, k: int, lo: float, hi: float, points: int) -> np.ndarray:
    """Every code with at most k nonzeros, each on a grid of ``points`` values in [lo, hi]."""
    values = np.linspace(lo, hi, points)
    vertices = enumerate_codes(n_latents, k, magnitudes=(1.0, 1.0))
    codes = []
    for support in vertices:
        (active,) = np.nonzero(support)
        if len(active) == 0:
            codes.append(np.zeros((1, n_latents)))
            continue
        grid = np.stack(np.meshgrid(*([values] * len(active)), indexing="ij"), -1).reshape(-1, len(active))
        block = np.zeros((len(grid), n_latents))
        block[:, active] = grid
        codes.append(block)
    return np.concatenate(codes)


@settings(max_examples=15, deadline=None)
@given(st.integers(3, 4), st.integers(1, 2), st.integers(0, 2**31), st.sampled_from([(0.5, 1.5), (1.0, 3.0)]))
def test_jumprelu_worst_case_error_is_the_sup_over_the_code_set(n_latents, k, seed, magnitudes):
    # A grid of every code's magnitudes: no grid point errs by more than the closed form, and the
    # best grid point is within one step of it (the error is linear in v_i with slope at most
    # 1 + |u_i| on each side of the jump; the other latents' worst values, 0 and hi, are on the grid).
    rng = np.random.default_rng(seed)
    D = random_dictionary(n_latents, 2, seed=seed)
    lo, hi = magnitudes
    encoder = JumpReLUEncoder(W_enc=rng.normal(size=(2, n_latents)), b_enc=rng.normal(size=n_latents) * 0.3,
                              threshold=rng.uniform(0.0, 1.0, size=n_latents))
    exact = worst_case_error(encoder, D, k, magnitudes=magnitudes)
    points = 201
    grid = code_set_error(encoder, D, _grid_codes(n_latents, k, lo, hi, points))
    slope = 1.0 + np.abs(D @ encoder.W_enc).max(axis=0) * hi
    assert (grid <= exact + IDENTITY_ATOL).all()
    assert (exact - grid <= slope * (hi - lo) / (points - 1) + IDENTITY_ATOL).all()


def test_jumprelu_error_counts_both_sides_of_the_jump():
    # One latent, u = 1, b = 0, threshold 0.8, codes {0} U [0.5, 1.5]: v at or below 0.8 reads 0
    # (error v, at most 0.8, attained at the jump); the ReLU reads every v exactly.
    D = np.array([[1.0]])
    under = JumpReLUEncoder(W_enc=np.array([[1.0]]), b_enc=np.zeros(1), threshold=np.array([0.8]))
    assert worst_case_error(under, D, 1, magnitudes=(0.5, 1.5)).tolist() == [0.8]
    assert worst_case_error(MinimaxEncoder(np.array([[1.0]]), np.zeros(1)), D, 1, magnitudes=(0.5, 1.5)).tolist() == [0.0]
    assert under.encode([[0.8], [0.81]]).tolist() == [[0.0], [0.81]]
    # u = 0.5, b = 0.9, threshold 1, codes {0} U [0.1, 1.5]: just above v = 0.2 the latent reads
    # 0.5 v + 0.9 > 1, so the over-estimate approaches 1 - 0.2 = 0.8 (a supremum, not attained).
    over = JumpReLUEncoder(W_enc=np.array([[0.5]]), b_enc=np.array([0.9]), threshold=np.array([1.0]))
    assert worst_case_error(over, D, 1, magnitudes=(0.1, 1.5))[0] == pytest.approx(0.8, abs=1e-15)
    assert code_set_error(over, D, [[0.2 + 1e-9]])[0] == pytest.approx(0.8, abs=1e-8)
    assert code_set_error(over, D, [[0.1], [0.2], [1.5]]).max() < 0.21


def test_thresholds_are_checked():
    D, encoder = np.eye(2), MinimaxEncoder(np.eye(2), np.zeros(2))
    with pytest.raises(ValueError, match="threshold must be a nonnegative array"):
        worst_case_error(JumpReLUEncoder(np.eye(2), np.zeros(2), np.array([0.1, -0.1])), D, 1)
    with pytest.raises(TypeError, match="takes a ReLU encoder"):
        worst_case_codes(JumpReLUEncoder(np.eye(2), np.zeros(2), np.zeros(2)), D, 1)
    assert worst_case_codes(encoder, D, 1).shape == (2, 2)


@settings(max_examples=8, deadline=None)
@given(small_instances(k_min=2))
def test_box_compact_lp_matches_vertex_enumeration_where_exact(instance):
    D, K = instance
    magnitudes = (1.0, 2.0)
    compact = relu_minimax_gap(D, K, magnitudes=magnitudes)
    enumerated = relu_minimax_gap_codes(D, enumerate_codes(D.shape[0], K, magnitudes=magnitudes))
    exact, atol = compact.lp_exact, lp_atol(magnitudes[1])
    assert np.abs(compact.eps[exact] - enumerated.eps[exact]).max(initial=0) <= atol
    assert (worst_case_error(compact.encoder, D, K, magnitudes=magnitudes)[exact] <= compact.eps[exact] + atol).all()
    for certificate in compact.certificates:
        check = verify_certificate(certificate, D, k=K, magnitudes=magnitudes)
        if not check.valid:  # sound refusal (DCT relations broken by rounding); never a false bound
            continue
        assert check.lower_bound <= compact.eps[certificate.latent] + atol
        # a certificate repaired by correction codes is valid but may be weaker (see
        # small_instances); an unrepaired one of an exact LP meets eps
        if exact[certificate.latent] and check.reason == "ok":
            assert check.lower_bound >= compact.eps[certificate.latent] - atol


def test_cvxpy_formulation_agrees_with_highs():
    D = random_dictionary(7, 4, seed=3)
    for K in (1, 2, 3):
        assert np.abs(relu_minimax_gap(D, K, method="cvxpy").eps - relu_minimax_gap(D, K).eps).max() <= LP_ATOL


@pytest.mark.parametrize("N, M", [(4, 4), (3, 6), (5, 8)])
def test_eps_star_is_zero_for_independent_atoms(N, M):
    D = random_dictionary(N, M, seed=N)
    assert relu_minimax_gap(D, min(3, N)).eps.max() <= LP_ATOL
    assert np.isinf(atom_l1_cost(D)).all() and (gap_lower_bound(D) == 0).all()


def test_eps_star_is_positive_when_overcomplete_and_k_at_least_2():
    D = random_dictionary(10, 5, seed=1)
    result = relu_minimax_gap(D, 2)
    assert (result.eps >= gap_lower_bound(D) - LP_ATOL).all() and (gap_lower_bound(D) > 0).all()


def test_atom_l1_cost_matches_cvxpy_basis_pursuit():
    D = random_dictionary(9, 4, seed=5)
    beta = atom_l1_cost(D)
    for i in range(3):
        others = np.delete(D, i, axis=0)
        reference = np.abs(basis_pursuit(D[i][None, :], others)).sum()
        # cvxpy's interior point stops at a relative gap of 1e-8 (Clarabel's tol_gap_rel), and
        # each of the N - 1 codes carries an error of that order: the l1 sums agree to
        # (N - 1) 1e-8 relative, times 8 for the conditioning of the small basis
        assert abs(beta[i] - reference) <= 8 * (D.shape[0] - 1) * 1e-8 * (1 + reference)


def test_four_code_lp_matches_enumeration_lp_and_t2():
    rational = [[1, 0], [0, 1], ["3/5", "4/5"], ["-4/5", "3/5"]]
    D = np.array([[float(Fraction(str(v))) for v in row] for row in rational])
    for i in range(4):
        codes = [np.zeros(4), np.eye(4)[i]] + [np.eye(4)[j] + c * np.eye(4)[i] for j in range(4) if j != i for c in (0, 1)]
        value = relu_minimax_gap_codes(D, np.array(codes), latents=[i]).eps[i]
        assert abs(value - float(four_code_lp(rational, i))) <= LP_ATOL
        assert value >= gap_lower_bound(D)[i] - LP_ATOL


@settings(max_examples=40, deadline=None)
@given(st.integers(1, 12), st.integers(1, 5), st.integers(0, 2**31))
def test_support_decomposition_reconstructs_the_fraction(n, k, seed):
    rng = np.random.default_rng(seed)
    x = rng.uniform(size=n) * (rng.uniform(size=n) < 0.6)
    x *= min(1.0, k / max(x.sum(), 1e-12))
    supports, weights = _support_decomposition(x.copy(), k)
    assert abs(weights.sum() - 1) <= IDENTITY_ATOL and (weights > 0).all()
    assert (supports.sum(axis=1) <= k).all()
    # the decomposition rounds the fractional parts of the cumulative sums to 12 digits (each
    # break moves by <= 0.5e-12) and zeroes entries below DUAL_ZERO = 1e-12: an entry, the
    # total length of the intervals covering it, moves by at most one rounding per break
    assert np.abs(weights @ supports - x).max() <= (n + 2) * 1e-12


def test_tampered_certificates_are_rejected():
    D = random_dictionary(6, 3, seed=0)
    certificate = relu_minimax_gap(D, 2).certificates[0]
    dense = GapCertificate(certificate.latent, np.ones(certificate.codes.shape), certificate.kinds, certificate.weights)
    assert not verify_certificate(dense, D, k=2).valid
    skewed = GapCertificate(certificate.latent, certificate.codes, certificate.kinds, certificate.weights * np.linspace(1, 3, len(certificate.weights)))
    check = verify_certificate(skewed, D, k=2)
    assert not check.valid or check.lower_bound <= relu_minimax_gap(D, 2).eps[0] + LP_ATOL
    mislabelled = GapCertificate(certificate.latent, certificate.codes, np.full_like(certificate.kinds, KIND_ZERO), certificate.weights)
    assert not verify_certificate(mislabelled, D, k=2).valid
    with pytest.raises(ValueError, match="needs k"):
        verify_certificate(certificate, D)


def test_latents_subset_solves_only_those():
    D = random_dictionary(6, 3, seed=0)
    result = relu_minimax_gap(D, 2, latents=[1, 4])
    assert np.isnan(result.eps[[0, 2, 3, 5]]).all() and np.isfinite(result.eps[[1, 4]]).all()
    assert [c.latent for c in result.certificates] == [1, 4]
    assert result.encoder.encode(np.zeros((2, 3))).shape == (2, 6)


@pytest.mark.parametrize(
    "call, match",
    [
        (lambda D: relu_minimax_gap(D, 0), r"1 <= K <= N"),
        (lambda D: relu_minimax_gap(D, 2, magnitudes=(2.0, 1.0)), r"0 < lo <= hi"),
        (lambda D: relu_minimax_gap(D, 2, latents=[9]), r"latents must be indices"),
        (lambda D: relu_minimax_gap(D * 2, 2), r"unit-norm"),
        (lambda D: relu_minimax_gap(D, 2, method="gurobi"), r"method"),
        (lambda D: relu_minimax_gap_codes(D, -np.eye(6)), r"negative"),
        (lambda D: relu_minimax_gap_codes(D, np.eye(5)), r"N=6 columns"),
        (lambda D: enumerate_codes(40, 8), r"max_codes"),
        (lambda D: atom_l1_cost(D[:1]), r"N >= 2"),
        (lambda D: worst_case_error(MinimaxEncoder(np.eye(3), np.zeros(3)), D, 2), r"W_enc of shape"),
    ],
)
def test_bad_input_raises_a_clear_value_error(call, match):
    with pytest.raises(ValueError, match=match):
        call(random_dictionary(6, 3, seed=0))


def test_certify_gap_brackets_eps_and_scales_t2_by_the_largest_magnitude():
    D = random_dictionary(8, 4, seed=2)
    report = certify_gap(D, 2)
    assert report.passed and (report.certified_lower >= report.result.eps - LP_ATOL).all()
    box = certify_gap(D, 2, magnitudes=(2.0, 3.0))
    assert box.passed and box.certificate_valid.all()
    # 3 * T2 is a bound for the codes 3 * {0, e_i, e_j, e_i + e_j}, rounded down from the exact product.
    assert (box.t2_bound <= 3.0 * report.t2_bound).all() and (box.t2_bound >= np.nextafter(3.0 * report.t2_bound, 0)).all()
    assert (box.t2_bound <= box.result.eps + 3.0 * LP_ATOL).all() and (box.t2_bound > report.t2_bound).all()
    assert (box.encoder_error <= box.result.eps + 3.0 * LP_ATOL).all()
    assert np.isnan(certify_gap(D, 1).t2_bound).all()  # T2 needs codes with two nonzeros


@pytest.mark.parametrize("scale", [2.0**-700, 1e-200, 3.0, 1e200, 2.0**700])
def test_certify_gap_is_homogeneous_in_the_code_magnitudes(scale):
    D = random_dictionary(6, 3, seed=4)
    unit, scaled = certify_gap(D, 2), certify_gap(D, 2, magnitudes=(scale, scale))
    assert scaled.passed and (scaled.exact == unit.exact).all()
    # T2 is the unit bound times the scale, rounded once. The LP is solved with magnitudes in
    # [1, 2) and scaled back by a power of two: for a power-of-two scale that is the unit LP
    # itself (exact), otherwise another LP whose optimum agrees within the LP tolerance.
    rounding = 4 * np.finfo(float).eps
    np.testing.assert_allclose(scaled.t2_bound / scale, unit.t2_bound, rtol=rounding, atol=0)
    rtol = rounding if np.frexp(scale)[0] == 0.5 else LP_ATOL
    for name in ("certified_lower", "encoder_error"):
        np.testing.assert_allclose(getattr(scaled, name) / scale, getattr(unit, name), rtol=rtol, atol=0, err_msg=name)
    np.testing.assert_allclose(scaled.result.eps / scale, unit.result.eps, rtol=rtol, atol=0)


def test_relu_minimax_gap_in_parallel_equals_the_serial_solve():
    D = random_dictionary(12, 6, seed=3)
    serial = relu_minimax_gap(D, 3)
    parallel = relu_minimax_gap(D, 3, n_jobs=2)
    np.testing.assert_array_equal(parallel.eps, serial.eps)
    np.testing.assert_array_equal(parallel.encoder.W_enc, serial.encoder.W_enc)
    assert [c.latent for c in parallel.certificates] == [c.latent for c in serial.certificates]
    subset = relu_minimax_gap(D, 3, latents=[5, 1, 7], n_jobs=3)  # order of the request is kept
    np.testing.assert_array_equal(subset.eps[[5, 1, 7]], serial.eps[[5, 1, 7]])


@pytest.mark.parametrize("n_jobs", [0, -2, 1.5])
def test_relu_minimax_gap_rejects_bad_worker_counts(n_jobs):
    with pytest.raises((ValueError, TypeError), match="n_jobs"):
        relu_minimax_gap(random_dictionary(6, 3, seed=0), 2, n_jobs=n_jobs)


@st.composite
def wide_instances(draw):
    """(D, K, magnitudes) with N >= 4 M, where the working set starts with a fraction of the latents."""
    kind = draw(st.sampled_from(["gaussian", "rademacher"]))
    M = draw(st.integers(2, 5))
    N = draw(st.integers(4 * M, 6 * M))
    K = draw(st.integers(1, 4))
    magnitudes = draw(st.sampled_from([(1.0, 1.0), (0.5, 1.5)]))
    return random_dictionary(N, M, kind, seed=draw(st.integers(0, 2**31))), K, magnitudes


@settings(max_examples=6, deadline=None)
@given(wide_instances())
def test_working_set_lp_equals_the_full_compact_lp_and_its_certificates_verify(instance):
    D, K, magnitudes = instance
    full = relu_minimax_gap(D, K, magnitudes=magnitudes, working_set=False)
    restricted = relu_minimax_gap(D, K, magnitudes=magnitudes, working_set=True)
    assert full.success and restricted.success
    # Both are optima of the same LP, each within HiGHS's tolerances (relative to hi).
    assert np.abs(restricted.eps - full.eps).max() <= LP_ATOL * magnitudes[1]
    errors = worst_case_error(restricted.encoder, D, K, magnitudes=magnitudes)
    assert (errors <= restricted.eps + LP_ATOL * magnitudes[1]).all()
    for certificate in restricted.certificates:
        check = verify_certificate(certificate, D, k=K, magnitudes=magnitudes)
        assert check.valid, check.reason
        if restricted.lp_exact[certificate.latent]:
            assert abs(check.lower_bound - restricted.eps[certificate.latent]) <= LP_ATOL * magnitudes[1]
    np.testing.assert_array_equal(restricted.exact, full.exact)


def test_working_set_is_the_default_only_for_wide_dictionaries():
    wide, square = random_dictionary(24, 4, seed=5), random_dictionary(12, 6, seed=5)
    np.testing.assert_array_equal(relu_minimax_gap(wide, 3).eps, relu_minimax_gap(wide, 3, working_set=True).eps)
    np.testing.assert_array_equal(relu_minimax_gap(square, 3).eps, relu_minimax_gap(square, 3, working_set=False).eps)


def test_relu_minimax_gap_on_an_executor_equals_the_serial_solve():
    from concurrent.futures import ThreadPoolExecutor

    D = random_dictionary(12, 6, seed=3)
    serial = relu_minimax_gap(D, 3)
    with ThreadPoolExecutor(max_workers=2) as pool:
        spread = relu_minimax_gap(D, 3, executor=pool)
        report = certify_gap(D, 3, executor=pool)
    np.testing.assert_array_equal(spread.eps, serial.eps)
    np.testing.assert_array_equal(spread.encoder.W_enc, serial.encoder.W_enc)
    assert report.passed


def test_relu_minimax_gap_rejects_bad_executors_and_working_sets():
    D = random_dictionary(6, 3, seed=0)
    with pytest.raises(TypeError, match="executor"):
        relu_minimax_gap(D, 2, executor=object())
    with pytest.raises(ValueError, match="not both"):
        relu_minimax_gap(D, 2, executor=SimpleNamespace(submit=lambda *a: None), n_jobs=2)
    with pytest.raises((TypeError, ValueError), match="working_set"):
        relu_minimax_gap(D, 2, working_set="yes")


def test_working_set_grows_until_no_latent_outside_it_binds(monkeypatch):
    import gaptheory.gap.lp as gap_module  # the module that uses WORKING_SET_START and _solve_latent

    D = random_dictionary(20, 4, seed=1)
    full = relu_minimax_gap(D, 3, working_set=False, method="highs")
    sizes = []
    solve = gap_module._solve_latent

    def recorded(D_sub, i, rows, hi):
        sizes.append(D_sub.shape[0])
        return solve(D_sub, i, rows, hi)

    monkeypatch.setattr(gap_module, "WORKING_SET_START", 0.0)  # start from K + 1 others: rounds are needed
    monkeypatch.setattr(gap_module, "_solve_latent", recorded)
    restricted = relu_minimax_gap(D, 3, working_set=True, method="highs")
    assert len(sizes) > D.shape[0] and min(sizes) == 3 + 2  # latent i and K + 1 others at the start
    assert np.abs(restricted.eps - full.eps).max() <= LP_ATOL and restricted.success
    assert all(verify_certificate(c, D, k=3).valid for c in restricted.certificates)


def test_parallel_exact_checks_equal_the_serial_ones():
    from concurrent.futures import ThreadPoolExecutor

    D = random_dictionary(10, 5, seed=6)
    serial, parallel, spread = (relu_minimax_gap(D, 2) for _ in range(3))
    assert parallel.verify(n_jobs=2) is parallel.checks
    with ThreadPoolExecutor(max_workers=2) as pool:
        spread.verify(executor=pool)
    for result in (parallel, spread):
        assert [c.exact_bound for c in result.checks] == [c.exact_bound for c in serial.checks]
        np.testing.assert_array_equal(result.exact, serial.exact)


def test_parallel_t2_bounds_equal_the_serial_ones():
    from concurrent.futures import ThreadPoolExecutor

    D = random_dictionary(10, 5, seed=6)
    serial = gap_lower_bound(D, exact=True, latents=[1, 4, 7])
    np.testing.assert_array_equal(gap_lower_bound(D, exact=True, latents=[1, 4, 7], n_jobs=2), serial)
    with ThreadPoolExecutor(max_workers=2) as pool:
        np.testing.assert_array_equal(gap_lower_bound(D, exact=True, latents=[1, 4, 7], executor=pool), serial)
        with pytest.raises(ValueError, match="not both"):
            gap_lower_bound(D, n_jobs=2, executor=pool)
    assert np.isnan(serial[[0, 2, 3, 5, 6, 8, 9]]).all() and (serial[[1, 4, 7]] > 0).all()
    with pytest.raises(ValueError, match="n_jobs"):
        gap_lower_bound(D, n_jobs=0)


def test_certify_gap_on_a_dask_cluster_equals_the_serial_report():
    distributed = pytest.importorskip("distributed")

    D = random_dictionary(12, 6, seed=3)
    serial = certify_gap(D, 3)
    with distributed.LocalCluster(n_workers=2, threads_per_worker=1, processes=False, dashboard_address=None) as cluster:
        with distributed.Client(cluster) as client:
            spread = certify_gap(D, 3, executor=client)  # D scattered twice (solve, checks)
    np.testing.assert_array_equal(spread.result.eps, serial.result.eps)
    np.testing.assert_array_equal(spread.certified_lower, serial.certified_lower)
    assert spread.passed


def test_certify_gap_on_a_subset_of_latents_matches_the_full_report():
    D = random_dictionary(10, 5, seed=7)
    full, subset = certify_gap(D, 2), certify_gap(D, 2, latents=[6, 2])
    assert full.passed and subset.passed
    for name in ("t2_bound", "certified_lower"):
        np.testing.assert_array_equal(getattr(subset, name)[[2, 6]], getattr(full, name)[[2, 6]])
    np.testing.assert_array_equal(subset.result.eps[[2, 6]], full.result.eps[[2, 6]])
    others = np.setdiff1d(np.arange(10), [2, 6])
    assert np.isnan(subset.t2_bound[others]).all() and np.isnan(subset.result.eps[others]).all()
    assert np.isnan(gap_lower_bound(D, latents=[1])[[0, 2]]).all()


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_an_encoder_off_its_optimal_face_is_polished_back(monkeypatch, seed):
    # HiGHS meets the binding constraints only to its primal tolerance; a miss of 1e-6 on (w, b)
    # (ten times ENCODER_ATOL) would mark the latent failed. The least-squares move onto the face
    # the certificate names restores an encoder whose exact worst case is eps to round-off.
    import gaptheory.gap.lp as lp

    D = random_dictionary(10, 5, seed=seed)
    rng = np.random.default_rng(seed)
    solve = lp._solve_latents

    def perturbed(*args, **kwargs):
        return [(eps, w + 1e-6 * rng.normal(size=w.shape), b, certificate)
                for eps, w, b, certificate in solve(*args, **kwargs)]

    reference = relu_minimax_gap(D, 2, magnitudes=(0.5, 1.5))
    monkeypatch.setattr(lp, "_solve_latents", perturbed)
    result = relu_minimax_gap(D, 2, magnitudes=(0.5, 1.5))
    assert result.success and (result.exact == reference.exact).all() and reference.exact.any()
    errors = worst_case_error(result.encoder, D, 2, magnitudes=(0.5, 1.5))
    assert np.abs(errors - result.eps).max() <= IDENTITY_ATOL
    np.testing.assert_array_equal(result.eps, reference.eps)


@pytest.mark.parametrize("g", [lambda e: 0.35 - 0.5 * e, lambda e: max(0.3 - 2.0 * (e - 0.1) ** 2, 0.0)])
def test_refine_latent_brackets_the_root_of_g(g):
    # A stand-in LP with value g(e) (nonincreasing): the returned upper end is within REFINE_ATOL
    # of the root of g(e) = e, its certificate comes from an e with g(e) >= e and its encoder
    # from one with g(e) <= e.
    import gaptheory.gap.lp as lp

    calls = []

    def solve(e):
        calls.append(e)
        return g(e), np.array([e]), e, ("certificate at", e)

    lo = 0.1
    eps, w, b, certificate = lp._refine_latent(solve, lo, solve(lo))
    root = scipy.optimize.brentq(lambda e: g(e) - e, lo, g(lo), xtol=1e-15)
    low = certificate[1]
    assert g(low) >= low and g(eps) <= eps and low <= root <= eps
    assert eps - low <= lp.REFINE_ATOL and w[0] == eps == b
    assert len(calls) <= 12  # regula falsi (Illinois) converges superlinearly


@settings(max_examples=6, deadline=None)
@given(st.integers(0, 2**31))
def test_eps_above_lo_is_proven_not_only_lo(seed):
    # With the code set's low end at 0.1, most latents' eps* is above lo. The plain LP's certificate
    # can prove only lo there; the refined one proves eps*, and the encoder attains it.
    D = random_dictionary(10, 5, seed=seed)
    magnitudes = (0.1, 1.0)
    plain = certify_gap(D, 2, magnitudes=magnitudes, exact_above_lo=False)
    refined = certify_gap(D, 2, magnitudes=magnitudes)
    # Without the refinement some latent above lo is proven only to lo (its lower codes at lo).
    only_lo = (plain.result.eps > magnitudes[0] + LP_ATOL) & (plain.certified_lower <= magnitudes[0])
    assert only_lo.any() and not plain.exact[only_lo].any()
    assert refined.passed and refined.exact.all()
    assert (refined.result.eps <= plain.result.eps + LP_ATOL).all()
    attained = worst_case_error(refined.result.encoder, D, 2, magnitudes=magnitudes)
    assert (attained <= refined.result.eps + LP_ATOL).all()
