import importlib

import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from gaptheory.instances import (
    Instance,
    coherence_recovery_sparsity,
    make_instance,
    normalize_atoms,
    random_dictionary,
    sparse_codes,
)
from gaptheory.solvers import (
    ConvergenceWarning,
    SolveResult,
    SolverFailedError,
    Status,
    basis_pursuit,
    basis_pursuit_lp,
    best_subset,
    count_supports,
    fista,
    homotopy,
    lasso,
    lp,
    omp,
)
from gaptheory.bench import AGREEMENT_RTOL, OBJECTIVE_RTOL
from gaptheory.solvers.fista import FISTA_TOL
from gaptheory.solvers.lp import BP_RESIDUAL_RTOL

from conftest import (
    EPS64,
    half_square_atol,
    lasso_code_atol,
    lasso_gap_atol,
    least_squares_atol,
    sum_atol,
)

# The package re-exports the function best_subset under the submodule's name.
best_subset_module = importlib.import_module("gaptheory.solvers.best_subset")
lasso_module = importlib.import_module("gaptheory.solvers.lasso")
omp_module = importlib.import_module("gaptheory.solvers.omp")

#: cvxpy codes below this count as zero when deciding which rows' supports determine their
#: codes (interior-point noise, ten times Clarabel's default stopping tolerance of 1e-8); the
#: code bound accounts for the entries below it exactly.
CVXPY_ZERO = 1e-7


def _lasso_objective(X, D, Z, alpha):
    return 0.5 * ((X - Z @ D) ** 2).sum(1) + alpha * np.abs(Z).sum(1)


def _lasso_objective_atol(X, D, Z, alpha):
    """Round-off of two float64 evaluations of the LASSO objective (the square and the l1 term)."""
    return half_square_atol(X, Z, D) + alpha * sum_atol(D.shape[0], np.abs(Z).sum(1))


def _bp_code_atol(Z):
    """Basis pursuit codes are accepted at residual BP_RESIDUAL_RTOL ||x||; under the
    coherence condition the minimiser is unique and well conditioned, so the codes agree
    with it within BP_RESIDUAL_RTOL relative to the codes' scale."""
    return BP_RESIDUAL_RTOL * np.abs(Z).max()


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
    converged = fast.status == Status.OPTIMAL
    if method == "fista":
        # FISTA's iteration count grows with the conditioning of D (N = 24 atoms in M = 2
        # takes ~2e4 iterations on some rows): such a row must say MAX_ITER, never fail silently.
        assert set(fast.status.tolist()) <= {Status.OPTIMAL, Status.MAX_ITER}
    else:
        assert fast.success
    # never worse than cvxpy by more than the promised OBJECTIVE_RTOL once converged
    assert (fast.objective[converged] <= exact.objective[converged] * (1 + OBJECTIVE_RTOL)).all()
    roundoff = _lasso_objective_atol(inst.X, inst.D, fast.codes, alpha)
    recomputed = _lasso_objective(inst.X, inst.D, fast.codes, alpha)
    assert (np.abs(fast.objective - recomputed) <= roundoff).all()
    # and never below the optimum: the dual point built from cvxpy's residual (feasible by
    # construction) bounds F* from below, independently of the fast path
    exact_primal, exact_gap = fista._lasso_gap(torch.tensor(inst.X), torch.tensor(inst.D),
                                               torch.tensor(exact.codes), alpha, nonnegative)
    exact_roundoff = _lasso_objective_atol(inst.X, inst.D, exact.codes, alpha)
    exact_dual = exact_primal.numpy() - exact_gap.numpy()
    assert (fast.objective >= exact_dual - exact_roundoff - lasso_gap_atol(inst.X, inst.D, exact.codes, alpha)).all()
    # F(z) - F* >= ||(z - z*) D||^2 / 2 for the LASSO, so both fits lie within sqrt(2 gap)
    # of the unique optimal fit; codes are then close wherever D is well conditioned on the
    # union of the supports (the LASSO minimiser itself need not be unique). cvxpy's gap is
    # its objective, recomputed at its codes, minus the certified lower bound on F*.
    gap_fast = fast.duality_gap + roundoff
    lower = fast.objective - fast.duality_gap
    exact_objective = _lasso_objective(inst.X, inst.D, exact.codes, alpha)
    gap_exact = np.maximum(exact_objective - lower, 0) + roundoff + exact_roundoff
    fit_bound = np.sqrt(2 * gap_fast) + np.sqrt(2 * gap_exact)
    fit_distance = np.linalg.norm((fast.codes - exact.codes) @ inst.D, axis=1)
    assert (fit_distance <= fit_bound).all()
    for row in range(inst.B):
        union = (fast.codes[row] != 0) | (np.abs(exact.codes[row]) > CVXPY_ZERO)
        smallest = np.linalg.eigvalsh(inst.D[union] @ inst.D[union].T)[0] if union.any() else 1.0
        if smallest > 1e-2:  # only rows where the codes are determined by the fit
            # the entries of cvxpy's codes outside the union (each below CVXPY_ZERO) move the
            # fit by at most their l1 norm (unit atoms), and the codes by their l2 norm
            rest = np.where(union, 0.0, exact.codes[row])
            code_bound = (fit_bound[row] + np.abs(rest).sum()) / np.sqrt(smallest) + np.linalg.norm(rest)
            assert np.linalg.norm(fast.codes[row] - exact.codes[row]) <= code_bound
    # the certified gap bounds the distance to the optimum, and F* <= F(cvxpy's codes)
    assert (fast.objective - exact_objective <= fast.duality_gap + roundoff + exact_roundoff).all()
    if nonnegative:
        assert (fast.codes >= 0).all()


def test_lasso_matches_scikit_learn_with_alpha_over_m():
    sklearn = pytest.importorskip("sklearn.linear_model")
    inst = make_instance(30, 12, 3, 4, seed=5, nonnegative=False)
    alpha = 0.1
    ours = lasso(inst.X, inst.D, alpha, device="cpu")
    model = sklearn.Lasso(alpha=alpha / inst.M, fit_intercept=False, tol=1e-12, max_iter=100000)
    theirs = model.fit(inst.D.T, inst.X.T).coef_
    # the same minimiser (sklearn's objective is ours over M): both lie within their
    # certified duality gaps of it
    bound = lasso_code_atol(inst.X, inst.D, alpha, False, ours, theirs)
    assert (np.abs(ours - theirs).max(1) <= bound).all()


def test_lasso_with_orthonormal_dictionary_is_soft_thresholding():
    X = np.array([[3.0, -0.2, -2.0]])
    atol = _orthonormal_atol(X, 0.5)
    np.testing.assert_allclose(lasso(X, np.eye(3), 0.5), [[2.5, 0.0, -1.5]], rtol=0, atol=atol)
    np.testing.assert_allclose(lasso(X, np.eye(3), 0.5, nonnegative=True), [[2.5, 0.0, 0.0]], rtol=0, atol=atol)


def _orthonormal_atol(X, alpha):
    """On an orthonormal dictionary the exact finish is z = x - alpha sign(x) on the support:
    a couple of roundings of |x| + alpha (power-of-two rescaling is exact)."""
    return sum_atol(2, np.abs(X).max() + alpha)


def test_lasso_warm_start_converges_faster_from_the_solution():
    inst = make_instance(40, 20, 3, 16, seed=2)
    cold = lasso(inst.X, inst.D, 0.05, method="fista", device="cpu", return_info=True)
    warm = lasso(inst.X, inst.D, 0.05, method="fista", device="cpu", init=cold.codes, return_info=True)
    assert warm.n_iter.max() <= cold.n_iter.min()
    # both certified within FISTA_TOL of the optimum (plus the objectives' round-off)
    np.testing.assert_allclose(warm.objective, cold.objective, rtol=FISTA_TOL + sum_atol(inst.N + inst.M, 1.0))


def test_lasso_float32_is_close_and_returns_float64():
    inst = make_instance(32, 16, 2, 8, seed=3)
    tol = 1e-5
    result = lasso(inst.X, inst.D, 0.05, dtype="float32", tol=tol, device="cpu", return_info=True)
    assert result.codes.dtype == np.float64
    reference = lasso(inst.X, inst.D, 0.05, device="cpu", return_info=True)
    # each certified within its tol of the optimum; a float32 gap carries float32 round-off
    rtol = tol + FISTA_TOL + sum_atol(inst.N + inst.M, 1.0, np.float32)
    np.testing.assert_allclose(result.objective, reference.objective, rtol=rtol)


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
    codes = basis_pursuit(inst.X, inst.D, nonnegative=nonnegative)
    np.testing.assert_allclose(codes, inst.Z, rtol=0, atol=_bp_code_atol(inst.Z))


@settings(max_examples=15, deadline=None)
@given(seed=st.integers(0, 2**32 - 1), nonnegative=st.booleans(), M=st.sampled_from([32, 64, 128]))
def test_omp_finds_the_exact_support_under_the_coherence_condition(seed, nonnegative, M):
    inst = _coherent_instance(seed, M, nonnegative)
    codes = omp(inst.X, inst.D, inst.K, device="cpu")
    np.testing.assert_array_equal(codes != 0, inst.Z != 0)
    np.testing.assert_allclose(codes, inst.Z, rtol=0, atol=least_squares_atol(inst.D, inst.Z))


def test_omp_matches_scikit_learn_supports():
    sklearn = pytest.importorskip("sklearn.linear_model")
    inst = make_instance(64, 32, 4, 20, seed=9, nonnegative=False)
    ours = omp(inst.X, inst.D, 4, device="cpu")
    theirs = sklearn.OrthogonalMatchingPursuit(n_nonzero_coefs=4, fit_intercept=False).fit(inst.D.T, inst.X.T).coef_
    np.testing.assert_array_equal(ours != 0, theirs != 0)
    np.testing.assert_allclose(ours, theirs, rtol=0, atol=least_squares_atol(inst.D, theirs))


def test_omp_stops_early_when_the_residual_vanishes():
    D = np.eye(4)
    result = omp(np.array([[1.0, 0.0, 0.0, 0.0]]), D, 3, return_info=True)
    assert result.n_iter.tolist() == [1]
    np.testing.assert_allclose(result.codes, [[1.0, 0, 0, 0]], rtol=0, atol=sum_atol(1, 1.0))


def test_basis_pursuit_infeasible_row_is_a_status_not_bad_input():
    # atoms in the positive orthant: a negative observation is outside their cone
    D = normalize_atoms(np.abs(random_dictionary(4, 3, seed=0)))
    X = np.vstack([D[0], -D[0] - D[1]])
    result = basis_pursuit(X, D, nonnegative=True, return_info=True)
    assert result.status.tolist() == [Status.OPTIMAL, Status.INFEASIBLE]
    assert np.isnan(result.codes[1]).all() and "row 1: infeasible" in result.message
    with pytest.raises(SolverFailedError, match="row 1: infeasible"):
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
    with pytest.raises(ValueError, match="K <= 3"):
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
    # cvxpy's codes are interior points: within their own duality gap of the optimum
    bound = lasso_code_atol(inst.X, inst.D, alpha, nonnegative, codes.numpy(), exact)
    assert (np.abs(codes.numpy() - exact).max(1) <= bound).all()
    _, gap = fista._lasso_gap(torch.tensor(inst.X), torch.tensor(inst.D), codes, alpha, nonnegative)
    assert (gap.numpy() <= lasso_gap_atol(inst.X, inst.D, codes.numpy(), alpha)).all()  # round-off only


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
    monkeypatch.setattr(lasso_module, "USE_KERNELS", False)  # stragglers are a batched-path notion
    result = lasso(inst.X, inst.D, 0.02, nonnegative=True, method="homotopy", dtype="float32", return_info=True)
    assert "0 by FISTA" in result.message and result.success
    reference = lasso(inst.X, inst.D, 0.02, nonnegative=True, method="homotopy", return_info=True)
    # the same float64 exact finish on the same support: a K x K solve's round-off
    np.testing.assert_allclose(result.codes, reference.codes, rtol=0, atol=least_squares_atol(inst.D, reference.codes))


def test_the_compiled_path_certifies_rows_whose_paths_exceed_the_batched_cap():
    # K = 40 of 192 atoms: paths of 61-80 events, past HOMOTOPY_MAX_EVENTS = 64 of the batched
    # path; the compiled path (Cholesky extended per entry) takes them to the end itself
    inst = make_instance(192, 96, 40, 16, seed=0, nonnegative=True, magnitudes=(0.5, 1.5))
    result = lasso(inst.X, inst.D, 0.02, nonnegative=True, device="cpu", return_info=True)
    assert result.n_iter.max() > homotopy.HOMOTOPY_MAX_EVENTS
    assert result.success and "0 handed to the batched path" in result.message
    assert (result.duality_gap <= FISTA_TOL * result.objective).all()


def test_the_compiled_lasso_runs_in_direct_form_when_the_gram_matrix_is_over_budget(monkeypatch):
    inst = make_instance(192, 96, 40, 16, seed=0, nonnegative=True, magnitudes=(0.5, 1.5))
    gram = lasso(inst.X, inst.D, 0.02, nonnegative=True, device="cpu", return_info=True)
    monkeypatch.setattr(homotopy, "GRAM_MEMORY_BUDGET", 192 * 192 * 8 - 1)  # one byte short
    direct = lasso(inst.X, inst.D, 0.02, nonnegative=True, device="cpu", return_info=True)
    assert (gram.form, direct.form) == ("gram", "direct") and direct.success
    assert "0 handed to the batched path" in direct.message
    # the same path and support, the Gram entries formed by other sums: codes agree to the
    # round-off of the support's least squares, and both carry certified gaps
    np.testing.assert_array_equal(direct.codes != 0, gram.codes != 0)
    np.testing.assert_allclose(direct.codes, gram.codes, rtol=0, atol=least_squares_atol(inst.D, gram.codes))
    assert (direct.duality_gap <= FISTA_TOL * direct.objective).all()


def test_homotopy_takes_one_event_per_atom_on_an_orthonormal_dictionary():
    X = np.array([[3.0, -0.2, -2.0, 0.7]])
    result = lasso(X, np.eye(4), 0.5, method="homotopy", return_info=True)
    np.testing.assert_allclose(result.codes, [[2.5, 0.0, -1.5, 0.2]], rtol=0, atol=_orthonormal_atol(X, 0.5))
    assert result.n_iter.tolist() == [3]


# ----- OMP: float32 selection with float64 refit, dependent atoms --------------------------


def test_omp_float32_selects_the_same_atoms_and_refits_in_float64():
    inst = make_instance(64, 32, 4, 30, seed=11, nonnegative=False)
    single = omp(inst.X, inst.D, 4, dtype="float32", device="cpu")
    double = omp(inst.X, inst.D, 4, dtype="float64", device="cpu")
    np.testing.assert_array_equal(single != 0, double != 0)
    np.testing.assert_allclose(single, double, rtol=0, atol=least_squares_atol(inst.D, double))  # float64 refits


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
        G = D[atoms] @ D[atoms].T
        expected = np.linalg.solve(G, D[atoms] @ X[row] - 0.1 * s)
        # two Gram solves (Higham 2002, Thm 7.2) whose right-hand sides differ by the M-term
        # correlations' round-off: (M + K) eps cond(G) relative to the codes
        atol = sum_atol(48 + len(atoms), np.linalg.cond(G) * np.abs(expected).max())
        np.testing.assert_allclose(codes[row, atoms].numpy(), expected, rtol=0, atol=atol)
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
    np.testing.assert_allclose(result.codes, inst.Z, rtol=0, atol=_bp_code_atol(inst.Z))


def test_basis_pursuit_never_replaces_a_named_solver(monkeypatch):
    _clarabel_always_inaccurate(monkeypatch)
    inst = _coherent_instance(0, 32)
    with pytest.raises(SolverFailedError, match="row 0: optimal_inaccurate"):
        basis_pursuit(inst.X, inst.D, solver="CLARABEL")
    result = basis_pursuit(inst.X, inst.D, solver="CLARABEL", return_info=True)
    assert (result.status == Status.NUMERICAL).all() and result.fallback_rows == ()


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


def _selection_atol(X, D, K):
    """How far best_subset's chosen fit may lie above the exact L0 optimum, per row.

    It ranks supports by ||x||^2 - c_S . b_S, whose error is about K eps cond(G_S) ||x||^2
    (a K x K solve, Higham 2002, Thm 7.2), and by design keeps the smaller support within
    BEST_SUBSET_TIE_RTOL ||x||^2; the supports it can rank are those with
    lambda_min(G_S) > BEST_SUBSET_DEPENDENT_RTOL.
    """
    import itertools

    eps = np.finfo(np.float64).eps
    worst = 1.0
    for size in range(1, K + 1):
        for support in itertools.combinations(range(len(D)), size):
            eig = np.linalg.eigvalsh(D[list(support)] @ D[list(support)].T)
            if eig[0] > best_subset_module.BEST_SUBSET_DEPENDENT_RTOL:
                worst = max(worst, eig[-1] / eig[0])
    energy = (X * X).sum(1)
    return (best_subset_module.BEST_SUBSET_TIE_RTOL + 8 * K * eps * worst) * energy


@settings(max_examples=25, deadline=None)
@given(N=st.integers(2, 7), data=st.data(), seed=st.integers(0, 2**32 - 1), nonnegative=st.booleans())
def test_best_subset_attains_the_brute_force_l0_optimum(N, data, seed, nonnegative):
    M = data.draw(st.integers(1, N))
    K = data.draw(st.integers(1, M))
    D = random_dictionary(N, M, seed=seed)
    X = np.random.default_rng(seed).normal(size=(4, M))  # generic data: no exact sparse fit
    result = best_subset(X, D, K, nonnegative=nonnegative, return_info=True, device="cpu")
    assert result.success and (result.n_iter <= K).all()
    assert ((result.codes != 0).sum(1) <= K).all()
    if nonnegative:
        assert (result.codes >= 0).all()
    recomputed = 0.5 * ((X - result.codes @ D) ** 2).sum(1)
    assert (np.abs(result.objective - recomputed) <= half_square_atol(X, result.codes, D)).all()
    expected = np.array([_brute_force_best_subset(x, D, K, nonnegative) for x in X])
    # The brute force's own lstsq/nnls round-off is of the same order as _half_square_atol.
    slack = _selection_atol(X, D, K) + 2 * half_square_atol(X, result.codes, D)
    assert (result.objective <= expected + slack).all() and (result.objective >= expected - slack).all()


@settings(max_examples=10, deadline=None)
@given(seed=st.integers(0, 2**32 - 1), nonnegative=st.booleans())
def test_best_subset_recovers_every_code_below_half_the_spark_where_omp_and_bp_may_not(seed, nonnegative):
    # Gaussian D (16, 8) has spark M + 1 = 9, so K = 4 < 9/2 makes every 4-sparse code the
    # unique sparsest representation (Donoho & Elad 2003); coherence guarantees K <= 1 only.
    inst = make_instance(16, 8, 4, 64, seed=seed, nonnegative=nonnegative)
    result = best_subset(inst.X, inst.D, 4, nonnegative=nonnegative, return_info=True, device="cpu")
    np.testing.assert_allclose(result.codes, inst.Z, rtol=0, atol=least_squares_atol(inst.D, inst.Z))
    assert (result.n_iter == 4).all()


def test_best_subset_is_never_worse_than_omp():
    inst = make_instance(12, 6, 3, 50, seed=5, nonnegative=False)
    noisy = inst.X + 0.3 * np.random.default_rng(0).normal(size=inst.X.shape)
    exact = best_subset(noisy, inst.D, 3, return_info=True, device="cpu")
    greedy = omp(noisy, inst.D, 3, return_info=True, device="cpu")
    slack = _selection_atol(noisy, inst.D, 3) + 2 * half_square_atol(noisy, exact.codes, inst.D)
    assert (exact.objective <= greedy.objective + slack).all()
    assert (exact.objective < greedy.objective - slack).any()  # and strictly better somewhere


def test_best_subset_prefers_the_smaller_support_and_returns_zero_outside_the_cone():
    D = np.eye(3)
    X = np.array([[0.0, 2.0, 0.0], [-1.0, 0.0, 0.0], [0.0, 0.0, 0.0]])
    result = best_subset(X, D, 3, nonnegative=True, return_info=True)
    expected = np.array([[0, 2, 0], [0, 0, 0], [0, 0, 0]])
    np.testing.assert_allclose(result.codes, expected, rtol=0, atol=_orthonormal_atol(X, 0.0))
    assert result.n_iter.tolist() == [1, 0, 0]
    assert (np.abs(result.objective - [0.0, 0.5, 0.0]) <= half_square_atol(X, expected, D)).all()


def test_best_subset_skips_linearly_dependent_supports():
    D = np.array([[1.0, 0.0], [1.0, 0.0], [0.0, 1.0]])  # atoms 0 and 1 coincide
    X = np.array([[3.0, 4.0]])
    codes = best_subset(X, D, 2)
    np.testing.assert_allclose(codes, [[3.0, 0.0, 4.0]], rtol=0, atol=_orthonormal_atol(X, 0.0))


def test_count_supports_sums_binomials():
    assert count_supports(16, 3) == 16 + 120 + 560
    assert count_supports(5, 5) == 2**5 - 1


@pytest.mark.parametrize(
    "kwargs, match",
    [
        ({"K": 4}, "K <= 3"),
        ({"K": 3, "max_supports": 10}, "would enumerate 41 supports"),
        ({"K": 0}, "1 <= K <= N"),
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
    # (ours refit in float64 after a float32 selection).
    from sklearn.decomposition import sparse_encode

    inst = make_instance(N, M, K, 128, seed=N + K)
    theirs = sparse_encode(inst.X, inst.D, algorithm="omp", n_nonzero_coefs=K)
    ours = omp(inst.X, inst.D, K, dtype=dtype, device="cpu")
    assert np.array_equal(ours != 0, theirs != 0)
    np.testing.assert_allclose(ours, theirs, rtol=0, atol=least_squares_atol(inst.D, theirs))

# ---------------------------------------------------------------------------------------
# Scale equivariance and bad input, for every solver
# ---------------------------------------------------------------------------------------

@settings(max_examples=8, deadline=None)
@given(seed=st.integers(0, 2**32 - 1), power=st.floats(-150, 150), nonnegative=st.booleans())
def test_every_solver_is_scale_equivariant_from_1e_minus_150_to_1e150(seed, power, nonnegative):
    inst = _coherent_instance(seed, 32, nonnegative)
    D, X, c = inst.D, inst.X, 10.0**power
    scale = np.abs(inst.Z).max()
    # c X rounds each entry (relative error eps); OMP and best subset are least squares on
    # the (identical) true support, so their codes move by at most about M K eps cond(D_S)
    # relative to ||z|| (Higham 2002, Thm 20.3, a backward-stable QR/normal-equation solve).
    ls_atol = least_squares_atol(D, inst.Z)
    for solve in (lambda X: omp(X, D, inst.K), lambda X: best_subset(X, D, 2, nonnegative=nonnegative)):
        reference, scaled = solve(X), solve(c * X) / c
        assert np.array_equal(reference != 0, scaled != 0)
        np.testing.assert_allclose(scaled, reference, rtol=0, atol=ls_atol)
    # Basis pursuit by an interior-point method is accurate to its tolerances (Clarabel:
    # 1e-8 relative), and each answer passes the residual check at BP_RESIDUAL_RTOL ||x||;
    # under the coherence condition the minimiser is unique and well conditioned, so the
    # codes agree within BP_RESIDUAL_RTOL relative to the codes' scale.
    bp, bp_scaled = basis_pursuit(X, D, nonnegative=nonnegative), basis_pursuit(c * X, D, nonnegative=nonnegative)
    np.testing.assert_allclose(bp_scaled / c, bp, rtol=0, atol=BP_RESIDUAL_RTOL * scale)
    # The LASSO at (c X, c alpha) is the LASSO at (X, alpha) scaled by c; each answer carries
    # a duality gap <= FISTA_TOL times its objective, so the rescaled answer's objective on
    # the original problem is within 2 FISTA_TOL (plus round-off) of the original optimum.
    alpha = 0.05
    lasso_ref = lasso(X, D, alpha, nonnegative=nonnegative, return_info=True)
    lasso_scaled = lasso(c * X, D, c * alpha, nonnegative=nonnegative, return_info=True)
    assert lasso_ref.success and lasso_scaled.success
    Z = lasso_scaled.codes / c
    objective = 0.5 * ((X - Z @ D) ** 2).sum(1) + alpha * np.abs(Z).sum(1)
    np.testing.assert_allclose(objective, lasso_ref.objective, rtol=2 * FISTA_TOL + 64 * EPS64)


@pytest.mark.parametrize("scale", [1e-200, 1e200])
def test_extreme_scales_give_the_scaled_answer_or_an_objective_outside_float64(scale):
    inst = _coherent_instance(3, 32, True)
    reference = omp(inst.X, inst.D, inst.K, return_info=True)
    result = omp(scale * inst.X, inst.D, inst.K, return_info=True)
    # scale X rounds each entry (relative eps); the refit is least squares on the same support
    np.testing.assert_allclose(result.codes / scale, reference.codes, rtol=0, atol=least_squares_atol(inst.D, inst.Z))
    # 0.5 ||r||^2 of data at 1e+-200 is outside float64's range: it rounds to 0 or inf
    # (or stays finite when the residual itself is tiny), never to a wrong finite value.
    assert result.success and np.all((result.objective >= 0) | np.isinf(result.objective))


def test_lasso_refuses_an_alpha_that_vanishes_at_the_data_scale():
    inst = _homotopy_instance(0)
    with pytest.raises(ValueError, match=r"alpha=1e-300 is below 2.2e-308 times max\|X\|"):
        lasso(1e10 * inst.X, inst.D, 1e-300)


def test_lasso_with_an_alpha_above_every_correlation_returns_zeros_at_any_scale():
    inst = _homotopy_instance(0)
    for scale in (1e-300, 1.0):
        result = lasso(scale * inst.X, inst.D, 1e300, return_info=True)
        assert result.success and not result.codes.any()
        # 0.5 ||x||^2 two ways: M-term sums, whose squares may underflow below tiny at 1e-300
        np.testing.assert_allclose(result.objective, 0.5 * ((scale * inst.X) ** 2).sum(1),
                                   rtol=sum_atol(inst.M, 1.0), atol=inst.M * np.finfo(np.float64).tiny)


_D = random_dictionary(6, 3, seed=0)
_X = np.ones((2, 3))
#: Each solver called with (X, D) and its other arguments; K is 2 where it takes one.
_SOLVERS = {
    "basis_pursuit": lambda X, D, **kw: basis_pursuit(X, D, **kw),
    "lasso": lambda X, D, **kw: lasso(X, D, 0.1, **kw),
    "omp": lambda X, D, **kw: omp(X, D, kw.pop("K", 2), **kw),
    "best_subset": lambda X, D, **kw: best_subset(X, D, kw.pop("K", 2), **kw),
}
_BAD_INPUT = [
    ("NaN in X", dict(X=np.where([True, False, False], np.nan, _X)), ValueError, "X contains 2 NaN/inf"),
    ("inf in D", dict(D=np.where(np.arange(3) == 0, np.inf, _D)), ValueError, "D contains 6 NaN/inf"),
    ("1-d X", dict(X=_X[0]), ValueError, r"X\[None, :\]"),
    ("3-d X", dict(X=_X[None]), ValueError, "X must have 2 dimensions"),
    ("empty X", dict(X=_X[:0]), ValueError, "X is empty"),
    ("wrong M", dict(X=np.ones((2, 4))), ValueError, "same M"),
    ("zero atom", dict(D=np.vstack([_D, np.zeros(3)])), ValueError, r"zero rows \[6\]"),
    ("non-unit atoms", dict(D=2 * _D), ValueError, "normalize_atoms"),
    ("strings", dict(X=[["a", "b", "c"]]), TypeError, "real numbers"),
    ("int return_info", dict(return_info=1), TypeError, "return_info must be True or False"),
]


@pytest.mark.parametrize("solver", list(_SOLVERS))
@pytest.mark.parametrize("case, kwargs, error, match", _BAD_INPUT, ids=[c[0] for c in _BAD_INPUT])
def test_every_solver_refuses_bad_input_naming_the_argument(solver, case, kwargs, error, match):
    kwargs = dict(kwargs)
    X, D = kwargs.pop("X", _X), kwargs.pop("D", _D)
    with pytest.raises(error, match=match):
        _SOLVERS[solver](X, D, **kwargs)


@pytest.mark.parametrize("solver", ["omp", "best_subset"])
@pytest.mark.parametrize("K, error, match", [(0, ValueError, "1 <= K <= N=6"), (7, ValueError, "1 <= K <= N=6"),
                                             (4, ValueError, "K <= 3"), (2.5, TypeError, "K must be an int"),
                                             (True, TypeError, "K must be an int")])
def test_sparse_solvers_refuse_K_out_of_range(solver, K, error, match):
    with pytest.raises(error, match=match):
        _SOLVERS[solver](_X, _D, K=K)


@pytest.mark.parametrize("solver", ["basis_pursuit", "lasso", "best_subset"])
def test_solvers_refuse_a_truthy_string_for_nonnegative(solver):
    with pytest.raises(TypeError, match="nonnegative must be True or False"):
        _SOLVERS[solver](_X, _D, nonnegative="no")


def test_basis_pursuit_refuses_an_unknown_cvxpy_solver():
    with pytest.raises(ValueError, match="solver='NOPE' is not an installed cvxpy solver"):
        basis_pursuit(_X, _D, solver="NOPE")


@pytest.mark.parametrize("solver", list(_SOLVERS))
@pytest.mark.parametrize("convert", [np.asarray, lambda a: a.tolist(), torch.tensor,
                                     lambda a: a.astype(np.float16), lambda a: np.round(8 * a).astype(np.int64)],
                         ids=["ndarray", "list", "torch", "float16", "int"])
def test_every_solver_converts_lists_tensors_float16_and_ints_exactly(solver, convert):
    inst = _coherent_instance(1, 32, True)
    X = convert(inst.X)
    # float16 and int inputs are converted to float64 exactly; the answer must be the one
    # for that float64 array, bit for bit (same arithmetic).
    exact = np.asarray(torch.as_tensor(X).double() if torch.is_tensor(X) else np.asarray(X, dtype=np.float64))
    np.testing.assert_array_equal(_SOLVERS[solver](X, inst.D), _SOLVERS[solver](exact, inst.D))


def test_best_subset_gives_near_ties_to_the_first_support():
    # atom 2 fits x exactly; atom 0 leaves a residual of 1e-12 ||x||^2, resolved in float64 but
    # inside the tie tolerance: the two count as tied, and the first support wins.
    D = np.array([[1.0, 0.0], [0.0, 1.0], [1.0, 1e-6]])
    D /= np.linalg.norm(D, axis=1, keepdims=True)
    X = 2.0 * D[2:3]
    result = best_subset(X, D, 1, return_info=True)
    np.testing.assert_array_equal(result.codes != 0, [[True, False, False]])
    assert result.objective[0] <= best_subset_module.BEST_SUBSET_TIE_RTOL * (X ** 2).sum()


def test_duplicated_atoms_change_no_optimal_value():
    inst = _coherent_instance(2, 32, True)
    D2 = np.vstack([inst.D, inst.D[:3]])
    # Splitting a code between two copies of an atom keeps its l1 norm, and repeating an
    # atom leaves every least-squares fit unchanged: the optimal values are those without.
    bp = basis_pursuit(inst.X, D2, nonnegative=True, return_info=True)
    np.testing.assert_allclose(bp.objective, np.abs(inst.Z).sum(1), rtol=BP_RESIDUAL_RTOL)
    la = lasso(inst.X, D2, 0.05, nonnegative=True, return_info=True)
    la_ref = lasso(inst.X, inst.D, 0.05, nonnegative=True, return_info=True)
    # both certified within FISTA_TOL of their (equal) optimum
    np.testing.assert_allclose(la.objective, la_ref.objective, rtol=2 * FISTA_TOL)
    small = make_instance(8, 6, 2, 5, seed=0)
    D3 = np.vstack([small.D, small.D[:2]])
    # A support using a copy ties, up to round-off, with the same support on the original
    # (which comes first), and ties go to the first: the copies are never chosen. The codes
    # are the same 2 x 2 solve, so they agree to a few ulps times the Gram's condition number.
    l0, l0_ref = best_subset(small.X, D3, 2), best_subset(small.X, small.D, 2)
    np.testing.assert_array_equal(l0 != 0, np.hstack([l0_ref != 0, np.zeros((5, 2), bool)]))
    condition = max(np.linalg.cond(small.D[row != 0] @ small.D[row != 0].T) for row in l0_ref)
    np.testing.assert_allclose(l0[:, :8], l0_ref, rtol=8 * condition * np.finfo(float).eps)


# ----- compiled CPU kernels, direct form, SPAMS ------------------------------------------------


@settings(max_examples=150, deadline=None)
@given(dtype=st.sampled_from([np.float32, np.float64]), n=st.integers(1, 200), data=st.data())
def test_compiled_argmax_abs_is_numpys_first_largest_magnitude(dtype, n, data):
    # integer comparison of the bit patterns must order |c| as floats do, subnormals, -0 and
    # ties included, and pick the first of equal magnitudes (the OMP selection rule)
    from gaptheory.solvers import _kernels

    info = np.finfo(dtype)
    values = st.one_of(st.floats(-float(info.max), float(info.max), width=info.bits),
                       st.sampled_from([0.0, -0.0, float(info.tiny), -float(info.smallest_subnormal), 1.0, -1.0]))
    c = np.array(data.draw(st.lists(values, min_size=n, max_size=n)), dtype=dtype)
    expected = int(np.argmax(np.abs(c))) if np.abs(c).max() > 0 else -1
    assert _kernels._argmax_abs(c) == expected


@pytest.mark.parametrize("dtype", ["float32", "float64"])
def test_compiled_kernels_give_the_batched_paths_supports_and_codes(monkeypatch, dtype):
    inst = make_instance(96, 40, 5, 64, seed=21, nonnegative=True, magnitudes=(0.5, 1.5))
    kernel_omp = omp(inst.X, inst.D, 5, dtype=dtype, device="cpu", return_info=True)
    kernel_lasso = lasso(inst.X, inst.D, 0.02, nonnegative=True, dtype=dtype, device="cpu", return_info=True)
    monkeypatch.setattr(omp_module, "USE_KERNELS", False)
    monkeypatch.setattr(lasso_module, "USE_KERNELS", False)
    torch_omp = omp(inst.X, inst.D, 5, dtype=dtype, device="cpu", return_info=True)
    torch_lasso = lasso(inst.X, inst.D, 0.02, nonnegative=True, dtype=dtype, device="cpu", return_info=True)
    assert "compiled float64 LARS path" in kernel_lasso.message and "compiled" not in torch_lasso.message
    np.testing.assert_array_equal(kernel_omp.codes != 0, torch_omp.codes != 0)
    # both finish in float64 on the same support: codes differ by a K x K solve's round-off
    np.testing.assert_allclose(kernel_omp.codes, torch_omp.codes, rtol=0,
                               atol=least_squares_atol(inst.D, torch_omp.codes))
    np.testing.assert_array_equal(kernel_lasso.codes != 0, torch_lasso.codes != 0)
    np.testing.assert_allclose(kernel_lasso.codes, torch_lasso.codes, rtol=0,
                               atol=least_squares_atol(inst.D, torch_lasso.codes))
    assert kernel_lasso.success and (kernel_lasso.duality_gap <= FISTA_TOL * kernel_lasso.objective).all()


def test_omp_switches_to_direct_form_when_the_gram_matrix_is_over_budget():
    inst = make_instance(80, 30, 4, 40, seed=22, nonnegative=True, magnitudes=(0.5, 1.5))
    gram = omp(inst.X, inst.D, 4, device="cpu", return_info=True)
    budget = 80 * 80 * 8 - 1  # one byte short of the float64 Gram matrix
    direct = omp(inst.X, inst.D, 4, device="cpu", max_gram_bytes=budget, return_info=True)
    as_float32 = omp(inst.X, inst.D, 4, dtype="float32", device="cpu", max_gram_bytes=budget, return_info=True)
    assert (gram.form, direct.form, as_float32.form) == ("gram", "direct", "gram")  # float32 G is half the size
    np.testing.assert_array_equal(direct.codes != 0, gram.codes != 0)
    np.testing.assert_allclose(direct.codes, gram.codes, rtol=0, atol=least_squares_atol(inst.D, gram.codes))
    with pytest.raises(ValueError, match="max_gram_bytes"):
        omp(inst.X, inst.D, 4, max_gram_bytes=-1)


def test_omp_takes_the_direct_form_when_the_gram_matrix_costs_more_than_the_rows(monkeypatch):
    inst = make_instance(80, 30, 4, 6, seed=23, nonnegative=True, magnitudes=(0.5, 1.5))
    # N = 80 > B K = 24: forming G (N^2 M) costs more than the direct form's rows (B K N M),
    # once that cost is above the floor
    assert omp(inst.X, inst.D, 4, device="cpu", return_info=True).form == "gram"  # below the floor
    monkeypatch.setattr(omp_module, "GRAM_COST_FLOOR", 80 * 80 * 30)
    auto = omp(inst.X, inst.D, 4, device="cpu", return_info=True)
    gram = omp(inst.X, inst.D, 4, device="cpu", form="gram", return_info=True)
    assert (auto.form, gram.form) == ("direct", "gram")
    np.testing.assert_array_equal(auto.codes != 0, gram.codes != 0)
    np.testing.assert_allclose(auto.codes, gram.codes, rtol=0, atol=least_squares_atol(inst.D, gram.codes))
    many_rows = make_instance(80, 30, 4, 40, seed=23, nonnegative=True, magnitudes=(0.5, 1.5))
    assert omp(many_rows.X, many_rows.D, 4, device="cpu", return_info=True).form == "gram"  # B K = 160 >= N
    with pytest.raises(ValueError, match="form='gram'.*max_gram_bytes"):
        omp(inst.X, inst.D, 4, form="gram", max_gram_bytes=80 * 80 * 8 - 1)
    with pytest.raises(ValueError, match="form"):
        omp(inst.X, inst.D, 4, form="sparse")


@pytest.mark.parametrize("form", ["gram", "direct"])
def test_lasso_and_omp_equal_spams_lars_and_batch_omp(monkeypatch, form):
    spams = pytest.importorskip("spams")
    if form == "direct":  # the Gram matrix one byte over budget: both solvers take the direct form
        monkeypatch.setattr(homotopy, "GRAM_MEMORY_BUDGET", 120 * 120 * 8 - 1)
    from sklearn.linear_model import orthogonal_mp

    inst = make_instance(120, 48, 5, 50, seed=23, nonnegative=True, magnitudes=(0.5, 1.5))
    Xf, Df = np.asfortranarray(inst.X.T), np.asfortranarray(inst.D.T)
    theirs_lasso = spams.lasso(Xf, Df, lambda1=0.02, mode=2, pos=True, numThreads=1).toarray().T
    theirs_omp = spams.omp(Xf, Df, L=5, numThreads=1).toarray().T

    def objective(Z):
        residual = inst.X - Z @ inst.D
        return 0.5 * (residual * residual).sum(1) + 0.02 * np.abs(Z).sum(1)

    greedy = orthogonal_mp(inst.D.T, inst.X.T, n_nonzero_coefs=5).T  # plain OMP (scikit-learn)
    for dtype in ("float32", "float64"):
        ours = lasso(inst.X, inst.D, 0.02, nonnegative=True, dtype=dtype, device="cpu", return_info=True)
        assert ours.form == form
        # both are exact on the final support: the objectives differ by the finish's round-off
        np.testing.assert_allclose(objective(ours.codes), objective(theirs_lasso), rtol=AGREEMENT_RTOL)
        support = omp(inst.X, inst.D, 5, dtype=dtype, device="cpu", form=form) != 0
        np.testing.assert_array_equal(support, greedy != 0)
        # SPAMS departs from plain OMP where two choices are close: on this instance 2 rows
        # of 50 (one of them follows the order-recursive rule, correlation over the norm of
        # the atom's part orthogonal to the atoms selected); every other row is identical.
        assert np.all(support == (theirs_omp != 0), axis=1).sum() >= 48
