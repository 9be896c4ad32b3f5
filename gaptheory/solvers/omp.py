"""Batched orthogonal matching pursuit (Batch-OMP in Gram form)."""

from __future__ import annotations

import numpy as np
import torch

from .._device import resolve_device, resolve_dtype
from .._validation import check_dictionary, check_observations
from ._inputs import check_flag, check_support_size
from ._scale import row_exponents, scale_rows, unscale_result
from .homotopy import _exact_finish
from .results import SolveResult, Status, status_message

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


def omp(X, D, K: int, *, device=None, dtype="float64", return_info: bool = False):
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
    exponent = row_exponents(X)
    result = _omp(scale_rows(X, exponent), D, K, device=device, dtype=dtype)
    result = unscale_result(result, exponent, objective_degree=2)
    return result if return_info else result.codes


def _omp(X, D, K, *, device, dtype) -> SolveResult:
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
    gram = Dt @ Dt.T
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
        column = gram[atom]
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
        codes, refit_failed = _exact_finish(Xt @ Dt.T, Dt @ Dt.T, support, used.to(torch.float64), 0.0)
        singular |= refit_failed
    fit = Xt - codes @ Dt
    status = torch.where(singular, int(Status.NUMERICAL), int(Status.OPTIMAL)).cpu().numpy()
    return SolveResult(
        codes=codes.double().cpu().numpy(),
        status=status,
        objective=(0.5 * (fit * fit).sum(1)).double().cpu().numpy(),
        n_iter=n_selected.cpu().numpy(),
        duality_gap=np.full(n_samples, np.nan),
        message=status_message(status, "an atom was linearly dependent on those already selected; lower K"),
    )
