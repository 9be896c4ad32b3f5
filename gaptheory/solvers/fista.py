"""Batched restarted FISTA for the LASSO and the LASSO duality-gap certificate."""

from __future__ import annotations

import contextlib
import warnings

import numpy as np
import torch

from .results import SolveResult, Status, status_message

#: this relative distance of the optimum, a decade inside the 1e-6 agreement promised with
#: cvxpy (whose own interior-point answers are accurate to ~1e-8).
FISTA_TOL = 1e-7

#: Default iteration cap of FISTA; restarted FISTA on unit-norm dictionaries needs a few
#: hundred iterations at most in our tests, so hitting this signals an ill-posed problem.
FISTA_MAX_ITER = 20_000

#: FISTA evaluates the duality gap (one extra matmul) every this many iterations.
FISTA_CHECK_EVERY = 10


@contextlib.contextmanager
def _quiet_csr():
    """Silence torch's note that its CSR support is "beta": we only multiply with it."""
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message="Sparse CSR tensor support is in beta", category=UserWarning)
        yield


def _lasso_gap(X, D, z, alpha, nonnegative, C=None, G=None, sparse=False):
    r"""Primal objective and duality gap per row for codes ``z`` (all tensors).

    The dual point is the scaled residual :math:`\theta = r \min(1, \alpha / \|r D^\top\|_\infty)`
    (nonnegative case: the largest positive correlation), feasible by construction, so
    primal minus dual bounds the suboptimality of ``z``. The correlation is taken from
    the residual itself, or as ``C - z G`` when ``C = X D^T`` and ``G = D D^T`` are given
    (:mod:`gaptheory.flops` counts FISTA's use of that form). ``sparse=True`` multiplies
    ``z`` as a CSR matrix (for codes with few nonzeros per row).
    """
    if sparse:
        with _quiet_csr():
            zs = z.to_sparse_csr()
            residual = X - zs @ D
            correlation = C - zs @ G
    elif G is None:
        residual = X - z @ D
        correlation = residual @ D.T
    else:
        residual = X - z @ D
        correlation = C - z @ G
    primal = 0.5 * (residual * residual).sum(1) + alpha * z.abs().sum(1)
    if nonnegative:
        worst = correlation.max(1).values.clamp_min(0.0)
    else:
        worst = correlation.abs().max(1).values
    scale = torch.clamp(alpha / worst.clamp_min(torch.finfo(z.dtype).tiny), max=1.0)
    theta = residual * scale[:, None]
    dual = (X * theta).sum(1) - 0.5 * (theta * theta).sum(1)
    return primal, (primal - dual).clamp_min(0.0)


def fista_tensors(X, D, alpha, *, nonnegative, tol, max_iter, init=None, lipschitz=None):
    """Batched restarted FISTA on trusted tensors: the core of :func:`gaptheory.solvers.lasso`'s
    ``method="fista"``, without its validation or rescaling, for callers inside a loop
    (sparse coding's inner solves). ``X (B, M)``, ``D (N, M)``, ``init (B, N)`` are tensors of
    one dtype on one device, where the codes stay; rows leave the working batch once their
    duality gap is at most ``tol`` times their objective.

    Returns ``(codes (B, N), status (B,), objective (B,), n_iter (B,), gap (B,))``: codes on
    the device in the dtype of ``X``; the rest on the host (int64 status and iterations,
    float64 objective and gap). ``lipschitz`` defaults to the largest eigenvalue of ``D D^T``.
    """
    device, dtype = X.device, X.dtype
    n_samples, n_latents = X.shape[0], D.shape[0]
    Dt, Xt = D, X
    G = Dt @ Dt.T  # (N, N) Gram matrix: gradient of the loss is z G - x D^T
    C = Xt @ Dt.T  # (B, N)
    if lipschitz is None:
        lipschitz = torch.linalg.eigvalsh(G.double())[-1].to(dtype)
    step, threshold = 1.0 / lipschitz, alpha / lipschitz

    z = torch.zeros(n_samples, n_latents, dtype=dtype, device=device)
    if init is not None:
        z = init.to(dtype=dtype, device=device).clone()
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
    return codes, status, objective, n_iter, gap


def _fista(X, D, alpha, *, nonnegative, tol, max_iter, init, device, dtype) -> SolveResult:
    """Batched restarted FISTA on validated NumPy inputs (see :func:`lasso`): :func:`fista_tensors`
    with the step from the host float64 spectrum of ``D D^T``, results as a :class:`SolveResult`."""
    lipschitz = float(np.linalg.eigvalsh(D @ D.T)[-1])  # float64 on host, once
    codes, status, objective, n_iter, gap = fista_tensors(
        torch.as_tensor(X, dtype=dtype, device=device), torch.as_tensor(D, dtype=dtype, device=device), alpha,
        nonnegative=nonnegative, tol=tol, max_iter=max_iter, lipschitz=lipschitz,
        init=None if init is None else torch.as_tensor(init, dtype=dtype, device=device))
    status_np = status.numpy()
    return SolveResult(
        codes=codes.double().cpu().numpy(),
        status=status_np,
        objective=objective.numpy(),
        n_iter=n_iter.numpy(),
        duality_gap=gap.numpy(),
        message=status_message(status_np, f"raise max_iter={max_iter} or loosen tol={tol:g}"),
    )
