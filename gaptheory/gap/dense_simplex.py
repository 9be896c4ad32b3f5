r"""A dense revised simplex method for LPs with few rows: :math:`\min c^\top x` s.t. :math:`Ax = b`, :math:`x \ge 0`.

Sparse LP codes (HiGHS) spend about a millisecond per simplex iteration on the dense
dictionary blocks of the gap LPs; with an explicit inverse of the m x m basis, every
iteration here is matrix-vector products and a rank-one update, O(m^2) plus the pricing. It
is meant for the binary-code gap LP of :func:`gaptheory.gap.relu_minimax_gap` (m = M + 2
rows), whose answers are checked afterwards (the encoder's exact error, the certificate in
exact arithmetic), so a failure here costs time only: the caller falls back to HiGHS.

Two phases (artificial variables, then the true costs; or phase two from a given feasible
basis), Dantzig's rule over partial pricing blocks, the ratio test choosing among near-ties
the largest pivot, Bland's rule after a run of degenerate steps, and a fresh inverse
(``numpy.linalg.inv`` of the basis) every ``REFACTOR_EVERY`` steps and before optimality or
a target is declared. The iterations are compiled (numba).

References
----------
.. [1] Dantzig, Orden & Wolfe (1955), Pacific J. Math. 5(2) (the revised simplex method).
.. [2] Bland (1977), Math. Oper. Res. 2(2) (a finite pivoting rule).
.. [3] Chvatal (1983), *Linear Programming*, chapters 7-8 (two phases, the revised method).
"""

from __future__ import annotations

from dataclasses import dataclass

import numba
import numpy as np


#: Optimality: a reduced cost below ``-REDUCED_COST_TOL`` (relative to max |c|, at least 1) enters.
REDUCED_COST_TOL = 1e-10
#: Ratio test: entries of the pivot column at most this (relative to its largest) are not pivots.
PIVOT_TOL = 1e-9
#: Primal feasibility: a basic value above ``-FEASIBILITY_TOL * (1 + max |b|)`` counts as >= 0.
FEASIBILITY_TOL = 1e-9
#: Steps between fresh basis inverses (the rank-one updates accumulate round-off).
REFACTOR_EVERY = 200
#: Degenerate steps in a row after which Bland's rule (lowest index) is used until progress.
STALL_STEPS = 30
#: Partial pricing: each step prices blocks of this many columns per row (from where the last
#: step stopped) until one improves, instead of all n; all are priced before optimality.
PRICING_BLOCK_PER_ROW = 0.5


@dataclass(frozen=True)
class SimplexResult:
    """Outcome of :func:`dense_simplex`.

    Attributes
    ----------
    status : str
        ``"optimal"``, ``"target"`` (a feasible point at or below ``target``), ``"infeasible"``,
        ``"unbounded"``, ``"iteration_limit"`` or ``"singular"``.
    x : ndarray of shape (n,)
    duals : ndarray of shape (m,)
        :math:`\\pi = B^{-\\top} c_B` for the original rows (signs as given).
    basis : ndarray of shape (m,) of int
        Basic columns (indices >= n are artificials of redundant rows).
    n_iter : int
    """

    status: str
    x: np.ndarray
    duals: np.ndarray
    basis: np.ndarray
    n_iter: int


def dense_simplex(A, b, c, *, max_iter: int | None = None, basis=None, target: float = -np.inf) -> SimplexResult:
    r"""Solve :math:`\min c^\top x` s.t. :math:`Ax = b`, :math:`x \ge 0` with a dense basis inverse.

    Parameters
    ----------
    A : ndarray of shape (m, n)
    b : ndarray of shape (m,)
    c : ndarray of shape (n,)
    max_iter : int, optional
        Simplex steps in both phases together (default ``20 (m + n)``).
    basis : sequence of int, optional
        m columns of a primal feasible basis to start phase two from (no phase one); ignored
        (two phases) if it is singular or infeasible.
    target : float
        Stop at the first basic feasible point with :math:`c^\top x \le` ``target``
        (status ``"target"``): enough where only the sign of the optimum against a threshold
        matters. Default: solve to optimality.

    Returns
    -------
    SimplexResult
    """
    A = np.array(A, dtype=np.float64)
    b = np.array(b, dtype=np.float64)
    c = np.asarray(c, dtype=np.float64)
    m, n = A.shape
    if b.shape != (m,) or c.shape != (n,):
        raise ValueError(f"dense_simplex needs A (m, n), b (m,), c (n,); got {A.shape}, {b.shape}, {c.shape}.")
    row_sign = np.where(b < 0, -1.0, 1.0)
    A *= row_sign[:, None]
    b *= row_sign
    max_iter = 20 * (m + n) if max_iter is None else max_iter
    state = _State(A, b, m, n)
    if basis is not None:
        state.basis = np.array(basis, dtype=np.int64)
        if state.refactor() and np.all(state.x_basic >= -FEASIBILITY_TOL * (1 + np.abs(b).max())):
            steps = state.run(np.concatenate([c, np.zeros(m)]), max_iter, target)
            return state.result(row_sign, steps)
        state = _State(A, b, m, n)
    steps = state.run(np.concatenate([np.zeros(n), np.ones(m)]), max_iter)
    if state.status != "optimal":
        return state.result(row_sign, steps)
    if state.x_basic[state.basis >= n].sum() > FEASIBILITY_TOL * (1 + np.abs(b).max()) * m:
        state.status = "infeasible"
        return state.result(row_sign, steps)
    state.drive_out_artificials()
    steps += state.run(np.concatenate([c, np.zeros(m)]), max_iter - steps, target)
    return state.result(row_sign, steps)


_STATUS = ("optimal", "unbounded", "iteration_limit", "singular", "target")


class _State:
    """Basis, its inverse and the basic values of one :func:`dense_simplex` run (the
    iterations run in the compiled :func:`_iterate`)."""

    def __init__(self, A, b, m, n):
        self.columns, self.b, self.m, self.n = np.ascontiguousarray(A.T), b, m, n  # columns[j] = A[:, j]
        self.basis = np.arange(n, n + m)
        self.inverse = np.eye(m)
        self.x_basic = b.copy()
        self.status = "optimal"
        self.duals = np.zeros(m)

    def refactor(self) -> bool:
        try:
            return bool(_refactor(self.columns, self.b, self.basis, self.inverse, self.x_basic))
        except np.linalg.LinAlgError:  # numba's inv raises on an exactly singular basis
            return False

    def run(self, cost, max_iter, target=-np.inf) -> int:
        """Simplex steps on ``cost`` (artificials never enter) until optimal or at ``target``;
        returns the steps."""
        tol = REDUCED_COST_TOL * max(1.0, float(np.abs(cost).max()))
        feasibility = FEASIBILITY_TOL * (1 + float(np.abs(self.b).max()))
        try:
            code, steps = _iterate(self.columns, self.b, np.ascontiguousarray(cost), self.basis, self.inverse,
                                   self.x_basic, self.duals, max_iter, tol, feasibility, REFACTOR_EVERY,
                                   STALL_STEPS, PIVOT_TOL, float(target),
                                   max(1, int(PRICING_BLOCK_PER_ROW * self.m)))
        except np.linalg.LinAlgError:
            code, steps = 3, max_iter
        self.status = _STATUS[code]
        return int(steps)

    def drive_out_artificials(self):
        """Pivot basic artificials (at level 0 after phase one) out where a real column allows."""
        for leaving in np.flatnonzero(self.basis >= self.n):
            row = self.columns @ self.inverse[leaving]
            row[self.basis[self.basis < self.n]] = 0.0
            entering = int(np.argmax(np.abs(row)))
            if abs(row[entering]) > 1e-9:
                _pivot(self.inverse, self.x_basic, self.basis, leaving, entering,
                       self.inverse @ self.columns[entering], 0.0)
        self.refactor()

    def result(self, row_sign, steps) -> SimplexResult:
        x = np.zeros(self.n)
        real = self.basis < self.n
        x[self.basis[real]] = np.maximum(self.x_basic[real], 0.0)
        return SimplexResult(status=self.status, x=x, duals=self.duals * row_sign, basis=self.basis.copy(),
                             n_iter=int(steps))


@numba.njit(cache=True, nogil=True)
def _refactor(columns, b, basis, inverse, x_basic):
    """``inverse = B^-1`` and ``x_basic = B^-1 b`` for the basis (artificial j >= n: unit
    column j - n); False if the inverse is not finite."""
    n, m = columns.shape
    B = np.zeros((m, m))
    for k in range(m):
        j = basis[k]
        if j < n:
            B[:, k] = columns[j]
        else:
            B[j - n, k] = 1.0
    fresh = np.linalg.inv(B)
    if not np.all(np.isfinite(fresh)):
        return False
    inverse[:, :] = fresh
    x_basic[:] = fresh @ b
    return True


@numba.njit(cache=True, nogil=True)
def _price(cost, basis, inverse, duals):
    """``duals = B^-T c_B``."""
    cost_basic = np.empty(basis.shape[0])
    for k in range(basis.shape[0]):
        cost_basic[k] = cost[basis[k]]
    duals[:] = inverse.T @ cost_basic


@numba.njit(cache=True, nogil=True)
def _refactor_and_price(columns, b, cost, basis, inverse, x_basic, duals):
    """:func:`_refactor`, then :func:`_price` on the fresh inverse."""
    if not _refactor(columns, b, basis, inverse, x_basic):
        return False
    _price(cost, basis, inverse, duals)
    return True


@numba.njit(cache=True, nogil=True)
def _basic_value(cost, basis, x_basic):
    """``c_B . max(x_B, 0)``: the objective at the basic point."""
    value = 0.0
    for k in range(basis.shape[0]):
        value += cost[basis[k]] * max(x_basic[k], 0.0)
    return value


@numba.njit(cache=True, nogil=True)
def _pivot(inverse, x_basic, basis, leaving, entering, direction, theta):
    """Column ``entering`` replaces the basic ``leaving``: a rank-one update of the inverse."""
    m = inverse.shape[0]
    for r in range(m):
        x_basic[r] -= theta * direction[r]
    x_basic[leaving] = theta
    pivot_row = inverse[leaving] / direction[leaving]
    for r in range(m):
        f = direction[r]
        if f != 0.0:
            row = inverse[r]
            for c in range(m):
                row[c] -= f * pivot_row[c]
    inverse[leaving] = pivot_row
    basis[leaving] = entering


@numba.njit(cache=True, nogil=True)
def _iterate(columns, b, cost, basis, inverse, x_basic, duals, max_iter, tol, feasibility, refactor_every,
             stall_steps, pivot_tol, target, pricing_block):
    """Primal simplex steps (Dantzig's rule; Bland's after ``stall_steps`` degenerate ones) on
    ``cost`` until optimal or ``c_B x_B <= target``; ``duals`` is kept equal to ``B^-T c_B``.
    Returns (status code of ``_STATUS``, steps)."""
    n, m = columns.shape
    _price(cost, basis, inverse, duals)
    is_basic = np.zeros(n + m, dtype=np.bool_)
    for k in range(m):
        is_basic[basis[k]] = True
    stalled, since_refactor, cursor = 0, 0, 0
    for step in range(max_iter + 1):
        if target > -np.inf and _basic_value(cost, basis, x_basic) <= target:
            if since_refactor > 0:  # confirm on a fresh inverse
                if not _refactor_and_price(columns, b, cost, basis, inverse, x_basic, duals):
                    return 3, step
                since_refactor = 0
            if np.all(x_basic >= -feasibility) and _basic_value(cost, basis, x_basic) <= target:
                return 4, step
        # partial pricing: blocks of columns from a rotating cursor until one improves
        # (Bland, after a stall: every column from the first, the first improving one)
        entering, best_reduced, scanned = -1, -tol, 0
        if stalled >= stall_steps:
            cursor = 0
        while scanned < n and entering < 0:
            stop = min(n, cursor + (n if stalled >= stall_steps else pricing_block))
            prices = columns[cursor:stop] @ duals
            for j in range(cursor, stop):
                if is_basic[j]:
                    continue
                r = cost[j] - prices[j - cursor]
                if r < best_reduced:
                    entering, best_reduced = j, r
                    if stalled >= stall_steps:
                        break
            scanned += stop - cursor
            cursor = stop if stop < n else 0
        if entering < 0:
            if since_refactor == 0:
                return (0 if np.all(x_basic >= -feasibility) else 3), step
            if not _refactor_and_price(columns, b, cost, basis, inverse, x_basic, duals):  # confirm, fresh
                return 3, step
            since_refactor = 0
            continue
        if step == max_iter:
            return 2, step
        direction = inverse @ columns[entering]
        largest = 0.0
        for r in range(m):
            largest = max(largest, abs(direction[r]))
        limit = pivot_tol * max(largest, 1e-300)
        best = np.inf
        for r in range(m):
            if direction[r] > limit:
                best = min(best, max(x_basic[r], 0.0) / direction[r])
        if best == np.inf:
            return 1, step
        leaving = -1
        for r in range(m):  # among near-ties: the largest pivot (Bland: the lowest basic index)
            if direction[r] > limit and max(x_basic[r], 0.0) / direction[r] <= best + 1e-12 * (1.0 + best):
                if leaving < 0:
                    leaving = r
                elif stalled >= stall_steps:
                    if basis[r] < basis[leaving]:
                        leaving = r
                elif direction[r] > direction[leaving]:
                    leaving = r
        theta = max(x_basic[leaving], 0.0) / direction[leaving]
        stalled = stalled + 1 if theta <= 1e-14 else 0
        # pi' = pi + (r_q / d_p) (row p of the old inverse): the new basis prices q at 0
        scale = best_reduced / direction[leaving]
        for c in range(m):
            duals[c] += scale * inverse[leaving, c]
        is_basic[basis[leaving]] = False
        is_basic[entering] = True
        _pivot(inverse, x_basic, basis, leaving, entering, direction, theta)
        since_refactor += 1
        if since_refactor >= refactor_every:
            if not _refactor_and_price(columns, b, cost, basis, inverse, x_basic, duals):
                return 3, step
            since_refactor = 0
    return 2, max_iter
