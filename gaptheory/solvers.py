r"""Per-sample sparse inference: exact (cvxpy) ground truth and fast batched torch solvers.

Every solver takes observations ``X`` of shape (B, M) and a dictionary ``D`` of shape
(N, M) with unit-norm rows, and returns codes ``Z`` of shape (B, N) with ``Z @ D ~ X``.
With ``return_info=True`` it returns a :class:`SolveResult` instead, carrying the
per-row status, objective, iterations and duality gap.

Problems
--------
basis pursuit  : :math:`\min_z \|z\|_1 \ \text{s.t.}\ z D = x` (optionally :math:`z \ge 0`)
LASSO          : :math:`\min_z \tfrac12 \|x - z D\|_2^2 + \alpha \|z\|_1` (optionally :math:`z \ge 0`)
OMP            : greedy K-sparse least squares (Pati, Rezaiifar & Krishnaprasad 1993).
best subset    : :math:`\min_z \|x - z D\|_2 \ \text{s.t.}\ \|z\|_0 \le K` (optionally :math:`z \ge 0`),
                 solved exactly by enumerating supports: the L0 ground truth at small N.

Scaling against scikit-learn: ``sklearn.linear_model.Lasso`` solves, per target,
:math:`\tfrac{1}{2 n_\text{samples}}\|y - A w\|^2 + \alpha_\text{sk}\|w\|_1`, where our
design matrix is :math:`A = D^\top` (M x N) so ``n_samples = M``; hence
:math:`\alpha_\text{sk} = \alpha / M`. Fit it with ``fit_intercept=False``.
"""

from __future__ import annotations

import contextlib
import itertools
import math
import time
import warnings
from dataclasses import dataclass
from enum import IntEnum

import numpy as np
import torch

from ._device import resolve_device, resolve_dtype
from ._validation import (
    check_choice,
    check_dictionary,
    check_int,
    check_k,
    check_observations,
    check_positive,
)
from .instances import MAX_EXHAUSTIVE_SUPPORTS

#: Default relative duality-gap tolerance of FISTA: the objective is then certified within
#: this relative distance of the optimum, a decade inside the 1e-6 agreement promised with
#: cvxpy (whose own interior-point answers are accurate to ~1e-8).
FISTA_TOL = 1e-7

#: Default iteration cap of FISTA; restarted FISTA on unit-norm dictionaries needs a few
#: hundred iterations at most in our tests, so hitting this signals an ill-posed problem.
FISTA_MAX_ITER = 20_000

#: FISTA evaluates the duality gap (one extra matmul) every this many iterations.
FISTA_CHECK_EVERY = 10

#: Homotopy event times shorter than this many machine epsilons (relative to lambda) are
#: round-off echoes of the event just taken (an atom re-entering as it leaves), not events.
HOMOTOPY_EVENT_EPS = 256

#: Cap on homotopy events per row: this many times min(N, M), plus HOMOTOPY_MIN_EVENTS.
#: Random instances need about one event per atom of the final support; the path can be
#: exponentially long in the worst case (Mairal & Yu 2012), so rows past the cap are
#: finished by warm-started FISTA instead.
HOMOTOPY_MAX_EVENTS_PER_DIM = 2
HOMOTOPY_MIN_EVENTS = 16

#: Absolute cap on homotopy events per row. Each event re-solves the active system
#: (O(s^3) for s active atoms), so paths towards dense solutions (e.g. a nonnegative LASSO
#: on signed data, supports ~M) cost O(s^4) per row; past this cap FISTA, warm-started on
#: the exact finish of the support reached, is the cheaper way to the optimum.
HOMOTOPY_MAX_EVENTS = 64

#: A float32 path stops once at most this fraction of its rows is still moving; those
#: stragglers (long paths, or paths that round-off sent astray) restart in float64,
#: instead of holding up the loop for a handful of rows.
HOMOTOPY_STRAGGLER_FRACTION = 0.01

#: Slope given to active atoms so that their event times are negative or negligible:
#: large enough that |headroom| / HOMOTOPY_BLOCK is far below any event time, small
#: enough that HOMOTOPY_MAX_EVENTS steps of headroom growth (gamma * HOMOTOPY_BLOCK each)
#: stay finite in float32 for any lambda below ~1e15.
HOMOTOPY_BLOCK = 1e20

#: Active-set slots allocated at first; doubled whenever a row needs more.
HOMOTOPY_INITIAL_SLOTS = 16

#: OMP stops adding atoms to a row once its residual norm is below this times ``||x||``:
#: the observation is then represented to float64 round-off and further atoms would be noise.
OMP_RESIDUAL_RTOL = 1e-10

#: OMP refuses an atom whose component orthogonal to the atoms already selected has norm
#: below this (atoms are unit-norm): it is linearly dependent on them to round-off, and
#: the row stops there with ``Status.NUMERICAL`` (scikit-learn stops the same way).
OMP_DEPENDENT_RTOL = 1e-10

#: Basis pursuit answers are re-checked: residual ``||z D - x||`` must be below this times
#: ``1 + ||x||``; interior-point solvers reach ~1e-9, so a larger residual is a failure.
BP_RESIDUAL_RTOL = 1e-6

#: best_subset prefers the smaller support when two fits agree to this times ``||x||^2``
#: (round-off): a K-sparse code found on its own support is not padded with zero atoms.
BEST_SUBSET_TIE_RTOL = 1e-10

#: best_subset refuses a support whose Gram matrix has an eigenvalue below this (atoms are
#: unit-norm): its span is that of a smaller support, which the search covers already.
BEST_SUBSET_DEPENDENT_RTOL = 1e-10

#: best_subset works on blocks of at most this many (row, support) pairs at a time (a few
#: float64 tensors of this many times K entries: ~25 MB each at K = 3).
BEST_SUBSET_BLOCK = 1 << 20

LASSO_METHODS = ("auto", "homotopy", "fista", "cvxpy")


class Status(IntEnum):
    """How the solve of one row ended (scipy-style integer codes)."""

    OPTIMAL = 0
    MAX_ITER = 1
    INFEASIBLE = 2
    UNBOUNDED = 3
    NUMERICAL = 4


class ConvergenceWarning(UserWarning):
    """A batched solver stopped at ``max_iter`` on some rows."""


@dataclass(frozen=True)
class SolveResult:
    """Outcome of a batched solve.

    Attributes
    ----------
    codes : ndarray of shape (B, N)
        The inferred codes ``Z``.
    status : ndarray of shape (B,)
        :class:`Status` values, one per row.
    objective : ndarray of shape (B,)
        Objective value at ``codes`` for each row.
    n_iter : ndarray of shape (B,)
        Iterations used per row (OMP: atoms selected).
    duality_gap : ndarray of shape (B,)
        Primal minus a feasible dual value (an upper bound on suboptimality); NaN
        where the solver provides none.
    message : str
        Outcome in words and, if something went wrong, what to change.
    fallback_rows : tuple of int
        Rows that the first solver could not certify and a fallback solved (cvxpy basis
        pursuit: re-solved by HiGHS simplex); empty when none.
    """

    codes: np.ndarray
    status: np.ndarray
    objective: np.ndarray
    n_iter: np.ndarray
    duality_gap: np.ndarray
    message: str
    fallback_rows: tuple = ()

    @property
    def converged(self) -> np.ndarray:
        """Boolean (B,): rows that ended with ``Status.OPTIMAL``."""
        return self.status == Status.OPTIMAL

    @property
    def success(self) -> bool:
        """True when every row converged."""
        return bool(self.converged.all())


def _status_message(status: np.ndarray, hint: str) -> str:
    bad = int((status != Status.OPTIMAL).sum())
    if bad == 0:
        return f"all {len(status)} rows converged"
    counts = {Status(s).name: int((status == s).sum()) for s in np.unique(status) if s != Status.OPTIMAL}
    return f"{bad} of {len(status)} rows did not converge ({counts}); {hint}"


# ---------------------------------------------------------------------------------------
# Exact ground truth with cvxpy: one parametrised problem, compiled once, reused per row.
# ---------------------------------------------------------------------------------------


def _default_cvxpy_solver() -> str:
    import cvxpy as cp

    return "CLARABEL" if "CLARABEL" in cp.installed_solvers() else cp.installed_solvers()[0]


class _ParametrisedProblem:
    """A cvxpy problem in DPP form whose observation ``x`` (and ``alpha``) are parameters,
    so cvxpy canonicalises it once and every further row only updates parameter values."""

    def __init__(self, D: np.ndarray, *, kind: str, nonnegative: bool):
        import cvxpy as cp

        n_latents, n_dims = D.shape
        self.z = cp.Variable(n_latents, nonneg=nonnegative)
        self.x = cp.Parameter(n_dims)
        fit = D.T @ self.z  # = z @ D, written for a 1-d variable
        if kind == "basis_pursuit":
            self.alpha = None
            self.problem = cp.Problem(cp.Minimize(cp.norm1(self.z)), [fit == self.x])
        else:
            self.alpha = cp.Parameter(nonneg=True)
            objective = 0.5 * cp.sum_squares(self.x - fit) + self.alpha * cp.norm1(self.z)
            self.problem = cp.Problem(cp.Minimize(objective))
        self.kind = kind

    def _solve_row(self, solver: str, row: int):
        import cvxpy as cp

        try:
            with warnings.catch_warnings():
                # cvxpy warns on 'optimal_inaccurate'; the caller turns that status into a
                # fallback or a ValueError, so the warning would only repeat it.
                warnings.filterwarnings("ignore", message="Solution may be inaccurate")
                self.problem.solve(solver=solver)
        except cp.error.SolverError as err:
            return f"solver error ({err})"
        return self.problem.status

    def solve_rows(self, X: np.ndarray, alpha: float | None, solver: str | None) -> SolveResult:
        import cvxpy as cp

        # Basis pursuit is an LP: when the default interior-point solver cannot certify a
        # row (it stops at 'optimal_inaccurate' on some degenerate LPs), simplex (HiGHS)
        # solves the same LP exactly. A solver the caller names is never replaced.
        fallback = None
        if solver is None and self.alpha is None and "HIGHS" in cp.installed_solvers():
            fallback = "HIGHS"
        solver = solver or _default_cvxpy_solver()
        if self.alpha is not None:
            self.alpha.value = alpha
        n_samples = X.shape[0]
        codes = np.zeros((n_samples, self.z.shape[0]))
        objective = np.zeros(n_samples)
        n_iter = np.zeros(n_samples, dtype=np.int64)
        fallback_rows = []
        for row in range(n_samples):
            self.x.value = X[row]
            status = self._solve_row(solver, row)
            if status not in (cp.OPTIMAL, cp.INFEASIBLE, cp.UNBOUNDED) and fallback is not None:
                fallback_rows.append(row)
                status = self._solve_row(fallback, row)
            if status in (cp.INFEASIBLE, cp.INFEASIBLE_INACCURATE):
                raise ValueError(
                    f"{self.kind} is infeasible on row {row}: x is not z @ D for any "
                    f"{'nonnegative ' if self.z.is_nonneg() else ''}z. Use lasso (noisy data) or "
                    "check that X was generated from this D."
                )
            if status in (cp.UNBOUNDED, cp.UNBOUNDED_INACCURATE):
                raise ValueError(f"{self.kind} is unbounded on row {row}; check D and X for scaling errors.")
            if status != cp.OPTIMAL:
                raise ValueError(
                    f"{self.kind}: cvxpy/{solver} ended with {status!r} on row {row}, so the answer is "
                    "not certified. Try another solver (solver='SCS' or 'HIGHS') or rescale X."
                )
            codes[row] = self.z.value
            objective[row] = self.problem.value
            stats = self.problem.solver_stats
            n_iter[row] = stats.num_iters if stats is not None and stats.num_iters is not None else 0
        message = f"all {n_samples} rows solved to optimality by cvxpy/{solver}"
        if fallback_rows:
            message += f"; rows {fallback_rows} re-solved exactly by cvxpy/{fallback} after {solver} was inaccurate"
        return SolveResult(
            codes=codes,
            status=np.full(n_samples, Status.OPTIMAL, dtype=np.int64),
            objective=objective,
            n_iter=n_iter,
            duality_gap=np.full(n_samples, np.nan),
            message=message,
            fallback_rows=tuple(fallback_rows),
        )


def basis_pursuit(X, D, *, nonnegative: bool = False, solver: str | None = None, return_info: bool = False):
    r"""Exact basis pursuit per row with cvxpy.

    .. math:: \hat z = \arg\min_z \|z\|_1 \quad \text{s.t.} \quad z D = x \ (\text{and } z \ge 0)

    Under the coherence condition :math:`K < (1 + 1/\mu)/2` it recovers every K-sparse
    code exactly (Donoho & Elad 2003; Tropp 2004); so does :math:`\delta_{2K} < \sqrt2 - 1`
    (Candes 2008).

    Parameters
    ----------
    X : array_like of shape (B, M)
    D : array_like of shape (N, M), unit-norm rows.
    nonnegative : bool
        Add :math:`z \ge 0` (the SAE setting).
    solver : str, optional
        A cvxpy solver name. Default: Clarabel, and any row it cannot certify
        ('optimal_inaccurate') is re-solved exactly by HiGHS simplex; the
        ``SolveResult.message`` names those rows.
    return_info : bool
        Return a :class:`SolveResult` instead of the codes.

    Returns
    -------
    Z : ndarray of shape (B, N), or SolveResult.

    Raises
    ------
    ValueError
        On bad input, or when a row is infeasible (x outside the span, or cone, of the
        atoms), unbounded, or solved inaccurately: the message names the row.

    References
    ----------
    .. [1] Chen, Donoho & Saunders (1998), "Atomic decomposition by basis pursuit", SIAM J. Sci. Comput. 20(1).

    Examples
    --------
    >>> D = np.eye(3)
    >>> (basis_pursuit(np.array([[0.0, 2.0, 0.0]]), D).round(6) + 0.0).tolist()
    [[0.0, 2.0, 0.0]]
    """
    D = check_dictionary(D)
    X = check_observations(X, D)
    result = _ParametrisedProblem(D, kind="basis_pursuit", nonnegative=nonnegative).solve_rows(X, None, solver)
    residual = np.linalg.norm(result.codes @ D - X, axis=1)
    worst = int(np.argmax(residual - BP_RESIDUAL_RTOL * (1 + np.linalg.norm(X, axis=1))))
    if residual[worst] > BP_RESIDUAL_RTOL * (1 + np.linalg.norm(X[worst])):
        raise ValueError(
            f"basis pursuit: row {worst} violates z @ D = x by {residual[worst]:.3g} after the solve; "
            "the solver answer is inaccurate. Try solver='SCS' or rescale X."
        )
    return result if return_info else result.codes


def lasso(
    X,
    D,
    alpha: float,
    *,
    nonnegative: bool = False,
    method: str = "auto",
    tol: float = FISTA_TOL,
    max_iter: int = FISTA_MAX_ITER,
    init=None,
    device=None,
    dtype="float64",
    solver: str | None = None,
    return_info: bool = False,
):
    r"""Solve one LASSO problem per row of ``X`` over the dictionary ``D``.

    .. math:: \hat z = \arg\min_z \tfrac12 \|x - z D\|_2^2 + \alpha \|z\|_1 \ (\text{and } z \ge 0)

    ``method="homotopy"`` (the default, ``"auto"``, unless ``init`` is given) follows the
    regularisation path of every row at once from :math:`\lambda_{\max} = \|x D^\top\|_\infty`
    down to ``alpha`` (LARS-lasso; Osborne, Presnell & Turlach 2000; Efron et al. 2004):
    one event (an atom enters or leaves) per step, one GEMM per step, about K steps on
    K-sparse data. It then solves exactly on the support and signs it ends with,
    :math:`G_{SS} z_S = c_S - \alpha s_S` in float64, and certifies every row by its
    float64 duality gap. With ``dtype="float32"`` the path runs in float32 and only the
    finish and certificate are float64. A row whose certificate fails is retried with a
    float64 path, then finished by warm-started FISTA, so every returned row carries a
    true gap bound whatever the path did.

    ``method="fista"`` runs batched FISTA (Beck & Teboulle 2009) over all rows at once
    in torch, with step :math:`1/L`, :math:`L = \lambda_{\max}(D D^\top)`, adaptive
    gradient restart (O'Donoghue & Candes 2015), and per-row stopping once the duality
    gap is at most ``tol`` times the objective. The feasible dual point is the scaled
    residual :math:`\theta = r \min(1, \alpha / \|r D^\top\|_\infty)` (nonnegative case:
    :math:`\max_i (r D^\top)_i` in place of the sup-norm), so the reported gap bounds the
    suboptimality. ``method="cvxpy"`` is the exact ground truth.

    scikit-learn's ``Lasso(alpha=alpha / M, fit_intercept=False)`` fitted on ``D.T``
    solves the same problem (it divides the squared loss by ``2 * n_samples = 2M``).

    Parameters
    ----------
    X : array_like of shape (B, M)
    D : array_like of shape (N, M), unit-norm rows.
    alpha : float
        Weight of the l1 penalty, > 0.
    nonnegative : bool
        Constrain :math:`z \ge 0`.
    method : {"auto", "homotopy", "fista", "cvxpy"}
        ``"auto"``: homotopy, or FISTA when ``init`` is given.
    tol : float
        Relative duality-gap tolerance: a row is ``Status.OPTIMAL`` once its certified
        gap is at most ``tol`` times its objective (homotopy rows usually reach ~1e-15).
    max_iter : int
        Iteration cap per row of FISTA (also when it rescues homotopy rows); rows that
        hit it get ``Status.MAX_ITER`` and a :class:`ConvergenceWarning`.
    init : array_like of shape (B, N), optional
        Warm start for FISTA (e.g. an SAE's codes for inference-time optimisation).
    device : str or torch.device, optional
        Where the batched solvers run; default ``cuda`` when available.
    dtype : {"float64", "float32"}
        Arithmetic of the FISTA iterations or of the homotopy path; results are float64.
    solver : str, optional
        cvxpy solver for ``method="cvxpy"``.
    return_info : bool
        Return a :class:`SolveResult` instead of the codes.

    Returns
    -------
    Z : ndarray of shape (B, N), or SolveResult.

    References
    ----------
    .. [1] Tibshirani (1996), "Regression shrinkage and selection via the lasso", JRSS B 58(1).
    .. [2] Beck & Teboulle (2009), "A fast iterative shrinkage-thresholding algorithm",
       SIAM J. Imaging Sci. 2(1).
    .. [3] O'Donoghue & Candes (2015), "Adaptive restart for accelerated gradient schemes",
       Found. Comput. Math. 15.
    .. [4] Osborne, Presnell & Turlach (2000), "A new approach to variable selection in least
       squares problems", IMA J. Numer. Anal. 20(3).
    .. [5] Efron, Hastie, Johnstone & Tibshirani (2004), "Least angle regression", Ann. Statist. 32(2).

    Examples
    --------
    >>> D = np.eye(2)
    >>> (lasso(np.array([[3.0, -0.5]]), D, alpha=1.0).round(6) + 0.0).tolist()
    [[2.0, 0.0]]
    """
    D = check_dictionary(D)
    X = check_observations(X, D)
    alpha = check_positive(alpha, "alpha")
    check_choice(method, "method", LASSO_METHODS)
    if method == "cvxpy":
        result = _ParametrisedProblem(D, kind="lasso", nonnegative=nonnegative).solve_rows(X, alpha, solver)
        return result if return_info else result.codes
    tol = check_positive(tol, "tol")
    max_iter = check_int(max_iter, "max_iter", minimum=1)
    if init is not None:
        init = check_observations(init, D.T, name="init")  # (B, N): same N as D has rows
        if init.shape[0] != X.shape[0]:
            raise ValueError(f"init must have B={X.shape[0]} rows like X; got shape {init.shape}.")
        if nonnegative:
            init = np.maximum(init, 0.0)
    device, dtype = resolve_device(device), resolve_dtype(dtype)
    if method == "homotopy" or (method == "auto" and init is None):
        result = _lasso_homotopy(X, D, alpha, nonnegative=nonnegative, tol=tol, max_iter=max_iter,
                                 device=device, dtype=dtype)
    else:
        result = _fista(X, D, alpha, nonnegative=nonnegative, tol=tol, max_iter=max_iter, init=init,
                        device=device, dtype=dtype)
    if not result.success:
        warnings.warn(result.message, ConvergenceWarning, stacklevel=2)
    return result if return_info else result.codes


def _fista(X, D, alpha, *, nonnegative, tol, max_iter, init, device, dtype) -> SolveResult:
    """Batched restarted FISTA on validated inputs (see :func:`lasso`); rows are dropped
    from the working batch as soon as their duality gap meets ``tol``."""
    n_samples, n_latents = X.shape[0], D.shape[0]
    Dt = torch.as_tensor(D, dtype=dtype, device=device)
    Xt = torch.as_tensor(X, dtype=dtype, device=device)
    G = Dt @ Dt.T  # (N, N) Gram matrix: gradient of the loss is z G - x D^T
    C = Xt @ Dt.T  # (B, N)
    lipschitz = float(np.linalg.eigvalsh(D @ D.T)[-1])  # float64 on host, once
    step, threshold = 1.0 / lipschitz, alpha / lipschitz

    z = torch.zeros(n_samples, n_latents, dtype=dtype, device=device)
    if init is not None:
        z = torch.as_tensor(init, dtype=dtype, device=device).clone()
    codes = z.clone()
    status = torch.full((n_samples,), int(Status.MAX_ITER), dtype=torch.int64)
    objective = torch.full((n_samples,), float("nan"), dtype=torch.float64)
    gap = torch.full((n_samples,), float("nan"), dtype=torch.float64)
    n_iter = torch.full((n_samples,), max_iter, dtype=torch.int64)

    active = torch.arange(n_samples, device=device)
    x_a, c_a, y = Xt, C, z.clone()
    t = torch.ones(n_samples, dtype=dtype, device=device)
    for iteration in range(1, max_iter + 1):
        forward = y - step * (y @ G - c_a)
        if nonnegative:
            z_new = torch.clamp(forward - threshold, min=0.0)
        else:
            z_new = torch.sign(forward) * torch.clamp(forward.abs() - threshold, min=0.0)
        # Gradient restart: momentum that points uphill is discarded (O'Donoghue & Candes).
        restart = ((y - z_new) * (z_new - z)).sum(1) > 0
        t_new = torch.where(restart, torch.ones_like(t), 0.5 * (1.0 + torch.sqrt(1.0 + 4.0 * t * t)))
        momentum = torch.where(restart, torch.zeros_like(t), (t - 1.0) / t_new)
        y = z_new + momentum[:, None] * (z_new - z)
        z, t = z_new, t_new
        if iteration % FISTA_CHECK_EVERY and iteration != max_iter:
            continue
        primal, row_gap = _lasso_gap(x_a, Dt, z, alpha, nonnegative, C=c_a, G=G)
        finite = torch.isfinite(primal) & torch.isfinite(row_gap)
        done = (row_gap <= tol * primal.clamp_min(torch.finfo(dtype).tiny)) | ~finite
        if iteration == max_iter:
            done = torch.ones_like(done)
        if done.any():
            rows = active[done]
            host_rows = rows.cpu()
            codes[rows] = z[done]
            objective[host_rows] = primal[done].double().cpu()
            gap[host_rows] = row_gap[done].double().cpu()
            n_iter[host_rows] = iteration
            converged = (row_gap[done] <= tol * primal[done].clamp_min(torch.finfo(dtype).tiny)).cpu()
            row_status = torch.where(converged, int(Status.OPTIMAL), int(Status.MAX_ITER))
            row_status = torch.where(finite[done].cpu(), row_status, int(Status.NUMERICAL))
            status[host_rows] = row_status
            keep = ~done
            active, x_a, c_a, y, z, t = active[keep], x_a[keep], c_a[keep], y[keep], z[keep], t[keep]
            if active.numel() == 0:
                break
    status_np = status.numpy()
    return SolveResult(
        codes=codes.double().cpu().numpy(),
        status=status_np,
        objective=objective.numpy(),
        n_iter=n_iter.numpy(),
        duality_gap=gap.numpy(),
        message=_status_message(status_np, f"raise max_iter={max_iter} or loosen tol={tol:g}"),
    )


# ---------------------------------------------------------------------------------------
# Batched LASSO homotopy (LARS-lasso) with an exact, certified finish on the support.
# ---------------------------------------------------------------------------------------


class _DenseTimer:
    """Times the dense kernels (GEMMs) of a solver and counts their FLOPs, in total and
    per dtype, so the benchmark can compare the solver's dense phase with a plain matmul
    of the same run; sparse products are kept apart (``by_dtype["float32 sparse"]``).
    Solvers receive ``None`` by default and then call the kernels untimed."""

    def __init__(self):
        self.seconds = 0.0
        self.flops = 0.0
        self.by_dtype: dict[str, list[float]] = {}  # dtype name -> [seconds, flops]

    def __call__(self, fn, flops: float, kind: str = "dense"):
        start = time.perf_counter()
        out = fn()
        if out.is_cuda:
            torch.cuda.synchronize(out.device)
        seconds = time.perf_counter() - start
        if kind == "dense":
            self.seconds += seconds
            self.flops += float(flops)
        key = str(out.dtype).removeprefix("torch.") + ("" if kind == "dense" else f" {kind}")
        entry = self.by_dtype.setdefault(key, [0.0, 0.0])
        entry[0] += seconds
        entry[1] += float(flops)
        return out


@contextlib.contextmanager
def _quiet_csr():
    """Silence torch's note that its CSR support is "beta": we only multiply with it."""
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message="Sparse CSR tensor support is in beta", category=UserWarning)
        yield


def _dense(timer, fn, flops, kind="dense"):
    """Run the kernel ``fn``, timed when a :class:`_DenseTimer` is given."""
    return fn() if timer is None else timer(fn, flops, kind)


def _lasso_gap(X, D, z, alpha, nonnegative, timer=None, C=None, G=None, sparse=False):
    r"""Primal objective and duality gap per row for codes ``z`` (all tensors).

    The dual point is the scaled residual :math:`\theta = r \min(1, \alpha / \|r D^\top\|_\infty)`
    (nonnegative case: the largest positive correlation), feasible by construction, so
    primal minus dual bounds the suboptimality of ``z``. The correlation is taken from
    the residual itself, or as ``C - z G`` when ``C = X D^T`` and ``G = D D^T`` are given
    (:mod:`gaptheory.flops` counts FISTA's use of that form). ``sparse=True`` multiplies
    ``z`` as a CSR matrix (for codes with few nonzeros per row).
    """
    n_samples, n_latents = z.shape
    n_dims = D.shape[1]
    if sparse:
        nnz = int((z != 0).sum())
        with _quiet_csr():
            zs = z.to_sparse_csr()
            residual = X - _dense(timer, lambda: zs @ D, 2 * nnz * n_dims, kind="sparse")
            correlation = C - _dense(timer, lambda: zs @ G, 2 * nnz * n_latents, kind="sparse")
    elif G is None:
        residual = X - _dense(timer, lambda: z @ D, 2 * n_samples * n_latents * n_dims)
        correlation = _dense(timer, lambda: residual @ D.T, 2 * n_samples * n_latents * n_dims)
    else:
        residual = X - _dense(timer, lambda: z @ D, 2 * n_samples * n_latents * n_dims)
        correlation = C - _dense(timer, lambda: z @ G, 2 * n_samples * n_latents * n_latents)
    primal = 0.5 * (residual * residual).sum(1) + alpha * z.abs().sum(1)
    if nonnegative:
        worst = correlation.max(1).values.clamp_min(0.0)
    else:
        worst = correlation.abs().max(1).values
    scale = torch.clamp(alpha / worst.clamp_min(torch.finfo(z.dtype).tiny), max=1.0)
    theta = residual * scale[:, None]
    dual = (X * theta).sum(1) - 0.5 * (theta * theta).sum(1)
    return primal, (primal - dual).clamp_min(0.0)


def _exact_finish(C, G, support, signs, alpha):
    r"""Solve the LASSO exactly for a guessed support and sign pattern, per row.

    On support :math:`S` with signs :math:`s`, the optimality conditions read
    :math:`G_{SS} z_S = c_S - \alpha s` (``c = x D^T``). Slots with ``signs == 0`` are
    padding. Rows are solved in buckets of similar support size, so one long support
    does not make every row pay for its width. Returns dense codes (B, N) in the dtype
    of ``C`` and a (B,) flag of singular systems; whether the guess was right is for the
    duality gap to say.
    """
    live = signs != 0
    order = torch.argsort((~live).to(torch.int8), dim=1, stable=True)  # live slots first
    support, signs = torch.gather(support, 1, order), torch.gather(signs, 1, order)
    count = live.sum(1)
    codes = torch.zeros_like(C)
    singular = torch.zeros(C.shape[0], dtype=torch.bool, device=C.device)
    largest = max(int(count.max()), 1)
    low, width = -1, min(largest, HOMOTOPY_INITIAL_SLOTS)  # first bucket: every support up to this size
    while True:
        in_bucket = (count > low) & (count <= width)
        whole = bool(in_bucket.all())
        rows = slice(None) if whole else torch.nonzero(in_bucket).squeeze(1)
        if whole or rows.numel():
            sup, sgn = support[rows, :width], signs[rows, :width]
            on = sgn != 0
            gram = G[sup[:, :, None], sup[:, None, :]] * (on[:, :, None] & on[:, None, :])
            gram = gram + torch.diag_embed((~on).to(G.dtype))
            rhs = torch.where(on, torch.gather(C[rows], 1, sup) - alpha * sgn, torch.zeros_like(sgn))
            coef, info = torch.linalg.solve_ex(gram, rhs)
            bad = (info != 0) | ~torch.isfinite(coef).all(1)
            coef = torch.where(bad[:, None], torch.zeros_like(coef), coef) * on
            codes[rows] = torch.zeros_like(codes[rows]).scatter_add_(1, sup, coef)
            singular[rows] = bad
        if width >= largest:
            return codes, singular
        low, width = width, min(2 * width, largest)


def _homotopy_path(C, G, alpha, *, nonnegative, max_steps, stragglers=0, timer=None):
    r"""Follow the LASSO regularisation path of every row from :math:`\lambda_{\max}`
    down to ``alpha`` (validated tensors; see :func:`lasso`).

    Along the path the active codes are :math:`z_A(\lambda) = G_{AA}^{-1}(c_A - \lambda s_A)`;
    :math:`\lambda` decreases until an inactive correlation reaches :math:`\pm\lambda`
    (the atom enters) or an active code reaches 0 (it leaves), or :math:`\lambda = \alpha`
    (Osborne, Presnell & Turlach 2000; Efron et al. 2004). All rows advance together,
    one event per row per step; finished rows idle until half the batch is done and are
    then compacted away.

    Returns ``(support, signs, steps, finished)`` padded to a common width: the active
    atoms, their signs (0 = padding), the number of path events per row, and whether
    the row reached ``alpha`` within ``max_steps`` without a singular active Gram matrix.
    The path stops early, leaving them unfinished, once at most ``stragglers`` rows are
    still moving (a low-precision pass hands those to a float64 one).
    """
    n_samples, n_latents = C.shape
    dtype, device = C.dtype, C.device
    # Event times below this fraction of lambda are round-off echoes of the event just
    # taken (an atom that just entered or left), not new events.
    gamma_floor = HOMOTOPY_EVENT_EPS * torch.finfo(dtype).eps

    score = C if nonnegative else C.abs()
    lam, first = score.max(1)
    steps = torch.zeros(n_samples, dtype=torch.int64, device=device)
    finished = lam <= alpha  # z = 0 is optimal: no correlation exceeds alpha
    rows = torch.nonzero(~finished).squeeze(1)
    if rows.numel() == 0:
        width = 1
        return (torch.zeros(n_samples, width, dtype=torch.int64, device=device),
                torch.zeros(n_samples, width, dtype=dtype, device=device), steps, finished)

    b, capacity = rows.numel(), HOMOTOPY_INITIAL_SLOTS
    lam, first = lam[rows].clone(), first[rows]
    # headroom = lambda - r, with r = c - z G the correlations: an atom enters when its
    # headroom reaches 0 (r_j = +lambda) or 2 lambda (r_j = -lambda).
    headroom = lam[:, None] - C[rows]
    arange = torch.arange(b, device=device)
    n_events = torch.ones(b, dtype=torch.int64, device=device)  # the first atom enters at lambda_max
    alive = torch.ones(b, dtype=torch.bool, device=device)
    reached = torch.zeros(b, dtype=torch.bool, device=device)
    support = torch.zeros(b, capacity, dtype=torch.int64, device=device)
    signs = torch.zeros(b, capacity, dtype=dtype, device=device)
    coef = torch.zeros(b, capacity, dtype=dtype, device=device)
    gram = torch.eye(capacity, dtype=dtype, device=device).repeat(b, 1, 1)  # G[support][:, support]
    blocked = torch.ones(b, n_latents, dtype=dtype, device=device)  # 1, and -HOMOTOPY_BLOCK on active atoms
    support[:, 0] = first
    signs[:, 0] = torch.sign(C[rows, first])
    gram[:, 0, 0] = G[first, first]
    blocked[arange, first] = -HOMOTOPY_BLOCK
    used = 1
    out_rows, out_support, out_signs = [], [], []

    def retire(mask):
        nonlocal rows, headroom, lam, n_events, alive, reached, support, signs, coef, gram, blocked, arange
        out_rows.append(rows[mask])
        out_support.append(support[mask, :used])
        out_signs.append(signs[mask, :used])
        steps[rows[mask]] = n_events[mask]
        finished[rows[mask]] = reached[mask]
        keep = ~mask
        rows, headroom, lam = rows[keep], headroom[keep], lam[keep]
        n_events, alive, reached = n_events[keep], alive[keep], reached[keep]
        support, signs, coef, blocked = support[keep], signs[keep], coef[keep], blocked[keep]
        gram = gram[keep]
        arange = arange[: rows.numel()]

    for _ in range(max_steps):
        b = rows.numel()
        w, info = torch.linalg.solve_ex(gram[:, :used, :used], signs[:, :used])
        # r moves as r - gamma * a with a = w G[support]; `slope` = 1 - a is the rate at which
        # the headroom closes. The direction has `used` entries per row (padding slots hold
        # 0), so it is multiplied as a CSR matrix, `used / N` of the dense GEMM's work;
        # `blocked` enters the same call and makes the slope of active atoms about
        # -HOMOTOPY_BLOCK: their event times come out negative or far below `floor`, and
        # are rejected with the rest.
        crow = torch.arange(0, b * used + 1, used, device=device)
        direction = torch.sparse_csr_tensor(crow, support[:, :used].reshape(-1), w.reshape(-1),
                                            size=(b, n_latents), check_invariants=False)
        slope = _dense(timer, lambda: torch.addmm(blocked, direction, G, alpha=-1.0), 2 * b * used * n_latents,
                       kind="sparse")
        lam_c = lam[:, None]
        floor = gamma_floor * lam_c
        up = headroom / slope  # time until r_j reaches +lambda
        up.masked_fill_(up <= floor, float("inf"))
        if nonnegative:
            entry, j_entry = up.min(1)
            new_sign = torch.ones_like(lam)
        else:
            down = (2.0 * lam_c - headroom).div_(2.0 - slope)  # time until r_j reaches -lambda
            down.masked_fill_(down <= floor, float("inf"))
            entry, j_entry = torch.minimum(up, down).min(1)
            hits_up = torch.gather(up, 1, j_entry[:, None]).squeeze(1) <= entry
            new_sign = torch.where(hits_up, torch.ones_like(lam), -torch.ones_like(lam))
        leave = -coef[:, :used] / w  # time until an active code reaches 0
        leave.masked_fill_(~((leave > floor) & (signs[:, :used] != 0)), float("inf"))
        drop, k_drop = leave.min(1)
        end = torch.where(alive, lam - alpha, torch.zeros_like(lam))
        gamma = torch.minimum(torch.minimum(entry, drop), end)
        is_end = end <= gamma
        is_entry = ~is_end & (entry <= drop)
        is_drop = ~is_end & ~is_entry

        coef[:, :used] += gamma[:, None] * w
        headroom.addcmul_(gamma[:, None], slope, value=-1.0)  # meaningless on active atoms (r_j = s_j lambda)
        lam = torch.where(is_end, torch.full_like(lam, alpha), lam - gamma)
        n_events += (is_entry | is_drop).long()
        reached |= is_end & alive

        if bool(is_drop.any()):
            dr, k = arange[is_drop], k_drop[is_drop]
            j = support[dr, k]
            headroom[dr, j] = lam[dr] * (1.0 - signs[dr, k])  # the leaving atom has r_j = s_j * lambda
            blocked[dr, j] = 1.0
            signs[dr, k], coef[dr, k] = 0.0, 0.0
            gram[dr, k, :], gram[dr, :, k] = 0.0, 0.0
            gram[dr, k, k] = 1.0
        if bool(is_entry.any()):
            if used == capacity:
                capacity *= 2
                support, signs, coef = (_pad_slots(t, capacity) for t in (support, signs, coef))
                gram = _pad_slots(_pad_slots(gram, capacity).transpose(1, 2), capacity).transpose(1, 2).contiguous()
                gram[:, used:, used:] = torch.eye(capacity - used, dtype=dtype, device=device)
            en, j = arange[is_entry], j_entry[is_entry]
            support[en, used], signs[en, used] = j, new_sign[is_entry]
            cross = G[j[:, None], support[en, :used]] * (signs[en, :used] != 0)
            gram[en, used, :used], gram[en, :used, used] = cross, cross
            gram[en, used, used] = G[j, j]
            blocked[en, j] = -HOMOTOPY_BLOCK
            used += 1
        alive &= ~is_end & (info == 0)
        n_alive = int(alive.sum())
        if n_alive <= stragglers:
            break
        if n_alive <= b // 2:
            retire(~alive)
    retire(torch.ones_like(alive))  # rows still alive hit max_steps: not finished
    width = max(s.shape[1] for s in out_support)
    all_support = torch.zeros(n_samples, width, dtype=torch.int64, device=device)
    all_signs = torch.zeros(n_samples, width, dtype=dtype, device=device)
    for idx, sup, sgn in zip(out_rows, out_support, out_signs):
        all_support[idx, : sup.shape[1]] = sup
        all_signs[idx, : sgn.shape[1]] = sgn
    return all_support, all_signs, steps, finished


def _pad_slots(tensor, capacity):
    """Extend dim 1 of a state tensor to ``capacity`` slots, filled with zeros."""
    pad = list(tensor.shape)
    pad[1] = capacity - tensor.shape[1]
    return torch.cat([tensor, torch.zeros(pad, dtype=tensor.dtype, device=tensor.device)], dim=1)


def _lasso_homotopy(X, D, alpha, *, nonnegative, tol, max_iter, device, dtype, timer=None) -> SolveResult:
    """Homotopy path in ``dtype``, exact float64 finish on the support it ends with, and a
    float64 duality-gap certificate per row. Rows whose certificate fails are retried with
    a float64 path (when ``dtype`` is float32), then finished by warm-started FISTA."""
    n_samples, n_latents = X.shape[0], D.shape[0]
    D64 = torch.as_tensor(D, dtype=torch.float64, device=device)
    X64 = torch.as_tensor(X, dtype=torch.float64, device=device)
    G64 = _dense(timer, lambda: D64 @ D64.T, 2 * n_latents * n_latents * D.shape[1])
    C64 = _dense(timer, lambda: X64 @ D64.T, 2 * n_samples * n_latents * D.shape[1])
    max_steps = min(HOMOTOPY_MAX_EVENTS_PER_DIM * min(D.shape) + HOMOTOPY_MIN_EVENTS, HOMOTOPY_MAX_EVENTS)
    capped_rows = []  # rows whose path hit max_steps: a float64 path would hit it too
    tiny = torch.finfo(torch.float64).tiny

    codes = torch.zeros(n_samples, n_latents, dtype=torch.float64, device=device)
    objective = torch.full((n_samples,), float("nan"), dtype=torch.float64, device=device)
    gap = torch.full_like(objective, float("nan"))
    steps = torch.zeros(n_samples, dtype=torch.int64, device=device)
    pending = torch.arange(n_samples, device=device)
    for path_dtype in dict.fromkeys((dtype, torch.float64)):
        everything = len(pending) == n_samples
        C_p, X_p = (C64, X64) if everything else (C64[pending], X64[pending])
        C, G = C_p, G64
        if path_dtype != torch.float64:
            C, G = C.to(path_dtype), G.to(path_dtype)
        stragglers = int(HOMOTOPY_STRAGGLER_FRACTION * len(pending)) if path_dtype != torch.float64 else 0
        with _quiet_csr():
            support, signs, n_events, finished = _homotopy_path(
                C, G, alpha, nonnegative=nonnegative, max_steps=max_steps, stragglers=stragglers, timer=timer
            )
        found, singular = _exact_finish(C_p, G64, support, signs.to(torch.float64), alpha)
        if nonnegative:
            found = found.clamp_min(0.0)
        primal, row_gap = _lasso_gap(X_p, D64, found, alpha, nonnegative, timer=timer, C=C_p, G=G64, sparse=True)
        certified = finished & ~singular & torch.isfinite(row_gap) & (row_gap <= tol * primal.clamp_min(tiny))
        if everything:
            codes, objective, gap, steps = found, primal, row_gap, n_events
        else:
            codes[pending], objective[pending], gap[pending] = found, primal, row_gap
            steps[pending] += n_events
        capped = ~certified & ~finished & (n_events > max_steps)
        capped_rows.append(pending[capped])
        pending = pending[~certified & ~capped]
        if pending.numel() == 0:
            break

    status = np.full(n_samples, int(Status.OPTIMAL), dtype=np.int64)
    codes_np, objective_np, gap_np = codes.cpu().numpy(), objective.cpu().numpy(), gap.cpu().numpy()
    n_iter = steps.cpu().numpy()
    missed = np.sort(torch.cat([pending, *capped_rows]).cpu().numpy())
    if missed.size:
        rescue = _fista(
            X[missed], D, alpha, nonnegative=nonnegative, tol=tol, max_iter=max_iter, init=codes_np[missed],
            device=device, dtype=torch.float64,
        )
        codes_np[missed], status[missed] = rescue.codes, rescue.status
        objective_np[missed], gap_np[missed] = rescue.objective, rescue.duality_gap
        n_iter[missed] += rescue.n_iter
    message = _status_message(status, f"raise max_iter={max_iter} or loosen tol={tol:g}")
    message += f" ({n_samples - missed.size} certified on a homotopy support, {missed.size} by FISTA)"
    return SolveResult(codes=codes_np, status=status, objective=objective_np, n_iter=n_iter,
                       duality_gap=gap_np, message=message)


def omp(X, D, k: int, *, device=None, dtype="float64", return_info: bool = False):
    r"""Batched orthogonal matching pursuit: at most ``K`` atoms per row.

    Each step adds, for every row at once, the atom most correlated with the current
    residual, :math:`j = \arg\max_j |(x - z D) d_j^\top|`, and projects the residual off
    it. The selected atoms are orthogonalised incrementally (Gram-Schmidt, applied twice
    for stability), so a step costs one GEMM and no least-squares re-solve; the codes
    :math:`z_S = (D_S D_S^\top)^{-1} D_S x^\top` come from one triangular solve at the end
    (with ``dtype="float32"``, float32 chooses the atoms and the refit is float64). A row
    stops early once its residual norm is below ``OMP_RESIDUAL_RTOL * ||x||``, or with
    ``Status.NUMERICAL`` when the next atom is linearly dependent on those selected.

    Under :math:`K < (1 + 1/\mu)/2` OMP recovers the exact support of every K-sparse
    code (Tropp 2004, Theorem A).

    Parameters
    ----------
    X : array_like of shape (B, M)
    D : array_like of shape (N, M), unit-norm rows.
    k : int
        K, the maximum number of atoms per row, 1 <= K <= min(N, M).
    device, dtype : see :func:`lasso`.
    return_info : bool
        Return a :class:`SolveResult` (objective: half the squared residual; n_iter:
        atoms selected) instead of the codes.

    Returns
    -------
    Z : ndarray of shape (B, N), or SolveResult.

    References
    ----------
    .. [1] Pati, Rezaiifar & Krishnaprasad (1993), "Orthogonal matching pursuit", Asilomar.
    .. [2] Tropp (2004), "Greed is good: algorithmic results for sparse approximation",
       IEEE Trans. Inf. Theory 50(10).

    Examples
    --------
    >>> omp(np.array([[0.0, 0.0, 1.5]]), np.eye(3), 1).tolist()
    [[0.0, 0.0, 1.5]]
    """
    D = check_dictionary(D)
    X = check_observations(X, D)
    k = _check_support_size(k, D)
    device, dtype = resolve_device(device), resolve_dtype(dtype)
    result = _omp(X, D, k, device=device, dtype=dtype)
    return result if return_info else result.codes


def _check_support_size(k, D: np.ndarray) -> int:
    """K for a least-squares fit on K atoms: ``1 <= K <= min(N, M)``."""
    k = check_k(k, D.shape[0])
    if k > D.shape[1]:
        raise ValueError(
            f"k={k} exceeds M={D.shape[1]}: more than M atoms are linearly dependent, so least "
            f"squares on the support is singular. Use k <= {D.shape[1]}."
        )
    return k


def _omp(X, D, k, *, device, dtype, timer=None) -> SolveResult:
    """Batched OMP by Gram-Schmidt in data space: each selected atom is orthogonalised
    against the previous ones (classical Gram-Schmidt, applied twice), so every step
    costs one GEMM for the correlations plus O(B K M), with no re-solve; the codes come
    from one triangular solve at the end, :math:`U z_S = Q x`, with :math:`D_S = U^\top Q`."""
    n_samples, (n_latents, n_dims) = X.shape[0], D.shape
    Dt = torch.as_tensor(D, dtype=dtype, device=device)
    Xt = torch.as_tensor(X, dtype=dtype, device=device)
    x_norm = torch.linalg.vector_norm(Xt, dim=1)
    support = torch.zeros(n_samples, k, dtype=torch.int64, device=device)
    basis = torch.zeros(n_samples, k, n_dims, dtype=dtype, device=device)  # orthonormal Q rows
    triangle = torch.eye(k, dtype=dtype, device=device).repeat(n_samples, 1, 1)  # U, D_S = U^T Q
    projection = torch.zeros(n_samples, k, dtype=dtype, device=device)  # Q x
    n_selected = torch.zeros(n_samples, dtype=torch.int64, device=device)
    singular = torch.zeros(n_samples, dtype=torch.bool, device=device)
    residual = Xt.clone()
    rows = torch.arange(n_samples, device=device)  # rows still selecting atoms
    for step in range(k):
        b = rows.numel()
        correlation = _dense(timer, lambda: residual @ Dt.T, 2 * b * n_dims * n_latents)
        scores = correlation.abs_().scatter_(1, support[rows, :step], -1.0)  # never pick an atom twice
        atom = scores.argmax(1)
        d = Dt[atom]  # (b, M)
        q_prev = basis[rows, :step]  # (b, step, M)
        h = (q_prev * d[:, None, :]).sum(2)
        v = d - (h[:, :, None] * q_prev).sum(1)
        h2 = (q_prev * v[:, None, :]).sum(2)  # second pass: orthogonal to round-off
        v -= (h2[:, :, None] * q_prev).sum(1)
        h += h2
        norm = torch.linalg.vector_norm(v, dim=1)
        dependent = norm <= OMP_DEPENDENT_RTOL
        q = v / torch.where(dependent, torch.ones_like(norm), norm)[:, None]
        coef = (q * residual).sum(1)
        take = ~dependent
        support[rows, step] = torch.where(take, atom, support[rows, step])
        basis[rows, step] = q * take[:, None]
        triangle[rows, :step, step] = h * take[:, None]
        triangle[rows, step, step] = torch.where(take, norm, torch.ones_like(norm))
        projection[rows, step] = coef * take
        n_selected[rows] += take.long()
        singular[rows] |= dependent
        residual = residual - (coef * take)[:, None] * q
        keep = take & (torch.linalg.vector_norm(residual, dim=1) > OMP_RESIDUAL_RTOL * x_norm[rows])
        if not bool(keep.all()):
            rows, residual = rows[keep], residual[keep]
            if rows.numel() == 0:
                break
    used = torch.arange(k, device=device)[None, :] < n_selected[:, None]
    if dtype == torch.float64:
        coef = torch.linalg.solve_triangular(triangle, projection[:, :, None], upper=True).squeeze(2)
        codes = torch.zeros(n_samples, n_latents, dtype=dtype, device=device).scatter_add_(1, support, coef * used)
    else:  # float32 chose the atoms; refit them in float64 (least squares on the support)
        Dt = torch.as_tensor(D, dtype=torch.float64, device=device)
        Xt = torch.as_tensor(X, dtype=torch.float64, device=device)
        C = _dense(timer, lambda: Xt @ Dt.T, 2 * n_samples * n_latents * n_dims)
        codes, refit_failed = _exact_finish(C, Dt @ Dt.T, support, used.to(torch.float64), 0.0)
        singular |= refit_failed
    fit = Xt - _dense(timer, lambda: codes @ Dt, 2 * n_samples * n_latents * n_dims)
    status = torch.where(singular, int(Status.NUMERICAL), int(Status.OPTIMAL)).cpu().numpy()
    return SolveResult(
        codes=codes.double().cpu().numpy(),
        status=status,
        objective=(0.5 * (fit * fit).sum(1)).double().cpu().numpy(),
        n_iter=n_selected.cpu().numpy(),
        duality_gap=np.full(n_samples, np.nan),
        message=_status_message(status, "an atom was linearly dependent on those already selected; lower k"),
    )


# ---------------------------------------------------------------------------------------
# Exact L0: best subset by enumeration of supports.
# ---------------------------------------------------------------------------------------


def count_supports(n_latents: int, k: int) -> int:
    r"""Number of supports of size 1..K among N atoms, :math:`\sum_{s=1}^K \binom{N}{s}`.

    Examples
    --------
    >>> count_supports(16, 3)
    696
    """
    n_latents = check_int(n_latents, "n_latents", minimum=1)
    k = check_k(k, n_latents)
    return sum(math.comb(n_latents, s) for s in range(1, k + 1))


def best_subset(X, D, k: int, *, nonnegative: bool = False, max_supports: int = MAX_EXHAUSTIVE_SUPPORTS,
                device=None, return_info: bool = False):
    r"""Exact K-sparse least squares (the L0 problem) by enumerating every support.

    .. math:: \hat z(x) = \arg\min_{z (\ge 0)} \|x - z D\|_2^2 \quad \text{s.t.} \quad \|z\|_0 \le K.

    For each support S of size s <= K the least-squares fit on the atoms ``D[S]`` has
    codes :math:`c_S = G_S^{-1} b_S` and squared residual :math:`\|x\|^2 - c_S \cdot b_S`,
    with :math:`G_S = D_S D_S^\top` and :math:`b_S = (x D^\top)_S`, so one product
    :math:`x D^\top` per row serves every support. With ``nonnegative=True`` only supports
    whose fit is nonnegative count: a nonnegative least-squares solution on any K atoms is the
    unconstrained fit on its own (positive) support, so the minimum over those fits is the
    exact optimum (and z = 0 is the fallback). Ties within ``BEST_SUBSET_TIE_RTOL * ||x||^2``
    go to the smaller support, then to the first in lexicographic order.

    This is the ground truth of sparse inference where it is unique: when
    :math:`x = z^\star D` with :math:`\|z^\star\|_0 = K < \operatorname{spark}(D)/2`, the
    minimiser (residual 0) is :math:`z^\star` itself (Donoho & Elad 2003, Theorem 2), with no
    coherence or RIP condition, unlike basis pursuit, LASSO and OMP. The cost grows as
    :math:`\binom{N}{K}`, so it serves small N only.

    Parameters
    ----------
    X : array_like of shape (B, M)
    D : array_like of shape (N, M), unit-norm rows.
    k : int
        K, the maximum number of atoms per row, 1 <= K <= min(N, M).
    nonnegative : bool
        Constrain z >= 0.
    max_supports : int
        Refuse (``ValueError``) when :func:`count_supports` (N, K) exceeds this.
    device : see :func:`lasso`. Always float64.
    return_info : bool
        Return a :class:`SolveResult` (objective: half the squared residual; n_iter: the size
        of the chosen support; duality_gap: NaN, the search is exhaustive) instead of the codes.

    Returns
    -------
    Z : ndarray of shape (B, N), or SolveResult.

    References
    ----------
    .. [1] Donoho & Elad (2003), "Optimally sparse representation in general (nonorthogonal)
       dictionaries via l1 minimization", PNAS 100(5).
    .. [2] Natarajan (1995), "Sparse approximate solutions to linear systems", SIAM J. Comput.
       24(2) (the problem is NP-hard in general, hence enumeration).

    Examples
    --------
    >>> D = np.array([[1.0, 0.0], [0.0, 1.0], [0.6, 0.8]])
    >>> best_subset(np.array([[1.2, 1.6]]), D, 1).tolist()
    [[0.0, 0.0, 2.0]]
    """
    D = check_dictionary(D)
    X = check_observations(X, D)
    k = _check_support_size(k, D)
    max_supports = check_int(max_supports, "max_supports", minimum=1)
    n_supports = count_supports(D.shape[0], k)
    if n_supports > max_supports:
        raise ValueError(
            f"best_subset would enumerate {n_supports} supports (sum of C(N={D.shape[0]}, s) for s <= K={k}), "
            f"above max_supports={max_supports}. Lower K or N, raise max_supports, or use omp or lasso."
        )
    result = _best_subset(X, D, k, nonnegative=bool(nonnegative), device=resolve_device(device))
    return result if return_info else result.codes


def _best_subset(X, D, k, *, nonnegative, device) -> SolveResult:
    n_samples, (n_latents, _) = X.shape[0], D.shape
    Dt = torch.as_tensor(D, dtype=torch.float64, device=device)
    Xt = torch.as_tensor(X, dtype=torch.float64, device=device)
    correlation = Xt @ Dt.T  # b_S = correlation[:, S] for every support S
    energy = (Xt * Xt).sum(1)
    tie = BEST_SUBSET_TIE_RTOL * energy
    best = energy.clone()  # the empty support: z = 0
    best_support = torch.full((n_samples, k), -1, dtype=torch.int64, device=device)
    best_codes = torch.zeros(n_samples, k, dtype=torch.float64, device=device)
    gram = Dt @ Dt.T
    for size in range(1, k + 1):
        for supports in _support_blocks(n_latents, size, device):
            G = gram[supports[:, :, None], supports[:, None, :]]  # (C, s, s)
            independent = torch.linalg.eigvalsh(G)[:, 0] > BEST_SUBSET_DEPENDENT_RTOL
            supports, inverse = supports[independent], torch.linalg.inv(G[independent])
            if len(supports) == 0:
                continue
            for rows in _row_blocks(n_samples, len(supports), device):
                b = correlation[rows][:, supports]  # (R, C, s)
                codes = torch.einsum("rcs,cts->rct", b, inverse)
                residual = energy[rows, None] - (codes * b).sum(2)
                if nonnegative:
                    residual = residual.masked_fill_((codes < 0).any(2), float("inf"))
                value, index = residual.min(1)
                better = value < best[rows] - tie[rows]
                chosen = rows[better]
                best[chosen] = value[better]
                best_support[chosen] = torch.nn.functional.pad(supports[index[better]], (0, k - size), value=-1)
                best_codes[chosen] = torch.nn.functional.pad(codes[better.nonzero().flatten(), index[better]],
                                                             (0, k - size))
    used = best_support >= 0
    Z = torch.zeros(n_samples, n_latents, dtype=torch.float64, device=device)
    Z.scatter_add_(1, best_support.clamp_min(0), best_codes * used)
    fit = Xt - Z @ Dt
    status = np.full(n_samples, int(Status.OPTIMAL))
    return SolveResult(
        codes=Z.cpu().numpy(),
        status=status,
        objective=(0.5 * (fit * fit).sum(1)).cpu().numpy(),
        n_iter=used.sum(1).cpu().numpy(),
        duality_gap=np.full(n_samples, np.nan),
        message=f"all {n_samples} rows solved exactly by enumerating {count_supports(n_latents, k)} supports",
    )


def _support_blocks(n_latents: int, size: int, device):
    """All supports of one size, lexicographic, in (C, size) int64 blocks."""
    per_block = max(1, BEST_SUBSET_BLOCK // 64)
    combos = itertools.combinations(range(n_latents), size)
    while True:
        block = list(itertools.islice(combos, per_block))
        if not block:
            return
        yield torch.tensor(block, dtype=torch.int64, device=device)


def _row_blocks(n_samples: int, n_supports: int, device):
    """Row index blocks so that a block holds at most BEST_SUBSET_BLOCK (row, support) pairs."""
    step = max(1, BEST_SUBSET_BLOCK // n_supports)
    for start in range(0, n_samples, step):
        yield torch.arange(start, min(start + step, n_samples), device=device)
