r"""Theorem T2: a lower bound on the amortisation gap from the l1 cost of each atom.

:func:`atom_l1_cost` is :math:`\beta_i`, the least l1 norm of a representation of atom ``i``
by the others (basis pursuit); :func:`gap_lower_bound` is
:math:`\varepsilon^*_i \ge 1 / (2 (1 + \beta_i))`, with the representation checked by its
round-off residual or re-solved in exact arithmetic.

References
----------
.. [1] ``proofs/T2_lower_bound.md``.
"""

from __future__ import annotations

import math
from fractions import Fraction

import numpy as np

from .. import certificates
from .._validation import check_bool, check_dictionary
from ..bounds import t2_bound
from ..solvers import SolverFailedError, Status, basis_pursuit_lp
from .parallel import _check_jobs, _map_blocks
from .results import _check_latents


def atom_l1_cost(D) -> np.ndarray:
    r"""Per atom, the least l1 norm of a representation by the other atoms (a basis-pursuit LP).

    .. math:: \beta_i = \min \{\|c\|_1 : c D_{-i} = d_i\} \quad (+\infty \text{ if impossible})

    Solved by :func:`gaptheory.solvers.lp.basis_pursuit_lp` (HiGHS).

    Parameters
    ----------
    D : array_like of shape (N, M), N >= 2

    Returns
    -------
    beta : ndarray of shape (N,)

    Examples
    --------
    >>> atom_l1_cost(np.array([[1.0, 0.0], [0.0, 1.0], [0.6, 0.8]])).round(9).tolist()
    [3.0, 2.0, 1.4]
    >>> atom_l1_cost(np.eye(2)).tolist()
    [inf, inf]
    """
    D = check_dictionary(D)
    n_latents = D.shape[0]
    if n_latents < 2:
        raise ValueError("atom_l1_cost needs N >= 2 atoms (atom i written with the others); got N=1.")
    return np.array([_representation(D, i)[1] for i in range(n_latents)])


def _representation(D: np.ndarray, i: int):
    """HiGHS's basis-pursuit representation ``c`` of atom ``i`` by the others and its l1 norm (None, inf if infeasible)."""
    result = basis_pursuit_lp(D[i][None, :], np.delete(D, i, axis=0))
    if result.status[0] not in (Status.OPTIMAL, Status.INFEASIBLE):
        raise SolverFailedError(f"basis pursuit for atom {i} failed: {result.message}")
    if result.status[0] == Status.INFEASIBLE:
        return None, math.inf
    return result.codes[0], float(result.objective[0])


def _gamma(n: int) -> float:
    r"""Higham's :math:`\gamma_n = n u / (1 - n u)`, the round-off of an n-term dot product."""
    return n * certificates.UNIT_ROUNDOFF / (1 - n * certificates.UNIT_ROUNDOFF)


def gap_lower_bound(D, *, exact: bool = False, latents=None, n_jobs: int = 1, executor=None) -> np.ndarray:
    r"""T2: every ReLU encoder errs on latent ``i`` by at least :math:`1 / (2(1 + \beta_i))`.

    Valid for every code set containing 0, e_i, e_j and e_i + e_j for all j != i (binary
    codes with K >= 2). 0 where atom ``i`` is not in the span of the others.

    HiGHS's representation :math:`c` (:math:`c D_{-i} = d_i`, :math:`\|c\|_1 = \beta_i`) is
    checked by its residual, not trusted: it is accepted when
    :math:`\|\mathrm{fl}(c D_{-i}) - d_i\|_\infty \le 2\gamma_{n+1}(1 + \|c\|_1)` (round-off of
    the n-term products, n the support size, Higham's :math:`\gamma_n = nu/(1 - nu)`).
    Otherwise (and for every atom when ``exact=True``) :math:`c` is re-solved exactly over the
    rationals on HiGHS's support (``certificates.l1_representation_bound``: solved exactly, or for
    a square support of 64 rows or more proven to exist by an exact enclosure that also bounds its
    norm); an exact ``c`` gives the sound :math:`\beta_i \le \|c\|_1` (rounded up, the bound
    rounded down). If none exists
    there, the bound is 0: the true value when :math:`d_i` is exactly outside the span of the
    others, and a valid (trivial) bound otherwise.

    Parameters
    ----------
    D : array_like of shape (N, M), N >= 2
    exact : bool
        Confirm every :math:`\beta_i` in exact arithmetic (a rigorous bound; an M x M exact
        solve per atom below M = 64, ~0.1 s at M = 128 beyond it, by the enclosure).
    latents : sequence of int, optional
        Bound only these atoms (default all); the others are NaN.
    n_jobs, executor
        Worker processes, or an executor with ``submit`` (e.g. a ``dask.distributed.Client``),
        for the atoms' independent basis pursuits and exact checks, as in
        :func:`gaptheory.gap.relu_minimax_gap`; the result does not depend on them.

    Returns
    -------
    bound : ndarray of shape (N,)

    References
    ----------
    .. [1] ``proofs/T2_lower_bound.md``.

    Examples
    --------
    >>> gap_lower_bound(np.array([[1.0, 0.0], [0.0, 1.0], [0.6, 0.8]])).round(6).tolist()
    [0.125, 0.166667, 0.208333]
    >>> from gaptheory.instances import normalize_atoms
    >>> gap_lower_bound(normalize_atoms([[1.0, 0.0], [1.0, 1e-7]])).tolist()  # invertible: eps* = 0
    [0.0, 0.0]
    """
    D = check_dictionary(D)
    exact = check_bool(exact, "exact")
    if D.shape[0] < 2:
        raise ValueError("gap_lower_bound needs N >= 2 atoms (atom i written with the others); got N=1.")
    latents = _check_latents(latents, D.shape[0])
    n_jobs = _check_jobs(n_jobs)
    if executor is not None and n_jobs != 1:
        raise ValueError(f"give n_jobs (local processes) or executor (its own workers), not both; got n_jobs={n_jobs}.")
    bound = np.full(D.shape[0], np.nan)
    bound[latents] = _map_blocks(_bound_block, D, latents, (exact,), n_jobs, executor)
    return bound


def _bound_block(D: np.ndarray, latents: list, exact: bool) -> list:
    """The T2 bound of each atom of ``latents`` (see :func:`gap_lower_bound`)."""
    bounds = []
    for i in latents:
        bounds.append(0.0)
        c, beta = _representation(D, i)
        if c is None:
            continue
        others = np.delete(D, i, axis=0)
        support = np.flatnonzero(c)
        residual = float(np.abs(c[support] @ others[support] - D[i]).max())
        if not exact and residual <= 2 * _gamma(support.size + 1) * (1 + beta):
            bounds[-1] = t2_bound([beta])[0]
            continue
        norm = certificates.l1_representation_bound(others, D[i], support)
        if norm is not None:
            beta = certificates.ceil_float(norm)
            bounds[-1] = certificates.floor_float(1 / (2 * (1 + Fraction(beta))))
    return bounds
