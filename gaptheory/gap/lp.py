r"""The amortisation gap as linear programs: the best worst-case ReLU encoder per latent.

:func:`relu_minimax_gap` solves the compact T3 LP (one LP of size O(N + M) per latent, the
top-K sums in their LP form, optionally by constraint generation over a working set of the
other latents) with HiGHS or, as a cross-check, cvxpy; :func:`relu_minimax_gap_codes` solves
the enumeration LP for an explicit code set (one constraint per code);
:func:`enumerate_codes` lists the vertices of a box code set. Each solve reads a
:class:`~gaptheory.gap.GapCertificate` per latent off the LP duals.

References
----------
.. [1] O'Neill, Gumran & Klindt (2024), arXiv:2411.13117, Theorem 1.
.. [2] Ogryczak & Tamir (2003), Inf. Process. Lett. 85(3) (the LP form of a top-k sum).
.. [3] ``proofs/T3_exact_lp.md``.
"""

from __future__ import annotations

import dataclasses
import itertools
import math
import time
from dataclasses import dataclass

import numpy as np
import scipy.optimize
import scipy.sparse

from .._threads import one_blas_thread
from .._validation import check_bool, check_choice, check_codes, check_dictionary, check_int, check_k
from ..instances import _check_magnitudes
from ..solvers import Status
from .binary_lp import binary_latent
from .errors import _latent_worst, code_set_error, worst_case_error
from .parallel import _check_jobs, _map_blocks
from .results import ENCODER_ATOL, GapResult, MinimaxEncoder, _check_latents
from .verification import _SIGN, KIND_LOWER, KIND_UPPER, KIND_ZERO, GapCertificate


#: Dual weights (and support fractions) below this are solver noise, dropped from certificates.
DUAL_ZERO = 1e-12
#: Width to which :func:`_refine_latent` brackets eps* above lo (at the unit scale of the solve):
#: a tenth of the agreement ``GapResult.exact`` asks of the certificate and the encoder.
REFINE_ATOL = 1e-8
REFINE_MAX_STEPS = 60

#: HiGHS options for the gap LPs: dual feasibility tightened from the 1e-7 default so the
#: duals that become certificates pick exactly the binding supports (at 1e-7, spikes+DCT
#: dictionaries with N = 256 gave certificates off by ~5e-9); at no measurable cost,
#: whereas a 1e-10 primal tolerance costs ~40% more time and is not needed.
HIGHS_OPTIONS = {"dual_feasibility_tolerance": 1e-10}

#: Largest explicit code set :func:`relu_minimax_gap_codes` builds by enumeration: each
#: code is a dense row of M + 2 entries in every latent's LP.
MAX_ENUMERATED_CODES = 50_000

GAP_METHODS = ("auto", "highs", "cvxpy")

#: ``method="auto"`` uses the basis-pursuit form for binary codes from this many input dimensions.
BINARY_FORM_MIN_DIMS = 16
#: ... and only if no two atoms have |d_i . d_j| above 1 minus this (equal or opposite atoms).
BINARY_FORM_PARALLEL_TOL = 1e-6

#: The working set of :func:`relu_minimax_gap` starts with this many other latents per input
#: dimension: the optimum has about M + 1 binding ones, so 1.5 M usually needs no second round.
WORKING_SET_START = 1.5

#: ``working_set=None`` uses constraint generation when N is at least this many times M (below,
#: the working set is most of the latents and the rounds cost more than they save).
WORKING_SET_MIN_RATIO = 4


@dataclass(frozen=True)
class _Row:
    """One top-level constraint of the compact LP: ``sign_t * (b + v u_i) + hi * S_k(sign_u * u_{-i}) - eps <= rhs``."""

    kind: int
    label: float  # v (0 for the zero-labelled row)
    k: int  # top-k size of the inner sum (0: no inner block)
    inner_sign: float  # +1: S_k(u^+), -1: S_k((-u)^+)


def _compact_rows(k: int, n_latents: int, lo: float, hi: float, lower_from: float | None = None) -> list[_Row]:
    """The rows of the compact LP; with ``lower_from``, the lower rows only for labels in
    ``[max(lo, lower_from), hi]`` (the LP :math:`P(e)` of :func:`_refine_latent`)."""
    others = n_latents - 1
    rows = [_Row(KIND_ZERO, 0.0, min(k, others), 1.0)]
    lower = sorted({max(lo, lower_from), hi}) if lower_from is not None else sorted({lo, hi})
    for label in sorted(set(lower) | {lo, hi}):
        if label in lower:
            rows.append(_Row(KIND_LOWER, label, min(k - 1, others), -1.0))
        if label in (lo, hi):
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
    columns, values, lengths, kinds, weights = [], [], [], [], []
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
            chosen = others[support]  # the code: hi on these latents, row.label on latent i
            columns += [chosen, [i]]
            values += [np.full(len(chosen), hi), [row.label]]
            lengths.append(len(chosen) + 1)
            kinds.append(row.kind)
            weights.append(y * theta)
    indptr = np.r_[0, np.cumsum(lengths, dtype=np.int64)]
    codes = scipy.sparse.csr_array((np.concatenate(values or [[]]), np.concatenate(columns or [[]]).astype(np.int64), indptr),
                                   shape=(len(lengths), n_latents))
    return GapCertificate(latent=int(i), codes=codes, kinds=np.array(kinds, dtype=np.int64), weights=np.array(weights))


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


def _solve_latent_working_set(D: np.ndarray, i: int, k: int, lo: float, hi: float, guess: np.ndarray,
                              lower_from: float | None = None):
    r"""Latent ``i``'s compact LP by constraint generation over the other latents.

    The LP restricted to codes supported on ``{i} U J`` is the compact LP of ``D[{i} U J]``: a
    relaxation, so its certificate is a valid certificate for the full code set. Its encoder
    is evaluated exactly on the full set (:func:`_latent_worst`); the latents ``j`` outside
    ``J`` whose :math:`u_j = d_j \cdot w` would enter a top-K sum (above the K-th largest of
    :math:`u_J^+`, or below minus the (K-1)-th largest of :math:`(-u_J)^+`) are added and the
    LP is solved again, until none is left. At the optimum about M + 1 of the :math:`u_j` sit
    on the two thresholds, so ``J`` ends near ``WORKING_SET_START * M`` entries instead of N - 1.

    ``guess`` (N,) orders the first working set: the :math:`u = D w` of an encoder expected to
    be close (largest :math:`|u_j|` first). ``lower_from`` as in :func:`_compact_rows` (then only
    the entering test stops the rounds: the exact error counts codes the LP leaves out).
    """
    n_latents, n_dims = D.shape
    others = np.delete(np.arange(n_latents), i)
    size = min(len(others), max(int(WORKING_SET_START * n_dims), k + 1))
    working = np.sort(others[np.argsort(-np.abs(guess[others]), kind="stable")[:size]])
    while True:
        sub = np.r_[i, working]
        outcome = _solve_latent(D[sub], 0, _compact_rows(k, len(sub), lo, hi, lower_from), hi)
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
        if entering.size == 0 or (lower_from is None and _latent_worst(u, i, b, k, lo, hi)[0] <= eps):
            break
        if entering.size > n_dims // 2:  # the most violating first keeps the LPs small
            entering = rest[np.argsort(-excess, kind="stable")[: max(n_dims // 2, 1)]]
        working = np.union1d(working, entering)
    local = certificate.codes  # columns index sub
    codes = scipy.sparse.csr_array((local.data, sub[local.indices], local.indptr), shape=(local.shape[0], n_latents))
    return eps, w, b, dataclasses.replace(certificate, latent=int(i), codes=codes)


def _kth_largest(values: np.ndarray, count: int) -> float:
    """The ``count``-th largest entry of ``values`` (0 when there are fewer entries)."""
    if count > len(values):
        return 0.0
    return float(np.partition(values, len(values) - count)[len(values) - count])


def _solve_latents(D, latents, k, lo, hi, n_jobs: int, working_set: bool, executor=None, exact_above_lo=True,
                   binary=False) -> list:
    """The LP outcome of every latent, in order (see :func:`_map_blocks`)."""
    return _map_blocks(_solve_block, D, latents, (k, lo, hi, working_set, exact_above_lo, binary), n_jobs, executor)


def _solve_block(D: np.ndarray, latents: list[int], k: int, lo: float, hi: float, working_set: bool,
                 exact_above_lo: bool = True, binary: bool = False) -> list:
    """The outcomes of ``latents``; ``binary``: try the basis-pursuit form first (binary codes,
    decided once per call by :func:`_binary_form_applies`)."""
    # u = D pinv(D) e_i: the least-squares encoder of latent i (equally, the least-squares
    # representation of d_i by the atoms), whose largest |u_j| start the working set and
    # the binary form's basis.
    guesses = D @ np.linalg.pinv(D)[:, latents] if working_set or binary else None

    def solve(column: int, i: int, lower_from=None):
        if binary:
            outcome = _solve_latent_binary(D, i, k, hi, guesses[:, column])
            if outcome is not None:
                return outcome
        if working_set:
            return _solve_latent_working_set(D, i, k, lo, hi, guesses[:, column], lower_from)
        return _solve_latent(D, i, _compact_rows(k, D.shape[0], lo, hi, lower_from), hi)

    outcomes = []
    with one_blas_thread():  # many small products per LP: one thread each, latents in parallel
        for column, i in enumerate(latents):
            outcome = solve(column, i)
            if exact_above_lo and outcome is not None and outcome[0] >= lo and lo < hi:
                outcome = _refine_latent(lambda e: solve(column, i, e), lo, outcome)
            outcomes.append(outcome)
    return outcomes


def _binary_form_applies(D: np.ndarray) -> bool:
    """Whether ``method="auto"`` tries the basis-pursuit form (and K < N): M >= BINARY_FORM_MIN_DIMS
    (below it HiGHS takes milliseconds and small frames are often degenerate), and no two atoms
    equal or opposite to round-off (there the basis-pursuit optimum is a degenerate vertex, whose
    certificate's exact check can settle on weaker weights than HiGHS's vertex)."""
    if D.shape[1] < BINARY_FORM_MIN_DIMS:
        return False
    rows = max(1, 2**24 // D.shape[0])  # |D_block D^T| a block of rows at a time: O(2^24) memory
    for start in range(0, D.shape[0], rows):
        gram = np.abs(D[start:start + rows] @ D.T)
        gram[np.arange(gram.shape[0]), start + np.arange(gram.shape[0])] = 0.0
        if gram.max() >= 1.0 - BINARY_FORM_PARALLEL_TOL:
            return False
    return True


def _solve_latent_binary(D: np.ndarray, i: int, k: int, magnitude: float, guess: np.ndarray):
    """Latent ``i``'s outcome ``(eps, w, b, certificate)`` for binary codes of value ``magnitude``
    from the basis-pursuit form (:func:`gaptheory.gap.binary_lp.binary_latent`, solved at unit
    magnitude: eps* and b scale with it, w does not), or None where that form does not apply."""
    found = binary_latent(D, i, k, guess)
    if found is None:
        return None
    rows = _compact_rows(k, D.shape[0], magnitude, magnitude)
    others = np.delete(np.arange(D.shape[0]), i)
    duals = np.concatenate([found.row_duals, found.inner_duals.ravel()])
    certificate = _certificate_from_duals(i, rows, duals, [0] * len(rows), others, D.shape[0], magnitude)
    return magnitude * found.eps, found.w, magnitude * found.b, certificate


def _refine_latent(solve, lo: float, outcome):
    r"""The exact :math:`\varepsilon^*` of a latent whose LP value is at least ``lo``.

    There the lower rows are too strict: a code with label :math:`v \le \varepsilon` errs by at
    most :math:`v` whatever the encoder reads. Let :math:`g(e)` be the value of the LP
    :math:`P(e)` whose lower rows keep only the labels in :math:`[\max(lo, e), hi]` (by
    linearity in the label, the rows at its two ends). Any encoder with worst error
    :math:`\varepsilon < e` meets :math:`P(e)`'s constraints, so
    :math:`\varepsilon^* \ge \min(e, g(e))`, which :math:`P(e)`'s certificate proves (its lower
    codes have labels :math:`\ge e`); :math:`P(e)`'s encoder errs by at most
    :math:`\max(e, g(e))`. ``g`` is nonincreasing, so :math:`g(e) = e` has one root,
    :math:`\varepsilon^*`, in :math:`[lo, g(lo)]`; it is bracketed by regula falsi (Illinois)
    to ``REFINE_ATOL``. Returns ``(e_high, w, b, certificate)``: the encoder of the upper end,
    the certificate of the lower end; the input ``outcome`` (:math:`P(lo)`) if no LP improves it.
    """
    low = [lo, outcome[0] - lo, outcome]  # e, h(e) = g(e) - e (scaled by Illinois), P(e)'s outcome
    high_outcome = solve(outcome[0])
    if high_outcome is None:
        return outcome
    high = [outcome[0], high_outcome[0] - outcome[0], high_outcome]
    if high[1] >= 0:  # g(e) >= e at the LP value: it is the root
        return outcome[0], high_outcome[1], high_outcome[2], high_outcome[3]
    side = 0
    for _ in range(REFINE_MAX_STEPS):
        if high[0] - low[0] <= REFINE_ATOL:
            break
        e = (low[0] * high[1] - high[0] * low[1]) / (high[1] - low[1])
        if not low[0] < e < high[0]:
            e = 0.5 * (low[0] + high[0])
        found = solve(e)
        if found is None:
            break
        h = found[0] - e
        if h >= 0:
            low = [e, h, found]
            if side > 0:
                high[1] /= 2
            side = 1
        else:
            high = [e, h, found]
            if side < 0:
                low[1] /= 2
            side = -1
    _, w, b, _ = high[2]
    return high[0], w, b, low[2][3]


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
    method: str = "auto",
    solver: str | None = None,
    n_jobs: int = 1,
    working_set: bool | None = None,
    executor=None,
    exact_above_lo: bool = True,
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
    encoder achieves 1/2); above it, see ``exact_above_lo``. Each top-K sum uses the LP form
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
    method : {"auto", "highs", "cvxpy"}
        ``highs``: the LP assembled directly with sparse matrices for
        ``scipy.optimize.linprog`` (returns certificates). ``auto`` (default): the same, except
        that for binary codes (``lo == hi``, 2 <= K < N, M >= 16, no two atoms equal or
        opposite) each latent first tries its
        basis-pursuit form (M + 2 rows; :mod:`gaptheory.gap.binary_lp`, about 15x faster at
        N = 512, M = 256), which gives the same optimum, an optimal encoder and a certificate
        wherever its dual weights fit the compact LP's caps; HiGHS solves the latents where
        they do not.
        ``cvxpy``: the program written with ``cp.sum_largest`` (slow to compile; a
        cross-check, no certificates).
    solver : str, optional
        cvxpy solver for ``method="cvxpy"`` (default Clarabel).
    n_jobs : int
        Worker processes for ``method="auto"`` or ``"highs"``: the latents' LPs are independent, so they
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
    exact_above_lo : bool
        Where the LP's value is at least ``lo`` (box sets only), solve for the exact
        :math:`\varepsilon^*` instead: the root of :math:`g(e) = e`, where :math:`g(e)` is the LP
        with the lower rows restricted to labels in :math:`[e, hi]` (``_refine_latent``; a few
        more LPs per such latent). ``eps`` is then the upper end of a bracket of width
        ``REFINE_ATOL`` (unit scale), attained by the encoder, and the certificate proves its
        lower end. With False (and with ``method="cvxpy"``) ``eps`` there is the LP value, an
        upper bound, and a certificate proves only ``lo``.

    Returns
    -------
    result : GapResult
        ``result.eps`` (N,), ``result.encoder`` with ``W_enc`` (M, N) and ``b_enc`` (N,),
        ``result.certificates`` (not with ``method="cvxpy"``).

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
    exact_above_lo = check_bool(exact_above_lo, "exact_above_lo")
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
                                solver=solver, n_jobs=n_jobs, working_set=working_set, executor=executor,
                                exact_above_lo=exact_above_lo)
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
        binary = method == "auto" and lo == hi and 2 <= k < n_latents and _binary_form_applies(D)
        outcomes = _solve_latents(D, latents, k, lo, hi, n_jobs, working_set, executor, exact_above_lo, binary)
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
    for certificate in certificates:
        i = certificate.latent
        if not attained[i] <= eps[i] + ENCODER_ATOL:
            polished = _polished_encoder(D, certificate, encoder.W_enc[:, i], encoder.b_enc[i], eps[i],
                                         attained[i] - eps[i])
            error = _latent_worst(D @ polished[0], i, polished[1], k, lo, hi)[0]
            if error < attained[i]:
                encoder.W_enc[:, i], encoder.b_enc[i], attained[i] = polished[0], polished[1], error
    status[solved & ~(attained <= eps + ENCODER_ATOL)] = Status.NUMERICAL
    return _finish(eps, encoder, certificates, status, solved, lo, k, (lo, hi), method, start, D)


def _polished_encoder(D: np.ndarray, certificate: GapCertificate, w: np.ndarray, b: float, eps: float, miss: float):
    r"""``(w, b)`` moved the least (in norm) onto the constraints the certificate says are binding.

    At the LP optimum each code ``r`` with a positive dual weight holds its constraint with
    equality, :math:`t_r = w \cdot (z_r D) + b = \varepsilon` (zero), :math:`v_r - \varepsilon`
    (lower) or :math:`v_r + \varepsilon` (upper); the simplex meets them only to its primal
    tolerance, which the encoder's exact worst case can exceed by more than ``ENCODER_ATOL``.
    The least-squares correction of :math:`(w, b)` with ``eps`` fixed puts the encoder back on
    that face. Codes whose weight is round-off (positive, yet the constraint is off by more
    than ten times ``miss``, the encoder's excess over ``eps``, or ``ENCODER_ATOL``) are left
    out. The caller keeps the result only if its exact worst case is smaller.
    """
    labels = certificate.labels
    kinds = certificate.kinds
    target = np.where(kinds == KIND_ZERO, eps, np.where(kinds == KIND_LOWER, labels - eps, labels + eps))
    A = np.hstack([certificate.codes @ D, np.ones((len(labels), 1))])
    residual = target - A @ np.r_[w, b]
    binding = (certificate.weights > DUAL_ZERO) & (np.abs(residual) <= 10 * max(miss, ENCODER_ATOL))
    step = np.linalg.lstsq(A[binding], residual[binding], rcond=None)[0]
    return w + step[:-1], b + step[-1]


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
