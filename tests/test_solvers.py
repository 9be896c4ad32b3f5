import warnings

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from gaptheory.instances import Instance, coherence_recovery_sparsity, make_instance, random_dictionary, sparse_codes
from gaptheory.solvers import ConvergenceWarning, SolveResult, Status, basis_pursuit, lasso, omp

#: FISTA and cvxpy objectives agree to this relative accuracy (issue 3).
OBJECTIVE_RTOL = 1e-6
#: cvxpy codes below this count as zero when deciding the support (interior-point noise).
CVXPY_ZERO = 1e-7
RECOVERY_ATOL = 1e-6


@settings(max_examples=12, deadline=None)
@given(N=st.integers(4, 40), data=st.data(), seed=st.integers(0, 2**32 - 1), nonnegative=st.booleans(),
       alpha=st.floats(0.005, 0.5))
def test_fista_agrees_with_cvxpy(N, data, seed, nonnegative, alpha):
    M = data.draw(st.integers(2, N))
    K = data.draw(st.integers(1, max(1, M // 2)))
    inst = make_instance(N, M, K, 6, seed=seed, nonnegative=nonnegative)
    exact = lasso(inst.X, inst.D, alpha, method="cvxpy", nonnegative=nonnegative, return_info=True)
    fast = lasso(inst.X, inst.D, alpha, nonnegative=nonnegative, return_info=True, device="cpu")
    assert fast.success
    np.testing.assert_allclose(fast.objective, exact.objective, rtol=OBJECTIVE_RTOL)
    # F(z) - F* >= ||(z - z*) D||^2 / 2 for the LASSO, so both fits lie within sqrt(2 gap)
    # of the unique optimal fit; codes are then close wherever D is well conditioned on the
    # union of the supports (the LASSO minimiser itself need not be unique).
    gap_fast = fast.duality_gap
    gap_exact = np.maximum(exact.objective - fast.objective, 0) + gap_fast
    fit_bound = np.sqrt(2 * gap_fast) + np.sqrt(2 * gap_exact) + 1e-7
    fit_distance = np.linalg.norm((fast.codes - exact.codes) @ inst.D, axis=1)
    assert (fit_distance <= fit_bound).all()
    for row in range(inst.n_samples):
        union = (fast.codes[row] != 0) | (np.abs(exact.codes[row]) > CVXPY_ZERO)
        smallest = np.linalg.eigvalsh(inst.D[union] @ inst.D[union].T)[0] if union.any() else 1.0
        if smallest > 1e-2:
            code_bound = fit_bound[row] / np.sqrt(smallest) + np.sqrt(inst.n_latents) * CVXPY_ZERO
            assert np.linalg.norm(fast.codes[row] - exact.codes[row]) <= code_bound
    # the certified gap bounds the distance to the optimum
    assert (fast.objective - exact.objective <= fast.duality_gap + 1e-9 * exact.objective).all()
    if nonnegative:
        assert (fast.codes >= 0).all()


def test_lasso_matches_scikit_learn_with_alpha_over_m():
    sklearn = pytest.importorskip("sklearn.linear_model")
    inst = make_instance(30, 12, 3, 4, seed=5, nonnegative=False)
    alpha = 0.1
    ours = lasso(inst.X, inst.D, alpha, device="cpu")
    model = sklearn.Lasso(alpha=alpha / inst.n_dims, fit_intercept=False, tol=1e-12, max_iter=100000)
    theirs = model.fit(inst.D.T, inst.X.T).coef_
    np.testing.assert_allclose(ours, theirs, atol=1e-5)


def test_lasso_with_orthonormal_dictionary_is_soft_thresholding():
    X = np.array([[3.0, -0.2, -2.0]])
    np.testing.assert_allclose(lasso(X, np.eye(3), 0.5), [[2.5, 0.0, -1.5]], atol=1e-9)
    np.testing.assert_allclose(lasso(X, np.eye(3), 0.5, nonnegative=True), [[2.5, 0.0, 0.0]], atol=1e-9)


def test_lasso_warm_start_converges_faster_from_the_solution():
    inst = make_instance(40, 20, 3, 16, seed=2)
    cold = lasso(inst.X, inst.D, 0.05, method="fista", device="cpu", return_info=True)
    warm = lasso(inst.X, inst.D, 0.05, method="fista", device="cpu", init=cold.codes, return_info=True)
    assert warm.n_iter.max() <= cold.n_iter.min()
    np.testing.assert_allclose(warm.objective, cold.objective, rtol=1e-8)


def test_lasso_float32_is_close_and_returns_float64():
    inst = make_instance(32, 16, 2, 8, seed=3)
    result = lasso(inst.X, inst.D, 0.05, dtype="float32", tol=1e-5, device="cpu", return_info=True)
    assert result.codes.dtype == np.float64
    reference = lasso(inst.X, inst.D, 0.05, device="cpu", return_info=True)
    np.testing.assert_allclose(result.objective, reference.objective, rtol=1e-4)


def test_lasso_reports_max_iter_with_a_warning():
    inst = make_instance(64, 16, 4, 8, seed=1, nonnegative=False)
    with pytest.warns(ConvergenceWarning, match="raise max_iter"):
        result = lasso(inst.X, inst.D, 0.001, method="fista", max_iter=3, device="cpu", return_info=True)
    assert (result.status == Status.MAX_ITER).all()
    assert not result.success


def test_solve_result_exposes_per_row_fields():
    inst = make_instance(16, 8, 2, 5, seed=0)
    result = lasso(inst.X, inst.D, 0.1, device="cpu", return_info=True)
    assert isinstance(result, SolveResult)
    for field in (result.status, result.objective, result.n_iter, result.duality_gap):
        assert field.shape == (5,)
    assert result.codes.shape == (5, 16)


def _coherent_instance(seed, M=32, nonnegative=True):
    D = random_dictionary(2 * M, M, "identity_dct", seed=0)
    k = int(np.ceil(coherence_recovery_sparsity(D))) - 1
    Z = sparse_codes(12, 2 * M, k, seed=seed, nonnegative=nonnegative)
    return Instance(D=D, Z=Z, X=Z @ D, k=k, kind="identity_dct", nonnegative=nonnegative)


@settings(max_examples=6, deadline=None)
@given(seed=st.integers(0, 2**32 - 1), nonnegative=st.booleans(), M=st.sampled_from([32, 64]))
def test_basis_pursuit_recovers_every_code_under_the_coherence_condition(seed, nonnegative, M):
    inst = _coherent_instance(seed, M, nonnegative)
    assert inst.k >= 2  # the condition admits more than one atom here
    np.testing.assert_allclose(basis_pursuit(inst.X, inst.D, nonnegative=nonnegative), inst.Z, atol=RECOVERY_ATOL)


@settings(max_examples=15, deadline=None)
@given(seed=st.integers(0, 2**32 - 1), nonnegative=st.booleans(), M=st.sampled_from([32, 64, 128]))
def test_omp_finds_the_exact_support_under_the_coherence_condition(seed, nonnegative, M):
    inst = _coherent_instance(seed, M, nonnegative)
    codes = omp(inst.X, inst.D, inst.k, device="cpu")
    np.testing.assert_array_equal(codes != 0, inst.Z != 0)
    np.testing.assert_allclose(codes, inst.Z, atol=1e-10)


def test_omp_matches_scikit_learn_supports():
    sklearn = pytest.importorskip("sklearn.linear_model")
    inst = make_instance(64, 32, 4, 20, seed=9, nonnegative=False)
    ours = omp(inst.X, inst.D, 4, device="cpu")
    theirs = sklearn.OrthogonalMatchingPursuit(n_nonzero_coefs=4, fit_intercept=False).fit(inst.D.T, inst.X.T).coef_
    np.testing.assert_array_equal(ours != 0, theirs != 0)
    np.testing.assert_allclose(ours, theirs, atol=1e-9)


def test_omp_stops_early_when_the_residual_vanishes():
    D = np.eye(4)
    result = omp(np.array([[1.0, 0.0, 0.0, 0.0]]), D, 3, return_info=True)
    assert result.n_iter.tolist() == [1]
    np.testing.assert_allclose(result.codes, [[1.0, 0, 0, 0]])


def test_basis_pursuit_infeasible_row_is_named():
    # atoms in the positive orthant: a negative observation is outside their cone
    D = np.abs(random_dictionary(4, 3, seed=0))
    X = np.vstack([D[0], -D[0] - D[1]])
    with pytest.raises(ValueError, match="infeasible on row 1"):
        basis_pursuit(X, D, nonnegative=True)


@pytest.mark.parametrize(
    "X, D, match",
    [
        (np.ones((2, 3)), np.eye(4), "same M"),
        (np.array([[np.nan, 0, 0]]), np.eye(3), "NaN/inf"),
        (np.ones((1, 2)), np.array([[2.0, 0.0], [0.0, 1.0]]), "unit-norm rows"),
        (np.ones(3), np.eye(3), r"X\[None, :\]"),
    ],
)
@pytest.mark.parametrize("solve", ["bp", "lasso", "omp"])
def test_solvers_reject_bad_input_with_a_fix(X, D, match, solve):
    with pytest.raises(ValueError, match=match):
        if solve == "bp":
            basis_pursuit(X, D)
        elif solve == "lasso":
            lasso(X, D, 0.1)
        else:
            omp(X, D, 1)


@pytest.mark.parametrize("alpha", [0.0, -1.0, float("inf")])
def test_lasso_rejects_nonpositive_alpha(alpha):
    with pytest.raises(ValueError, match="alpha"):
        lasso(np.ones((1, 2)), np.eye(2), alpha)


def test_omp_rejects_k_above_n_and_above_m():
    D = random_dictionary(6, 3, seed=0)
    with pytest.raises(ValueError, match="1 <= K <= N"):
        omp(np.ones((1, 3)), D, 7)
    with pytest.raises(ValueError, match="k <= 3"):
        omp(np.ones((1, 3)), D, 4)


def test_lasso_rejects_unknown_method_and_device():
    with pytest.raises(ValueError, match="method='admm'"):
        lasso(np.ones((1, 2)), np.eye(2), 0.1, method="admm")
    with pytest.raises(ValueError, match="device"):
        lasso(np.ones((1, 2)), np.eye(2), 0.1, device="tpu")
