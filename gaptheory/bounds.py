r"""The bounds gaptheory checks, as sympy expressions and as fast numeric functions.

Every formula is written once, symbolically, and turned into a number with
``sympy.lambdify``; the ``check_*`` functions prove identities about them with sympy
(exact arithmetic, no tolerance) so that the numbers the verification table compares
against rest on checked algebra. Proofs: ``proofs/T2_lower_bound.md``,
``proofs/T3_exact_lp.md`` and ``proofs/T4_classical_bounds.md``.

Symbols: ``N`` latents, ``M`` input dimension, ``K`` nonzeros, ``mu`` mutual coherence,
``beta`` the basis-pursuit cost of writing one atom with the others (T2), ``tau`` the
threshold in the statistical-dimension formula, ``rho = K / N``.
"""

from __future__ import annotations

import itertools
import math
from fractions import Fraction

import numpy as np
import scipy.optimize
import scipy.special
import sympy as sp

from ._validation import check_array, check_bool, check_int, check_k, check_positive

# ----- symbols ---------------------------------------------------------------------------

N_, M_ = sp.symbols("N M", positive=True, integer=True)
K_ = sp.Symbol("K", positive=True, integer=True)
mu_ = sp.Symbol("mu", positive=True)
beta_ = sp.Symbol("beta", nonnegative=True)
delta_ = sp.Symbol("delta", nonnegative=True)
tau_ = sp.Symbol("tau", nonnegative=True)
rho_ = sp.Symbol("rho", positive=True)
_u = sp.Symbol("u", real=True)

#: Standard normal density and upper tail, symbolically.
PHI = sp.exp(-tau_**2 / 2) / sp.sqrt(2 * sp.pi)
Q_TAIL = sp.erfc(tau_ / sp.sqrt(2)) / 2

# ----- T4: classical compressed-sensing bounds -------------------------------------------

#: Welch (1974): mu(D) >= sqrt((N - M) / (M (N - 1))) for N > M unit vectors in R^M.
WELCH = sp.sqrt((N_ - M_) / (M_ * (N_ - 1)))
#: Donoho & Elad (2003), Lemma 1: spark(D) >= 1 + 1/mu.
SPARK_LOWER = 1 + 1 / mu_
#: Donoho & Elad (2003), Tropp (2004): BP and OMP recover every K-sparse code if K < this.
COHERENCE_SPARSITY = (1 + 1 / mu_) / 2
#: Candes (2008): delta_2K below this implies exact basis-pursuit recovery.
RIP_THRESHOLD = sp.sqrt(2) - 1
#: Closed form of int_tau^inf (u - tau)^2 phi(u) du (checked by check_gaussian_tail_integral).
GAUSSIAN_TAIL = (1 + tau_**2) * Q_TAIL - tau_ * PHI


def statistical_dimension_objective(nonnegative: bool = False) -> sp.Expr:
    r"""The function of ``tau`` whose infimum, times N, is the statistical dimension.

    .. math:: F(\tau) = \rho (1 + \tau^2) + (1 - \rho)\, c \int_\tau^\infty (u - \tau)^2 \varphi(u)\,du,
              \quad c = 2 \text{ (signed)}, \; c = 1 \text{ (nonnegative)}

    References
    ----------
    .. [1] Amelunxen, Lotz, McCoy & Tropp (2014), "Living on the edge", Inf. Inference 3(3),
       Proposition 4.5 / Recipe 4.1.
    """
    factor = 1 if nonnegative else 2
    return rho_ * (1 + tau_**2) + (1 - rho_) * factor * GAUSSIAN_TAIL


# ----- T2 / T3 -----------------------------------------------------------------------------

#: T2: every ReLU encoder errs by at least 1 / (2 (1 + beta_i)) on latent i.
T2_BOUND = 1 / (2 * (1 + beta_))
#: T3: the constant encoder w = 0, b = 1/2 errs by exactly 1/2 on binary codes, so eps* <= 1/2.
T3_CONSTANT_ENCODER_ERROR = sp.Rational(1, 2)

# ----- numbers -----------------------------------------------------------------------------

_welch = sp.lambdify((N_, M_), WELCH, "math")
_gaussian_tail = sp.lambdify(tau_, GAUSSIAN_TAIL, ["scipy", "numpy"])
_t2 = sp.lambdify(beta_, T2_BOUND, "numpy")


def welch(N: int, M: int) -> float:
    r"""Welch bound :math:`\sqrt{(N - M) / (M (N - 1))}` (0 when N <= M).

    Examples
    --------
    >>> welch(3, 2)
    0.5
    """
    N = check_int(N, "N", minimum=2)
    M = check_int(M, "M", minimum=1)
    return 0.0 if N <= M else float(_welch(N, M))


def _check_coherence(mu) -> float:
    mu = check_positive(mu, "mu", allow_zero=True)
    if mu > 1:
        raise ValueError(f"mu={mu} is a mutual coherence, in [0, 1]; pass mutual_coherence(D) of unit-norm atoms.")
    return mu


def _check_real(values, name: str) -> np.ndarray:
    """Any-shape finite real array (elementwise functions); ``allow_inf`` keeps +inf."""
    array = np.asarray(values)
    if array.dtype.kind not in "iuf":
        raise TypeError(f"{name} must hold real numbers; got dtype {array.dtype}. Pass a float array.")
    return array.astype(np.float64)


def spark_lower_bound(mu: float) -> float:
    r"""Donoho-Elad lower bound :math:`1 + 1/\mu` on the spark (inf when mu = 0).

    Examples
    --------
    >>> spark_lower_bound(0.5)
    3.0
    """
    mu = _check_coherence(mu)
    return math.inf if mu == 0 else 1.0 + 1.0 / mu


def coherence_sparsity(mu: float) -> float:
    r"""Coherence recovery threshold :math:`(1 + 1/\mu)/2`: K strictly below it is recovered.

    Examples
    --------
    >>> coherence_sparsity(0.2)
    3.0
    """
    mu = _check_coherence(mu)
    return math.inf if mu == 0 else 0.5 * (1.0 + 1.0 / mu)


def rip_guarantees_recovery(delta_2k: float) -> bool:
    r"""True when :math:`\delta_{2K} < \sqrt2 - 1` (Candes 2008), so BP recovers every K-sparse code.

    Examples
    --------
    >>> rip_guarantees_recovery(0.4), rip_guarantees_recovery(0.42)
    (True, False)
    """
    delta_2k = check_positive(delta_2k, "delta_2k", allow_zero=True)
    return delta_2k < float(RIP_THRESHOLD)


def gaussian_tail_integral(tau) -> np.ndarray | float:
    r""":math:`\int_\tau^\infty (u - \tau)^2 \varphi(u)\,du = (1 + \tau^2) Q(\tau) - \tau \varphi(\tau)`.

    Examples
    --------
    >>> round(float(gaussian_tail_integral(0.0)), 12)  # half the second moment
    0.5
    """
    tau = _check_real(tau, "tau")
    if not np.isfinite(tau).all():
        raise ValueError(f"tau must be finite; got {int((~np.isfinite(tau)).sum())} NaN/inf entries.")
    return _gaussian_tail(tau)


def _stationarity(tau: float, rho: float, factor: int) -> float:
    """Half the derivative of F(tau): rho tau - (1 - rho) c (phi(tau) - tau Q(tau))."""
    phi = math.exp(-tau * tau / 2) / math.sqrt(2 * math.pi)
    q = 0.5 * math.erfc(tau / math.sqrt(2))
    return rho * tau - (1 - rho) * factor * (phi - tau * q)


def statistical_dimension_threshold(rho: float, *, nonnegative: bool = False) -> float:
    r"""The minimising ``tau`` of :func:`statistical_dimension_objective` for sparsity ``rho``.

    :math:`F'(\tau)/2 = \rho\tau - (1-\rho) c (\varphi(\tau) - \tau Q(\tau))` is strictly
    increasing (its derivative is :math:`\rho + (1-\rho) c Q(\tau) > 0`), negative at 0 and
    positive for large ``tau``, so the root is unique; found with Brent's method.
    """
    rho = check_positive(rho, "rho")
    if rho > 1:
        raise ValueError(f"rho={rho} must be in (0, 1]; it is K / N.")
    if rho == 1:
        return 0.0
    factor = 1 if check_bool(nonnegative, "nonnegative") else 2
    upper = 1.0
    while _stationarity(upper, rho, factor) <= 0:
        upper *= 2
    return float(scipy.optimize.brentq(_stationarity, 0.0, upper, args=(rho, factor), xtol=1e-14))


def statistical_dimension(N: int, K: int, *, nonnegative: bool = False) -> float:
    r"""Statistical dimension of the l1 descent cone at a K-sparse point in :math:`\mathbb{R}^N`.

    .. math:: \delta = N \inf_{\tau \ge 0} \Big[\rho(1 + \tau^2) + (1-\rho)\, c\,
              \big((1 + \tau^2) Q(\tau) - \tau\varphi(\tau)\big)\Big], \quad \rho = K/N

    with ``c = 2`` for signed codes and ``c = 1`` for nonnegative codes (the descent cone of
    the l1 norm plus the nonnegativity constraint). Basis pursuit with M Gaussian
    measurements succeeds with high probability when M > delta and fails when M < delta,
    within a window of width O(sqrt(N)).

    Parameters
    ----------
    N : int
        The ambient dimension of the codes (latents).
    K : int
        The number of nonzeros, 1 <= K <= N.
    nonnegative : bool
        Use the nonnegative variant (factor 1).

    References
    ----------
    .. [1] Amelunxen, Lotz, McCoy & Tropp (2014), "Living on the edge: phase transitions in
       convex programs with random data", Inf. Inference 3(3), Theorem II and Prop. 4.5.

    Examples
    --------
    >>> round(statistical_dimension(100, 100), 9)
    100.0
    >>> 0 < statistical_dimension(100, 10) < 100
    True
    """
    N = check_int(N, "N", minimum=1)
    K = check_k(K, N)
    return N * _statistical_dimension_ratio(K / N, check_bool(nonnegative, "nonnegative"))


def _statistical_dimension_ratio(rho: float, nonnegative: bool) -> float:
    """delta / N at sparsity rho = K / N in [0, 1] (fractional K allowed)."""
    if rho <= 0.0:
        return 0.0
    if rho >= 1.0:
        return 1.0
    tau = statistical_dimension_threshold(rho, nonnegative=nonnegative)
    factor = 1 if nonnegative else 2
    return rho * (1 + tau**2) + (1 - rho) * factor * float(gaussian_tail_integral(tau))


def l1_transition_sparsity_ratio(m_over_n: float, *, nonnegative: bool = False) -> float:
    r"""The predicted l1 phase-transition point: the K/M at which the statistical dimension equals M.

    Solves :math:`\psi(\rho\,\delta) = \delta` for :math:`\rho = K/M` at
    :math:`\delta = M/N` (Donoho-Tanner coordinates), with :math:`\psi` the normalised
    statistical dimension of :func:`statistical_dimension`.

    References
    ----------
    .. [1] Amelunxen, Lotz, McCoy & Tropp (2014), "Living on the edge: phase transitions in
       convex programs with random data", Inf. Inference 3(3).

    Examples
    --------
    The Donoho-Tanner weak threshold at M/N = 1/2 is about 0.385 (signed codes):

    >>> round(l1_transition_sparsity_ratio(0.5), 3)
    0.386
    """
    if not 0.0 < m_over_n <= 1.0:
        raise ValueError(f"m_over_n={m_over_n} must lie in (0, 1]; the transition is defined for M <= N.")
    if m_over_n == 1.0:
        return 1.0
    nonnegative = check_bool(nonnegative, "nonnegative")
    eps = scipy.optimize.brentq(lambda e: _statistical_dimension_ratio(e, nonnegative) - m_over_n,
                                1e-12, 1.0 - 1e-12, xtol=1e-12)
    return eps / m_over_n


def t2_bound(beta) -> np.ndarray:
    r"""T2 lower bound :math:`1 / (2 (1 + \beta_i))` per latent (0 where beta is inf).

    Examples
    --------
    >>> t2_bound([1.0, np.inf]).tolist()
    [0.25, 0.0]
    """
    beta = _check_real(beta, "beta")
    if np.isnan(beta).any() or (beta < 0).any():
        raise ValueError(f"beta must be >= 0 (an l1 norm) or inf; got {beta!r}.")
    return np.where(np.isinf(beta), 0.0, _t2(np.where(np.isinf(beta), 0.0, beta)))


# ----- symbolic checks (exact; each returns a sympy-simplified residual or a bool) ---------


def check_gaussian_tail_integral() -> sp.Expr:
    r"""Integrate :math:`\int_\tau^\infty (u-\tau)^2\varphi(u)du` with sympy and return the
    simplified difference from :data:`GAUSSIAN_TAIL` (``0`` when the closed form is right)."""
    # A real (not nonnegative) threshold keeps sympy from splitting off the tau = 0 case.
    tau = sp.Symbol("t", real=True)
    integral = sp.integrate((_u - tau) ** 2 * sp.exp(-(_u**2) / 2) / sp.sqrt(2 * sp.pi), (_u, tau, sp.oo))
    return sp.simplify(integral - GAUSSIAN_TAIL.subs(tau_, tau))


def check_stationarity(nonnegative: bool = False) -> sp.Expr:
    r"""Return the simplified difference between :math:`F'(\tau)` and the stationarity
    function used by :func:`statistical_dimension_threshold` (``0`` when they agree):

    .. math:: F'(\tau) = 2\big[\rho\tau - (1-\rho)\,c\,(\varphi(\tau) - \tau Q(\tau))\big].
    """
    factor = 1 if nonnegative else 2
    claimed = 2 * (rho_ * tau_ - (1 - rho_) * factor * (PHI - tau_ * Q_TAIL))
    return sp.simplify(sp.diff(statistical_dimension_objective(nonnegative), tau_) - claimed)


def simplex_frame(N: int) -> sp.Matrix:
    r"""The regular simplex frame: N unit vectors with pairwise inner products -1/(N-1),
    spanning an (N-1)-dimensional space, written in :math:`\mathbb{R}^N` (exact entries).

    An equiangular tight frame; N = 3 is the Mercedes-Benz frame.
    """
    N = check_int(N, "N", minimum=2)
    centred = sp.eye(N) - sp.ones(N, N) / N
    return centred * sp.sqrt(sp.Rational(N, N - 1))


def check_welch_equality_simplex(N: int) -> bool:
    r"""True when the simplex frame of N atoms (rank M = N - 1) has unit atoms and
    coherence exactly equal to the Welch bound :math:`\sqrt{(N-M)/(M(N-1))} = 1/(N-1)`."""
    frame = simplex_frame(N)
    gram = (frame * frame.T).applyfunc(sp.nsimplify)
    rank = frame.rank()
    unit = all(sp.simplify(gram[i, i] - 1) == 0 for i in range(N))
    coherence = max(abs(gram[i, j]) for i in range(N) for j in range(N) if i != j)
    return bool(unit and rank == N - 1 and sp.simplify(coherence - WELCH.subs({N_: N, M_: rank})) == 0)


def check_welch_equality_general() -> sp.Expr:
    """Symbolic: Welch(N, N - 1) - 1/(N - 1), simplified (0: the simplex attains Welch for every N)."""
    return sp.simplify(WELCH.subs(M_, N_ - 1) - 1 / (N_ - 1))


def _solve_exact(A: list, c: list) -> list | None:
    """Solve the square rational system ``A x = c`` by Gaussian elimination; None if singular."""
    n = len(A)
    rows = [list(A[r]) + [c[r]] for r in range(n)]
    for col in range(n):
        pivot = next((r for r in range(col, n) if rows[r][col] != 0), None)
        if pivot is None:
            return None
        rows[col], rows[pivot] = rows[pivot], rows[col]
        for r in range(n):
            if r != col and rows[r][col] != 0:
                factor = rows[r][col] / rows[col][col]
                rows[r] = [a - factor * b for a, b in zip(rows[r], rows[col])]
    return [rows[r][n] / rows[r][r] for r in range(n)]


def _exact_lp_min_eps(eps: sp.Symbol, constraints: list, free: list) -> sp.Rational:
    r"""Exact ``min eps`` over ``(eps, *free)`` by enumerating the vertices of the feasible set.

    Every constraint is written :math:`a \cdot x \le c` (an equality as two); each choice of
    as many constraints as variables that is nonsingular gives a candidate vertex, kept if it
    satisfies all constraints exactly (``Fraction`` arithmetic). Valid for the tiny, pointed
    LPs here, whose optimum is attained at a vertex. (sympy 1.14's ``lpmin`` reports some of
    these feasible LPs as infeasible, so it is not used.)
    """
    variables = [eps, *free]
    rows, rhs = [], []
    for constraint in constraints:
        if isinstance(constraint, sp.Equality):
            parts = [constraint.lhs - constraint.rhs, constraint.rhs - constraint.lhs]
        elif isinstance(constraint, (sp.LessThan, sp.StrictLessThan)):
            parts = [constraint.lhs - constraint.rhs]
        else:
            parts = [constraint.rhs - constraint.lhs]
        for expression in parts:  # expression <= 0
            expression = sp.expand(expression)
            rows.append([Fraction(str(expression.coeff(v))) for v in variables])
            rhs.append(-Fraction(str(expression.subs({v: 0 for v in variables}))))
    best = None
    for subset in itertools.combinations(range(len(rows)), len(variables)):
        point = _solve_exact([rows[r] for r in subset], [rhs[r] for r in subset])
        if point is None or (best is not None and point[0] >= best):
            continue
        if all(sum(a * x for a, x in zip(row, point)) <= c for row, c in zip(rows, rhs)):
            best = point[0]
    if best is None:
        raise ValueError("the exact LP has no vertex; it is infeasible or not pointed.")
    return sp.Rational(best.numerator, best.denominator)


def t2_proof_lp(coefficients) -> sp.Rational:
    r"""Exact optimum of the linear program the T2 proof reduces the four codes to.

    For ``d_i = sum_j c_j d_j`` the codes 0, e_i, e_j, e_i + e_j force
    :math:`|u_j| \le 2\varepsilon` and :math:`u_i \ge 1 - 2\varepsilon`, with
    :math:`u_i = \sum_j c_j u_j`. This solves

    .. math:: \min \varepsilon \ \text{s.t.}\ u_i = \textstyle\sum_j c_j u_j,\ -2\varepsilon \le u_j \le 2\varepsilon,\ u_i \ge 1 - 2\varepsilon

    in exact rational arithmetic (vertex enumeration); T2 says the optimum is
    :math:`1/(2(1 + \|c\|_1))`.

    Parameters
    ----------
    coefficients : sequence of rationals (ints, Fractions or strings like "3/5")
    """
    try:
        coefficients = [sp.Rational(str(Fraction(c))) for c in coefficients]
    except (TypeError, ValueError, OverflowError) as err:
        raise ValueError(f"coefficients must be finite rationals (ints, Fractions or strings like '3/5'); {err}.") from None
    if not coefficients:
        raise ValueError("coefficients must be non-empty: atom i written with at least one other atom.")
    eps, u_i = sp.symbols("eps u_i")
    u = sp.symbols(f"u0:{len(coefficients)}")
    constraints = [sp.Eq(u_i, sum(c * v for c, v in zip(coefficients, u))), u_i >= 1 - 2 * eps]
    constraints += [v <= 2 * eps for v in u] + [v >= -2 * eps for v in u]
    return _exact_lp_min_eps(eps, constraints, [u_i, *u])


def four_code_lp(D, i: int) -> sp.Rational:
    r"""Exact optimum over (w, b) of the worst error on latent ``i`` over the codes
    0, e_i, e_j, e_i + e_j for every j != i (rational ``D``, exact vertex enumeration).

    The ReLU is linearised (valid since the optimum is at most 1/2 < 1, see T3). T2
    says the optimum is at least :math:`1/(2(1+\beta_i))`.

    Parameters
    ----------
    D : sequence of sequences of rationals, shape (N, M)
    i : int
    """
    D = sp.Matrix([[sp.Rational(str(Fraction(v))) for v in row] for row in D])
    n_latents, n_dims = D.shape
    i = check_int(i, "i", minimum=0, maximum=n_latents - 1)
    eps, b = sp.symbols("eps b")
    w = sp.Matrix(sp.symbols(f"w0:{n_dims}"))
    u = D * w
    constraints = [b <= eps, b + u[i] >= 1 - eps, b + u[i] <= 1 + eps]
    for j in range(n_latents):
        if j != i:
            constraints += [b + u[j] <= eps, b + u[i] + u[j] >= 1 - eps, b + u[i] + u[j] <= 1 + eps]
    return _exact_lp_min_eps(eps, constraints, [b, *w])


def check_rational_dictionary(D) -> np.ndarray:
    """Float copy of a rational dictionary, checked to have exactly unit-norm rows."""
    rows = [[Fraction(str(v)) for v in row] for row in D]
    for index, row in enumerate(rows):
        if sum(v * v for v in row) != 1:
            raise ValueError(f"D row {index} = {row} does not have norm exactly 1; use e.g. (3/5, 4/5).")
    return check_array(np.array([[float(v) for v in row] for row in rows]), "D")
