r"""Binary codes: latent i's gap LP in basis-pursuit form, solved by a dense simplex.

For binary codes (every nonzero equal to 1) the compact LP of latent ``i`` is, with
:math:`u = D w` and :math:`b` eliminated (``proofs/T3_exact_lp.md`` section 3f),

.. math:: 2\varepsilon^* = \min_w \max\big(1 - u_i + S_K(u_{-i}^+) + S_{K-1}(u_{-i}^-),\
          S_{K-1}(u_{-i}^+) + S_{K-1}(u_{-i}^-)\big).

Replacing each top-k sum by k times the largest entry, :math:`S_k(v^+) \le k \max(0, v)`,
gives an upper bound :math:`\varepsilon_\infty \ge \varepsilon^*` whose LP dual is a
basis pursuit with one extra row: with :math:`t^*` the value of

.. math:: \min_{\mu^\pm \ge 0,\ t} t \quad \text{s.t.} \quad
          \textstyle\sum_{j \ne i} (\mu^+_j - \mu^-_j)\, d_j = d_i,\quad
          \mathbf{1}^\top\mu^+ \le 1 + t,\quad \mathbf{1}^\top\mu^- \le t,

:math:`\varepsilon_\infty = \min(1/2, (K - 1) / (2 t^*))`. It has M + 2 rows and 2N + 1
columns, against the compact LP's ~4N rows and columns: :func:`dense_simplex` solves it
from a feasible basis on M atoms chosen by pivoted QR, weighted by the least-squares
representation of :math:`d_i`. Its solution is also a dual point of the compact LP when
the weight it puts on each atom fits that LP's per-atom cap (the top-K sums' duals lie in
capped simplices, :func:`binary_latent`); then :math:`\varepsilon_\infty = \varepsilon^*`
and the certificate proves it. Elsewhere (an atom that needs more weight, as near-copies
of :math:`d_i` do) it returns None and the caller solves the compact LP.

References
----------
.. [1] ``proofs/T3_exact_lp.md``, section 3f.
.. [2] Chen, Donoho & Saunders (1998), SIAM J. Sci. Comput. 20(1) (basis pursuit as an LP).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import scipy.linalg

from .dense_simplex import dense_simplex

#: A dual weight may exceed its cap by this much (round-off) before the basis-pursuit
#: solution is refused as a certificate of the compact LP.
CAP_TOL = 1e-9
#: Atoms whose weight is below this (relative to the largest) do not count as carrying d_i.
DEGENERATE_TOL = 1e-9


@dataclass(frozen=True)
class BinaryLatent:
    r"""Latent ``i``'s solution at unit magnitude, in the compact LP's terms.

    Attributes
    ----------
    eps : float
        :math:`\varepsilon^*_i`.
    w : ndarray of shape (M,)
    b : float
    row_duals : ndarray of shape (3,)
        Weights of the zero, lower and upper rows (``_compact_rows`` order), summing to 1.
    inner_duals : ndarray of shape (3, N - 1)
        The top-K sums' dual weights per other atom (ascending index), each row within its
        cap: ``0 <= inner_duals[r] <= row_duals[r]``, ``sum <= k_r row_duals[r]``.
    n_iter : int
        Simplex steps.
    """

    eps: float
    w: np.ndarray
    b: float
    row_duals: np.ndarray
    inner_duals: np.ndarray
    n_iter: int


def basis_pursuit_form(D: np.ndarray, i: int):
    r"""The LP of the module docstring in standard form, ``min c x`` s.t. ``A x = rhs``, ``x >= 0``.

    Columns: :math:`\mu^+` (N - 1), :math:`\mu^-` (N - 1), ``t``, two slacks. Rows: the M
    coordinates of :math:`\sum (\mu^+_j - \mu^-_j) d_j = d_i`, then the two norm rows.
    """
    n_latents, n_dims = D.shape
    others = np.delete(np.arange(n_latents), i)
    n = len(others)
    A = np.zeros((n_dims + 2, 2 * n + 3))
    A[:n_dims, :n] = D[others].T
    A[:n_dims, n:2 * n] = -D[others].T
    A[n_dims, :n] = 1.0
    A[n_dims + 1, n:2 * n] = 1.0
    A[n_dims:, 2 * n] = -1.0
    A[n_dims, 2 * n + 1] = A[n_dims + 1, 2 * n + 2] = 1.0
    c = np.zeros(2 * n + 3)
    c[2 * n] = 1.0
    return A, np.r_[D[i], 1.0, 0.0], c


def _starting_basis(D: np.ndarray, i: int, weights: np.ndarray) -> np.ndarray | None:
    """A feasible basis: M atoms by QR with column pivoting on ``|weights_j| d_j`` (large and
    independent first, among the 2M largest weights where they have rank M), each as its plus
    or minus column by the sign of its coefficient, then ``t`` and the slack of the norm row
    that is not binding."""
    n_latents, n_dims = D.shape
    others = np.delete(np.arange(n_latents), i)
    n = len(others)
    if n < n_dims:
        return None
    weighted = D[others].T * np.abs(weights[others])
    # the QR on the 2M largest weights first (4x cheaper at N = 8M), on all if they are rank-deficient
    candidates = np.sort(np.argsort(-np.abs(weights[others]), kind="stable")[:2 * n_dims])
    _, R, order = scipy.linalg.qr(weighted[:, candidates], pivoting=True, mode="economic")
    if R.shape[1] >= n_dims and abs(R[n_dims - 1, n_dims - 1]) > 1e-8 * abs(R[0, 0]):
        atoms = np.sort(candidates[order[:n_dims]])
    else:
        _, _, order = scipy.linalg.qr(weighted, pivoting=True, mode="economic")
        atoms = np.sort(order[:n_dims])
    try:
        coefficients = np.linalg.solve(D[others[atoms]].T, D[i])
    except np.linalg.LinAlgError:
        return None
    plus, minus = coefficients[coefficients > 0].sum(), -coefficients[coefficients < 0].sum()
    slack = 2 * n + 2 if plus - 1 >= minus else 2 * n + 1
    return np.r_[np.where(coefficients >= 0, atoms, n + atoms), 2 * n, slack]


def _split_positive_weights(weights: np.ndarray, y: np.ndarray, k: int, inner: np.ndarray) -> bool:
    r"""Share :math:`\lambda^+` between the zero row (cap ``y[0]`` per atom, ``k y[0]`` in all)
    and the upper row (``y[2]``, ``(k - 1) y[2]``) into ``inner[0]`` and ``inner[2]``: whole
    atoms to the zero row, largest first, until its total is reached, the rest to the upper
    row: at most one atom is in both, and the certificate has about as many codes as a vertex
    of the compact LP's dual. False if an atom does not fit."""
    room = [k * y[0], (k - 1) * y[2]]
    caps = [y[0] * (1 + CAP_TOL), y[2] * (1 + CAP_TOL)]
    # ||lambda^+||_1 equals the total room at the optimum (both norm rows bind), so what is left
    # at the end may be round-off: dropped if below CAP_TOL of the total (the exact check re-fits)
    slack = CAP_TOL * weights.sum()
    for j in np.argsort(-weights, kind="stable"):
        left = weights[j]
        if left <= 0:
            break
        for side, row in ((0, 0), (1, 2)):
            share = min(left, caps[side], max(room[side], 0.0))
            inner[row, j], left, room[side] = share, left - share, room[side] - share
        if left > slack:
            return False
        slack -= left
    # a share at round-off level (the boundary atom of a row filled to round-off) would be a
    # code of negligible weight, which the exact check cannot tell from noise: it moves over
    for j in np.flatnonzero((inner[0] > 0) & (inner[2] > 0)):
        small = 0 if inner[0, j] < inner[2, j] else 2
        if inner[small, j] <= CAP_TOL * weights.sum():
            inner[2 - small, j] += inner[small, j]
            inner[small, j] = 0.0
    return True


def binary_latent(D: np.ndarray, i: int, k: int, weights: np.ndarray) -> BinaryLatent | None:
    r"""Latent ``i``'s :math:`\varepsilon^*` for binary codes with at most ``k >= 2`` nonzeros.

    From the basis-pursuit solution :math:`(\mu, t^*)` and its duals
    :math:`(\tilde w, -\alpha, -\beta)` (:math:`u_j = d_j \cdot \tilde w \in [-\beta, \alpha]`,
    :math:`\alpha + \beta = 1`, :math:`d_i \cdot \tilde w = t^* + \alpha`):
    :math:`\varepsilon = \min(1/2, (K-1)/(2t^*))`; the encoder :math:`w = \tilde w / t^*`,
    :math:`b = \varepsilon - K\alpha/t^*` (the constant 1/2 when :math:`\varepsilon = 1/2`);
    the compact LP's dual: row weights :math:`(\varepsilon, 1/2, 1/2 - \varepsilon)`, the lower
    row's inner weights :math:`\lambda^- = \varepsilon\mu^-` and
    :math:`\lambda^+ = \varepsilon\mu^+` shared between the zero and upper rows
    (:func:`_split_positive_weights`; they fit in all since
    :math:`\|\lambda^+\|_1 \le K\varepsilon + (K-1)(1/2 - \varepsilon)`). None when the
    simplex fails, an inner weight exceeds its cap (then :math:`\varepsilon^*` may be below
    :math:`\varepsilon_\infty`), or fewer than M atoms carry the optimum (a degenerate vertex).

    Parameters
    ----------
    D : ndarray of shape (N, M)
    i : int
    k : int
        K >= 2.
    weights : ndarray of shape (N,)
        Any representation of :math:`d_i` by the atoms (e.g. ``D pinv(D) e_i``); it orders the
        atoms of the starting basis.
    """
    n_dims = D.shape[1]
    A, rhs, c = basis_pursuit_form(D, i)
    basis = _starting_basis(D, i, weights)
    # t <= K - 1 already means eps* = 1/2 (the constant encoder): stop at the first such point,
    # and solve to the optimum only if that point's weights do not fit the caps
    for target in (k - 1.0, -np.inf):
        outcome = dense_simplex(A, rhs, c, basis=basis, target=target)
        if outcome.status not in ("optimal", "target"):
            return None
        found = _from_basis_pursuit(outcome, k, n_dims)
        if found is not None or outcome.status == "optimal":
            return found
    return None


def _from_basis_pursuit(outcome, k: int, n_dims: int) -> BinaryLatent | None:
    """:func:`binary_latent`'s answer from a feasible point of the basis-pursuit form (optimal,
    or with ``t <= K - 1``); None if its weights exceed the caps."""
    n = (len(outcome.x) - 3) // 2
    mu_plus, mu_minus, t = outcome.x[:n], outcome.x[n:2 * n], outcome.x[2 * n]
    w_direction, alpha = outcome.duals[:n_dims], -outcome.duals[n_dims]
    eps = 0.5 if t <= (k - 1) else (k - 1) / (2.0 * t)
    # A degenerate vertex (fewer than M atoms carry weight: repeated atoms, d_i carried by a few)
    # gives a certificate whose exact check may settle on weaker weights than HiGHS's vertex.
    carried = np.abs(mu_plus + mu_minus) > DEGENERATE_TOL * max(1.0, float(np.abs(mu_plus + mu_minus).max()))
    if eps < 0.5 and carried.sum() < n_dims:
        return None
    y = np.array([eps, 0.5, 0.5 - eps])
    inner = np.zeros((3, n))
    inner[1] = eps * mu_minus
    if not _split_positive_weights(eps * mu_plus, y, k, inner) or inner[1].max(initial=0.0) > y[1] * (1 + CAP_TOL):
        return None
    if eps == 0.5:
        w, b = np.zeros(n_dims), 0.5
    else:
        w, b = w_direction / t, eps - k * alpha / t
    return BinaryLatent(eps=eps, w=w, b=float(b), row_duals=y, inner_duals=inner, n_iter=outcome.n_iter)
