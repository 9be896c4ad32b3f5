"""Exact L0: K-sparse least squares by enumerating every support (small N only)."""

from __future__ import annotations

import itertools
import math

import numpy as np
import torch

from .._device import resolve_device
from .._validation import check_dictionary, check_int, check_k, check_observations
from ..instances import MAX_EXHAUSTIVE_SUPPORTS
from ._inputs import check_flag, check_support_size
from ._scale import row_exponents, scale_rows, unscale_result
from .results import SolveResult, Status

#: best_subset prefers the smaller support when two fits agree to this times ``||x||^2``
#: (round-off): a K-sparse code found on its own support is not padded with zero atoms.
BEST_SUBSET_TIE_RTOL = 1e-10

#: best_subset refuses a support whose Gram matrix has an eigenvalue below this (atoms are
#: unit-norm): its span is that of a smaller support, which the search covers already.
BEST_SUBSET_DEPENDENT_RTOL = 1e-10

#: best_subset works on blocks of at most this many (row, support) pairs at a time (a few
#: float64 tensors of this many times K entries: ~25 MB each at K = 3).
BEST_SUBSET_BLOCK = 1 << 20


def count_supports(N: int, K: int) -> int:
    r"""Number of supports of size 1..K among N atoms, :math:`\sum_{s=1}^K \binom{N}{s}`.

    Examples
    --------
    >>> count_supports(16, 3)
    696
    """
    N = check_int(N, "N", minimum=1)
    K = check_k(K, N, name="K")
    return sum(math.comb(N, s) for s in range(1, K + 1))


def best_subset(X, D, K: int, *, nonnegative: bool = False, max_supports: int = MAX_EXHAUSTIVE_SUPPORTS,
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

    Scale-equivariant: each row is solved on ``x 2^-e`` (an exact power of two with
    ``max |x| 2^-e`` in [0.5, 1)) and its codes multiplied back, so ``f(c X) = c f(X)`` for
    any finite scale and the stopping rules act relative to ``||x||``.

    Parameters
    ----------
    X : array_like of shape (B, M)
    D : array_like of shape (N, M), unit-norm rows.
    K : int
        The maximum number of atoms per row, 1 <= K <= min(N, M).
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
    K = check_support_size(K, D)
    max_supports = check_int(max_supports, "max_supports", minimum=1)
    n_supports = count_supports(D.shape[0], K)
    if n_supports > max_supports:
        raise ValueError(
            f"best_subset would enumerate {n_supports} supports (sum of C(N={D.shape[0]}, s) for s <= K={K}), "
            f"above max_supports={max_supports}. Lower K or N, raise max_supports, or use omp or lasso."
        )
    nonnegative, return_info = check_flag(nonnegative, "nonnegative"), check_flag(return_info, "return_info")
    exponent = row_exponents(X)
    result = _best_subset(scale_rows(X, exponent), D, K, nonnegative=nonnegative, device=resolve_device(device))
    result = unscale_result(result, exponent, objective_degree=2)
    return result if return_info else result.codes


def _best_subset(X, D, K, *, nonnegative, device) -> SolveResult:
    n_samples, (n_latents, _) = X.shape[0], D.shape
    Dt = torch.as_tensor(D, dtype=torch.float64, device=device)
    Xt = torch.as_tensor(X, dtype=torch.float64, device=device)
    correlation = Xt @ Dt.T  # b_S = correlation[:, S] for every support S
    energy = (Xt * Xt).sum(1)
    tie = BEST_SUBSET_TIE_RTOL * energy
    best = energy.clone()  # the empty support: z = 0
    best_support = torch.full((n_samples, K), -1, dtype=torch.int64, device=device)
    best_codes = torch.zeros(n_samples, K, dtype=torch.float64, device=device)
    gram = Dt @ Dt.T
    for size in range(1, K + 1):
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
                # the first support within round-off of the block's best, so that the choice
                # between (near-)tied supports does not depend on how BLAS rounds each one
                lowest = residual.min(1).values
                index = (residual <= (lowest + tie[rows])[:, None]).to(torch.uint8).argmax(1)
                value = residual.gather(1, index[:, None]).squeeze(1)
                better = value < best[rows] - tie[rows]
                chosen = rows[better]
                best[chosen] = value[better]
                best_support[chosen] = torch.nn.functional.pad(supports[index[better]], (0, K - size), value=-1)
                best_codes[chosen] = torch.nn.functional.pad(codes[better.nonzero().flatten(), index[better]],
                                                             (0, K - size))
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
        message=f"all {n_samples} rows solved exactly by enumerating {count_supports(n_latents, K)} supports",
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
