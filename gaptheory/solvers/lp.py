r"""The exact convex problems: cvxpy basis pursuit and LASSO (compiled once per dictionary),
and the basis-pursuit LP solved by HiGHS directly.

.. math:: \min_z \|z\|_1 \ \text{s.t.}\ z D = x, \qquad
          \min_z \tfrac12 \|x - z D\|_2^2 + \alpha \|z\|_1 \quad (\text{optionally } z \ge 0)
"""

from __future__ import annotations

import dataclasses
import warnings

import numpy as np

from .._validation import check_dictionary, check_observations
from ._inputs import check_flag
from ._scale import row_exponents, scale_rows, unscale_result
from .results import SolveResult, SolverFailedError, Status

#: Basis pursuit answers are re-checked: residual ``||z D - x||`` must be below this times
#: ``||x||``; interior-point solvers reach ~1e-9 relative, so a larger residual is a failure.
BP_RESIDUAL_RTOL = 1e-6


#: scipy.optimize.linprog (HiGHS) status codes -> Status.
_LINPROG_STATUS = {0: Status.OPTIMAL, 1: Status.MAX_ITER, 2: Status.INFEASIBLE, 3: Status.UNBOUNDED, 4: Status.NUMERICAL}


def basis_pursuit_lp(X, D, *, nonnegative: bool = False, unit_norm: bool = True) -> SolveResult:
    r"""Basis pursuit per row as a linear program solved by HiGHS (simplex, exact at vertices).

    .. math:: \hat z = \arg\min_z \|z\|_1 \quad \text{s.t.} \quad z D = x \ (\text{and } z \ge 0)

    Written with :math:`z = z^+ - z^-`, :math:`z^\pm \ge 0` as
    :math:`\min \mathbf 1^\top (z^+ + z^-)` s.t. :math:`(z^+ - z^-) D = x` (nonnegative case:
    :math:`z^- = 0`). This is the one basis-pursuit LP of the package: the T2 constant
    :func:`gaptheory.gap.atom_l1_cost` and the phase-transition checks of
    :mod:`gaptheory.verify` call it.

    Parameters
    ----------
    X : array_like of shape (B, M)
    D : array_like of shape (N, M)
        Rows are the atoms.
    nonnegative : bool
        Add :math:`z \ge 0`.
    unit_norm : bool
        Require unit-norm rows of ``D`` (default). Pass False for a measurement matrix whose
        columns are not normalised (Gaussian ensembles with N(0, 1/M) entries).

    Returns
    -------
    result : SolveResult
        Per row: ``Status.OPTIMAL`` with the codes and :math:`\|z\|_1` as objective,
        ``Status.INFEASIBLE`` (x not in the span, or cone, of the atoms: codes 0, objective
        inf), or another status with NaN codes when HiGHS failed numerically.

    Examples
    --------
    >>> D = np.array([[1.0, 0.0], [0.0, 1.0], [0.6, 0.8]])
    >>> basis_pursuit_lp(np.array([[0.6, 0.8]]), D[:2]).objective.round(9).tolist()
    [1.4]
    """
    import scipy.optimize

    unit_norm = check_flag(unit_norm, "unit_norm")
    D = check_dictionary(D, require_unit_norm=unit_norm)
    X = check_observations(X, D)
    nonnegative = check_flag(nonnegative, "nonnegative")
    # Exact power-of-two rescaling of D (once) and of each row of x: z D = x iff
    # (z 2^(d - e)) (D 2^-d) = x 2^-e, so HiGHS's absolute tolerances act at unit scale.
    d_exponent = int(np.frexp(np.abs(D).max())[1])
    exponent = row_exponents(X)
    X, D = scale_rows(X, exponent), np.ldexp(D, -d_exponent)
    n_samples, n_latents = X.shape[0], D.shape[0]
    A = D.T if nonnegative else np.hstack([D.T, -D.T])  # (M, N) or (M, 2N)
    codes = np.zeros((n_samples, n_latents))
    status = np.zeros(n_samples, dtype=np.int64)
    objective = np.zeros(n_samples)
    n_iter = np.zeros(n_samples, dtype=np.int64)
    messages = []
    for row in range(n_samples):
        res = scipy.optimize.linprog(np.ones(A.shape[1]), A_eq=A, b_eq=X[row], bounds=(0, None), method="highs")
        status[row] = _LINPROG_STATUS.get(res.status, Status.NUMERICAL)
        n_iter[row] = getattr(res, "nit", 0) or 0
        if status[row] == Status.OPTIMAL:
            codes[row] = res.x if nonnegative else res.x[:n_latents] - res.x[n_latents:]
            objective[row] = res.fun
        elif status[row] == Status.INFEASIBLE:
            objective[row] = np.inf
        else:
            codes[row], objective[row] = np.nan, np.nan
            messages.append(f"row {row}: {res.message}")
    bad = int((status != Status.OPTIMAL).sum())
    message = f"all {n_samples} rows solved to optimality by HiGHS" if bad == 0 else (
        f"{bad} of {n_samples} rows not optimal ({int((status == Status.INFEASIBLE).sum())} infeasible)"
        + ("; " + "; ".join(messages) if messages else ""))
    result = SolveResult(codes=codes, status=status, objective=objective, n_iter=n_iter,
                         duality_gap=np.full(n_samples, np.nan), message=message)
    return unscale_result(result, exponent - d_exponent, objective_degree=1)


#: cvxpy status strings -> Status (anything else, e.g. 'optimal_inaccurate', is NUMERICAL).
_CVXPY_STATUS = {"optimal": Status.OPTIMAL, "infeasible": Status.INFEASIBLE, "unbounded": Status.UNBOUNDED,
                 "infeasible_inaccurate": Status.INFEASIBLE, "unbounded_inaccurate": Status.UNBOUNDED,
                 "user_limit": Status.MAX_ITER}


def _default_cvxpy_solver() -> str:
    import cvxpy as cp

    return "CLARABEL" if "CLARABEL" in cp.installed_solvers() else cp.installed_solvers()[0]


class CvxpyProblem:
    """Basis pursuit or LASSO over one dictionary, compiled once by cvxpy.

    The observation ``x`` (and ``alpha``) are cvxpy parameters (DPP form), so cvxpy
    canonicalises the problem once and every further row only updates parameter values.
    :func:`basis_pursuit` and ``lasso(method="cvxpy")`` build one per call; build it yourself
    to solve many batches over the same ``D`` (or to time the solves without the compile).

    Parameters
    ----------
    D : ndarray of shape (N, M)
        Validated dictionary (unit-norm rows).
    kind : {"basis_pursuit", "lasso"}
    nonnegative : bool
        Add :math:`z \\ge 0`.
    """

    def __init__(self, D: np.ndarray, *, kind: str, nonnegative: bool):
        import cvxpy as cp

        n_latents, n_dims = D.shape
        self.z = cp.Variable(n_latents, nonneg=nonnegative)
        self.x = cp.Parameter(n_dims)
        fit = D.T @ self.z  # = z @ D, written for a 1-d variable
        if kind == "basis_pursuit":
            self.alpha = None
            self.problem = cp.Problem(cp.Minimize(cp.norm1(self.z)), [fit == self.x])
        else:
            self.alpha = cp.Parameter(nonneg=True)
            objective = 0.5 * cp.sum_squares(self.x - fit) + self.alpha * cp.norm1(self.z)
            self.problem = cp.Problem(cp.Minimize(objective))
        self.kind = kind

    def _solve_row(self, solver: str, row: int):
        import cvxpy as cp

        try:
            with warnings.catch_warnings():
                # cvxpy warns on 'optimal_inaccurate'; the caller turns that status into a
                # fallback or a ValueError, so the warning would only repeat it.
                warnings.filterwarnings("ignore", message="Solution may be inaccurate")
                self.problem.solve(solver=solver)
        except cp.error.SolverError as err:
            return f"solver error ({err})"
        return self.problem.status

    def solve_rows(self, X: np.ndarray, alpha: float | None, solver: str | None) -> SolveResult:
        """Solve every row of the validated ``X`` (B, M); ``alpha`` is None for basis pursuit."""
        import cvxpy as cp

        # Basis pursuit is an LP: when the default interior-point solver cannot certify a
        # row (it stops at 'optimal_inaccurate' on some degenerate LPs), simplex (HiGHS)
        # solves the same LP exactly. A solver the caller names is never replaced.
        fallback = None
        if solver is None and self.alpha is None and "HIGHS" in cp.installed_solvers():
            fallback = "HIGHS"
        if solver is not None and str(solver).upper() not in cp.installed_solvers():
            raise ValueError(f"solver={solver!r} is not an installed cvxpy solver; choose one of "
                             f"{sorted(cp.installed_solvers())} or pass solver=None.")
        solver = solver or _default_cvxpy_solver()
        if self.alpha is not None:
            self.alpha.value = alpha
        n_samples = X.shape[0]
        codes = np.full((n_samples, self.z.shape[0]), np.nan)
        objective = np.full(n_samples, np.nan)
        n_iter = np.zeros(n_samples, dtype=np.int64)
        status = np.full(n_samples, int(Status.OPTIMAL), dtype=np.int64)
        fallback_rows, problems = [], []
        for row in range(n_samples):
            self.x.value = X[row]
            outcome = self._solve_row(solver, row)
            if outcome not in (cp.OPTIMAL, cp.INFEASIBLE, cp.UNBOUNDED) and fallback is not None:
                fallback_rows.append(row)
                outcome = self._solve_row(fallback, row)
            status[row] = _CVXPY_STATUS.get(outcome, Status.NUMERICAL)
            stats = self.problem.solver_stats
            n_iter[row] = stats.num_iters if stats is not None and stats.num_iters is not None else 0
            if status[row] == Status.OPTIMAL:
                codes[row] = self.z.value
                objective[row] = self.problem.value
            else:
                problems.append(f"row {row}: {outcome}")
        if not problems:
            message = f"all {n_samples} rows solved to optimality by cvxpy/{solver}"
        else:
            shown = "; ".join(problems[:5]) + ("; ..." if len(problems) > 5 else "")
            message = (f"{len(problems)} of {n_samples} rows not solved by cvxpy/{solver} ({shown}). Infeasible: x is "
                       f"not z @ D for any {'nonnegative ' if self.z.is_nonneg() else ''}z (use lasso for noisy "
                       "data); otherwise try another solver (solver='SCS' or 'HIGHS')")
        if fallback_rows:
            message += f"; rows {fallback_rows} re-solved exactly by cvxpy/{fallback} after {solver} was inaccurate"
        return SolveResult(codes=codes, status=status, objective=objective, n_iter=n_iter,
                           duality_gap=np.full(n_samples, np.nan), message=message,
                           fallback_rows=tuple(fallback_rows))


def basis_pursuit(X, D, *, nonnegative: bool = False, solver: str | None = None, return_info: bool = False):
    r"""Exact basis pursuit per row with cvxpy.

    .. math:: \hat z = \arg\min_z \|z\|_1 \quad \text{s.t.} \quad z D = x \ (\text{and } z \ge 0)

    Under the coherence condition :math:`K < (1 + 1/\mu)/2` it recovers every K-sparse
    code exactly (Donoho & Elad 2003; Tropp 2004); so does :math:`\delta_{2K} < \sqrt2 - 1`
    (Candes 2008).

    Parameters
    ----------
    X : array_like of shape (B, M)
    D : array_like of shape (N, M), unit-norm rows.
    nonnegative : bool
        Add :math:`z \ge 0` (the SAE setting).
    solver : str, optional
        A cvxpy solver name. Default: Clarabel, and any row it cannot certify
        ('optimal_inaccurate') is re-solved exactly by HiGHS simplex; the
        ``SolveResult.message`` names those rows.
    return_info : bool
        Return a :class:`SolveResult` instead of the codes.

    Returns
    -------
    Z : ndarray of shape (B, N), or SolveResult.

    Each row is solved on ``x 2^-e`` (``2^e`` the power of two just above ``max |x|``, an exact
    rescaling) and its codes multiplied back by ``2^e``, so ``basis_pursuit(c X, D) = c
    basis_pursuit(X, D)`` for any finite scale, and the residual check is relative to
    ``||x||``.

    Raises
    ------
    ValueError, TypeError
        On bad input (the message names the argument).
    SolverFailedError
        When ``return_info=False`` and some row is not solved: infeasible (x outside the
        span, or cone, of the atoms), unbounded, or inaccurate. With ``return_info=True``
        those rows come back with their :class:`Status`, NaN codes, and the message.

    References
    ----------
    .. [1] Chen, Donoho & Saunders (1998), "Atomic decomposition by basis pursuit", SIAM J. Sci. Comput. 20(1).

    Examples
    --------
    >>> D = np.eye(3)
    >>> (basis_pursuit(np.array([[0.0, 2.0, 0.0]]), D).round(6) + 0.0).tolist()
    [[0.0, 2.0, 0.0]]
    """
    D = check_dictionary(D)
    X = check_observations(X, D)
    nonnegative, return_info = check_flag(nonnegative, "nonnegative"), check_flag(return_info, "return_info")
    exponent = row_exponents(X)
    X_s = scale_rows(X, exponent)
    result = CvxpyProblem(D, kind="basis_pursuit", nonnegative=nonnegative).solve_rows(X_s, None, solver)
    # Re-check the answer on the rescaled rows (||x|| in [0.5, sqrt(M))): a residual above
    # BP_RESIDUAL_RTOL * ||x|| means the solver's point does not satisfy z D = x.
    residual = np.linalg.norm(np.nan_to_num(result.codes) @ D - X_s, axis=1)
    off = (result.status == Status.OPTIMAL) & ~(residual <= BP_RESIDUAL_RTOL * np.linalg.norm(X_s, axis=1))
    if off.any():
        status, codes = result.status.copy(), result.codes.copy()
        status[off], codes[off] = Status.NUMERICAL, np.nan
        rows = np.flatnonzero(off).tolist()
        result = dataclasses.replace(result, status=status, codes=codes, message=(
            f"{result.message}; rows {rows[:5]}{'...' if len(rows) > 5 else ''} violate z @ D = x by up to "
            f"{residual[off].max():.3g} relative to ||x|| after the solve (inaccurate): try solver='HIGHS' or 'SCS'"))
    result = unscale_result(result, exponent, objective_degree=1)
    if return_info:
        return result
    if not result.success:
        raise SolverFailedError(f"basis_pursuit: {result.message}. Pass return_info=True for the per-row status.")
    return result.codes
