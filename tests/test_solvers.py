
import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from gaptheory.instances import Instance, coherence_recovery_sparsity, make_instance, random_dictionary, sparse_codes
import torch

from gaptheory.solvers import fista, homotopy, lp
import importlib

best_subset_module = importlib.import_module("gaptheory.solvers.best_subset")
from gaptheory.solvers import (
    ConvergenceWarning,
    SolveResult,
    Status,
    basis_pursuit,
    best_subset,
    count_supports,
    lasso,
    omp,
)

#: FISTA and cvxpy objectives agree to this relative accuracy (issue 3).
OBJECTIVE_RTOL = 1e-6
#: How far below cvxpy's objective a certified batched objective may lie: cvxpy/Clarabel's
#: own accuracy on these small problems (its answers are interior points, slightly suboptimal).
CVXPY_OBJECTIVE_RTOL = 1e-5
#: cvxpy codes below this count as zero when deciding the support (interior-point noise).
CVXPY_ZERO = 1e-7
RECOVERY_ATOL = 1e-6


#: The batched LASSO paths checked against cvxpy: (method, dtype of the iterations/path).
BATCHED_LASSO = [("homotopy", "float64"), ("homotopy", "float32"), ("fista", "float64")]


@settings(max_examples=15, deadline=None)
@given(N=st.integers(4, 40), data=st.data(), seed=st.integers(0, 2**32 - 1), nonnegative=st.booleans(),
       alpha=st.floats(0.005, 0.5), path=st.sampled_from(BATCHED_LASSO))
def test_batched_lasso_agrees_with_cvxpy(N, data, seed, nonnegative, alpha, path):
    M = data.draw(st.integers(2, N))
    K = data.draw(st.integers(1, max(1, M // 2)))
    inst = make_instance(N, M, K, 6, seed=seed, nonnegative=nonnegative)
    exact = lasso(inst.X, inst.D, alpha, method="cvxpy", nonnegative=nonnegative, return_info=True)
    method, dtype = path
    fast = lasso(inst.X, inst.D, alpha, nonnegative=nonnegative, method=method, dtype=dtype, return_info=True,
                 device="cpu")
    assert fast.success
    # never worse than cvxpy by more than 1e-6; lower only by cvxpy's own slack, which on
    # tiny objectives (~4e-3) reaches ~1e-6 relative with Clarabel's default tolerances
    assert (fast.objective <= exact.objective * (1 + OBJECTIVE_RTOL)).all()
    assert (fast.objective >= exact.objective * (1 - CVXPY_OBJECTIVE_RTOL)).all()
    residual = inst.X - fast.codes @ inst.D
    recomputed = 0.5 * (residual**2).sum(1) + alpha * np.abs(fast.codes).sum(1)
    np.testing.assert_allclose(fast.objective, recomputed, rtol=1e-12)
    # F(z) - F* >= ||(z - z*) D||^2 / 2 for the LASSO, so both fits lie within sqrt(2 gap)
    # of the unique optimal fit; codes are then close wherever D is well conditioned on the
    # union of the supports (the LASSO minimiser itself need not be unique).
    gap_fast = fast.duality_gap
    gap_exact = np.maximum(exact.objective - fast.objective, 0) + gap_fast
    fit_bound = np.sqrt(2 * gap_fast) + np.sqrt(2 * gap_exact) + 1e-7
    fit_distance = np.linalg.norm((fast.codes - exact.codes) @ inst.D, axis=1)
    assert (fit_distance <= fit_bound).all()
    for row in range(inst.B):
        union = (fast.codes[row] != 0) | (np.abs(exact.codes[row]) > CVXPY_ZERO)
        smallest = np.linalg.eigvalsh(inst.D[union] @ inst.D[union].T)[0] if union.any() else 1.0
        if smallest > 1e-2:
            code_bound = fit_bound[row] / np.sqrt(smallest) + np.sqrt(inst.N) * CVXPY_ZERO
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
    model = sklearn.Lasso(alpha=alpha / inst.M, fit_intercept=False, tol=1e-12, max_iter=100000)
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
    return Instance(D=D, Z=Z, X=Z @ D, K=k, kind="identity_dct", nonnegative=nonnegative)


@settings(max_examples=6, deadline=None)
@given(seed=st.integers(0, 2**32 - 1), nonnegative=st.booleans(), M=st.sampled_from([32, 64]))
def test_basis_pursuit_recovers_every_code_under_the_coherence_condition(seed, nonnegative, M):
    inst = _coherent_instance(seed, M, nonnegative)
    assert inst.K >= 2  # the condition admits more than one atom here
    np.testing.assert_allclose(basis_pursuit(inst.X, inst.D, nonnegative=nonnegative), inst.Z, atol=RECOVERY_ATOL)


@settings(max_examples=15, deadline=None)
@given(seed=st.integers(0, 2**32 - 1), nonnegative=st.booleans(), M=st.sampled_from([32, 64, 128]))
def test_omp_finds_the_exact_support_under_the_coherence_condition(seed, nonnegative, M):
    inst = _coherent_instance(seed, M, nonnegative)
    codes = omp(inst.X, inst.D, inst.K, device="cpu")
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


# ----- homotopy: exact finish, certificate, rescue chain ----------------------------------


def _homotopy_instance(seed=0, nonnegative=False):
    return make_instance(48, 24, 3, 10, seed=seed, nonnegative=nonnegative)


@pytest.mark.parametrize("nonnegative", [False, True])
def test_exact_finish_on_the_optimal_support_reproduces_cvxpy(nonnegative):
    inst = _homotopy_instance(1, nonnegative)
    alpha = 0.02
    exact = lasso(inst.X, inst.D, alpha, method="cvxpy", nonnegative=nonnegative)
    # the support and signs guessed (here by the homotopy); the finish must then be exact
    guess = lasso(inst.X, inst.D, alpha, method="homotopy", nonnegative=nonnegative)
    support_mask = guess != 0
    width = int(support_mask.sum(1).max())
    order = np.argsort(~support_mask, axis=1, kind="stable")[:, :width]
    signs = np.take_along_axis(np.sign(guess), order, 1)
    G = torch.tensor(inst.D @ inst.D.T)
    C = torch.tensor(inst.X @ inst.D.T)
    codes, singular = homotopy._exact_finish(C, G, torch.tensor(order), torch.tensor(signs), alpha)
    assert not singular.any()
    np.testing.assert_allclose(codes.numpy(), exact, atol=1e-5)  # cvxpy's codes are good to ~3e-6 here
    _, gap = fista._lasso_gap(torch.tensor(inst.X), torch.tensor(inst.D), codes, alpha, nonnegative)
    assert (gap.numpy() <= 1e-9).all()


def test_exact_finish_with_a_wrong_sign_fails_the_certificate():
    inst = _homotopy_instance(2)
    alpha = 0.02
    exact = lasso(inst.X, inst.D, alpha, method="homotopy")
    row = 0
    support = np.flatnonzero(exact[row])
    signs = np.sign(exact[row, support])
    signs[0] = -signs[0]  # one atom with the wrong sign: not the optimum
    C = torch.tensor(inst.X[row:row + 1] @ inst.D.T)
    codes, _ = homotopy._exact_finish(C, torch.tensor(inst.D @ inst.D.T), torch.tensor(support[None]),
                                     torch.tensor(signs[None]), alpha)
    primal, gap = fista._lasso_gap(torch.tensor(inst.X[row:row + 1]), torch.tensor(inst.D), codes, alpha, False)
    assert gap.item() > fista.FISTA_TOL * primal.item()


def test_homotopy_solution_is_zero_when_alpha_exceeds_every_correlation():
    inst = _homotopy_instance(3)
    alpha = 1.01 * np.abs(inst.X @ inst.D.T).max()
    result = lasso(inst.X, inst.D, alpha, method="homotopy", return_info=True)
    assert result.success and not result.codes.any()
    assert (result.n_iter == 0).all()


def test_homotopy_rows_cut_short_are_rescued_by_fista_and_still_certified(monkeypatch):
    inst = _homotopy_instance(4)
    monkeypatch.setattr(homotopy, "HOMOTOPY_MAX_EVENTS_PER_DIM", 0)
    monkeypatch.setattr(homotopy, "HOMOTOPY_MIN_EVENTS", 1)  # the path stops after one event
    result = lasso(inst.X, inst.D, 0.02, method="homotopy", return_info=True)
    assert "10 by FISTA" in result.message and result.success
    exact = lasso(inst.X, inst.D, 0.02, method="cvxpy", return_info=True)
    np.testing.assert_allclose(result.objective, exact.objective, rtol=OBJECTIVE_RTOL)


def test_float32_stragglers_are_redone_in_float64(monkeypatch):
    inst = _homotopy_instance(5, nonnegative=True)
    monkeypatch.setattr(homotopy, "HOMOTOPY_STRAGGLER_FRACTION", 1.0)  # float32 pass hands every row over
    result = lasso(inst.X, inst.D, 0.02, nonnegative=True, method="homotopy", dtype="float32", return_info=True)
    assert "0 by FISTA" in result.message and result.success
    reference = lasso(inst.X, inst.D, 0.02, nonnegative=True, method="homotopy", return_info=True)
    np.testing.assert_allclose(result.codes, reference.codes, atol=1e-12)


def test_homotopy_takes_one_event_per_atom_on_an_orthonormal_dictionary():
    X = np.array([[3.0, -0.2, -2.0, 0.7]])
    result = lasso(X, np.eye(4), 0.5, method="homotopy", return_info=True)
    np.testing.assert_allclose(result.codes, [[2.5, 0.0, -1.5, 0.2]], atol=1e-12)
    assert result.n_iter.tolist() == [3]


# ----- OMP: float32 selection with float64 refit, dependent atoms --------------------------


def test_omp_float32_selects_the_same_atoms_and_refits_in_float64():
    inst = make_instance(64, 32, 4, 30, seed=11, nonnegative=False)
    single = omp(inst.X, inst.D, 4, dtype="float32", device="cpu")
    double = omp(inst.X, inst.D, 4, dtype="float64", device="cpu")
    np.testing.assert_array_equal(single != 0, double != 0)
    np.testing.assert_allclose(single, double, atol=1e-12)


def test_omp_stops_with_numerical_status_on_a_linearly_dependent_atom():
    D = np.array([[1.0, 0, 0], [0, 1.0, 0], [np.sqrt(0.5), np.sqrt(0.5), 0]])
    result = omp(np.array([[1.0, 0.5, 1.0]]), D, 3, return_info=True)
    assert result.status.tolist() == [Status.NUMERICAL]
    assert result.n_iter.tolist() == [2]  # the third atom lies in the span of the first two
    assert np.count_nonzero(result.codes) == 2


def test_exact_finish_solves_rows_of_very_different_support_sizes():
    rng = np.random.default_rng(0)
    D = random_dictionary(64, 48, seed=1)
    X = rng.normal(size=(3, 48))
    sizes = [2, 20, 40]  # one row per bucket: <= 16, (16, 32], (32, 40]
    support = np.zeros((3, 45), dtype=np.int64)
    signs = np.zeros((3, 45))
    for row, size in enumerate(sizes):
        atoms = rng.choice(64, size, replace=False)
        slots = rng.choice(45, size, replace=False)  # live slots scattered among padding
        support[row, slots], signs[row, slots] = atoms, rng.choice([-1.0, 1.0], size)
    codes, singular = homotopy._exact_finish(torch.tensor(X @ D.T), torch.tensor(D @ D.T), torch.tensor(support),
                                            torch.tensor(signs), 0.1)
    assert not singular.any()
    for row in range(3):
        live = signs[row] != 0
        atoms, s = support[row, live], signs[row, live]
        expected = np.linalg.solve(D[atoms] @ D[atoms].T, D[atoms] @ X[row] - 0.1 * s)
        np.testing.assert_allclose(codes[row, atoms].numpy(), expected, atol=1e-9)
        assert np.count_nonzero(codes[row].numpy()) == len(atoms)


def _clarabel_always_inaccurate(monkeypatch):
    import cvxpy as cp

    original = lp.CvxpyProblem._solve_row

    def fake(self, solver, row):
        return cp.OPTIMAL_INACCURATE if solver == "CLARABEL" else original(self, solver, row)

    monkeypatch.setattr(lp.CvxpyProblem, "_solve_row", fake)


def test_basis_pursuit_re_solves_uncertified_rows_with_simplex(monkeypatch):
    _clarabel_always_inaccurate(monkeypatch)
    inst = _coherent_instance(0, 32)
    result = basis_pursuit(inst.X, inst.D, nonnegative=True, return_info=True)
    assert "re-solved exactly by cvxpy/HIGHS" in result.message
    assert result.fallback_rows == tuple(range(inst.B))
    np.testing.assert_allclose(result.codes, inst.Z, atol=RECOVERY_ATOL)


def test_basis_pursuit_never_replaces_a_named_solver(monkeypatch):
    _clarabel_always_inaccurate(monkeypatch)
    inst = _coherent_instance(0, 32)
    with pytest.raises(ValueError, match="not certified.*row 0|row 0.*not certified"):
        basis_pursuit(inst.X, inst.D, solver="CLARABEL")


# ---------------------------------------------------------------------------------------
# best_subset: exact K-sparse least squares
# ---------------------------------------------------------------------------------------


def _brute_force_best_subset(x, D, k, nonnegative):
    """The L0 optimum the slow way: (nonnegative) least squares on every support of size K."""
    import itertools

    from scipy.optimize import nnls

    best = 0.5 * float(x @ x)
    for support in itertools.combinations(range(len(D)), k):
        A = D[list(support)].T
        coef = nnls(A, x)[0] if nonnegative else np.linalg.lstsq(A, x, rcond=None)[0]
        best = min(best, 0.5 * float(np.sum((x - coef @ D[list(support)]) ** 2)))
    return best


@settings(max_examples=25, deadline=None)
@given(N=st.integers(2, 7), data=st.data(), seed=st.integers(0, 2**32 - 1), nonnegative=st.booleans())
def test_best_subset_attains_the_brute_force_l0_optimum(N, data, seed, nonnegative):
    M = data.draw(st.integers(1, N))
    k = data.draw(st.integers(1, M))
    D = random_dictionary(N, M, seed=seed)
    X = np.random.default_rng(seed).normal(size=(4, M))  # generic data: no exact sparse fit
    result = best_subset(X, D, k, nonnegative=nonnegative, return_info=True, device="cpu")
    assert result.success and (result.n_iter <= k).all()
    assert ((result.codes != 0).sum(1) <= k).all()
    if nonnegative:
        assert (result.codes >= 0).all()
    np.testing.assert_allclose(result.objective, 0.5 * ((X - result.codes @ D) ** 2).sum(1), rtol=1e-12)
    expected = [_brute_force_best_subset(x, D, k, nonnegative) for x in X]
    np.testing.assert_allclose(result.objective, expected, rtol=1e-9, atol=1e-12)


@settings(max_examples=10, deadline=None)
@given(seed=st.integers(0, 2**32 - 1), nonnegative=st.booleans())
def test_best_subset_recovers_every_code_below_half_the_spark_where_omp_and_bp_may_not(seed, nonnegative):
    # Gaussian D (16, 8) has spark M + 1 = 9, so K = 4 < 9/2 makes every 4-sparse code the
    # unique sparsest representation (Donoho & Elad 2003); coherence guarantees K <= 1 only.
    inst = make_instance(16, 8, 4, 64, seed=seed, nonnegative=nonnegative)
    result = best_subset(inst.X, inst.D, 4, nonnegative=nonnegative, return_info=True, device="cpu")
    np.testing.assert_allclose(result.codes, inst.Z, atol=1e-9)
    assert (result.n_iter == 4).all()


def test_best_subset_is_never_worse_than_omp():
    inst = make_instance(12, 6, 3, 50, seed=5, nonnegative=False)
    noisy = inst.X + 0.3 * np.random.default_rng(0).normal(size=inst.X.shape)
    exact = best_subset(noisy, inst.D, 3, return_info=True, device="cpu")
    greedy = omp(noisy, inst.D, 3, return_info=True, device="cpu")
    assert (exact.objective <= greedy.objective + 1e-12).all()
    assert (exact.objective < greedy.objective - 1e-6).any()  # and strictly better somewhere


def test_best_subset_prefers_the_smaller_support_and_returns_zero_outside_the_cone():
    D = np.eye(3)
    result = best_subset(np.array([[0.0, 2.0, 0.0], [-1.0, 0.0, 0.0], [0.0, 0.0, 0.0]]), D, 3,
                         nonnegative=True, return_info=True)
    np.testing.assert_allclose(result.codes, [[0, 2, 0], [0, 0, 0], [0, 0, 0]])
    assert result.n_iter.tolist() == [1, 0, 0]
    np.testing.assert_allclose(result.objective, [0.0, 0.5, 0.0])


def test_best_subset_skips_linearly_dependent_supports():
    D = np.array([[1.0, 0.0], [1.0, 0.0], [0.0, 1.0]])  # atoms 0 and 1 coincide
    codes = best_subset(np.array([[3.0, 4.0]]), D, 2)
    np.testing.assert_allclose(codes, [[3.0, 0.0, 4.0]])


def test_count_supports_sums_binomials():
    assert count_supports(16, 3) == 16 + 120 + 560
    assert count_supports(5, 5) == 2**5 - 1


@pytest.mark.parametrize(
    "kwargs, match",
    [
        ({"k": 4}, "k <= 3"),
        ({"k": 3, "max_supports": 10}, "would enumerate 41 supports"),
        ({"k": 0}, "1 <= K <= N"),
    ],
)
def test_best_subset_refuses_impossible_or_too_large_searches(kwargs, match):
    D = random_dictionary(6, 3, seed=0)
    with pytest.raises(ValueError, match=match):
        best_subset(np.ones((1, 3)), D, **kwargs)


def test_best_subset_rejects_nan_input():
    with pytest.raises(ValueError, match="NaN/inf"):
        best_subset(np.array([[np.nan, 0.0, 0.0]]), np.eye(3), 1)


def test_best_subset_blocks_give_the_same_answer(monkeypatch):
    inst = make_instance(12, 6, 3, 30, seed=2)
    whole = best_subset(inst.X, inst.D, 3, nonnegative=True, device="cpu")
    monkeypatch.setattr(best_subset_module, "BEST_SUBSET_BLOCK", 20)  # one support per block, rows in blocks of 20
    np.testing.assert_array_equal(best_subset(inst.X, inst.D, 3, nonnegative=True, device="cpu"), whole)



@pytest.mark.parametrize("dtype", ["float64", "float32"])
@pytest.mark.parametrize("N, M, K", [(64, 32, 4), (256, 128, 8)])
def test_omp_supports_and_codes_match_scikit_learn_sparse_encode(N, M, K, dtype):
    # scikit-learn's OMP (LAPACK Cholesky updates, float64) is the outside reference: the
    # same greedy choices give the same supports, and codes agree to least-squares round-off
    # on well-conditioned supports (cond(G_SS) ~ 1 for random unit atoms: 1e-10 of the code
    # scale leaves ~1e5 eps of room).
    from sklearn.decomposition import sparse_encode

    inst = make_instance(N, M, K, 128, seed=N + K)
    theirs = sparse_encode(inst.X, inst.D, algorithm="omp", n_nonzero_coefs=K)
    ours = omp(inst.X, inst.D, K, dtype=dtype, device="cpu")
    assert np.array_equal(ours != 0, theirs != 0)
    np.testing.assert_allclose(ours, theirs, rtol=0, atol=1e-10 * np.abs(theirs).max())
