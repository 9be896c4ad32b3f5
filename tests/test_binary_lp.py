"""The dense simplex and the binary-code gap LP in basis-pursuit form, against HiGHS."""

import numpy as np
import pytest
import scipy.optimize
from hypothesis import given, settings
from hypothesis import strategies as st

from gaptheory.gap import relu_minimax_gap, verify_certificate, worst_case_error
from gaptheory.gap import binary_lp
from gaptheory.gap import lp as lp_module
from gaptheory.gap.binary_lp import basis_pursuit_form, binary_latent
from gaptheory.gap.dense_simplex import dense_simplex
from gaptheory.gap.results import ENCODER_ATOL
from gaptheory.instances import normalize_atoms, random_dictionary


@st.composite
def standard_form_lps(draw):
    """min c x, A x = b, x >= 0 with a feasible point (b = A x0), sometimes bounded below
    (c >= 0), sometimes not."""
    m = draw(st.integers(1, 6))
    n = draw(st.integers(m, 14))
    rng = np.random.default_rng(draw(st.integers(0, 2**32 - 1)))
    A = rng.standard_normal((m, n))
    x0 = rng.uniform(0, 2, n) * (rng.uniform(size=n) < 0.6)
    c = rng.uniform(0, 3, n) if draw(st.booleans()) else rng.standard_normal(n)
    return A, A @ x0, c


@settings(max_examples=60, deadline=None)
@given(standard_form_lps())
def test_dense_simplex_matches_highs_on_feasible_lps(lp):
    A, b, c = lp
    ours = dense_simplex(A, b, c)
    theirs = scipy.optimize.linprog(c, A_eq=A, b_eq=b, bounds=(0, None), method="highs")
    if theirs.status == 3:
        assert ours.status == "unbounded"
        return
    assert theirs.status == 0 and ours.status == "optimal"
    scale = 1 + np.abs(c).max() * (1 + np.abs(theirs.x).max())
    assert abs(c @ ours.x - theirs.fun) <= 1e-8 * scale
    assert (ours.x >= 0).all() and np.abs(A @ ours.x - b).max() <= 1e-8 * (1 + np.abs(b).max())
    # the duals are optimal for the dual LP: A^T pi <= c and b pi = c x
    assert (A.T @ ours.duals <= c + 1e-8 * scale).all()
    assert abs(b @ ours.duals - c @ ours.x) <= 1e-8 * scale


@settings(max_examples=30, deadline=None)
@given(standard_form_lps(), st.floats(0.0, 1.0))
def test_dense_simplex_stops_at_a_feasible_point_below_the_target(lp, fraction):
    A, b, c = lp
    c = np.abs(c)  # bounded below
    optimum = scipy.optimize.linprog(c, A_eq=A, b_eq=b, bounds=(0, None), method="highs").fun
    start = dense_simplex(A, b, c, max_iter=0)  # phase one's point (or the limit)
    target = optimum + fraction * max(c @ start.x - optimum, 0.0)
    outcome = dense_simplex(A, b, c, target=target)
    assert outcome.status in ("target", "optimal")
    assert c @ outcome.x <= target + 1e-9 * (1 + abs(target)) or outcome.status == "optimal"
    assert (outcome.x >= 0).all() and np.abs(A @ outcome.x - b).max() <= 1e-8 * (1 + np.abs(b).max())
    assert dense_simplex(A, b, c, target=optimum - 1.0).status == "optimal"


def test_dense_simplex_reports_infeasible_and_unbounded():
    infeasible = dense_simplex(np.array([[1.0, 1.0]]), np.array([-1.0]), np.array([1.0, 1.0]))
    assert infeasible.status == "infeasible"
    unbounded = dense_simplex(np.array([[1.0, -1.0]]), np.array([1.0]), np.array([0.0, -1.0]))
    assert unbounded.status == "unbounded"
    with pytest.raises(ValueError, match="A \\(m, n\\)"):
        dense_simplex(np.ones((2, 3)), np.ones(3), np.ones(3))


def test_dense_simplex_starting_basis_skips_phase_one_and_falls_back_when_infeasible():
    A = np.array([[1.0, 1.0, 1.0, 0.0], [1.0, -1.0, 0.0, 1.0]])
    b, c = np.array([2.0, 0.5]), np.array([1.0, 2.0, 0.0, 0.0])
    reference = scipy.optimize.linprog(c, A_eq=A, b_eq=b, bounds=(0, None), method="highs")
    for basis in ([2, 3], [0, 1], [1, 3]):  # feasible starts
        outcome = dense_simplex(A, b, c, basis=basis)
        assert outcome.status == "optimal" and abs(c @ outcome.x - reference.fun) <= 1e-12
    for basis in ([1, 2], [0, 0]):  # x_1 = -0.5; singular: both run the two phases instead
        outcome = dense_simplex(A, b, c, basis=basis)
        assert outcome.status == "optimal" and abs(c @ outcome.x - reference.fun) <= 1e-12


def _instance(kind, N, M, seed):
    if kind == "near_sum":  # d_0 = normalize(d_1 + d_2), d_1 . d_2 < -1/2: weights 1/||d_1 + d_2|| > 1
        D = random_dictionary(N, M, seed=seed)
        D[2] = normalize_atoms((-0.8 * D[1] + 0.6 * D[2])[None])[0]
        D[0] = normalize_atoms((D[1] + D[2])[None])[0]
        return D
    if kind == "repeated":
        D = random_dictionary(N, M, seed=seed)
        D[1] = D[0]
        return D
    if kind == "antipodal":
        D = random_dictionary(N, M, seed=seed)
        D[1] = -D[0]
        return D
    return random_dictionary(N, M, kind, seed=seed)


@st.composite
def binary_instances(draw):
    kind = draw(st.sampled_from(["gaussian", "rademacher", "dct", "near_sum", "repeated", "antipodal"]))
    M = draw(st.integers(lp_module.BINARY_FORM_MIN_DIMS, lp_module.BINARY_FORM_MIN_DIMS + 4))
    N = draw(st.integers(M + 1, 2 * M + 4))
    K = draw(st.integers(2, 4))
    return _instance(kind, N, M, draw(st.integers(0, 2**31))), K, kind


@settings(max_examples=10, deadline=None)
@given(binary_instances(), st.sampled_from([1.0, 0.75, 2.0**-40]))
def test_auto_method_equals_the_compact_lp_and_its_certificates_prove_eps(instance, magnitude):
    D, K, kind = instance
    magnitudes = (magnitude, magnitude)
    auto = relu_minimax_gap(D, K, magnitudes=magnitudes)
    compact = relu_minimax_gap(D, K, magnitudes=magnitudes, method="highs")
    assert auto.success and compact.success
    assert np.abs(auto.eps - compact.eps).max() <= ENCODER_ATOL * magnitude
    attained = worst_case_error(auto.encoder, D, K, magnitudes=magnitudes)
    assert (attained <= auto.eps + ENCODER_ATOL * magnitude).all()
    for certificate in auto.certificates:
        assert verify_certificate(certificate, D, k=K, magnitudes=magnitudes).valid
    # every latent proven exactly where the compact LP's own certificates prove it (a DCT's exact
    # relations broken by rounding may need a weaker correction in either)
    assert auto.exact.all() if kind != "dct" else (auto.exact >= compact.exact).all()


def test_binary_form_is_tried_only_where_it_is_safe_and_worth_it():
    wide = random_dictionary(40, lp_module.BINARY_FORM_MIN_DIMS, seed=2)
    assert lp_module._binary_form_applies(wide)
    assert not lp_module._binary_form_applies(random_dictionary(40, lp_module.BINARY_FORM_MIN_DIMS - 1, seed=2))
    for kind in ("repeated", "antipodal"):
        assert not lp_module._binary_form_applies(_instance(kind, 40, lp_module.BINARY_FORM_MIN_DIMS, seed=2))


def test_binary_form_solves_gaussian_latents_and_refuses_capped_ones():
    D = random_dictionary(30, 12, seed=3)
    guesses = D @ np.linalg.pinv(D)
    compact = relu_minimax_gap(D, 3, method="highs")
    solved = [binary_latent(D, i, 3, guesses[:, i]) for i in range(30)]
    assert all(found is not None for found in solved)  # random atoms: the caps never bind
    for i, found in enumerate(solved):
        assert abs(found.eps - compact.eps[i]) <= ENCODER_ATOL
        assert (found.inner_duals <= found.row_duals[:, None] * (1 + binary_lp.CAP_TOL)).all()
        assert abs(found.row_duals.sum() - 1) <= 1e-12
    # N = M + 1: d_0 = (d_1 + d_2) / c, c < 1, has the one representation mu = (1/c, 1/c),
    # whose weight 1/c > 1 per atom exceeds the caps of the top-K duals; auto falls back
    M = lp_module.BINARY_FORM_MIN_DIMS
    near = _instance("near_sum", M + 1, M, seed=1)
    assert lp_module._binary_form_applies(near)
    assert binary_latent(near, 0, 3, (near @ np.linalg.pinv(near))[:, 0]) is None
    auto, compact = relu_minimax_gap(near, 3), relu_minimax_gap(near, 3, method="highs")
    assert compact.eps[0] < 0.5 - 0.01 and np.abs(auto.eps - compact.eps).max() <= ENCODER_ATOL


def test_basis_pursuit_form_value_is_the_closed_form_eps():
    # orthonormal pairs: d_0 = (e_1 + e_2) / sqrt(2) is represented only by mu = (1, 1) / sqrt(2)
    D = np.array([[1.0, 1.0], [1.0, 0.0], [0.0, 1.0]]) / np.array([[np.sqrt(2)], [1.0], [1.0]])
    A, rhs, c = basis_pursuit_form(D, 0)
    outcome = dense_simplex(A, rhs, c)
    assert outcome.status == "optimal"
    assert abs(outcome.x[4] - (np.sqrt(2) - 1)) <= 1e-12  # t* = ||mu^+||_1 - 1
