r"""One call that brackets :math:`\varepsilon^*_i` independently: :func:`certify_gap`.

The T3 LP's value, the exact lower bound proven from its certificate, the exact worst-case
error of its encoder and the T2 bound, gathered in a :class:`GapReport`.

References
----------
.. [1] ``proofs/T2_lower_bound.md``, ``proofs/T3_exact_lp.md``.
"""

from __future__ import annotations

from dataclasses import dataclass
from fractions import Fraction

import numpy as np

from .. import certificates
from .._validation import check_dictionary, check_k
from ..instances import _check_magnitudes
from .errors import worst_case_error
from .lower_bound import gap_lower_bound
from .lp import relu_minimax_gap
from .results import GapResult, _check_latents


@dataclass(frozen=True)
class GapProblemSize:
    """The size of a gap problem: a dictionary of ``N`` atoms in R^M and codes with up to ``K`` nonzeros.

    The defaults are the problem that ``gaptheory gap`` certifies unless given others (the
    README's example): twice overcomplete, with K >= 2 so that the T2 bound applies, and
    small enough to certify in seconds.

    Attributes
    ----------
    N : int
        Latents (atoms of D, its rows).
    M : int
        Input dimension (columns of D).
    K : int
        Largest number of nonzeros of a code in the code set.
    """

    N: int = 32
    M: int = 16
    K: int = 3


@dataclass(frozen=True)
class GapReport:
    r"""eps* per latent with everything that certifies it (see :func:`certify_gap`).

    Attributes
    ----------
    result : GapResult
    t2_bound : ndarray of shape (N,)
        T2 lower bound for the codes ``hi * {0, e_i, e_j, e_i + e_j}`` (all in the code set),
        :math:`hi / (2 (1 + \beta_i))`, confirmed in exact arithmetic and rounded down; NaN
        where it does not apply (K = 1) and for latents not certified.
    certified_lower : ndarray of shape (N,)
        Lower bound proven from each certificate in exact rational arithmetic by
        :func:`verify_certificate` (at least 0); ``-inf`` for latents not solved.
    encoder_error : ndarray of shape (N,)
        Worst-case error of the returned encoder (:func:`worst_case_error`).
    certificate_valid : ndarray of shape (N,) of bool
        The exact check passed.
    exact : ndarray of shape (N,) of bool
        ``result.exact``: eps_i is proven optimal (exact lower bound within
        ``result.tolerance`` of eps_i, attained by the encoder).
    """

    result: GapResult
    t2_bound: np.ndarray
    certified_lower: np.ndarray
    encoder_error: np.ndarray
    certificate_valid: np.ndarray
    exact: np.ndarray

    @property
    def passed(self) -> bool:
        """True when every solved eps_i is proven: exact certificate below, encoder above, T2 below,
        all within ``result.tolerance`` (``ENCODER_ATOL`` relative to ``hi``)."""
        solved = np.isfinite(self.result.eps)
        eps, tol = self.result.eps[solved], self.result.tolerance
        t2 = self.t2_bound[solved]
        return bool(
            self.result.success
            and solved.any()
            and self.exact[solved].all()
            and (self.encoder_error[solved] <= eps + tol).all()
            and (np.isnan(t2) | (t2 <= eps + tol)).all()
        )


def certify_gap(D, k: int, *, magnitudes=(1.0, 1.0), latents=None, n_jobs: int = 1,
                working_set: bool | None = None, executor=None, exact_above_lo: bool = True) -> GapReport:
    r"""Solve the T3 LP for every latent and bracket each :math:`\varepsilon^*_i` independently.

    Runs :func:`relu_minimax_gap`, proves a lower bound from each certificate in exact
    rational arithmetic (:func:`verify_certificate`), evaluates the returned encoder on the
    whole code set (:func:`worst_case_error`) and computes the T2 bound, confirmed exactly
    (:func:`gap_lower_bound` with ``exact=True``) and scaled by ``hi``. Every part is
    homogeneous in the codes, so ``certify_gap(D, k, magnitudes=(c lo, c hi))`` reports ``c``
    times the numbers of ``magnitudes=(lo, hi)`` (up to the final rounding) at any float64
    scale ``c``. A latent whose certificate fails the exact
    check (e.g. a ``D`` that is singular only to float64 round-off) is not ``exact`` and the
    report does not pass: its eps is then only the encoder's upper bound.

    Parameters
    ----------
    D : array_like of shape (N, M), unit-norm rows, N >= 2
    k : int
    magnitudes : (float, float)
    n_jobs : int
        Worker processes of :func:`relu_minimax_gap` (-1: one per CPU).
    latents : sequence of int, optional
        Certify only these latents (default all); the others are NaN / ``-inf`` in the report.
    working_set, executor, exact_above_lo
        As in :func:`relu_minimax_gap`; ``n_jobs`` and ``executor`` also run the exact checks
        (:meth:`GapResult.verify`) and the T2 bounds (:func:`gap_lower_bound`).

    Returns
    -------
    report : GapReport

    Examples
    --------
    >>> from gaptheory.instances import random_dictionary
    >>> certify_gap(random_dictionary(8, 4, seed=0), 2).passed
    True
    """
    D = check_dictionary(D)
    k = check_k(k, D.shape[0])
    lo, hi = _check_magnitudes(magnitudes)
    latents = _check_latents(latents, D.shape[0])
    result = relu_minimax_gap(D, k, magnitudes=(lo, hi), latents=latents, n_jobs=n_jobs, working_set=working_set,
                              executor=executor, exact_above_lo=exact_above_lo)
    result.verify(n_jobs=n_jobs, executor=executor)
    valid = np.array([check is not None and check.valid for check in result.checks], dtype=bool)
    if k >= 2 and D.shape[0] >= 2:
        # S holds hi * {0, e_i, e_j, e_i + e_j} and eps* is homogeneous in the codes, so T2 holds
        # scaled by hi; the product is rounded down so the bound stays proven.
        t2 = np.array([certificates.floor_float(Fraction(hi) * Fraction(float(v))) if np.isfinite(v) else np.nan
                       for v in gap_lower_bound(D, exact=True, latents=latents, n_jobs=n_jobs, executor=executor)])
    else:
        t2 = np.full(D.shape[0], np.nan)
    return GapReport(
        result=result, t2_bound=t2, certified_lower=result.certified_lower,
        encoder_error=worst_case_error(result.encoder, D, k, magnitudes=(lo, hi), _checked=True),
        certificate_valid=valid, exact=result.exact,
    )
