import os

import torch
from hypothesis import settings

# CI has 2 cores; keep torch from oversubscribing them when pytest-xdist is not used.
torch.set_num_threads(min(2, os.cpu_count() or 1))

settings.register_profile("ci", deadline=None, print_blob=True)
settings.load_profile("ci")


# ----- tolerances derived from floating-point analysis --------------------------------------
# eps = 2u is numpy's machine epsilon (u = 2^-53 in float64, 2^-24 in float32). Two
# evaluations of one quantity, each within gamma_n = n u / (1 - n u) of the truth, differ by
# at most 2 gamma_n ~ n eps times the quantity's absolute size (Higham 2002, sec. 3.1).

import numpy as np  # noqa: E402

EPS64 = float(np.finfo(np.float64).eps)
EPS32 = float(np.finfo(np.float32).eps)


def eps_of(dtype):
    """Machine epsilon (2u) of ``dtype`` (a numpy/torch dtype or its name)."""
    if not isinstance(dtype, (str, type, np.dtype)):  # a torch dtype
        dtype = str(dtype).replace("torch.", "")
    return float(np.finfo(dtype).eps)


def sum_atol(n, magnitude, dtype=np.float64):
    """How far two evaluations of a sum of ``n`` terms with sum of absolute values ``magnitude``
    may differ when the order of operations differs: 2 gamma_n magnitude, about n eps magnitude."""
    return n * eps_of(dtype) * magnitude


def half_square_atol(X, Z, D, dtype=np.float64):
    """How far two evaluations of 0.5 ||x - z D||^2 in ``dtype`` may differ, per row.

    Each entry of z D is a sum of N products, so it carries an error below
    gamma_N ||z||_1 max|D| plus eps |x| from the subtraction
    (Higham 2002, sec. 3.1); with e = a - b that error vector and
    |0.5||a||^2 - 0.5||b||^2| <= ||e|| (||a|| + ||b||) / 2, the bound below follows.
    """
    X, Z, D = (np.asarray(a, dtype=np.float64) for a in (X, Z, D))
    N, M = D.shape
    entry = (N + 1) * eps_of(dtype) * (np.abs(X).max(1) + np.abs(Z).sum(1) * np.abs(D).max())
    residual = np.linalg.norm(X - Z @ D, axis=1)
    return np.sqrt(M) * entry * (residual + np.sqrt(M) * entry)


def support_condition(D, Z):
    """Largest condition number of D restricted to a row's support (1 for all-zero codes)."""
    return max([np.linalg.cond(D[np.flatnonzero(z)]) for z in np.asarray(Z) if np.any(z)], default=1.0)


def least_squares_atol(D, Z, dtype=np.float64):
    """How far two least-squares solves on the same supports may differ, entrywise.

    A backward-stable solve (QR, or Cholesky of a well-conditioned Gram) in ``dtype`` errs by
    about M K eps cond(D_S) relative to ||z|| (Higham 2002, Thm 20.3), K the largest support.
    """
    Z = np.asarray(Z)
    K = max(int((Z != 0).sum(1).max()), 1)
    return D.shape[1] * K * eps_of(dtype) * support_condition(D, Z) * float(np.abs(Z).max())


def lasso_code_atol(X, D, alpha, nonnegative, *codes):
    """Per-row bound on max |z_a - z_b| over LASSO codes, from their certified duality gaps.

    F(z) - F* >= ||(z - z*) D||^2 / 2, so each fit lies within sqrt(2 gap) of the unique
    optimal fit; codes then differ by at most the sum of those radii over
    sqrt(lambda_min(D_U D_U^T)), U the union of the rows' supports. The gaps are evaluated
    in float64 (plus their own round-off, sum_atol of the objective); a row whose union is
    rank-deficient gets inf (the codes need not be unique there).
    """
    import torch

    from gaptheory.solvers import fista

    X, D = np.asarray(X, dtype=np.float64), np.asarray(D, dtype=np.float64)
    radius = np.zeros(len(X))
    for z in codes:
        z = np.asarray(z, dtype=np.float64)
        primal, gap = fista._lasso_gap(torch.tensor(X), torch.tensor(D), torch.tensor(z), alpha, nonnegative)
        gap = gap.numpy() + sum_atol(D.shape[0] + D.shape[1], primal.numpy())
        radius += np.sqrt(2 * gap)
    union = np.any([np.asarray(z) != 0 for z in codes], axis=0)
    bound = np.full(len(X), np.inf)
    for row in range(len(X)):
        if not union[row].any():
            bound[row] = radius[row]
            continue
        smallest = np.linalg.eigvalsh(D[union[row]] @ D[union[row]].T)[0]
        if smallest > 0:
            bound[row] = radius[row] / np.sqrt(smallest)
    return bound


def forward_atol(reference, *, layers, width):
    """How far two float32 forward passes of one network may differ when only the reduction
    order changes (padding, batch companions, attention kernel): each layer's reductions of
    length <= ``width`` err by gamma_width relative to the activations' scale, and LayerNorm
    renormalises between layers, so the ``layers`` contributions add. A round-off model, not a
    rigorous bound; a misplaced row or mask is off by O(1) of the scale instead."""
    import torch

    scale = float(torch.as_tensor(reference).abs().max())
    return layers * width * EPS32 * scale


def frequency_atol(p, n, sigmas=5.0):
    """``sigmas`` standard errors of the frequency of an event of probability ``p`` in ``n``
    independent draws (binomial: sqrt(p (1 - p) / n)); 5 sigma fails once in ~1.7 million."""
    return sigmas * float(np.sqrt(p * (1 - p) / n))


def lasso_gap_atol(X, D, Z, alpha):
    """Round-off of a float64 LASSO duality gap, per row: primal and dual are sums of at most
    N + M terms, each bounded by ||x|| ||r|| + ||r||^2 + alpha ||z||_1, so a gap that is zero
    in exact arithmetic evaluates below (N + M) eps times that."""
    N, M = np.shape(D)
    r = np.linalg.norm(X - Z @ D, axis=1)
    size = np.linalg.norm(X, axis=1) * r + r * r + alpha * np.abs(Z).sum(1)
    return sum_atol(N + M, size)
