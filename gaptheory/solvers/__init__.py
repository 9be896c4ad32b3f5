r"""Per-sample sparse inference: exact (cvxpy) ground truth and fast batched torch solvers.

Every solver takes observations ``X`` of shape (B, M) and a dictionary ``D`` of shape
(N, M) with unit-norm rows, and returns codes ``Z`` of shape (B, N) with ``Z @ D ~ X``.
With ``return_info=True`` it returns a :class:`SolveResult` instead, carrying the
per-row status, objective, iterations and duality gap.

Problems
--------
basis pursuit  : :math:`\min_z \|z\|_1 \ \text{s.t.}\ z D = x` (optionally :math:`z \ge 0`)
LASSO          : :math:`\min_z \tfrac12 \|x - z D\|_2^2 + \alpha \|z\|_1` (optionally :math:`z \ge 0`)
OMP            : greedy K-sparse least squares (Pati, Rezaiifar & Krishnaprasad 1993).
best subset    : :math:`\min_z \|x - z D\|_2 \ \text{s.t.}\ \|z\|_0 \le K` (optionally :math:`z \ge 0`),
                 solved exactly by enumerating supports: the L0 ground truth at small N.

Scaling against scikit-learn: ``sklearn.linear_model.Lasso`` solves, per target,
:math:`\tfrac{1}{2 n_\text{samples}}\|y - A w\|^2 + \alpha_\text{sk}\|w\|_1`, where our
design matrix is :math:`A = D^\top` (M x N) so ``n_samples = M``; hence
:math:`\alpha_\text{sk} = \alpha / M`. Fit it with ``fit_intercept=False``.
"""

from .best_subset import BEST_SUBSET_BLOCK, BEST_SUBSET_DEPENDENT_RTOL, BEST_SUBSET_TIE_RTOL, best_subset, count_supports
from .fista import FISTA_CHECK_EVERY, FISTA_MAX_ITER, FISTA_TOL
from .homotopy import (
    HOMOTOPY_BLOCK,
    HOMOTOPY_EVENT_EPS,
    HOMOTOPY_INITIAL_SLOTS,
    HOMOTOPY_MAX_EVENTS,
    HOMOTOPY_MAX_EVENTS_PER_DIM,
    HOMOTOPY_MIN_EVENTS,
    HOMOTOPY_STRAGGLER_FRACTION,
)
from .lasso import LASSO_METHODS, lasso
from .lp import BP_RESIDUAL_RTOL, CvxpyProblem, basis_pursuit, basis_pursuit_lp
from .omp import OMP_DEPENDENT_RTOL, OMP_RESIDUAL_RTOL, omp
from .results import ConvergenceWarning, SolveResult, SolverFailedError, Status

__all__ = [
    "BEST_SUBSET_BLOCK", "BEST_SUBSET_DEPENDENT_RTOL", "BEST_SUBSET_TIE_RTOL", "BP_RESIDUAL_RTOL",
    "FISTA_CHECK_EVERY", "FISTA_MAX_ITER", "FISTA_TOL", "HOMOTOPY_BLOCK", "HOMOTOPY_EVENT_EPS",
    "HOMOTOPY_INITIAL_SLOTS", "HOMOTOPY_MAX_EVENTS", "HOMOTOPY_MAX_EVENTS_PER_DIM", "HOMOTOPY_MIN_EVENTS",
    "HOMOTOPY_STRAGGLER_FRACTION", "LASSO_METHODS", "OMP_DEPENDENT_RTOL", "OMP_RESIDUAL_RTOL",
    "ConvergenceWarning", "SolveResult", "SolverFailedError", "Status",
    "CvxpyProblem", "basis_pursuit", "basis_pursuit_lp", "best_subset", "count_supports", "lasso", "omp",
]
