r"""The amortisation gap, computed exactly: the best ReLU encoder for a code set, and a lower bound.

For a dictionary ``D`` (N, M) and a set ``S`` of nonnegative codes, the best encoder
:math:`f(x) = \mathrm{relu}(x W_{enc} + b_{enc})` in the worst case over ``S`` is

.. math:: \varepsilon^*_i = \min_{w \in \mathbb{R}^M,\, b \in \mathbb{R}}\ \max_{z \in S}
          \big|\mathrm{relu}(w \cdot (z D) + b) - z_i\big|, \qquad i = 1, \dots, N,

one problem per latent (column ``i`` of ``W_enc`` and entry ``i`` of ``b_enc``). For
codes with at most ``K`` nonzeros, each in ``{0} U [lo, hi]`` (``lo = hi = 1``: binary
codes), :func:`relu_minimax_gap` solves it as ONE linear program of size O(N + M) per
latent, without enumerating supports (theorem T3, ``proofs/T3_exact_lp.md``): with
:math:`u = D w`, the worst support is the K largest :math:`u_j`, and the sum of the K
largest entries is an LP (:math:`S_K(v) = \min_{s \ge 0} K s + \sum_j (v_j - s)_+`).
:func:`relu_minimax_gap_codes` solves the same problem for an explicit finite code set,
one constraint per code (the enumeration LP). :func:`gap_lower_bound` is theorem T2,
:math:`\varepsilon^*_i \ge 1 / (2 (1 + \beta_i))`.

Every solve returns a :class:`GapCertificate` per latent: binding codes with
nonnegative weights, read off the LP duals. :func:`verify_certificate` re-derives from
them, by weak duality and without the solver, a lower bound on :math:`\varepsilon^*_i`;
:func:`worst_case_error` evaluates the returned encoder exactly on the whole code set
(closed form, no enumeration). Together they bracket the optimum independently.
"""

from __future__ import annotations

import dataclasses
import functools
import itertools
import math
import os
import time
from dataclasses import dataclass, field
from fractions import Fraction

import numpy as np
import scipy.optimize
import scipy.sparse

from .. import certificates
from .._validation import check_array, check_choice, check_codes, check_bool, check_dictionary, check_int, check_k
from ..bounds import t2_bound
from ..instances import _check_magnitudes
from ..solvers import SolverFailedError, Status, basis_pursuit_lp

#: The encoder returned by the LP may exceed the LP value by at most this when evaluated
#: exactly on the code set; HiGHS's simplex meets its 1e-7 primal feasibility tolerance
#: (in practice ~1e-12 at the final basis), scaled by |u| <= ~10.
ENCODER_ATOL = 1e-7

#: Dual weights (and support fractions) below this are solver noise, dropped from certificates.
DUAL_ZERO = 1e-12

#: HiGHS options for the gap LPs: dual feasibility tightened from the 1e-7 default so the
#: duals that become certificates pick exactly the binding supports (at 1e-7, spikes+DCT
#: dictionaries with N = 256 gave certificates off by ~5e-9); at no measurable cost,
#: whereas a 1e-10 primal tolerance costs ~40% more time and is not needed.
HIGHS_OPTIONS = {"dual_feasibility_tolerance": 1e-10}

#: Largest explicit code set :func:`relu_minimax_gap_codes` builds by enumeration: each
#: code is a dense row of M + 2 entries in every latent's LP.
MAX_ENUMERATED_CODES = 50_000

GAP_METHODS = ("highs", "cvxpy")

#: The working set of :func:`relu_minimax_gap` starts with this many other latents per input
#: dimension: the optimum has about M + 1 binding ones, so 1.5 M usually needs no second round.
WORKING_SET_START = 1.5

#: ``working_set=None`` uses constraint generation when N is at least this many times M (below,
#: the working set is most of the latents and the rounds cost more than they save).
WORKING_SET_MIN_RATIO = 4

#: Tasks a ``relu_minimax_gap(..., executor=...)`` call is split into (blocks of latents).
EXECUTOR_TASKS = 256

#: Constraint kinds in a certificate: a zero-labelled code (upper bound ``<= eps``), and the
#: lower / upper sides for a code whose latent ``i`` is active (``>= v - eps`` / ``<= v + eps``).
KIND_ZERO, KIND_LOWER, KIND_UPPER = 0, 1, 2
_SIGN = np.array([-1.0, 1.0, -1.0])  # sign of each kind in the weak-duality combination


# ----- results ---------------------------------------------------------------------------


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
class GapCertificate:
    r"""Weak-duality certificate that :math:`\varepsilon^*_i` is at least a value.

    For each code ``codes[r]`` with label :math:`v = z_i` and kind ``kinds[r]`` every
    encoder with worst error :math:`\varepsilon < \min v` satisfies, with
    :math:`t = w \cdot (z D) + b`: ``KIND_ZERO`` :math:`t \le \varepsilon`,
    ``KIND_LOWER`` :math:`t \ge v - \varepsilon`, ``KIND_UPPER`` :math:`t \le v + \varepsilon`.
    If the weights balance (:math:`\sum_r \sigma_r y_r z_r D = 0`, :math:`\sum_r \sigma_r y_r = 0`,
    :math:`\sum_r y_r = 1`, signs :math:`\sigma` +1 for lower, -1 otherwise), summing the
    inequalities gives :math:`\varepsilon \ge \sum_{lower} y_r v_r - \sum_{upper} y_r v_r`.

    Attributes
    ----------
    latent : int
    codes : ndarray of shape (m, N)
    kinds : ndarray of shape (m,)
    weights : ndarray of shape (m,)
    """

    latent: int
    codes: np.ndarray = field(repr=False)
    kinds: np.ndarray = field(repr=False)
    weights: np.ndarray = field(repr=False)


@dataclass(frozen=True)
class CertificateCheck:
    """Outcome of :func:`verify_certificate`.

    Attributes
    ----------
    lower_bound : float
        Certified lower bound on eps*_i, the largest float64 not above the exact bound
        (``-inf`` when the certificate is invalid).
    residual : float
        Relative violation of the dual equalities by the float re-fit of the weights (a
        diagnostic; validity is decided exactly).
    valid : bool
        True only when exact rational weights were found (see :func:`verify_certificate`).
    reason : str
    exact_bound : Fraction or None
        The certified bound as an exact rational.
    exact_weights : tuple of Fraction or None
        Exact weights on the certificate's codes (or on :attr:`codes`) satisfying the dual
        equalities exactly.
    codes, kinds : ndarray or None
        The codes and kinds the exact weights belong to when they are not the certificate's:
        its codes with positive float weight, then the codes added to cancel round-off.
    """

    lower_bound: float
    residual: float
    valid: bool
    reason: str
    exact_bound: Fraction | None = field(default=None, repr=False)
    exact_weights: tuple | None = field(default=None, repr=False)
    codes: np.ndarray | None = field(default=None, repr=False)
    kinds: np.ndarray | None = field(default=None, repr=False)


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
        linearisation of the ReLU is exact (``proofs/T3_exact_lp.md``); elsewhere eps is only
        an upper bound on the optimum.
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
    :attr:`exact` (fractions of a second per latent at M <= 128, seconds at M >= 256), or in
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


# ----- validation ------------------------------------------------------------------------


def _check_latents(latents, n_latents: int) -> np.ndarray:
    if latents is None:
        return np.arange(n_latents)
    latents = np.unique(np.asarray(latents, dtype=np.int64).ravel())
    if latents.size == 0 or latents.min() < 0 or latents.max() >= n_latents:
        raise ValueError(f"latents must be indices in [0, N={n_latents}); got {latents.tolist()}.")
    return latents


# ----- the compact LP (T3) ---------------------------------------------------------------


@dataclass(frozen=True)
class _Row:
    """One top-level constraint of the compact LP: ``sign_t * (b + v u_i) + hi * S_k(sign_u * u_{-i}) - eps <= rhs``."""

    kind: int
    label: float  # v (0 for the zero-labelled row)
    k: int  # top-k size of the inner sum (0: no inner block)
    inner_sign: float  # +1: S_k(u^+), -1: S_k((-u)^+)


def _compact_rows(k: int, n_latents: int, lo: float, hi: float) -> list[_Row]:
    others = n_latents - 1
    rows = [_Row(KIND_ZERO, 0.0, min(k, others), 1.0)]
    for label in sorted({lo, hi}):
        rows.append(_Row(KIND_LOWER, label, min(k - 1, others), -1.0))
        rows.append(_Row(KIND_UPPER, label, min(k - 1, others), 1.0))
    return rows


def _compact_lp(D: np.ndarray, i: int, rows: list[_Row], hi: float):
    """Assemble ``min eps`` s.t. ``A_ub x <= b_ub``, ``A_eq x = 0`` for latent ``i``.

    Variables: ``[w (M), b, eps, u (N), (s, r (N - 1)) per row with an inner block]`` with
    ``u = D w`` as N equality rows, so each inner row has 3 nonzeros instead of M (HiGHS's
    dual simplex then runs about 1.5x faster than with ``D w`` substituted).
    """
    n_latents, n_dims = D.shape
    others = np.delete(np.arange(n_latents), i)
    n_other = len(others)
    u0 = n_dims + 2  # column of u_0
    blocks = [r for r in rows if r.k > 0]
    n_vars = u0 + n_latents + len(blocks) * (1 + n_other)
    top = np.zeros((len(rows), n_vars))
    rhs_top = np.zeros(len(rows))
    data, row_index, col_index = [], [], []
    offsets, offset, inner_row = [], u0 + n_latents, 0
    local = np.arange(n_other)
    for index, row in enumerate(rows):
        sign = -1.0 if row.kind == KIND_LOWER else 1.0
        top[index, u0 + i] = sign * row.label
        top[index, n_dims] = sign  # b
        top[index, n_dims + 1] = -1.0  # eps
        rhs_top[index] = sign * row.label
        if row.k == 0:
            offsets.append(None)
            continue
        top[index, offset] = row.k  # s
        top[index, offset + 1 : offset + 1 + n_other] = 1.0  # r
        # inner rows: inner_sign * hi * u_j - s - r_j <= 0, j != i
        data += [np.full(n_other, row.inner_sign * hi), -np.ones(n_other), -np.ones(n_other)]
        row_index += [inner_row + local] * 3
        col_index += [u0 + others, np.full(n_other, offset), offset + 1 + local]
        offsets.append(offset)
        offset += 1 + n_other
        inner_row += n_other
    inner = scipy.sparse.csr_matrix(
        (np.concatenate(data or [np.zeros(0)]), (np.concatenate(row_index or [np.zeros(0, int)]),
                                                  np.concatenate(col_index or [np.zeros(0, int)]))),
        shape=(inner_row, n_vars),
    )
    A_ub = scipy.sparse.vstack([scipy.sparse.csr_matrix(top), inner], format="csc")
    b_ub = np.concatenate([rhs_top, np.zeros(inner_row)])
    A_eq = scipy.sparse.hstack(
        [scipy.sparse.csr_matrix(-D), scipy.sparse.csr_matrix((n_latents, 2)), scipy.sparse.identity(n_latents),
         scipy.sparse.csr_matrix((n_latents, n_vars - u0 - n_latents))],
        format="csc",
    )
    c = np.zeros(n_vars)
    c[n_dims + 1] = 1.0
    bounds = [(None, None)] * (u0 + n_latents) + [(0, None)] * (n_vars - u0 - n_latents)
    return c, A_ub, b_ub, A_eq, bounds, offsets, others


def _support_decomposition(x: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
    r"""Write ``x`` in :math:`\{0 \le x \le 1, \sum x \le k\}` as a convex combination of
    0/1 vectors with at most ``k`` ones (systematic sampling on the cumulative sums).

    Returns ``supports`` (P, n) of bool and ``weights`` (P,) summing to 1.
    """
    x = np.clip(x, 0.0, 1.0)
    x[x < DUAL_ZERO] = 0.0
    total = x.sum()
    if total > k:
        x = x * (k / total)
        total = float(k)
    deficit = k - total
    n_dummy = int(math.ceil(deficit - DUAL_ZERO)) if deficit > DUAL_ZERO else 0
    padded = np.concatenate([x, np.full(n_dummy, deficit / n_dummy if n_dummy else 0.0)])
    cumulative = np.concatenate([[0.0], np.cumsum(padded)])
    cumulative[-1] = k  # remove round-off so the k points t + m all fall inside [0, k)
    # Fractional parts rounded to 12 digits, so no sliver interval has a midpoint that
    # rounds onto a cumulative sum; the weights move by <= 1e-12, which verification absorbs.
    fractional = np.mod(np.round(np.mod(cumulative, 1.0), 12), 1.0)
    breaks = np.unique(np.concatenate([[0.0, 1.0], fractional]))
    supports, weights = [], []
    for start, stop in zip(breaks[:-1], breaks[1:]):
        if stop - start <= 0:
            continue
        points = (start + stop) / 2 + np.arange(k)
        chosen = np.searchsorted(cumulative, points, side="right") - 1
        support = np.zeros(len(padded), dtype=bool)
        support[chosen] = True
        supports.append(support[: len(x)])
        weights.append(stop - start)
    return np.array(supports), np.array(weights)


def _certificate_from_duals(i, rows, duals, offsets, others, n_latents, hi) -> GapCertificate:
    codes, kinds, weights = [], [], []
    n_other = len(others)
    for index, row in enumerate(rows):
        y = duals[index]
        if y <= DUAL_ZERO:
            continue
        if row.k > 0:
            start = len(rows) + sum(n_other for o in offsets[:index] if o is not None)
            fractions = duals[start : start + n_other] / y
            supports, thetas = _support_decomposition(fractions, row.k)
        else:
            supports, thetas = np.zeros((1, n_other), dtype=bool), np.ones(1)
        for support, theta in zip(supports, thetas):
            code = np.zeros(n_latents)
            code[others[support]] = hi
            code[i] = row.label
            codes.append(code)
            kinds.append(row.kind)
            weights.append(y * theta)
    return GapCertificate(
        latent=int(i), codes=np.array(codes).reshape(-1, n_latents), kinds=np.array(kinds, dtype=np.int64),
        weights=np.array(weights),
    )


def _solve_highs(c, A_ub, b_ub, bounds, A_eq=None):
    b_eq = None if A_eq is None else np.zeros(A_eq.shape[0])
    return scipy.optimize.linprog(
        c, A_ub=A_ub, b_ub=b_ub, A_eq=A_eq, b_eq=b_eq, bounds=bounds, method="highs", options=HIGHS_OPTIONS
    )


def _solve_latent(D: np.ndarray, i: int, rows: list[_Row], hi: float):
    """Solve latent ``i``'s compact LP; ``(eps, w, b, certificate)`` or None if HiGHS failed."""
    n_latents, n_dims = D.shape
    c, A_ub, b_ub, A_eq, bounds, offsets, others = _compact_lp(D, i, rows, hi)
    res = _solve_highs(c, A_ub, b_ub, bounds, A_eq)
    if res.status != 0:
        return None
    certificate = _certificate_from_duals(i, rows, -res.ineqlin.marginals, offsets, others, n_latents, hi)
    # eps >= 0 is implied (codes e_i bound it from both sides); clip the solver's -1e-17.
    return max(0.0, res.x[n_dims + 1]), res.x[:n_dims], res.x[n_dims], certificate


def _solve_latent_working_set(D: np.ndarray, i: int, k: int, lo: float, hi: float, guess: np.ndarray):
    r"""Latent ``i``'s compact LP by constraint generation over the other latents.

    The LP restricted to codes supported on ``{i} U J`` is the compact LP of ``D[{i} U J]``: a
    relaxation, so its certificate is a valid certificate for the full code set. Its encoder
    is evaluated exactly on the full set (:func:`_latent_error`); the latents ``j`` outside
    ``J`` whose :math:`u_j = d_j \cdot w` would enter a top-K sum (above the K-th largest of
    :math:`u_J^+`, or below minus the (K-1)-th largest of :math:`(-u_J)^+`) are added and the
    LP is solved again, until none is left. At the optimum about M + 1 of the :math:`u_j` sit
    on the two thresholds, so ``J`` ends near ``WORKING_SET_START * M`` entries instead of N - 1.

    ``guess`` (N,) orders the first working set: the :math:`u = D w` of an encoder expected to
    be close (largest :math:`|u_j|` first).
    """
    n_latents, n_dims = D.shape
    others = np.delete(np.arange(n_latents), i)
    size = min(len(others), max(int(WORKING_SET_START * n_dims), k + 1))
    working = np.sort(others[np.argsort(-np.abs(guess[others]), kind="stable")[:size]])
    while True:
        sub = np.r_[i, working]
        outcome = _solve_latent(D[sub], 0, _compact_rows(k, len(sub), lo, hi), hi)
        if outcome is None:
            return None
        eps, w, b, certificate = outcome
        if len(working) == len(others):
            break
        u = D @ w
        rest = np.setdiff1d(others, working, assume_unique=True)
        above = _kth_largest(np.maximum(u[working], 0.0), k)
        below = _kth_largest(np.maximum(-u[working], 0.0), k - 1) if k > 1 else math.inf
        excess = np.maximum(u[rest] - above, -u[rest] - below)
        entering = rest[excess > 0]
        if entering.size == 0 or _latent_error(u, i, b, k, lo, hi) <= eps:
            break
        if entering.size > n_dims // 2:  # the most violating first keeps the LPs small
            entering = rest[np.argsort(-excess, kind="stable")[: max(n_dims // 2, 1)]]
        working = np.union1d(working, entering)
    codes = np.zeros((len(certificate.codes), n_latents))
    codes[:, sub] = certificate.codes
    return eps, w, b, dataclasses.replace(certificate, latent=int(i), codes=codes)


def _kth_largest(values: np.ndarray, count: int) -> float:
    """The ``count``-th largest entry of ``values`` (0 when there are fewer entries)."""
    if count > len(values):
        return 0.0
    return float(np.partition(values, len(values) - count)[len(values) - count])


def _check_jobs(n_jobs) -> int:
    """Worker count: a positive int, or -1 for one per CPU."""
    if n_jobs == -1:
        return os.cpu_count() or 1
    return check_int(n_jobs, "n_jobs", minimum=1)


def _solve_latents(D, latents, k, lo, hi, n_jobs: int, working_set: bool, executor=None) -> list:
    """The LP outcome of every latent, in order (see :func:`_map_blocks`)."""
    return _map_blocks(_solve_block, D, latents, (k, lo, hi, working_set), n_jobs, executor)


def _map_blocks(fn, D, items, args, n_jobs: int, executor=None) -> list:
    """``fn(D, block, *args)`` (a list per block) over contiguous blocks of ``items``, concatenated
    in order: in this process, in ``n_jobs`` processes (one block each), or as ``EXECUTOR_TASKS``
    tasks of ``executor`` (anything with ``submit(fn, *args)`` returning a future; a Dask client
    gets ``D`` scattered to its workers once)."""
    items = list(items)
    if executor is None and min(n_jobs, len(items)) <= 1:
        return fn(D, items, *args)
    if executor is None:
        from concurrent.futures import ProcessPoolExecutor

        with ProcessPoolExecutor(max_workers=min(n_jobs, len(items))) as pool:
            return _gather(pool, fn, D, items, args, min(n_jobs, len(items)))
    # hash=False: a fresh key, so releasing an earlier scatter of the same D cannot cancel these tasks.
    shared = executor.scatter(D, broadcast=True, hash=False) if hasattr(executor, "scatter") else D
    return _gather(executor, fn, shared, items, args, min(EXECUTOR_TASKS, len(items)))


def _gather(executor, fn, D, items, args, tasks: int) -> list:
    futures = [executor.submit(fn, D, [items[j] for j in block], *args)
               for block in np.array_split(np.arange(len(items)), tasks)]
    return [outcome for future in futures for outcome in future.result()]


def _check_block(D: np.ndarray, certificates: list, k, magnitudes, codes) -> list:
    if codes is not None:
        return [verify_certificate(certificate, D, codes=codes) for certificate in certificates]
    return [verify_certificate(certificate, D, k=k, magnitudes=magnitudes) for certificate in certificates]


def _solve_block(D: np.ndarray, latents: list[int], k: int, lo: float, hi: float, working_set: bool) -> list:
    if not working_set:
        rows = _compact_rows(k, D.shape[0], lo, hi)
        return [_solve_latent(D, i, rows, hi) for i in latents]
    # u = D pinv(D) e_i: the least-squares encoder of latent i, whose largest |u_j| start the working set.
    guesses = D @ np.linalg.pinv(D)[:, latents]
    return [_solve_latent_working_set(D, i, k, lo, hi, guesses[:, column]) for column, i in enumerate(latents)]


def _solve_compact_cvxpy(D, i, k, lo, hi, solver):
    """The T3 program written like the maths, with ``cp.sum_largest``; used as a cross-check."""
    import cvxpy as cp

    n_latents, n_dims = D.shape
    w, b, eps = cp.Variable(n_dims), cp.Variable(), cp.Variable()
    u = D @ w
    others = u[np.delete(np.arange(n_latents), i)] if n_latents > 1 else None

    def top(vector, count):  # hi * (sum of the `count` largest positive parts)
        if count <= 0 or vector is None:
            return 0.0
        return hi * cp.sum_largest(cp.pos(vector), min(count, n_latents - 1))

    constraints = [b + top(others, k) <= eps]
    for label in sorted({lo, hi}):
        constraints += [
            b + label * u[i] - top(-others if others is not None else None, k - 1) >= label - eps,
            b + label * u[i] + top(others, k - 1) <= label + eps,
        ]
    problem = cp.Problem(cp.Minimize(eps), constraints)
    problem.solve(solver=solver or "CLARABEL")
    if problem.status != cp.OPTIMAL:
        return math.nan, np.zeros(n_dims), 0.0, Status.NUMERICAL
    return float(eps.value), np.asarray(w.value), float(b.value), Status.OPTIMAL


def relu_minimax_gap(
    D,
    k: int,
    *,
    magnitudes=(1.0, 1.0),
    latents=None,
    method: str = "highs",
    solver: str | None = None,
    n_jobs: int = 1,
    working_set: bool | None = None,
    executor=None,
) -> GapResult:
    r"""Best worst-case ReLU encoder for codes with at most K nonzeros, one LP per latent (T3).

    The code set is :math:`S = \{z \in \mathbb{R}^N_{\ge 0} : \|z\|_0 \le K,\ z_j \in
    \{0\} \cup [lo, hi]\}` (``magnitudes=(1, 1)``: binary codes). With
    :math:`u = D w` and :math:`S_k(v)` the sum of the k largest entries of ``v`` (0 for
    k = 0), the optimum for latent ``i`` is the LP

    .. math::
        \min_{w, b, \varepsilon} \varepsilon \ \text{s.t.}\quad
        & b + hi\, S_K(u_{-i}^+) \le \varepsilon, \\
        & b + v u_i - hi\, S_{K-1}((-u_{-i})^+) \ge v - \varepsilon, \quad v \in \{lo, hi\}, \\
        & b + v u_i + hi\, S_{K-1}(u_{-i}^+) \le v + \varepsilon, \quad v \in \{lo, hi\},

    exact whenever the optimum is below ``lo`` (always for binary codes: the constant
    encoder achieves 1/2). Each top-K sum uses the LP form
    :math:`S_k(v^+) = \min_{s \ge 0} k s + \sum_j (v_j - s)_+`, so the LP has
    M + 4N + 2 variables (K >= 2), 3N inequalities (3 nonzeros each) and the N equalities
    :math:`u = D w` for binary codes.

    Parameters
    ----------
    D : array_like of shape (N, M)
        Dictionary with unit-norm rows.
    k : int
        K, the largest number of nonzeros in a code, 1 <= K <= N.
    magnitudes : (float, float)
        ``(lo, hi)`` with ``0 < lo <= hi``: the range of a nonzero entry.
    latents : sequence of int, optional
        Solve only these latents (default all).
    method : {"highs", "cvxpy"}
        ``highs``: the LP assembled directly with sparse matrices for
        ``scipy.optimize.linprog`` (fast; returns certificates). ``cvxpy``: the same program
        written with ``cp.sum_largest`` (slow to compile; a cross-check, no certificates).
    solver : str, optional
        cvxpy solver for ``method="cvxpy"`` (default Clarabel).
    n_jobs : int
        Worker processes for ``method="highs"``: the latents' LPs are independent, so they
        are split into ``n_jobs`` contiguous blocks solved in parallel (-1: one per CPU).
        The result does not depend on ``n_jobs``.
    working_set : bool, optional
        Solve each latent's LP by constraint generation over the other latents (see
        ``_solve_latent_working_set``): LPs on about ``1.5 M`` latents instead of N, the same
        optimum and certificates valid for the full code set. Default: when N >= 4 M.
    executor : object with ``submit(fn, *args)``, optional
        Run the latents as ``EXECUTOR_TASKS`` tasks on it, e.g. a ``dask.distributed.Client``
        (``D`` is scattered to the workers once) or a ``concurrent.futures`` executor. Not
        with ``n_jobs``.

    Returns
    -------
    result : GapResult
        ``result.eps`` (N,), ``result.encoder`` with ``W_enc`` (M, N) and ``b_enc`` (N,),
        ``result.certificates`` (``method="highs"`` only).

    Raises
    ------
    ValueError
        On bad ``D``, ``k``, ``magnitudes`` or ``latents``.

    References
    ----------
    .. [1] O'Neill, Gumran & Klindt (2024), "Compute optimal inference and provable
       amortisation gap in sparse autoencoders", arXiv:2411.13117, Theorem 1 (qualitative gap).
    .. [2] Ogryczak & Tamir (2003), "Minimizing the sum of the k largest functions in linear
       time", Inf. Process. Lett. 85(3) (the LP form of a top-k sum).
    .. [3] ``proofs/T3_exact_lp.md``.

    Examples
    --------
    >>> from gaptheory.instances import random_dictionary
    >>> result = relu_minimax_gap(random_dictionary(6, 3, seed=0), 2)
    >>> result.eps.shape, bool(0 < result.worst <= 0.5), result.success
    ((6,), True, True)
    >>> bool(np.all(worst_case_error(result.encoder, random_dictionary(6, 3, seed=0), 2) <= result.eps + 1e-7))
    True
    """
    D = check_dictionary(D)
    n_latents, n_dims = D.shape
    k = check_k(k, n_latents)
    lo, hi = _check_magnitudes(magnitudes)
    latents = _check_latents(latents, n_latents)
    check_choice(method, "method", GAP_METHODS)
    n_jobs = _check_jobs(n_jobs)
    if working_set is None:
        working_set = n_latents >= WORKING_SET_MIN_RATIO * n_dims
    working_set = check_bool(working_set, "working_set")
    if executor is not None and not callable(getattr(executor, "submit", None)):
        raise TypeError(f"executor must have a submit(fn, *args) method (a concurrent.futures.Executor or a "
                        f"dask.distributed.Client); got {type(executor).__name__}.")
    if executor is not None and n_jobs != 1:
        raise ValueError(f"give n_jobs (local processes) or executor (its own workers), not both; got n_jobs={n_jobs}.")
    scale = _magnitude_scale(hi)
    if scale != 1.0:  # eps* is homogeneous in the codes: solve at unit scale, scale back exactly
        unit = relu_minimax_gap(D, k, magnitudes=(lo / scale, hi / scale), latents=latents, method=method,
                                solver=solver, n_jobs=n_jobs, working_set=working_set, executor=executor)
        return _rescaled(unit, scale, (lo, hi))
    start = time.perf_counter()
    eps = np.full(n_latents, np.nan)
    W_enc, b_enc = np.zeros((n_dims, n_latents)), np.zeros(n_latents)
    status = np.full(n_latents, Status.OPTIMAL, dtype=np.int64)
    certificates = []
    if method == "cvxpy":
        for i in latents:
            eps[i], W_enc[:, i], b_enc[i], status[i] = _solve_compact_cvxpy(D, i, k, lo, hi, solver)
    else:
        outcomes = _solve_latents(D, latents, k, lo, hi, n_jobs, working_set, executor)
        for i, outcome in zip(latents, outcomes):
            if outcome is None:
                status[i] = Status.NUMERICAL
                continue
            eps[i], W_enc[:, i], b_enc[i], certificate = outcome
            certificates.append(certificate)
    encoder = MinimaxEncoder(W_enc=W_enc, b_enc=b_enc)
    # Re-check the solver's answer like scipy does: the encoder must attain eps on all of S.
    attained = worst_case_error(encoder, D, k, magnitudes=(lo, hi), _checked=True)
    solved = np.zeros(n_latents, dtype=bool)
    solved[latents] = True
    status[solved & ~(attained <= eps + ENCODER_ATOL)] = Status.NUMERICAL
    return _finish(eps, encoder, certificates, status, solved, lo, k, (lo, hi), method, start, D)


def _magnitude_scale(largest: float) -> float:
    """The power of two ``2^e`` with ``largest / 2^e`` in [1, 2) (1.0 for magnitudes in [1, 2))."""
    return float(np.ldexp(1.0, int(np.frexp(largest)[1]) - 1))


def _rescaled(result: GapResult, scale: float, magnitudes) -> GapResult:
    r"""A result for the codes ``S`` turned into one for ``scale * S`` (a power of two, so exact).

    :math:`\varepsilon^*(cS) = c\,\varepsilon^*(S)`: the encoder ``(w, c b)`` on ``cS`` errs by
    ``c`` times ``(w, b)`` on ``S``; certificate codes scale by ``c`` with the same weights (the
    dual equalities are homogeneous in the codes, the bound is linear in the labels).
    """
    certificates = tuple(
        GapCertificate(c.latent, c.codes * scale, c.kinds, c.weights) for c in result.certificates
    )
    encoder = MinimaxEncoder(W_enc=result.encoder.W_enc, b_enc=result.encoder.b_enc * scale)
    return dataclasses.replace(
        result, eps=result.eps * scale, encoder=encoder, certificates=certificates,
        magnitudes=None if result.magnitudes is None else tuple(magnitudes),
        codes=None if result.codes is None else result.codes * scale,
    )


def _finish(eps, encoder, certificates, status, solved, lo, k, magnitudes, method, start, D=None, codes=None) -> GapResult:
    bad = np.flatnonzero(solved & (status != Status.OPTIMAL))
    message = (
        f"{int(solved.sum())} latents solved to optimality"
        if bad.size == 0
        else f"latents {bad.tolist()} failed (solver status or re-check); try method='cvxpy' or rescale D"
    )
    return GapResult(
        eps=eps, encoder=encoder, certificates=tuple(certificates), status=status,
        lp_exact=solved & (eps < lo), k=k, magnitudes=magnitudes, method=method,
        seconds=time.perf_counter() - start, message=message, D=D, codes=codes,
    )


# ----- the enumeration LP ------------------------------------------------------------------


def relu_minimax_gap_codes(D, Z, *, latents=None) -> GapResult:
    r"""Best worst-case ReLU encoder for an explicit finite set of nonnegative codes.

    One constraint per code and side (the enumeration LP): for latent ``i`` and each row
    ``z`` of ``Z`` with observation :math:`x = z D` and :math:`t = w \cdot x + b`,

    .. math:: t \le \varepsilon \ (z_i = 0), \qquad z_i - \varepsilon \le t \le z_i + \varepsilon \ (z_i > 0),

    with :math:`\varepsilon \ge 0`, exact whenever the optimum is below the smallest positive
    :math:`z_i` (``result.lp_exact``); otherwise an upper bound attained by ``result.encoder``.
    A latent never active in ``Z`` has :math:`\varepsilon^*_i = 0` (a very negative bias).
    ``Z`` is solved at unit scale (divided by a power of two, exactly), so the answer is
    homogeneous: ``relu_minimax_gap_codes(D, c Z).eps == c * relu_minimax_gap_codes(D, Z).eps``
    for powers of two ``c``.

    Parameters
    ----------
    D : array_like of shape (N, M)
        Dictionary with unit-norm rows.
    Z : array_like of shape (B, N)
        The code set, nonnegative, one code per row.
    latents : sequence of int, optional

    Returns
    -------
    result : GapResult

    Examples
    --------
    >>> D = np.eye(2)
    >>> relu_minimax_gap_codes(D, [[0, 0], [1, 0], [0, 1], [1, 1]]).eps.round(9).tolist()
    [0.0, 0.0]
    """
    D = check_dictionary(D)
    n_latents, n_dims = D.shape
    Z = check_codes(Z, n_latents)
    if (Z < 0).any():
        raise ValueError(
            f"Z has {int((Z < 0).sum())} negative entries; a ReLU encoder outputs nonnegative codes, "
            "so pass nonnegative codes (e.g. np.abs(Z))."
        )
    if Z.shape[0] > MAX_ENUMERATED_CODES:
        raise ValueError(
            f"Z has {Z.shape[0]} codes, over MAX_ENUMERATED_CODES={MAX_ENUMERATED_CODES}; for codes "
            "with at most K nonzeros in a box use relu_minimax_gap(D, k, magnitudes=...)."
        )
    latents = _check_latents(latents, n_latents)
    largest = float(Z.max(initial=0.0))
    scale = _magnitude_scale(largest) if largest > 0 else 1.0
    if scale != 1.0:  # eps* is homogeneous in the codes: solve at unit scale, scale back exactly
        return _rescaled(relu_minimax_gap_codes(D, Z / scale, latents=latents), scale, None)
    start = time.perf_counter()
    eps = np.full(n_latents, np.nan)
    lowest = np.full(n_latents, np.inf)
    W_enc, b_enc = np.zeros((n_dims, n_latents)), np.zeros(n_latents)
    status = np.full(n_latents, Status.OPTIMAL, dtype=np.int64)
    certificates = []
    for i in latents:
        active = Z[:, i] > 0
        labels = np.concatenate([np.zeros((~active).sum()), Z[active, i], Z[active, i]])
        kinds = np.concatenate([
            np.full((~active).sum(), KIND_ZERO), np.full(active.sum(), KIND_LOWER), np.full(active.sum(), KIND_UPPER)
        ])
        codes = np.concatenate([Z[~active], Z[active], Z[active]])
        sign = -_SIGN[kinds]  # KIND_LOWER rows are negated to read "<="
        A_ub = np.column_stack([sign[:, None] * (codes @ D), sign, -np.ones(len(codes))])
        # eps >= 0 (an error is nonnegative): without it a latent never active in Z is unbounded.
        bounds = [(None, None)] * (n_dims + 1) + [(0.0, None)]
        res = _solve_highs(np.r_[np.zeros(n_dims + 1), 1.0], A_ub, sign * labels, bounds)
        if res.status != 0:
            status[i] = Status.NUMERICAL
            continue
        eps[i], W_enc[:, i], b_enc[i] = max(0.0, res.x[n_dims + 1]), res.x[:n_dims], res.x[n_dims]
        lowest[i] = Z[active, i].min() if active.any() else np.inf
        duals = -res.ineqlin.marginals
        keep = duals > DUAL_ZERO
        if res.lower.marginals[n_dims + 1] > DUAL_ZERO:  # eps = 0 is held by its bound: the trivial certificate
            keep[:] = False
        certificates.append(GapCertificate(latent=int(i), codes=codes[keep], kinds=kinds[keep], weights=duals[keep]))
    encoder = MinimaxEncoder(W_enc=W_enc, b_enc=b_enc)
    solved = np.zeros(n_latents, dtype=bool)
    solved[latents] = True
    attained = code_set_error(encoder, D, Z)
    status[solved & ~(attained <= eps + ENCODER_ATOL)] = Status.NUMERICAL
    result = _finish(eps, encoder, certificates, status, solved, 0.0, None, None, "highs", start, D, Z)
    return dataclasses.replace(result, lp_exact=solved & (eps < lowest))


def enumerate_codes(n_latents: int, k: int, *, magnitudes=(1.0, 1.0), max_codes: int = MAX_ENUMERATED_CODES) -> np.ndarray:
    r"""Every code with at most K nonzeros whose nonzero entries are ``lo`` or ``hi``.

    These are the vertices of the box code set; a linear function of the code attains its
    maximum over the set at one of them. There are :math:`\sum_{s \le K} \binom{N}{s} m^s`
    codes, m = 1 when lo = hi and 2 otherwise.

    Returns
    -------
    Z : ndarray of shape (C, N), the zero code first.

    Examples
    --------
    >>> enumerate_codes(3, 2).astype(int).tolist()
    [[0, 0, 0], [1, 0, 0], [0, 1, 0], [0, 0, 1], [1, 1, 0], [1, 0, 1], [0, 1, 1]]
    """
    n_latents = check_int(n_latents, "n_latents", minimum=1)
    k = check_k(k, n_latents)
    lo, hi = _check_magnitudes(magnitudes)
    values = sorted({lo, hi})
    count = sum(math.comb(n_latents, s) * len(values) ** s for s in range(k + 1))
    if count > max_codes:
        raise ValueError(
            f"enumerating codes with N={n_latents}, K={k}, magnitudes={magnitudes} gives {count} codes, over "
            f"max_codes={max_codes}. Use relu_minimax_gap / worst_case_error (no enumeration) instead."
        )
    codes = [np.zeros(n_latents)]
    for size in range(1, k + 1):
        for support in itertools.combinations(range(n_latents), size):
            for entries in itertools.product(values, repeat=size):
                code = np.zeros(n_latents)
                code[list(support)] = entries
                codes.append(code)
    return np.array(codes)


# ----- exact evaluation of an encoder --------------------------------------------------------


def _encoder_weights(encoder, n_dims: int, n_latents: int):
    W_enc = check_array(getattr(encoder, "W_enc"), "encoder.W_enc")
    b_enc = check_array(getattr(encoder, "b_enc"), "encoder.b_enc", ndim=1)
    if W_enc.shape != (n_dims, n_latents) or b_enc.shape != (n_latents,):
        raise ValueError(
            f"encoder must have W_enc of shape (M, N) = {(n_dims, n_latents)} and b_enc of shape (N,); got "
            f"{W_enc.shape} and {b_enc.shape}. Fold a decoder bias in first: b_enc - b_dec @ W_enc."
        )
    return W_enc, b_enc


def _top_sum(U: np.ndarray, count: int) -> np.ndarray:
    """Row-wise sum of the ``count`` largest entries of ``max(U, 0)``."""
    if count <= 0 or U.shape[1] == 0:
        return np.zeros(U.shape[0])
    count = min(count, U.shape[1])
    positive = np.maximum(U, 0.0)
    return -np.sort(-positive, axis=1)[:, :count].sum(axis=1) if count < U.shape[1] else positive.sum(axis=1)


def worst_case_error(encoder, D, k: int, *, magnitudes=(1.0, 1.0), _checked: bool = False) -> np.ndarray:
    r"""Exact worst-case error per latent of ``relu(X @ W_enc + b_enc)`` over the box code set.

    For latent ``i`` with :math:`u = D w_i` the worst codes are explicit (no enumeration):

    .. math::
        \max\Big(\mathrm{relu}(b + hi\,S_K(u_{-i}^+)),\
        \max_{v \in \{lo, hi\}} \mathrm{relu}(b + v u_i + hi\,S_{K-1}(u_{-i}^+)) - v,\
        \max_{v \in [lo, hi]} v - \mathrm{relu}(b + v u_i - hi\,S_{K-1}((-u_{-i})^+))\Big)

    The last term is concave in ``v``: its maximum is at ``lo``, ``hi`` or the kink where
    the ReLU argument crosses 0, and all three are evaluated.

    Parameters
    ----------
    encoder : object with ``W_enc`` (M, N) and ``b_enc`` (N,)
        E.g. a :class:`MinimaxEncoder` (arrays or torch tensors).
    D : array_like of shape (N, M)
    k : int
    magnitudes : (float, float)

    Returns
    -------
    errors : ndarray of shape (N,)

    Examples
    --------
    >>> encoder = MinimaxEncoder(W_enc=np.eye(2), b_enc=np.zeros(2))
    >>> worst_case_error(encoder, np.eye(2), 2).tolist()
    [0.0, 0.0]
    """
    if not _checked:
        D = check_dictionary(D)
        k = check_k(k, D.shape[0])
        magnitudes = _check_magnitudes(magnitudes)
    n_latents, n_dims = D.shape
    lo, hi = magnitudes
    W_enc, b_enc = _encoder_weights(encoder, n_dims, n_latents)
    U = D @ W_enc  # U[j, i] = u_j for latent i
    return np.array([_latent_error(U[:, i], i, b_enc[i], k, lo, hi) for i in range(n_latents)])


def _latent_error(u: np.ndarray, i: int, b: float, k: int, lo: float, hi: float) -> float:
    """Worst-case error of ``relu(w . x + b)`` on latent ``i`` over the box code set, from ``u = D w`` (N,)."""
    u_i, others = u[i], np.delete(u, i)[None, :]
    zero = max(b + hi * _top_sum(others, k)[0], 0.0)
    up_rest = b + hi * _top_sum(others, k - 1)[0]
    down_rest = b - hi * _top_sum(-others, k - 1)[0]
    candidates = [lo, hi]
    if u_i != 0 and lo < -down_rest / u_i < hi:
        candidates.append(-down_rest / u_i)
    over = max(max(v * u_i + up_rest, 0.0) - v for v in (lo, hi))
    under = max(v - max(v * u_i + down_rest, 0.0) for v in candidates)
    return max(zero, over, under)


def code_set_error(encoder, D, Z) -> np.ndarray:
    r"""Worst error per latent of the encoder on the explicit codes ``Z``:
    :math:`\max_{z \in Z} |\mathrm{relu}(z D W_{enc} + b_{enc}) - z|` column-wise.

    Parameters
    ----------
    encoder : object with ``W_enc`` (M, N) and ``b_enc`` (N,)
    D : array_like of shape (N, M)
    Z : array_like of shape (B, N)

    Returns
    -------
    errors : ndarray of shape (N,)
    """
    D = check_array(D, "D")
    Z = check_codes(Z, D.shape[0])
    W_enc, b_enc = _encoder_weights(encoder, D.shape[1], D.shape[0])
    return np.abs(np.maximum(Z @ D @ W_enc + b_enc, 0.0) - Z).max(axis=0)


# ----- certificates --------------------------------------------------------------------------


def verify_certificate(certificate: GapCertificate, D, *, k: int | None = None, magnitudes=(1.0, 1.0), codes=None) -> CertificateCheck:
    r"""Prove a lower bound on :math:`\varepsilon^*_i` from a certificate, in exact rational arithmetic.

    Every float64 entry of ``D`` and of the certificate's codes is read as the exact dyadic
    rational it is; the certificate is then checked for that exact rational ``D`` (no
    tolerance, no solver):

    1. ``D``'s rows are unit-norm to float64 round-off,
       :math:`|\mathrm{fl}(\|d_j\|^2) - 1| \le 2 (M + 4) u` (``certificates.unit_norm_tolerance``;
       a row that float64 normalisation left at :math:`1 + \delta` passes; a scaled ``D`` fails).
       The bound is a statement about the given ``D``, which is the normalised dictionary up to
       this round-off; it is not transferred to the irrational exactly-normalised rows.
    2. Every code lies in the code set exactly (at most ``k`` nonzeros, each in ``[lo, hi]``,
       or equal to a row of ``codes``), and its label :math:`v = z_i` matches its kind.
    3. Nonnegative float weights are re-fitted on the codes (NNLS, pinned to the bound the
       given weights claim, then unpinned), and on the codes each fit (and the given weights)
       uses, the dual equalities
       :math:`\sum_r \sigma_r y_r z_r D = 0,\ \sum_r \sigma_r y_r = 0,\ \sum_r y_r = 1` are
       solved exactly over the rationals (``certificates.exact_dual_weights``); the first exact
       solution with :math:`y \ge 0` is kept. The float weights only choose the codes.
    4. Failing that (box sets, K >= 2), the float weights themselves, read as exact rationals,
       are balanced exactly by adding the codes :math:`hi\,e_i` and :math:`hi\,(e_i + e_j)`
       with exactly solved weights (:func:`_corrected`): the case of a float ``D`` that breaks,
       by round-off, an exact linear relation of the real matrix it stands for.

    Weak duality then gives, for every encoder (``proofs/T3_exact_lp.md``),

    .. math:: \varepsilon_i \ge \max\Big(0,\ \min\Big(\sum_{lower} y_r v_r - \sum_{upper} y_r v_r,\ \min_{lower} v_r\Big)\Big),

    computed exactly and rounded down to a float. A certificate with no codes proves the
    trivial bound 0. An invertible ``D`` (:math:`\varepsilon^* = 0`) admits no exact
    certificate of a positive bound, however close to singular it is in floating point.

    Parameters
    ----------
    certificate : GapCertificate
    D : array_like of shape (N, M)
    k : int, optional
        The sparsity of the code set (box sets); ignored when ``codes`` is given.
    magnitudes : (float, float)
    codes : array_like of shape (B, N), optional
        The explicit code set, for certificates from :func:`relu_minimax_gap_codes`.

    Returns
    -------
    check : CertificateCheck
        ``valid`` only when the exact check passed; ``exact_bound`` and ``exact_weights`` hold
        the exact rationals.

    Examples
    --------
    >>> D = np.array([[1.0, 0.0], [0.0, 1.0], [0.6, 0.8]])
    >>> result = relu_minimax_gap(D, 2, latents=[2])
    >>> check = verify_certificate(result.certificates[0], D, k=2)
    >>> check.valid, bool(round(check.lower_bound, 9) == round(result.eps[2], 9))
    (True, True)
    """
    D = check_array(D, "D")
    n_latents, n_dims = D.shape
    i = certificate.latent
    Z = np.asarray(certificate.codes, dtype=np.float64).reshape(-1, n_latents)
    kinds = np.asarray(certificate.kinds, dtype=np.int64)
    y = np.asarray(certificate.weights, dtype=np.float64)

    def invalid(reason, residual=math.inf):
        return CertificateCheck(-math.inf, residual, False, reason)

    deviation = certificates.unit_norm_deviation(D)
    if not deviation.max() <= certificates.unit_norm_tolerance(n_dims):
        worst = int(np.argmax(deviation))
        return invalid(
            f"D's row {worst} has |norm^2 - 1| = {deviation[worst]:.3g}, over the float64 round-off bound "
            f"{certificates.unit_norm_tolerance(n_dims):.3g}: the certificate is for unit atoms; pass "
            "gaptheory.instances.normalize_atoms(D)"
        )
    if len(y) != len(Z) or len(kinds) != len(Z):
        return invalid("inconsistent certificate: codes, kinds and weights differ in length")
    if not np.isfinite(Z).all() or not np.isfinite(y).all() or (y < 0).any() or not np.isin(kinds, [KIND_ZERO, KIND_LOWER, KIND_UPPER]).all():
        return invalid("codes and weights must be finite, weights >= 0, kinds in {0, 1, 2}")
    if codes is not None:
        allowed = check_codes(codes, n_latents, name="codes")
        member = (Z[:, None, :] == allowed[None, :, :]).all(axis=2).any(axis=1) if len(Z) else np.ones(0, bool)
        if not member.all():
            return invalid(f"certificate code {int(np.argmin(member))} is not a row of the code set")
    else:
        if k is None:
            raise ValueError("verify_certificate needs k (box code sets) or codes (explicit sets).")
        lo, hi = _check_magnitudes(magnitudes)
        nonzero = Z != 0
        if (nonzero & ((Z < lo) | (Z > hi))).any() or (nonzero.sum(axis=1) > k).any():
            return invalid(f"a certificate code has more than k={k} nonzeros or an entry outside {{0}} U [{lo}, {hi}]")
    if len(Z) == 0:
        return CertificateCheck(0.0, 0.0, True, "trivial certificate: eps >= 0", Fraction(0), ())
    labels = Z[:, i]
    if (labels[kinds == KIND_ZERO] != 0).any() or (labels[kinds != KIND_ZERO] <= 0).any():
        return invalid("labels do not match kinds (zero rows need z_i = 0, the others z_i > 0)")
    sign = _SIGN[kinds]
    value = np.where(kinds == KIND_LOWER, labels, np.where(kinds == KIND_UPPER, -labels, 0.0))  # bound = value @ y
    # Float re-fits choose the codes for the exact solve: y >= 0 closest to the equalities,
    # pinned to the bound the given weights claim, and unpinned.
    A = np.vstack([(sign[:, None] * (Z @ D)).T, sign, np.ones(len(y))])  # (M + 2, m)
    target = np.zeros(A.shape[0])
    target[-1] = 1.0
    claimed = float(value @ y) / max(float(y.sum()), np.finfo(float).tiny)
    pinned, _ = scipy.optimize.nnls(np.vstack([A, value]), np.r_[target, claimed], maxiter=50 * len(y))
    free, _ = scipy.optimize.nnls(A, target, maxiter=50 * len(y))
    scale = np.abs(A).sum(axis=1).max()
    residual = float(np.abs(A @ pinned - target).max()) / scale
    exact = certificates.exact_dual_weights(Z, sign, value, D, [pinned, y, free])
    proven_codes = proven_kinds = None
    if exact is None and codes is None and k >= 2:
        exact, proven_codes, proven_kinds = _corrected(Z, kinds, sign, value, D, i, hi, [pinned, y])
    if exact is None:
        return invalid("no nonnegative weights on the certificate's codes satisfy the dual equalities exactly", residual)
    weights, bound = exact
    if proven_kinds is not None:
        labels, kinds = proven_codes[:, i], proven_kinds
    lower_labels = labels[kinds == KIND_LOWER]
    if lower_labels.size:
        bound = min(bound, Fraction(float(lower_labels.min())))
    bound = max(bound, Fraction(0))
    reason = "ok" if proven_codes is None else "ok, with codes hi e_i, hi (e_i + e_j) added to cancel round-off"
    return CertificateCheck(certificates.floor_float(bound), residual, True, reason, bound, tuple(weights),
                            proven_codes, proven_kinds)


def _corrected(Z, kinds, sign, value, D, i, hi, guesses):
    r"""Exact weights from float ones that balance only to round-off: the residual is cancelled
    by the codes :math:`hi\,e_i` and :math:`hi\,(e_i + e_j)` (in every box set with K >= 2, each
    as a lower or an upper row; ``certificates.corrected_dual_weights``).

    Needed when the float D breaks, by round-off, a linear relation its real counterpart has
    (e.g. a partial DCT with two atoms equal in the reals): the solver's binding codes then
    balance for the real D and miss the float one by ~1e-16. Returns ``((weights, bound), codes,
    kinds)`` or ``(None, None, None)``.
    """
    n_latents = D.shape[0]
    extras = np.zeros((n_latents, n_latents))
    extras[:, i] = hi
    extras[np.arange(n_latents), np.arange(n_latents)] = hi  # row i: hi e_i, row j: hi (e_i + e_j)
    for guess in guesses:
        keep = np.asarray(guess) > 0
        if not keep.any():
            continue
        found = certificates.corrected_dual_weights(Z[keep], sign[keep], value[keep], D, guess[keep], extras, np.full(n_latents, hi))
        if found is None:
            continue
        codes, signs, weights, bound = found
        added = np.where(signs[keep.sum():] > 0, KIND_LOWER, KIND_UPPER)
        return (weights, bound), codes, np.r_[kinds[keep], added].astype(np.int64)
    return None, None, None


# ----- T2 ------------------------------------------------------------------------------------


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


def gap_lower_bound(D, *, exact: bool = False, latents=None) -> np.ndarray:
    r"""T2: every ReLU encoder errs on latent ``i`` by at least :math:`1 / (2(1 + \beta_i))`.

    Valid for every code set containing 0, e_i, e_j and e_i + e_j for all j != i (binary
    codes with K >= 2). 0 where atom ``i`` is not in the span of the others.

    HiGHS's representation :math:`c` (:math:`c D_{-i} = d_i`, :math:`\|c\|_1 = \beta_i`) is
    checked by its residual, not trusted: it is accepted when
    :math:`\|\mathrm{fl}(c D_{-i}) - d_i\|_\infty \le 2\gamma_{n+1}(1 + \|c\|_1)` (round-off of
    the n-term products, n the support size, Higham's :math:`\gamma_n = nu/(1 - nu)`).
    Otherwise (and for every atom when ``exact=True``) :math:`c` is re-solved exactly over the
    rationals on HiGHS's support (``certificates.exact_l1_representation``); an exact ``c`` gives
    the sound :math:`\beta_i \le \|c\|_1` (rounded up, the bound rounded down). If none exists
    there, the bound is 0: the true value when :math:`d_i` is exactly outside the span of the
    others, and a valid (trivial) bound otherwise.

    Parameters
    ----------
    D : array_like of shape (N, M), N >= 2
    exact : bool
        Confirm every :math:`\beta_i` in exact arithmetic (a rigorous bound; an M x M exact
        solve per atom: ~0.1 s at M = 128, ~6 s at M = 384).
    latents : sequence of int, optional
        Bound only these atoms (default all); the others are NaN.

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
    bound = np.full(D.shape[0], np.nan)
    bound[latents] = 0.0
    for i in latents:
        c, beta = _representation(D, i)
        if c is None:
            continue
        others = np.delete(D, i, axis=0)
        support = np.flatnonzero(c)
        residual = float(np.abs(c[support] @ others[support] - D[i]).max())
        if not exact and residual <= 2 * _gamma(support.size + 1) * (1 + beta):
            bound[i] = t2_bound([beta])[0]
            continue
        representation = certificates.exact_l1_representation(others, D[i], support)
        if representation is not None:
            beta = certificates.ceil_float(sum((abs(v) for v in representation), Fraction(0)))
            bound[i] = certificates.floor_float(1 / (2 * (1 + Fraction(beta))))
    return bound


# ----- one call that brackets eps* ------------------------------------------------------------


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
                working_set: bool | None = None, executor=None) -> GapReport:
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
    working_set, executor
        As in :func:`relu_minimax_gap`; ``n_jobs`` and ``executor`` also run the exact checks
        (:meth:`GapResult.verify`).

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
                              executor=executor)
    result.verify(n_jobs=n_jobs, executor=executor)
    valid = np.array([check is not None and check.valid for check in result.checks], dtype=bool)
    if k >= 2 and D.shape[0] >= 2:
        # S holds hi * {0, e_i, e_j, e_i + e_j} and eps* is homogeneous in the codes, so T2 holds
        # scaled by hi; the product is rounded down so the bound stays proven.
        t2 = np.array([certificates.floor_float(Fraction(hi) * Fraction(float(v))) if np.isfinite(v) else np.nan
                       for v in gap_lower_bound(D, exact=True, latents=latents)])
    else:
        t2 = np.full(D.shape[0], np.nan)
    return GapReport(
        result=result, t2_bound=t2, certified_lower=result.certified_lower,
        encoder_error=worst_case_error(result.encoder, D, k, magnitudes=(lo, hi), _checked=True),
        certificate_valid=valid, exact=result.exact,
    )
