"""Batched orthogonal matching pursuit (Gram-Schmidt in data space)."""

from __future__ import annotations

import numpy as np
import torch

from .._device import resolve_device, resolve_dtype
from .._validation import check_dictionary, check_k, check_observations
from .homotopy import _exact_finish
from .results import SolveResult, Status, status_message

#: OMP stops adding atoms to a row once its residual norm is below this times ``||x||``:
#: the observation is then represented to float64 round-off and further atoms would be noise.
OMP_RESIDUAL_RTOL = 1e-10

#: OMP refuses an atom whose component orthogonal to the atoms already selected has norm
#: below this (atoms are unit-norm): it is linearly dependent on them to round-off, and
#: the row stops there with ``Status.NUMERICAL`` (scikit-learn stops the same way).
OMP_DEPENDENT_RTOL = 1e-10


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


def _omp(X, D, k, *, device, dtype) -> SolveResult:
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
        correlation = residual @ Dt.T
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
        C = Xt @ Dt.T
        codes, refit_failed = _exact_finish(C, Dt @ Dt.T, support, used.to(torch.float64), 0.0)
        singular |= refit_failed
    fit = Xt - codes @ Dt
    status = torch.where(singular, int(Status.NUMERICAL), int(Status.OPTIMAL)).cpu().numpy()
    return SolveResult(
        codes=codes.double().cpu().numpy(),
        status=status,
        objective=(0.5 * (fit * fit).sum(1)).double().cpu().numpy(),
        n_iter=n_selected.cpu().numpy(),
        duality_gap=np.full(n_samples, np.nan),
        message=status_message(status, "an atom was linearly dependent on those already selected; lower k"),
    )
