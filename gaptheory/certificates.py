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

:func:`l1_representation_bound`, :func:`exact_l1_representation` and :func:`in_span_exact` confirm the T2 constant
:math:`\beta_i = \min\{\|c\|_1 : c D_{-i} = d_i\}` from a solver's support: an exact ``c`` on
that support gives the sound upper bound :math:`\beta_i \le \|c\|_1`.

A square dual system of :data:`ENCLOSURE_MIN_SIZE` rows or more is settled first by an exact
enclosure of its unique solution (:func:`enclose_solution`, the verification theorem of Rump's
``verifylss``, evaluated in exact integer arithmetic): with a float inverse :math:`R`, exact
:math:`\|I - R A\|_\infty < 1` proves :math:`A` nonsingular and bounds
:math:`\|A^{-1} b - x\|_\infty` for a float :math:`x`. That proves the exact weights exist and are
nonnegative, and bounds the value they prove, without forming their ~n x 53-bit denominators.

Costs: the exact solves are fraction-free Gaussian elimination on integer matrices whose
entries have about 53 + (exponent range) bits (a 258 x 258 dual system ~1.2 s, 128 x 128 ~0.1 s);
an enclosure costs one exact product :math:`R A` of such matrices, done as float64 GEMMs of
20-bit limbs (:mod:`gaptheory._integer_matrix`; 514 x 514 with 40-bit :math:`R` and 77-bit
:math:`A`: ~0.05 s on one core).
"""

from __future__ import annotations

import math
from fractions import Fraction

import flint
import numpy as np
import scipy.linalg
import scipy.sparse

from ._integer_matrix import IntegerMatrix, sparse_product
from ._integer_matrix import hstack as integer_hstack
from ._validation import sparse_rows

#: Unit round-off of float64, :math:`u = 2^{-53}`.
UNIT_ROUNDOFF = 2.0**-53

#: Bits of each row of the float inverse in :func:`enclose_solution` (two limbs): enough for
#: :math:`\|I - R A\|` to be about :math:`2^{-40} \kappa(A)`, far below 1.
INVERSE_BITS = 40

#: Square dual systems with at least this many rows are settled by :func:`enclose_solution`
#: before an exact solve: below it the exact solve is as fast and also gives the weights.
ENCLOSURE_MIN_SIZE = 64


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
    ints, exponent = IntegerMatrix.from_floats(A)
    return ints.to_objects(), exponent


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
    return _solve_augmented(flint.fmpz_mat([[int(v) for v in row] + [int(rhs)] for row, rhs in zip(A, b)]))


def _solve_augmented(augmented) -> list[Fraction] | None:
    """:func:`solve_exact` on the integer matrix ``[A | b]`` (python-flint, at least one column of ``A``)."""
    reduced, denominator, rank = augmented.rref()
    entries = reduced.entries()
    width = augmented.ncols()
    n = width - 1
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


def _shifted(value: int, exponent: int) -> Fraction:
    """``value * 2**exponent`` as an exact Fraction."""
    return Fraction(value << exponent) if exponent >= 0 else Fraction(value, 1 << -exponent)


def enclose_solution(A_int: IntegerMatrix, exponent: int, b, approximate) -> tuple[np.ndarray, Fraction] | None:
    r"""A float solution of a square system with an exact bound on its distance to the true one.

    For the exact matrix :math:`A = A_{int}\,2^{e}` (n, n) and right-hand side ``b`` (floats,
    read as the exact rationals they are), a float inverse :math:`R \approx A^{-1}` (of
    ``approximate``) is read exactly, with each row rounded to :data:`INVERSE_BITS` bits of its
    largest entry, and

    .. math:: \|I - R A\|_\infty < 1 \ \Rightarrow\ A \text{ nonsingular},\quad
              \|A^{-1} b - x\|_\infty \le \frac{\|R (b - A x)\|_\infty}{1 - \|I - R A\|_\infty}

    for any ``x`` (:math:`A^{-1} = (I - E)^{-1} R` with :math:`E = I - R A`, and
    :math:`\|(I - E)^{-1}\| \le 1 / (1 - \|E\|)`). Both norms are evaluated in exact integer
    arithmetic (:class:`~gaptheory._integer_matrix.IntegerMatrix`: the product :math:`R A` by
    exact float64 GEMMs of 20-bit limbs); ``x`` is the float solve refined twice with the exact
    residual. No rounding error enters the bound: the floats only choose :math:`R` and :math:`x`.

    Parameters
    ----------
    A_int : IntegerMatrix of shape (n, n)
    exponent : int
        :math:`e` in :math:`A = A_{int} 2^e`.
    b : array_like of shape (n,), finite floats
    approximate : ndarray of shape (n, n)
        A float64 approximation of :math:`A` (any: it only chooses :math:`R`).

    Returns
    -------
    (x, radius) or None
        ``x`` (n,) float64 and ``radius`` (Fraction) with :math:`\|A^{-1} b - x\|_\infty \le`
        ``radius``; None when :math:`\|I - R A\|_\infty \ge 1` (``A`` singular or too
        ill-conditioned for a float64 inverse to prove it nonsingular).

    References
    ----------
    .. [1] Rump (2010), "Verification methods: rigorous results using floating-point
       arithmetic", Acta Numerica 19, Theorem 10.1 (the bound on :math:`A^{-1} b - x`).
    """
    b = np.asarray(b, dtype=np.float64)
    n = len(b)
    try:
        R = np.linalg.inv(np.asarray(approximate, dtype=np.float64))
    except np.linalg.LinAlgError:
        return None
    if not np.isfinite(R).all():
        return None
    # Row k of R is R_int[k] 2^row_exponents[k] (any R is admissible), so that
    # (R A)[k] = P[k] 2^shift_k with P = R_int A_int exactly.
    row_exponents = np.frexp(np.abs(R).max(axis=1))[1].astype(np.int64) - INVERSE_BITS
    R_int = IntegerMatrix.from_integers(np.rint(np.ldexp(R, -row_exponents[:, None])).astype(np.int64))
    shifts = (row_exponents + exponent).tolist()
    P = R_int @ A_int
    diagonal = [int(d) for d in P.diagonal()]
    off_diagonal = [total - abs(d) for total, d in zip(P.abs().row_sums(), diagonal)]
    deviation = max(_shifted(rest, shift) + abs(_shifted(d, shift) - 1)  # ||I - R A||_inf, exactly
                    for rest, d, shift in zip(off_diagonal, diagonal, shifts))
    if deviation >= 1:
        return None
    b_int, b_exponent = to_integers(b)

    def correction(x):  # R (b - A x) exactly: (integers, exponent per row)
        x_int, x_exponent = IntegerMatrix.from_floats(x[:, None])
        Ax = (A_int @ x_int).to_objects()[:, 0]
        ax_exponent = exponent + x_exponent
        low = min(ax_exponent, b_exponent)  # b - A x = 2^low (b_int 2^(eb - low) - (A_int x_int) 2^(eAx - low))
        residual = [(int(bk) << (b_exponent - low)) - (int(v) << (ax_exponent - low)) for bk, v in zip(b_int, Ax)]
        Rr = (R_int @ IntegerMatrix.from_integers([[v] for v in residual])).to_objects()[:, 0]
        return [int(v) for v in Rr], [int(e) + low for e in row_exponents]

    x = R @ b
    if not np.isfinite(x).all():
        return None
    for _ in range(2):
        values, exponents = correction(x)
        x = x + np.array([float(_shifted(v, e)) for v, e in zip(values, exponents)])
        if not np.isfinite(x).all():
            return None
    values, exponents = correction(x)
    largest = max((_shifted(abs(v), e) for v, e in zip(values, exponents)), default=Fraction(0))
    return x, largest / (1 - deviation)


def exact_matrix(A) -> tuple[flint.fmpz_mat, int]:
    r"""A float array as an exact python-flint integer matrix: ``(A_int, e)`` with ``A == A_int 2^e``.

    Parameters
    ----------
    A : array_like of shape (p, n), finite floats

    Returns
    -------
    A_int : flint.fmpz_mat of shape (p, n)
    e : int
        The largest exponent for which ``A_int`` is an integer matrix (0 when ``A`` is zero;
        :meth:`IntegerMatrix.from_floats <gaptheory._integer_matrix.IntegerMatrix.from_floats>`).
    """
    A = np.atleast_2d(np.asarray(A, dtype=np.float64))
    if not np.isfinite(A).all():
        raise ValueError("exact_matrix needs finite entries; got NaN or inf.")
    A_int, exponent = IntegerMatrix.from_floats(A)
    return flint.fmpz_mat(*A.shape, [int(v) for v in A_int.to_objects().flat]), exponent


def _dual_matrix(codes, signs: np.ndarray, D: np.ndarray, extra_row=None) -> tuple[IntegerMatrix, int]:
    r"""The dual equalities' matrix :math:`A = [\sigma_r z_r D;\ \sigma_r;\ 1]` (M + 2, m) exactly,
    as ``(A_int, e)`` with ``A == A_int 2^e``; with ``extra_row`` (m,), that row appended (M + 3, m).

    The block :math:`\sigma_r z_r D` is one exact product of the sparse signed codes and the
    dictionary's rows they use (:func:`~gaptheory._integer_matrix.sparse_product`).
    """
    codes = sparse_rows(codes, "codes")
    used = np.unique(codes.indices)
    signs = np.asarray(signs, dtype=np.float64)
    signed = scipy.sparse.csr_array((codes.data * np.repeat(signs, np.diff(codes.indptr)), codes.indices, codes.indptr),
                                    shape=codes.shape)[:, used]
    D_int, D_exponent = IntegerMatrix.from_floats(np.asarray(D, dtype=np.float64)[used])
    block, block_exponent = sparse_product(signed, D_int)
    block_exponent += D_exponent
    columns = [signs, np.ones(codes.shape[0])] + ([] if extra_row is None else [np.asarray(extra_row, dtype=np.float64)])
    rest, rest_exponent = IntegerMatrix.from_floats(np.column_stack(columns))
    if not block.limbs.any():  # no exponent to keep: a zero block is zero at any scale
        block_exponent = rest_exponent
    exponent = min(block_exponent, rest_exponent)
    A_int = integer_hstack([block.shifted(block_exponent - exponent), rest.shifted(rest_exponent - exponent)])
    return A_int.T, exponent


def _dual_system(codes, signs: np.ndarray, D: np.ndarray):
    """Integer matrix G (M + 2, m) and integer target (M + 2,): ``G y = target`` is the dual
    equalities :math:`A y = e_{M+2}` of :func:`_dual_matrix` with its power of two cleared."""
    A_int, exponent = _dual_matrix(codes, signs, D)
    G = A_int.to_objects()
    if exponent > 0:
        G = G << exponent
    return G, [0] * (len(G) - 1) + [1 << max(-exponent, 0)]


def exact_dual_weights(codes, signs, values, D, guesses, pin=None) -> tuple[list[Fraction] | None, Fraction] | None:
    r"""Exact weights :math:`y \ge 0` satisfying the dual equalities, with the bound they prove.

    Parameters
    ----------
    codes : ndarray or scipy.sparse array of shape (m, N)
        The certificate's codes :math:`z_r` (float64, read as exact rationals).
    signs : ndarray of shape (m,)
        :math:`\sigma_r \in \{+1, -1\}`.
    values : ndarray of shape (m,)
        Per code, the bound's coefficient (:math:`+v_r` lower, :math:`-v_r` upper, 0 zero).
    D : ndarray of shape (N, M)
        The dictionary, read as an exact rational matrix.
    guesses : sequence of ndarray of shape (m,), or of callables returning one
        Float weight vectors; each one's support (entries > 0) is a set of columns on which
        the equalities are settled exactly until a nonnegative solution appears: first the
        square supports, by enclosure, then every support by an exact solve, in order. A
        callable is called only when the guesses before it have not settled by enclosure.
    pin : float, optional
        The bound the weights are claimed to prove: a support of M + 3 codes is then square
        with the equation :math:`\sum_r \mathrm{values}_r y_r = \mathrm{pin}` added (as
        a guess re-fitted with that bound pinned usually is), and its solution proves ``pin``.

    Returns
    -------
    (weights, bound) or None
        ``weights`` (m,) exact, zero off the support used, satisfying the equalities exactly;
        ``bound`` :math:`= \sum_r \mathrm{values}_r y_r` exactly. When the support is a square
        system of at least :data:`ENCLOSURE_MIN_SIZE` rows that :func:`enclose_solution`
        settles, ``weights`` is None: the unique exact solution is proven nonnegative without
        being formed, and ``bound`` is an exact lower bound on the value it proves,
        :math:`\sum_r \mathrm{values}_r x_r - \rho \sum_r |\mathrm{values}_r|` for the float
        ``x`` within :math:`\rho` of it. None when no guess's support carries an exact
        nonnegative solution.
    """
    codes = sparse_rows(codes, "codes")
    signs, values, D = np.asarray(signs), np.asarray(values, dtype=np.float64), np.asarray(D, dtype=np.float64)
    # Square supports first, by enclosure (cheap); then the exact solves, in the guesses' order.
    supports, settled = [], {}
    for guess in guesses:
        support = tuple(np.flatnonzero(np.asarray(guess() if callable(guess) else guess) > 0).tolist())
        if not support or support in supports:
            continue
        supports.append(support)
        square = len(support) == D.shape[1] + 2 or (pin is not None and len(support) == D.shape[1] + 3)
        if square and len(support) >= ENCLOSURE_MIN_SIZE:
            columns = list(support)
            settled[support] = _enclosed_weights(codes[columns], signs[columns], values[columns], D,
                                                 None if len(support) == D.shape[1] + 2 else pin)
            if settled[support] not in (None, False):
                return None, settled[support]
    system = None
    for support in supports:
        if settled.get(support) is False:  # proven to have a negative weight
            continue
        if system is None:
            system = _dual_system(codes, signs, D)
        G, target = system
        solution = solve_exact(G[:, list(support)], target)
        if solution is None or any(y < 0 for y in solution):
            continue
        weights = [Fraction(0)] * codes.shape[0]
        for column, y in zip(support, solution):
            weights[column] = y
        bound = sum((Fraction(float(values[r])) * weights[r] for r in support), Fraction(0))
        return weights, bound
    return None


def _enclosed_weights(codes, signs, values, D, pin=None):
    r"""The bound proven by the unique solution of a square dual system on ``codes``, settled by
    :func:`enclose_solution`: a Fraction (a lower bound on it, the solution proven nonnegative),
    False (proven to have a negative entry) or None (not settled: solve exactly).

    The system is the dual equalities on M + 2 codes, or on M + 3 codes with the row
    :math:`\sum_r \mathrm{values}_r y_r = \mathrm{pin}` added, whose solution then proves
    exactly ``pin``."""
    approximate = np.vstack([(signs[:, None] * (codes @ D)).T, signs, np.ones(len(signs))])
    b = np.zeros(len(approximate))
    b[-1] = 1.0
    if pin is not None:
        approximate, b = np.vstack([approximate, values]), np.r_[b, pin]
    A_int, scale = _dual_matrix(codes, signs, D, None if pin is None else values)
    enclosure = enclose_solution(A_int, scale, b, approximate)
    if enclosure is None:
        return None
    x, radius = enclosure
    if any(Fraction(float(v)) + radius < 0 for v in x):
        return False
    if Fraction(float(x.min())) < radius:
        return None
    if pin is not None:
        return Fraction(float(pin))
    v_int, v_exponent = to_integers(values)
    x_int, x_exponent = to_integers(x)
    value = _shifted(sum(int(a) * int(c) for a, c in zip(v_int, x_int)), int(v_exponent) + int(x_exponent))
    return value - radius * _shifted(sum(abs(int(a)) for a in v_int), int(v_exponent))


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
    codes : ndarray or scipy.sparse array of shape (m, N)
    signs, values : ndarray of shape (m,)
        As in :func:`exact_dual_weights`.
    D : ndarray of shape (N, M)
    weights : ndarray of shape (m,)
        Float weights, all > 0.
    extra_codes : ndarray or scipy.sparse array of shape (p, N)
        Codes allowed with either sign; ``extra_values`` (p,) is the bound's coefficient of each
        with sign +1 (the coefficient with sign -1 is its negative).

    Returns
    -------
    (codes, signs, weights, bound) or None
        The codes used (a CSR array: ``codes`` then the extra codes with a nonzero weight, each with its
        sign), exact weights summing to 1 and satisfying the equalities exactly, the exact bound.
        None when the residual is not in the span of the extra columns.
    """
    codes, extra_codes = sparse_rows(codes, "codes"), sparse_rows(extra_codes, "extra_codes")
    signs = np.asarray(signs, dtype=np.float64)
    m, p = codes.shape[0], extra_codes.shape[0]
    G, _ = _dual_system(scipy.sparse.vstack([codes, extra_codes], format="csr"), np.r_[signs, np.ones(p)],
                        np.asarray(D, dtype=np.float64))
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
    all_codes = scipy.sparse.vstack([codes, extra_codes[used]], format="csr")
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
    if not support:
        return [Fraction(0)] * len(others) if not np.any(atom) else None
    # [D_S^T | d] times one power of two: the same solutions.
    augmented, _ = exact_matrix(np.vstack([np.asarray(others, dtype=np.float64)[support], atom]).T)
    solution = _solve_augmented(augmented)
    if solution is None:
        return None
    c = [Fraction(0)] * len(others)
    for row, value in zip(support, solution):
        c[row] = value
    return c


def l1_representation_bound(others, atom, support) -> Fraction | None:
    r"""An exact upper bound on :math:`\|c\|_1` for an exact :math:`c` with :math:`c\, D_S = d`, or None.

    For M >= :data:`ENCLOSURE_MIN_SIZE`, the support is completed to M rows (with the rows of
    ``others`` most independent of it, by pivoted QR; their float coefficients are 0) and
    :func:`enclose_solution` proves the square :math:`D_S` nonsingular, so an exact :math:`c`
    exists, and bounds :math:`\|c\|_1 \le \|c_{float}\|_1 + M \rho`. Otherwise, or when the
    enclosure does not settle, :math:`c` is solved exactly on the support
    (:func:`exact_l1_representation`) and its norm returned. None when no exact :math:`c`
    exists there.

    Parameters
    ----------
    others, atom, support
        As in :func:`exact_l1_representation`.
    """
    others = np.asarray(others, dtype=np.float64)
    support, n_dims = list(support), others.shape[1]
    square = support
    if len(support) < n_dims <= len(others) and n_dims >= ENCLOSURE_MIN_SIZE:
        square = support + _independent_rows(others, support, n_dims - len(support))
    rows = others[square]
    if len(square) == n_dims >= ENCLOSURE_MIN_SIZE:
        A_int, exponent = IntegerMatrix.from_floats(rows.T)  # D_S^T c = d, D_S^T = A_int 2^e
        enclosure = enclose_solution(A_int, exponent, np.asarray(atom, dtype=np.float64), rows.T)
        if enclosure is not None:
            c, radius = enclosure
            return sum((abs(Fraction(float(v))) for v in c), Fraction(0)) + len(square) * radius
    representation = exact_l1_representation(others, atom, support)
    return None if representation is None else sum((abs(v) for v in representation), Fraction(0))


def _independent_rows(others: np.ndarray, support: list, count: int) -> list:
    """``count`` rows of ``others`` outside ``support``, most independent of its span (pivoted QR)."""
    basis = np.linalg.qr(others[support].T)[0] if support else np.zeros((others.shape[1], 0))
    rest = np.setdiff1d(np.arange(len(others)), support)
    projected = others[rest].T - basis @ (basis.T @ others[rest].T)
    pivots = scipy.linalg.qr(projected, mode="r", pivoting=True)[1]
    return rest[pivots[:count]].tolist()


def in_span_exact(others, atom) -> bool:
    r"""Whether :math:`d \in \mathrm{span}\{\text{rows of } D_{-i}\}` exactly (equal ranks)."""
    others = np.asarray(others, dtype=np.float64)
    return exact_matrix(others)[0].rank() == exact_matrix(np.vstack([others, atom]))[0].rank()
