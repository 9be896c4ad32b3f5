"""Result types shared by every solver: per-row status codes, the batched result, and the
warning and exception that report a numerical failure (never a ``ValueError``)."""

from __future__ import annotations

from dataclasses import dataclass
from enum import IntEnum

import numpy as np


#: Largest Gram matrix ``D D^T`` (bytes, N^2 times the item size) that OMP and the LASSO
#: form; above it they run in direct form, taking the Gram rows they need from ``D`` (OMP:
#: one GEMM of the selected atoms against ``D`` per step; the LASSO's compiled path: one row
#: per entering atom), and say so in ``SolveResult.form``. 2^30 bytes: N = 16384 fits in
#: float32 (1 GiB) but not in float64 (2 GiB).
GRAM_MEMORY_BUDGET = 2**30


class Status(IntEnum):
    """How the solve of one row ended (scipy-style integer codes)."""

    OPTIMAL = 0
    MAX_ITER = 1
    INFEASIBLE = 2
    UNBOUNDED = 3
    NUMERICAL = 4


class ConvergenceWarning(UserWarning):
    """A batched solver stopped at ``max_iter`` on some rows."""



class SolverFailedError(RuntimeError):
    """A solve failed numerically (infeasible, unbounded or inaccurate rows) and the caller
    asked only for the codes; pass ``return_info=True`` to get the per-row status instead."""


@dataclass(frozen=True)
class SolveResult:
    """Outcome of a batched solve.

    Attributes
    ----------
    codes : ndarray of shape (B, N)
        The inferred codes ``Z``.
    status : ndarray of shape (B,)
        :class:`Status` values, one per row.
    objective : ndarray of shape (B,)
        Objective value at ``codes`` for each row.
    n_iter : ndarray of shape (B,)
        Iterations used per row (OMP: atoms selected).
    duality_gap : ndarray of shape (B,)
        Primal minus a feasible dual value (an upper bound on suboptimality); NaN
        where the solver provides none.
    message : str
        Outcome in words and, if something went wrong, what to change.
    fallback_rows : tuple of int
        Rows that the first solver could not certify and a fallback solved (cvxpy basis
        pursuit: re-solved by HiGHS simplex); empty when none.
    form : str
        How the batched LASSO and OMP used the dictionary: ``"gram"`` (the N x N Gram matrix
        ``D D^T`` formed once), ``"direct"`` (correlations from ``D`` itself, for a Gram matrix
        over the memory budget); empty for the other solvers.
    """

    codes: np.ndarray
    status: np.ndarray
    objective: np.ndarray
    n_iter: np.ndarray
    duality_gap: np.ndarray
    message: str
    fallback_rows: tuple = ()
    form: str = ""

    @property
    def converged(self) -> np.ndarray:
        """Boolean (B,): rows that ended with ``Status.OPTIMAL``."""
        return self.status == Status.OPTIMAL

    @property
    def success(self) -> bool:
        """True when every row converged."""
        return bool(self.converged.all())



def status_message(status: np.ndarray, hint: str) -> str:
    """The outcome of a batched solve in words: how many rows did not converge and why."""
    bad = int((status != Status.OPTIMAL).sum())
    if bad == 0:
        return f"all {len(status)} rows converged"
    counts = {Status(s).name: int((status == s).sum()) for s in np.unique(status) if s != Status.OPTIMAL}
    return f"{bad} of {len(status)} rows did not converge ({counts}); {hint}"
