r"""Exact rational arithmetic for the gap certificates and the T2 constant.

Every finite float64 is a dyadic rational :math:`m\,2^e` (:math:`|m| < 2^{53}`), so a float
matrix *is* an exact rational matrix. This module writes float arrays as integers times one
power of two (:func:`to_integers`), solves small linear systems exactly over the rationals
(python-flint's fraction-free row reduction, :func:`solve_exact`) and rounds exact results to
the float on the safe side (:func:`floor_float`, :func:`ceil_float`). No tolerance enters an
exact check: a system is consistent or it is not, a weight is nonnegative or it is not.

:func:`exact_dual_weights` is the weak-duality check of ``proofs/T3_exact_lp.md``: given codes
:math:`z_r` with signs :math:`\sigma_r` and float guesses of the weights, it looks for exact
rational :math:`y \ge 0` with

.. math:: \sum_r \sigma_r y_r\, z_r D = 0, \qquad \sum_r \sigma_r y_r = 0, \qquad \sum_r y_r = 1

(for the exact rational ``D`` given), by re-solving the equalities exactly on the columns each
guess uses. The float guesses only choose columns; the weights are never taken from them.

:func:`exact_l1_representation` and :func:`in_span_exact` confirm the T2 constant
:math:`\beta_i = \min\{\|c\|_1 : c D_{-i} = d_i\}` from a solver's support: an exact ``c`` on
that support gives the sound upper bound :math:`\beta_i \le \|c\|_1`.

Costs: the exact solves are fraction-free Gaussian elimination on integer matrices whose
entries have about 53 + (exponent range) bits; a 386 x 386 system takes ~6 s, 128 x 128 ~0.1 s.
"""

from __future__ import annotations

import math
from fractions import Fraction

import flint
import numpy as np

#: Unit round-off of float64, :math:`u = 2^{-53}`.
UNIT_ROUNDOFF = 2.0**-53


def unit_norm_tolerance(n_dims: int) -> float:
    r"""Largest :math:`|\mathrm{fl}(\|d\|^2) - 1|` accepted for a float64 row normalised to unit norm.

    Normalising ``d / fl(||d||)`` in float64 gives :math:`\|\hat d\|^2 = 1 + \delta` with
    :math:`|\delta| \le (M + 4) u + O(u^2)` (the sum of M squares has relative error
    :math:`\gamma_M \approx M u`, the square root halves it and adds u, each of the M
    divisions adds u per entry, i.e. 2u to the square); evaluating
    :math:`\|\hat d\|^2` in float64 adds at most :math:`\gamma_M \approx M u` more. The
    tolerance is :math:`2 (M + 4) u`, which covers both with a margin.
    """
    return 2.0 * (n_dims + 4) * UNIT_ROUNDOFF


def unit_norm_deviation(D: np.ndarray) -> np.ndarray:
    r""":math:`|\mathrm{fl}(\|d_j\|^2) - 1|` per row of ``D`` (N, M)."""
    return np.abs(np.einsum("ij,ij->i", D, D) - 1.0)


def to_integers(A) -> tuple[np.ndarray, int]:
    r"""Write a float array exactly as ``ints * 2**exponent`` with Python integers.

    Parameters
    ----------
    A : array_like of floats, finite

    Returns
    -------
    ints : ndarray of object (Python int), same shape as ``A``
    exponent : int
        ``A == ints * 2**exponent`` exactly (one exponent for the whole array).
    """
    A = np.asarray(A, dtype=np.float64)
    if not np.isfinite(A).all():
        raise ValueError("to_integers needs finite entries; got NaN or inf.")
    mantissa, exponent = np.frexp(A)
    ints = np.ldexp(mantissa, 53).astype(np.int64)  # exact: |mantissa| in [0.5, 1)
    exps = exponent.astype(np.int64) - 53
    nonzero = ints != 0
    if not nonzero.any():
        return np.zeros(A.shape, dtype=object), 0
    base = int(exps[nonzero].min())
    shift = np.where(nonzero, exps - base, 0).astype(object)
    return ints.astype(object) << shift, base


def floor_float(q: Fraction) -> float:
    """The largest float64 that is <= ``q``."""
    value = float(q)  # correctly rounded
    return math.nextafter(value, -math.inf) if Fraction(value) > q else value


def ceil_float(q: Fraction) -> float:
    """The smallest float64 that is >= ``q``."""
    value = float(q)
    return math.nextafter(value, math.inf) if Fraction(value) < q else value


def solve_exact(A, b) -> list[Fraction] | None:
    r"""One exact rational solution of ``A x = b`` (integer ``A`` (p, n), ``b`` (p,)), or None.

    Row-reduces ``[A | b]`` over the integers (fraction-free, python-flint). The system is
    inconsistent exactly when the last column holds a pivot; otherwise the free variables are
    set to 0 and each pivot variable is read off. When ``A`` has full column rank the solution
    is the unique one.
    """
    A = np.asarray(A, dtype=object)
    p, n = A.shape
    if n == 0:
        return [] if all(v == 0 for v in b) else None
    augmented = flint.fmpz_mat([[int(v) for v in row] + [int(rhs)] for row, rhs in zip(A, b)])
    reduced, denominator, rank = augmented.rref()
    entries = reduced.entries()
    width = n + 1
    solution = [Fraction(0)] * n
    column = 0
    den = int(denominator)
    for row in range(rank):
        while entries[row * width + column] == 0:
            column += 1
        if column == n:
            return None
        solution[column] = Fraction(int(entries[row * width + n]), den)
        column += 1
    return solution


def _dual_system(codes: np.ndarray, signs: np.ndarray, D: np.ndarray):
    """Integer matrix G (M + 2, m) and target (M + 2,) of the dual equalities, exactly scaled."""
    used = np.flatnonzero((codes != 0).any(axis=0))
    n_dims = D.shape[1]
    if used.size:
        Z_int, _ = to_integers(codes[:, used])
        D_int, _ = to_integers(D[used])
        ZD = flint.fmpz_mat(Z_int.tolist()) * flint.fmpz_mat(D_int.tolist())  # (m, M), = Z D / 2^(a + b)
        rows = np.array([[int(v) for v in row] for row in ZD.tolist()], dtype=object).reshape(len(codes), n_dims)
    else:
        rows = np.zeros((len(codes), n_dims), dtype=object)
    sign = np.array([int(s) for s in signs], dtype=object)
    G = np.vstack([(rows * sign[:, None]).T, sign[None, :], np.ones((1, len(codes)), dtype=object)])
    target = [0] * (n_dims + 1) + [1]
    return G, target


def exact_dual_weights(codes, signs, values, D, guesses) -> tuple[list[Fraction], Fraction] | None:
    r"""Exact weights :math:`y \ge 0` satisfying the dual equalities, with the bound they prove.

    Parameters
    ----------
    codes : ndarray of shape (m, N)
        The certificate's codes :math:`z_r` (float64, read as exact rationals).
    signs : ndarray of shape (m,)
        :math:`\sigma_r \in \{+1, -1\}`.
    values : ndarray of shape (m,)
        Per code, the bound's coefficient (:math:`+v_r` lower, :math:`-v_r` upper, 0 zero).
    D : ndarray of shape (N, M)
        The dictionary, read as an exact rational matrix.
    guesses : sequence of ndarray of shape (m,)
        Float weight vectors; each one's support (entries > 0) is a set of columns on which
        the equalities are re-solved exactly, in order, until a nonnegative solution appears.

    Returns
    -------
    (weights, bound) or None
        ``weights`` (m,) exact, zero off the support used, satisfying the equalities exactly;
        ``bound`` :math:`= \sum_r \mathrm{values}_r y_r` exactly. None when no guess's support
        carries an exact nonnegative solution.
    """
    codes = np.asarray(codes, dtype=np.float64)
    G, target = _dual_system(codes, np.asarray(signs), np.asarray(D, dtype=np.float64))
    tried = set()
    for guess in guesses:
        support = tuple(np.flatnonzero(np.asarray(guess) > 0).tolist())
        if not support or support in tried:
            continue
        tried.add(support)
        solution = solve_exact(G[:, list(support)], target)
        if solution is None or any(y < 0 for y in solution):
            continue
        weights = [Fraction(0)] * len(codes)
        for column, y in zip(support, solution):
            weights[column] = y
        bound = sum((Fraction(float(values[r])) * weights[r] for r in support), Fraction(0))
        return weights, bound
    return None


def corrected_dual_weights(codes, signs, values, D, weights, extra_codes, extra_values):
    r"""Exact :math:`y \ge 0` on ``codes`` plus correction codes, from float weights that balance
    the dual equalities only to round-off.

    The float ``weights`` (all > 0) are read as exact rationals; the exact residual of the
    homogeneous equalities :math:`\sum_r \sigma_r y_r z_r D = 0,\ \sum_r \sigma_r y_r = 0` is
    then cancelled exactly by a combination :math:`a` of the columns :math:`(e_p D, 1)` of
    ``extra_codes`` :math:`e_p`, each entering with sign +1 (weight :math:`a_p > 0`) or -1
    (weight :math:`-a_p`), and the weights are divided by their sum, so that
    :math:`\sum_r y_r = 1`. Every weight is nonnegative by construction, so the result is a
    certificate whenever the correction exists (the extra columns span the residual); it is
    as good as the float one when :math:`a` is tiny, and valid, only weaker, when it is not.

    Parameters
    ----------
    codes : ndarray of shape (m, N)
    signs, values : ndarray of shape (m,)
        As in :func:`exact_dual_weights`.
    D : ndarray of shape (N, M)
    weights : ndarray of shape (m,)
        Float weights, all > 0.
    extra_codes : ndarray of shape (p, N)
        Codes allowed with either sign; ``extra_values`` (p,) is the bound's coefficient of each
        with sign +1 (the coefficient with sign -1 is its negative).

    Returns
    -------
    (codes, signs, weights, bound) or None
        The codes used (``codes`` then the extra codes with a nonzero weight, each with its
        sign), exact weights summing to 1 and satisfying the equalities exactly, the exact bound.
        None when the residual is not in the span of the extra columns.
    """
    codes, extra_codes = np.asarray(codes, dtype=np.float64), np.asarray(extra_codes, dtype=np.float64)
    signs = np.asarray(signs, dtype=np.float64)
    m, p = len(codes), len(extra_codes)
    G, _ = _dual_system(np.vstack([codes, extra_codes]), np.r_[signs, np.ones(p)], np.asarray(D, dtype=np.float64))
    homogeneous = G[:-1]  # the sum-to-one row is met by the final normalisation
    y = [Fraction(float(w)) for w in weights]
    if any(w <= 0 for w in y):
        return None
    scale = math.lcm(*(w.denominator for w in y))
    y_int = [int(w * scale) for w in y]
    residual = [-sum(int(row[r]) * y_int[r] for r in range(m)) for row in homogeneous]
    correction = solve_exact(homogeneous[:, m:], residual)  # in units of 1 / scale
    if correction is None:
        return None
    used = [j for j, a in enumerate(correction) if a != 0]
    all_codes = np.vstack([codes, extra_codes[used]])
    all_signs = np.r_[signs, [1.0 if correction[j] > 0 else -1.0 for j in used]]
    raw = [Fraction(v) for v in y_int] + [abs(correction[j]) for j in used]
    total = sum(raw, Fraction(0))
    exact = [w / total for w in raw]
    coefficients = [Fraction(float(v)) for v in values] + [
        Fraction(float(extra_values[j])) * (1 if correction[j] > 0 else -1) for j in used]
    bound = sum((c * w for c, w in zip(coefficients, exact)), Fraction(0))
    return all_codes, all_signs, exact, bound


def exact_l1_representation(others, atom, support) -> list[Fraction] | None:
    r"""Exact :math:`c` with :math:`c\, D_{S} = d` on the rows ``support`` of ``others``, or None.

    Parameters
    ----------
    others : ndarray of shape (N - 1, M)
        :math:`D_{-i}`.
    atom : ndarray of shape (M,)
        :math:`d_i`.
    support : sequence of int
        Rows of ``others`` allowed a nonzero coefficient.

    Returns
    -------
    c : list of Fraction of length N - 1, or None if ``d`` is not exactly in the span of those rows.
    """
    support = list(support)
    stacked, _ = to_integers(np.vstack([np.asarray(others, dtype=np.float64)[support], atom]))
    solution = solve_exact(stacked[:-1].T, stacked[-1])
    if solution is None:
        return None
    c = [Fraction(0)] * len(others)
    for row, value in zip(support, solution):
        c[row] = value
    return c


def in_span_exact(others, atom) -> bool:
    r"""Whether :math:`d \in \mathrm{span}\{\text{rows of } D_{-i}\}` exactly (equal ranks)."""
    stacked, _ = to_integers(np.vstack([np.asarray(others, dtype=np.float64), atom]))
    return flint.fmpz_mat(stacked[:-1].tolist()).rank() == flint.fmpz_mat(stacked.tolist()).rank()
