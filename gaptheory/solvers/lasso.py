"""The public LASSO entry point: validation and dispatch to homotopy, FISTA or cvxpy."""

from __future__ import annotations

import importlib.util

import warnings

import numpy as np

from .._device import resolve_device, resolve_dtype
from .._validation import check_choice, check_dictionary, check_int, check_observations, check_positive, times_power_of_two
from .fista import FISTA_MAX_ITER, FISTA_TOL, _fista
from .homotopy import _lasso_homotopy, _lasso_lars_kernel
from ._inputs import check_flag
from ._scale import unscale_result
from .lp import CvxpyProblem
from .results import ConvergenceWarning, SolverFailedError, Status

LASSO_METHODS = ("auto", "homotopy", "fista", "cvxpy")

#: Run the homotopy in the compiled per-row kernels on the CPU (False: the batched torch
#: path everywhere, which tests use to compare the two; also the fallback without numba).
USE_KERNELS = importlib.util.find_spec("numba") is not None


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
    float64 duality gap. With ``dtype="float32"`` the batched (torch) path runs in float32
    and only the finish and certificate are float64. A row whose certificate fails is
    retried with a float64 path, then finished by warm-started FISTA, so every returned row
    carries a true gap bound whatever the path did.

    On the CPU the path of each row runs in a compiled kernel (numba,
    :func:`gaptheory.solvers._kernels.lars_path`: Gram form, the Cholesky factor of
    :math:`G_{AA}` extended by one row per entry) and the finish and certificate in
    another (:func:`~gaptheory.solvers._kernels.lasso_finish`), in float64 whatever
    ``dtype`` says (the finish needs float64 correlations, and a float32 path is no faster
    there). When the float64 Gram matrix would exceed ``GRAM_MEMORY_BUDGET`` it runs in direct
    form, forming the Gram row of each atom as it enters from ``D`` (``SolveResult.form``
    says which ran). Rows those do not certify take the batched torch path, as on a GPU.

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
        Weight of the l1 penalty, > 0, in the units of ``X``: the problem is homogeneous,
        ``lasso(c X, D, c alpha) = c lasso(X, D, alpha)`` for any c > 0, and the solver works on
        ``(X, alpha) 2^-e`` (an exact power of two with ``max |X| 2^-e`` in [0.5, 1)), so the
        answer and its duality-gap certificate are relative to the data's scale.
        ``alpha`` below ``2.2e-308 max |X|`` is refused (ValueError).
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
        Arithmetic of the FISTA iterations or of the batched homotopy path (the compiled CPU
        path is float64); results are float64.
    solver : str, optional
        cvxpy solver for ``method="cvxpy"``.
    return_info : bool
        Return a :class:`SolveResult` instead of the codes.

    Returns
    -------
    Z : ndarray of shape (B, N), or SolveResult.

    Raises
    ------
    ValueError, TypeError
        On bad input (the message names the argument).
    SolverFailedError
        When ``return_info=False`` and a row failed numerically (non-finite iterates, an
        inaccurate cvxpy solve); rows that only hit ``max_iter`` give a ConvergenceWarning.

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
    nonnegative, return_info = check_flag(nonnegative, "nonnegative"), check_flag(return_info, "return_info")
    tol = check_positive(tol, "tol")
    max_iter = check_int(max_iter, "max_iter", minimum=1)
    if init is not None:
        init = check_observations(init, D.T, name="init")  # (B, N): same N as D has rows
        if init.shape[0] != X.shape[0]:
            raise ValueError(f"init must have B={X.shape[0]} rows like X; got shape {init.shape}.")
        if nonnegative:
            init = np.maximum(init, 0.0)
    # One power of two for the whole batch (alpha is shared by the rows): X 2^-e has
    # max |x| in [0.5, 1), alpha 2^-e goes with it, and the codes are multiplied back by 2^e.
    exponent = int(np.frexp(np.abs(X).max())[1])
    with np.errstate(over="ignore", under="ignore"):  # inf is capped below, 0 refused
        alpha_s = float(np.ldexp(alpha, -exponent))
    if alpha_s < np.finfo(np.float64).tiny:
        raise ValueError(f"alpha={alpha:g} is below 2.2e-308 times max|X|={np.abs(X).max():g}: the penalty vanishes "
                         "in float64 at the data's scale. Raise alpha, or use least squares (omp, best_subset).")
    # Every code is 0 once alpha exceeds max_i |x d_i| <= ||x|| < sqrt(M) (unit atoms, |x| < 1):
    # capping there keeps 2^-e alpha finite without changing the solution.
    alpha_s = min(alpha_s, 2.0 * np.sqrt(D.shape[1]))
    X = times_power_of_two(X, -exponent)
    init = None if init is None else times_power_of_two(init, -exponent)
    if method == "cvxpy":
        result = CvxpyProblem(D, kind="lasso", nonnegative=nonnegative).solve_rows(X, alpha_s, solver)
    else:
        device, dtype = resolve_device(device), resolve_dtype(dtype)
        if (method == "homotopy" or (method == "auto" and init is None)) and device.type == "cpu" and USE_KERNELS:
            result = _lasso_lars_kernel(X, D, alpha_s, nonnegative=nonnegative, tol=tol, max_iter=max_iter)
        elif method == "homotopy" or (method == "auto" and init is None):
            result = _lasso_homotopy(X, D, alpha_s, nonnegative=nonnegative, tol=tol, max_iter=max_iter,
                                     device=device, dtype=dtype)
        else:
            result = _fista(X, D, alpha_s, nonnegative=nonnegative, tol=tol, max_iter=max_iter, init=init,
                            device=device, dtype=dtype)
    result = unscale_result(result, np.full(X.shape[0], exponent), objective_degree=2)
    if return_info:
        if not result.success:
            warnings.warn(result.message, ConvergenceWarning, stacklevel=2)
        return result
    failed = (result.status != Status.OPTIMAL) & (result.status != Status.MAX_ITER)
    if failed.any():
        raise SolverFailedError(f"lasso: {result.message}. Pass return_info=True for the per-row status.")
    if not result.success:
        warnings.warn(result.message, ConvergenceWarning, stacklevel=2)
    return result.codes
