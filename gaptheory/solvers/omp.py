"""Batched orthogonal matching pursuit (Batch-OMP in Gram form)."""

from __future__ import annotations

import importlib.util

import numpy as np
import torch

from .._device import resolve_device, resolve_dtype
from .._validation import check_choice, check_dictionary, check_int, check_observations
from ._inputs import check_flag, check_support_size
from ._scale import row_exponents, scale_rows, unscale_result
from .homotopy import _exact_finish
from .results import GRAM_MEMORY_BUDGET, SolveResult, Status, status_message

#: OMP stops adding atoms to a row once its residual norm is below this times ``||x||``.
#: In Gram form the residual energy is ``||x||^2 - sum_t a_t^2``, whose cancellation leaves
#: round-off of a few eps times ``||x||^2`` (~1e-15 for K <= 64): the norm is resolved to
#: ~3e-8 ``||x||``, so a row at 1e-7 is represented to round-off and further atoms are noise.
OMP_RESIDUAL_RTOL = 1e-7

#: OMP refuses an atom whose component orthogonal to the atoms already selected has norm
#: below this (atoms are unit-norm): it is linearly dependent on them to round-off, and
#: the row stops there with ``Status.NUMERICAL`` (scikit-learn stops the same way). In Gram
#: form that norm is ``sqrt(1 - ||w||^2)``, whose argument carries round-off of a few eps
#: (~1e-15 for K <= 64): the norm is resolved to ~3e-8, so the cut is 1e-6 (~1e3 eps in
#: ``1 - ||w||^2``).
OMP_DEPENDENT_RTOL = 1e-6


#: Run the selection in the compiled per-row kernel on the CPU (False: the batched torch
#: path everywhere, which tests use to compare the two; also the fallback without numba).
USE_KERNELS = importlib.util.find_spec("numba") is not None

#: ``form="auto"`` takes the direct form, although the Gram matrix fits, when forming it
#: (N^2 M multiply-adds) costs more than the direct form's Gram rows (B K N M) and is large
#: enough to matter (at least this many multiply-adds, ~0.1 s on one core); below it the Gram
#: form's compiled kernel wins whatever the counts say.
GRAM_COST_FLOOR = 2**32

#: Forms of :func:`omp`.
OMP_FORMS = ("auto", "gram", "direct")

#: Rows per block of the direct form: its per-row state is K images of length N.
DIRECT_BLOCK_BYTES = 2**28


def omp(X, D, K: int, *, device=None, dtype="float64", max_gram_bytes: int = GRAM_MEMORY_BUDGET,
        form: str = "auto", return_info: bool = False):
    r"""Batched orthogonal matching pursuit: at most ``K`` atoms per row.

    Each step adds, for every row at once, the atom most correlated with the current
    residual, :math:`j = \arg\max_j |(x - z D) d_j^\top|`, and projects the residual off
    it, in Gram form (Batch-OMP; Rubinstein, Zibulevsky & Elad 2008): correlations are
    updated from :math:`G = D D^\top` without forming the residual, so a step costs
    O(B K N) and no GEMM over the data; the codes
    :math:`z_S = (D_S D_S^\top)^{-1} D_S x^\top` come from one triangular solve at the end
    (with ``dtype="float32"``, float32 chooses the atoms and the refit is float64). A row
    stops early once its residual norm is below ``OMP_RESIDUAL_RTOL * ||x||``, or with
    ``Status.NUMERICAL`` when the next atom is linearly dependent on those selected.

    On the CPU the selection runs in a compiled per-row kernel (numba,
    :func:`gaptheory.solvers._kernels.omp_select`) whose state stays in cache; elsewhere
    in batched torch. Both form ``G`` once. The direct form instead takes the rows
    ``G_j = d_j D^T`` it needs from ``D`` at each step (one GEMM per step, ``K`` times the
    flops of ``X D^T``, no N x N matrix). ``form="auto"`` takes it when ``N^2`` times the
    item size exceeds ``max_gram_bytes``, or when forming ``G`` costs more than the Gram rows
    of the direct form (``N > B K``, with ``N^2 M`` at least ``GRAM_COST_FLOOR``: few rows
    on a large dictionary); ``SolveResult.form`` says which form ran.

    Under :math:`K < (1 + 1/\mu)/2` OMP recovers the exact support of every K-sparse
    code (Tropp 2004, Theorem A).

    Scale-equivariant: each row is solved on ``x 2^-e`` (an exact power of two with
    ``max |x| 2^-e`` in [0.5, 1)) and its codes multiplied back, so ``f(c X) = c f(X)`` for
    any finite scale and the stopping rules act relative to ``||x||``.

    Parameters
    ----------
    X : array_like of shape (B, M)
    D : array_like of shape (N, M), unit-norm rows.
    K : int
        The maximum number of atoms per row, 1 <= K <= min(N, M).
    device, dtype : see :func:`lasso`.
    max_gram_bytes : int
        Memory budget of the Gram matrix (default ``GRAM_MEMORY_BUDGET``, 1 GiB).
    form : {"auto", "gram", "direct"}
        How the Gram rows are obtained (see above); ``"gram"`` refuses a Gram matrix over
        ``max_gram_bytes``.
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
    .. [3] Rubinstein, Zibulevsky & Elad (2008), "Efficient implementation of the K-SVD
       algorithm using batch orthogonal matching pursuit", Technion CS-2008-08.

    Examples
    --------
    >>> omp(np.array([[0.0, 0.0, 1.5]]), np.eye(3), 1).tolist()
    [[0.0, 0.0, 1.5]]
    """
    D = check_dictionary(D)
    X = check_observations(X, D)
    K = check_support_size(K, D)
    device, dtype = resolve_device(device), resolve_dtype(dtype)
    return_info = check_flag(return_info, "return_info")
    max_gram_bytes = check_int(max_gram_bytes, "max_gram_bytes", minimum=0)
    check_choice(form, "form", OMP_FORMS)
    gram = _use_gram(form, *X.shape[:1], *D.shape, K, torch.finfo(dtype).bits // 8, max_gram_bytes)
    exponent = row_exponents(X)
    if gram and device.type == "cpu" and USE_KERNELS:
        result = _omp_kernel(scale_rows(X, exponent), D, K, dtype=dtype)
    else:
        result = _omp(scale_rows(X, exponent), D, K, device=device, dtype=dtype, gram=gram)
    result = unscale_result(result, exponent, objective_degree=2)
    return result if return_info else result.codes


def _use_gram(form: str, B: int, N: int, M: int, K: int, item_bytes: int, max_gram_bytes: int) -> bool:
    """Whether :func:`omp` forms the Gram matrix (see its ``form``)."""
    fits = N * N * item_bytes <= max_gram_bytes
    if form == "gram" and not fits:
        raise ValueError(f"form='gram' needs an N x N Gram matrix of {N * N * item_bytes / 2**30:.2f} GiB, above "
                         f"max_gram_bytes={max_gram_bytes}; raise max_gram_bytes or use form='auto' or 'direct'.")
    if form != "auto":
        return form == "gram"
    return fits and not (N > B * K and N * N * M >= GRAM_COST_FLOOR)


def _omp_kernel(X, D, K, *, dtype) -> SolveResult:
    """Batch-OMP on the CPU: BLAS for ``X D^T`` and ``D D^T``, the selection per row in a
    compiled kernel, codes by back substitution (float64), or, for a float32 selection, by
    a float64 least-squares refit on the support."""
    from . import _kernels

    np_dtype = np.float64 if dtype == torch.float64 else np.float32
    n_samples, n_latents = X.shape[0], D.shape[0]
    Xd, Dd = X.astype(np_dtype, copy=False), D.astype(np_dtype, copy=False)
    correlation, gram = Xd @ Dd.T, Dd @ Dd.T
    x_sq = np.einsum("bm,bm->b", Xd, Xd)
    support = np.zeros((n_samples, K), dtype=np.int64)
    triangle = np.zeros((n_samples, K, K), dtype=np_dtype)
    projection = np.zeros((n_samples, K), dtype=np_dtype)
    n_selected = np.zeros(n_samples, dtype=np.int64)
    singular = np.zeros(n_samples, dtype=np.bool_)
    _kernels.omp_select(correlation, gram, K, x_sq, np_dtype(OMP_RESIDUAL_RTOL), np_dtype(OMP_DEPENDENT_RTOL),
                        support, triangle, projection, n_selected, singular, np.empty(n_latents, dtype=np_dtype))
    coef = np.zeros((n_samples, K))
    if np_dtype == np.float64:
        _kernels.omp_codes(triangle, projection, n_selected, coef)
    else:
        _kernels.support_refit(X, D, support, n_selected, coef, singular)
    objective = np.empty(n_samples)
    _kernels.sparse_residual_energy(X, D, support, coef, n_selected, objective)
    codes = np.zeros((n_samples, n_latents))
    _kernels.scatter_codes(support, coef, n_selected, codes)
    status = np.where(singular, int(Status.NUMERICAL), int(Status.OPTIMAL))
    return SolveResult(codes=codes, status=status, objective=objective, n_iter=n_selected,
                       duality_gap=np.full(n_samples, np.nan), form="gram",
                       message=status_message(status, "an atom was linearly dependent on those already selected; lower K"))


def _omp(X, D, K, *, device, dtype, gram=True) -> SolveResult:
    """Blocks of rows through :func:`_omp_block`; in direct form (``gram=False``) blocks
    are sized so that their images (B, K, N) stay within ``DIRECT_BLOCK_BYTES``."""
    n_samples, n_latents = X.shape[0], D.shape[0]
    if gram:
        return _omp_block(X, D, K, device=device, dtype=dtype, gram=True)
    rows = max(1, DIRECT_BLOCK_BYTES // (K * n_latents * torch.finfo(dtype).bits // 8))
    parts = [_omp_block(X[i:i + rows], D, K, device=device, dtype=dtype, gram=False)
             for i in range(0, n_samples, rows)]
    status = np.concatenate([p.status for p in parts])
    return SolveResult(codes=np.concatenate([p.codes for p in parts]), status=status,
                       objective=np.concatenate([p.objective for p in parts]),
                       n_iter=np.concatenate([p.n_iter for p in parts]), duality_gap=np.full(n_samples, np.nan),
                       form="direct",
                       message=status_message(status, "an atom was linearly dependent on those already selected; lower K"))


def _omp_block(X, D, K, *, device, dtype, gram) -> SolveResult:
    r"""Batch-OMP in Gram form (Rubinstein, Zibulevsky & Elad 2008), all rows at once.

    With :math:`G = D D^\top` and :math:`c = x D^\top` (one GEMM each), step ``s`` picks
    :math:`j = \arg\max |c|`, reads :math:`w_t = u_t[j]` off the images :math:`u_t = D q_t`
    of the orthonormalised atoms already selected, sets :math:`\rho = (1 - \|w\|^2)^{1/2}`,
    :math:`u_s = (G_j - \sum_t w_t u_t) / \rho`, :math:`a_s = c_j / \rho` and updates
    :math:`c \leftarrow c - a_s u_s`: no residual is formed and no GEMM over the data runs
    inside the loop. ``R`` (``R[t, s] = w_t``, ``R[s, s] = rho``) is the Cholesky factor of
    :math:`G_{SS}`, so one batched triangular solve :math:`R z_S = a` gives the codes.
    """
    n_samples, n_latents = X.shape[0], D.shape[0]
    Dt = torch.as_tensor(D, dtype=dtype, device=device)
    Xt = torch.as_tensor(X, dtype=dtype, device=device)
    gram = Dt @ Dt.T if gram else None
    correlation = Xt @ Dt.T
    x_norm = torch.linalg.vector_norm(Xt, dim=1)
    support = torch.zeros(n_samples, K, dtype=torch.int64, device=device)
    triangle = torch.eye(K, dtype=dtype, device=device).repeat(n_samples, 1, 1)
    projection = torch.zeros(n_samples, K, dtype=dtype, device=device)  # a
    images = torch.empty(n_samples, K, n_latents, dtype=dtype, device=device)  # u_t
    active = torch.ones(n_samples, dtype=torch.bool, device=device)
    singular = torch.zeros(n_samples, dtype=torch.bool, device=device)
    n_selected = torch.zeros(n_samples, dtype=torch.int64, device=device)
    energy = x_norm * x_norm  # residual energy ||x||^2 - sum_t a_t^2
    for step in range(K):
        scores = correlation.abs()
        if step:
            scores.scatter_(1, support[:, :step], -1.0)  # never pick an atom twice
        atom = scores.argmax(1)
        active &= energy > (OMP_RESIDUAL_RTOL * x_norm) ** 2
        column = gram[atom] if gram is not None else Dt[atom] @ Dt.T
        if step:
            w = torch.gather(images[:, :step], 2, atom[:, None, None].expand(-1, step, 1)).squeeze(2)
            rho = torch.sqrt((1.0 - (w * w).sum(1)).clamp_min(0.0))
            column = torch.baddbmm(column[:, None, :], w[:, None, :], images[:, :step], alpha=-1.0).squeeze(1)
        else:
            w, rho = None, torch.linalg.vector_norm(Dt[atom], dim=1)
        # 1 - ||w||^2 carries round-off of a few eps, so rho resolves only down to ~sqrt(eps):
        # an atom with rho below OMP_DEPENDENT_RTOL lies in the span of those selected.
        dependent = active & (rho <= OMP_DEPENDENT_RTOL)
        singular |= dependent
        active &= ~dependent
        rho = torch.where(active, rho, torch.ones_like(rho))
        gain = torch.where(active, torch.gather(correlation, 1, atom[:, None]).squeeze(1) / rho,
                           torch.zeros_like(rho))
        column = column / rho[:, None]
        images[:, step] = column
        if step:
            triangle[:, :step, step] = w * active[:, None]
        triangle[:, step, step] = rho
        projection[:, step] = gain
        support[:, step] = atom
        n_selected += active.long()
        energy = energy - gain * gain
        correlation.addcmul_(gain[:, None], column, value=-1.0)
        if not bool(active.any()):
            break
    used = projection != 0
    if dtype == torch.float64:
        coef = torch.linalg.solve_triangular(triangle, projection[:, :, None], upper=True).squeeze(2)
        codes = torch.zeros(n_samples, n_latents, dtype=dtype, device=device).scatter_add_(1, support, coef * used)
    else:  # float32 chose the atoms; refit them in float64 (least squares on the support)
        Dt = torch.as_tensor(D, dtype=torch.float64, device=device)
        Xt = torch.as_tensor(X, dtype=torch.float64, device=device)
        codes, refit_failed = _exact_finish(Xt @ Dt.T, Dt @ Dt.T if gram is not None else None, support,
                                            used.to(torch.float64), 0.0, D=Dt)
        singular |= refit_failed
    fit = Xt - codes @ Dt
    status = torch.where(singular, int(Status.NUMERICAL), int(Status.OPTIMAL)).cpu().numpy()
    return SolveResult(
        codes=codes.double().cpu().numpy(),
        status=status,
        objective=(0.5 * (fit * fit).sum(1)).double().cpu().numpy(),
        n_iter=n_selected.cpu().numpy(),
        duality_gap=np.full(n_samples, np.nan), form="gram" if gram is not None else "direct",
        message=status_message(status, "an atom was linearly dependent on those already selected; lower K"),
    )
