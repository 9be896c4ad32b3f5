r"""The results of the amortisation-gap LPs: the minimax encoder and the per-latent outcome.

:class:`MinimaxEncoder` is the ReLU encoder ``relu(X @ W_enc + b_enc)`` the T3 LP returns;
:class:`GapResult` holds :math:`\varepsilon^*_i` per latent with its encoder, certificates and
solver status, and runs the exact certificate checks (:mod:`gaptheory.gap.verification`) on
demand. ``ENCODER_ATOL`` is the agreement of the LP value with the encoder's exact error.

References
----------
.. [1] ``proofs/T3_exact_lp.md``.
"""

from __future__ import annotations

import functools
from dataclasses import dataclass, field

import numpy as np

from ..solvers import Status
from .errors import _activation
from .parallel import _check_jobs, _map_blocks
from .verification import _check_block


#: The encoder returned by the LP may exceed the LP value by at most this when evaluated
#: exactly on the code set; HiGHS's simplex meets its 1e-7 primal feasibility tolerance
#: (in practice ~1e-12 at the final basis), scaled by |u| <= ~10.
ENCODER_ATOL = 1e-7


@dataclass(frozen=True)
class MinimaxEncoder:
    """The ReLU encoder ``relu(X @ W_enc + b_enc)`` found by the LP.

    Attributes
    ----------
    W_enc : ndarray of shape (M, N)
    b_enc : ndarray of shape (N,)
    """

    W_enc: np.ndarray = field(repr=False)
    b_enc: np.ndarray = field(repr=False)

    def encode(self, X) -> np.ndarray:
        """Map observations (B, M) to codes (B, N)."""
        return np.maximum(np.asarray(X, dtype=np.float64) @ self.W_enc + self.b_enc, 0.0)


@dataclass(frozen=True)
class JumpReLUEncoder:
    r"""The JumpReLU encoder :math:`f(X W_{enc} + b_{enc})`, :math:`f(t) = t\,[t > \theta]`
    (SAELens ``jumprelu``; Rajamanoharan et al. 2024, arXiv 2407.14435), for exact evaluation
    with :func:`~gaptheory.gap.worst_case_error` and :func:`~gaptheory.gap.code_set_error`.

    Attributes
    ----------
    W_enc : ndarray of shape (M, N)
    b_enc : ndarray of shape (N,)
    threshold : ndarray of shape (N,), nonnegative

    Examples
    --------
    >>> JumpReLUEncoder(np.eye(2), np.zeros(2), np.array([0.5, 0.5])).encode([[0.4, 0.6]]).tolist()
    [[0.0, 0.6]]
    """

    W_enc: np.ndarray = field(repr=False)
    b_enc: np.ndarray = field(repr=False)
    threshold: np.ndarray = field(repr=False)

    def encode(self, X) -> np.ndarray:
        """Map observations (B, M) to codes (B, N)."""
        return _activation(np.asarray(X, dtype=np.float64) @ self.W_enc + self.b_enc, self.threshold)


@dataclass(frozen=True)
class GapResult:
    """Outcome of :func:`relu_minimax_gap` / :func:`relu_minimax_gap_codes`.

    Attributes
    ----------
    eps : ndarray of shape (N,)
        Optimal worst-case error per latent (NaN for latents not solved).
    encoder : MinimaxEncoder
        Columns of latents not solved are zero.
    certificates : tuple of GapCertificate
        One per solved latent.
    status : ndarray of shape (N,)
        :class:`~gaptheory.solvers.Status` per latent.
    lp_exact : ndarray of shape (N,) of bool
        True where eps is below the smallest positive label (``lo``), so the LP's
        linearisation of the ReLU is exact (``proofs/T3_exact_lp.md``). Elsewhere the LP value
        is only an upper bound; with ``exact_above_lo`` (the default) eps there is the root
        of T3 section 3e instead, and :attr:`exact` says where it is proven.
    k : int or None
    magnitudes : (float, float) or None
    method : str
    seconds : float
    message : str
    D : ndarray of shape (N, M) or None
        The dictionary solved for (kept to check the certificates).
    codes : ndarray of shape (B, N) or None
        The explicit code set (:func:`relu_minimax_gap_codes`), None for box sets.

    The exact checks run on first access of :attr:`checks`, :attr:`certified_lower` or
    :attr:`exact` (fractions of a second per latent at M <= 256, a few seconds at M = 512), or in
    parallel with :meth:`verify`.
    """

    eps: np.ndarray
    encoder: MinimaxEncoder
    certificates: tuple = field(repr=False)
    status: np.ndarray = field(repr=False)
    lp_exact: np.ndarray = field(repr=False)
    k: int | None
    magnitudes: tuple | None
    method: str
    seconds: float
    message: str
    D: np.ndarray | None = field(default=None, repr=False, compare=False)
    codes: np.ndarray | None = field(default=None, repr=False, compare=False)

    @property
    def worst(self) -> float:
        """max_i eps*_i, the worst-case error of the best encoder over all latents."""
        return float(np.nanmax(self.eps))

    @property
    def success(self) -> bool:
        """True when every solved latent ended with ``Status.OPTIMAL``."""
        return bool((self.status == Status.OPTIMAL).all())

    @functools.cached_property
    def checks(self) -> tuple:
        """:func:`verify_certificate` of each latent's certificate (None where there is none)."""
        return self._run_checks(1, None)

    def verify(self, *, n_jobs: int = 1, executor=None) -> tuple:
        """Run the exact checks of :attr:`checks` now, in ``n_jobs`` processes or on ``executor``
        (as in :func:`relu_minimax_gap`), and keep them; returns :attr:`checks`."""
        if "checks" not in self.__dict__:  # the functools.cached_property slot of `checks`
            self.__dict__["checks"] = self._run_checks(_check_jobs(n_jobs), executor)
        return self.checks

    def _run_checks(self, n_jobs: int, executor) -> tuple:
        checks = [None] * len(self.eps)
        if self.D is None:
            return tuple(checks)
        found = _map_blocks(_check_block, self.D, self.certificates, (self.k, self.magnitudes, self.codes), n_jobs, executor)
        for certificate, check in zip(self.certificates, found):
            checks[certificate.latent] = check
        return tuple(checks)

    @property
    def certified_lower(self) -> np.ndarray:
        """(N,) exactly certified lower bound on eps*_i: the certificate's, and at least 0 (trivially)."""
        lower = np.full(len(self.eps), -np.inf)
        solved = np.isfinite(self.eps)
        lower[solved] = 0.0  # every error is >= 0
        for i, check in enumerate(self.checks):
            if check is not None and check.valid:
                lower[i] = max(lower[i], check.lower_bound)
        return lower

    @property
    def tolerance(self) -> float:
        """Agreement required between eps and its certified lower bound: ``ENCODER_ATOL`` times
        the largest code magnitude (the LP is solved at that scale, where HiGHS's absolute
        tolerances act)."""
        scale = float(np.abs(self.codes).max()) if self.codes is not None and self.codes.size else (
            float(self.magnitudes[1]) if self.magnitudes else 1.0)
        return ENCODER_ATOL * scale

    @property
    def exact(self) -> np.ndarray:
        """(N,) True where eps*_i = eps_i is proven: status OPTIMAL (the returned encoder's exact
        worst-case error is at most eps_i + ``ENCODER_ATOL``) and the exact rational certificate's
        lower bound within :attr:`tolerance` of eps_i (see :func:`verify_certificate`). This holds
        also where the linearisation is not exact (``lp_exact`` False, eps_i >= lo): the two
        bounds meet whatever the LP value means there."""
        with np.errstate(invalid="ignore"):
            close = np.abs(self.eps - self.certified_lower) <= self.tolerance
        return (self.status == Status.OPTIMAL) & np.isfinite(self.eps) & close


def _check_latents(latents, n_latents: int) -> np.ndarray:
    if latents is None:
        return np.arange(n_latents)
    latents = np.unique(np.asarray(latents, dtype=np.int64).ravel())
    if latents.size == 0 or latents.min() < 0 or latents.max() >= n_latents:
        raise ValueError(f"latents must be indices in [0, N={n_latents}); got {latents.tolist()}.")
    return latents
