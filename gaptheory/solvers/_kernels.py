r"""Compiled per-row kernels of Batch-OMP and LARS-lasso in Gram form, for the CPU.

The batched torch solvers advance all rows together, one event per row per step, which on
a CPU is bound by passes over (B, N) tensors and per-operation dispatch. These kernels
(numba, compiled once and cached on disk) instead run the whole path of one row while its
state (correlations, images, Cholesky factor) stays in L1/L2 cache, looping over rows in
compiled code; the only work outside them is the correlation GEMM ``X D^T`` and the Gram
matrix ``D D^T`` (BLAS). Both paths give the same supports and codes up to round-off; the
solvers use these on ``device="cpu"`` and the torch form elsewhere.

Every kernel takes row-major arrays and writes into preallocated outputs.
"""

from __future__ import annotations

import math

import numba
import numpy as np
from numba import types
from numba.extending import overload

_jit = numba.njit(cache=True, nogil=True, fastmath={"reassoc", "contract", "nsz"})


@_jit
def _dot(a, b):
    """``a . b`` of two 1-D arrays of one length."""
    v = 0.0
    for m in range(a.shape[0]):
        v += a[m] * b[m]
    return v


#: Entries per block of :func:`_argmax_abs`.
_ARGMAX_BLOCK = 32


def _magnitude_bits(c):
    """``c`` viewed as unsigned integers of its width (compiled only, see the overload)."""
    raise NotImplementedError


@overload(_magnitude_bits)
def _magnitude_bits_overload(c):
    if c.dtype == types.float32:
        return lambda c: c.view(np.uint32)
    if c.dtype == types.float64:
        return lambda c: c.view(np.uint64)
    return None


@numba.njit(cache=True, nogil=True)
def _argmax_abs(c):
    """Index of the first largest ``|c_i|`` of a finite ``c``, or -1 when every entry is 0.

    For finite IEEE floats, ``|a| < |b|`` exactly when the bit pattern of ``a`` shifted left
    by one (the sign bit dropped) is below that of ``b`` as an unsigned integer. The maximum
    of each block of ``_ARGMAX_BLOCK`` such integers is a reduction that vectorises (a float
    maximum compiles to a compare-and-branch per entry), and only the first block holding the
    overall maximum is then searched: 1.3-2.4x faster than the float comparison at N = 256,
    up to 4x at N = 2048 in float32."""
    bits = _magnitude_bits(c)
    n = bits.shape[0]
    one = bits.dtype.type(1)
    best = bits.dtype.type(0)
    start = -1
    for block in range(0, n, _ARGMAX_BLOCK):
        top = bits.dtype.type(0)
        for i in range(block, min(n, block + _ARGMAX_BLOCK)):
            # the cast keeps the shift in the dtype's width (numba widens it to 64 bits)
            top = max(top, bits.dtype.type(bits[i] << one))
        if top > best:
            best = top
            start = block
    if start < 0:
        return -1
    for i in range(start, min(n, start + _ARGMAX_BLOCK)):
        if bits.dtype.type(bits[i] << one) == best:
            return i
    return -1


@_jit
def omp_select(C, G, K, x_sq, residual_rtol, dependent_rtol, support, triangle, projection, n_selected,
               singular, c):
    r"""Batch-OMP selection (Rubinstein, Zibulevsky & Elad 2008) for every row of ``C``.

    ``C = X D^T`` (B, N) and ``G = D D^T`` (N, N) in one dtype. Per row: ``j = argmax |c|``
    over unselected atoms, ``w_t = u_t[j]`` (``u_t = D q_t``, the images of the orthonormalised
    selected atoms), :math:`\rho = (G_{jj} - \|w\|^2)^{1/2}`, :math:`u_s = (G_j - \sum_t w_t u_t)/\rho`,
    :math:`a_s = c_j/\rho`, :math:`c \leftarrow c - a_s u_s`. Writes the support (B, K), the
    upper-triangular factor ``R`` of :math:`G_{SS}` (B, K, K; ``R[t, s] = w_t``, ``R[s, s] = rho``),
    ``a`` (B, K), the atoms selected and a flag for rows stopped by a dependent atom.
    A row stops once :math:`\|x\|^2 - \sum a_t^2 \le (\text{rtol}\,\|x\|)^2`, or when every
    correlation is 0. The correlations of selected atoms are 0 in exact arithmetic (the
    residual is orthogonal to them) and are set to 0, which keeps them from being chosen again.
    ``c`` (N,) is scratch in the dtype of ``C``.
    """
    n_rows, n_atoms = C.shape
    dt = C.dtype.type
    images = np.empty((K, n_atoms), dtype=C.dtype)
    acc = np.empty(n_atoms, dtype=C.dtype)
    w = np.empty(K, dtype=C.dtype)
    zero, one = dt(0.0), dt(1.0)
    for b in range(n_rows):
        for i in range(n_atoms):
            c[i] = C[b, i]
        energy = x_sq[b]
        floor = residual_rtol * residual_rtol * x_sq[b]
        count = 0
        for s in range(K):
            if energy <= floor:
                break
            j = _argmax_abs(c)
            if j < 0:
                break
            rho2 = G[j, j]
            for t in range(s):
                w[t] = images[t, j]
                rho2 -= w[t] * w[t]
            rho = math.sqrt(max(rho2, zero))
            if rho <= dependent_rtol:
                singular[b] = True
                break
            inv = one / rho
            a = c[j] * inv
            # G_j - sum_t w_t u_t, accumulated apart from the images (the loops then vectorise
            # without alias checks) and two images per pass
            g = G[j]
            for i in range(n_atoms):
                acc[i] = g[i]
            t = 0
            while t + 1 < s:
                w0, w1, u0, u1 = w[t], w[t + 1], images[t], images[t + 1]
                for i in range(n_atoms):
                    acc[i] -= w0 * u0[i] + w1 * u1[i]
                t += 2
            if t < s:
                w0, u0 = w[t], images[t]
                for i in range(n_atoms):
                    acc[i] -= w0 * u0[i]
            u = images[s]
            for i in range(n_atoms):
                ui = acc[i] * inv
                u[i] = ui
                c[i] -= a * ui
            for t in range(s):
                triangle[b, t, s] = w[t]
            triangle[b, s, s] = rho
            projection[b, s] = a
            support[b, s] = j
            count += 1
            energy -= a * a
            for t in range(count):
                c[support[b, t]] = zero
        n_selected[b] = count


@_jit
def omp_codes(triangle, projection, n_selected, coef):
    """Back substitution ``R z = a`` per row on its first ``n_selected`` slots (float64)."""
    for b in range(triangle.shape[0]):
        n = n_selected[b]
        for s in range(n - 1, -1, -1):
            v = projection[b, s]
            for t in range(s + 1, n):
                v -= triangle[b, s, t] * coef[b, t]
            coef[b, s] = v / triangle[b, s, s]


@_jit
def _cholesky_solve(L, n, rhs, out):
    """Solve ``L L^T out = rhs`` on the leading ``n`` x ``n`` block of lower-triangular ``L``."""
    for i in range(n):
        v = rhs[i]
        for k in range(i):
            v -= L[i, k] * out[k]
        out[i] = v / L[i, i]
    for i in range(n - 1, -1, -1):
        v = out[i]
        for k in range(i + 1, n):
            v -= L[k, i] * out[k]
        out[i] = v / L[i, i]


@_jit
def _cholesky(A, n, L):
    """Cholesky factor of the leading ``n`` x ``n`` block of ``A`` into ``L``; False if not
    positive definite."""
    for i in range(n):
        for j in range(i + 1):
            v = A[i, j]
            for k in range(j):
                v -= L[i, k] * L[j, k]
            if i == j:
                if not v > 0.0:
                    return False
                L[i, i] = math.sqrt(v)
            else:
                L[i, j] = v / L[j, j]
    return True


@_jit
def support_refit(X, D, support, n_selected, coef, singular):
    r"""Least squares on each row's support in float64: :math:`z_S = (D_S D_S^\top)^{-1} D_S x`,
    with the Gram block and right-hand side formed from the rows of ``D`` (``K^2 M / 2`` per
    row, no N x N Gram matrix). Flags rows whose block is not positive definite."""
    n_rows = X.shape[0]
    K = support.shape[1]
    A = np.empty((K, K))
    L = np.empty((K, K))
    rhs = np.empty(K)
    out = np.empty(K)
    for b in range(n_rows):
        n = n_selected[b]
        for s in range(n):
            ds = D[support[b, s]]
            rhs[s] = _dot(ds, X[b])
            for t in range(s + 1):
                A[s, t] = A[t, s] = _dot(ds, D[support[b, t]])
        if not _cholesky(A, n, L):
            singular[b] = True
            for s in range(n):
                coef[b, s] = 0.0
            continue
        _cholesky_solve(L, n, rhs, out)
        for s in range(n):
            coef[b, s] = out[s]


@_jit
def scatter_codes(support, coef, n_used, codes):
    """``codes[b, support[b, s]] = coef[b, s]`` for each row's first ``n_used[b]`` slots."""
    for b in range(support.shape[0]):
        for s in range(n_used[b]):
            codes[b, support[b, s]] = coef[b, s]


@_jit
def sparse_residual_energy(X, D, support, coef, n_used, out):
    r"""Per row :math:`\tfrac12\|x - \sum_s z_s d_{S_s}\|^2`, formed explicitly (float64)."""
    n_rows, n_dims = X.shape
    r = np.empty(n_dims)
    for b in range(n_rows):
        for m in range(n_dims):
            r[m] = X[b, m]
        for s in range(n_used[b]):
            z = coef[b, s]
            d = D[support[b, s]]
            for m in range(n_dims):
                r[m] -= z * d[m]
        v = 0.0
        for m in range(n_dims):
            v += r[m] * r[m]
        out[b] = 0.5 * v


@_jit
def _gram_row(D, j, out):
    """``out = D d_j^T``: row ``j`` of the Gram matrix, from ``D`` (N, M)."""
    for i in range(D.shape[0]):
        out[i] = _dot(D[i], D[j])


@_jit
def lars_path(C, G, D, direct, alpha, nonnegative, max_events, gamma_floor_rel, support, signs, n_active,
              n_events, finished):
    r"""LARS-lasso path (Osborne, Presnell & Turlach 2000; Efron et al. 2004) per row, in Gram form.

    From :math:`\lambda_{\max} = \max_j |c_j|` (nonnegative: :math:`\max_j c_j`) down to
    ``alpha``: with the active set ``A`` and signs ``s``, :math:`w = G_{AA}^{-1} s_A`, the
    correlations move as :math:`r - \gamma\, G_{:A} w` while :math:`\lambda` drops by
    :math:`\gamma`, to the first event (an inactive :math:`r_j` reaches :math:`\pm\lambda`,
    an active code reaches 0, or :math:`\lambda = \alpha`). The Cholesky factor of
    :math:`G_{AA}` is extended by one row per entry (O(|A|^2)) and refactored after a drop
    (rare). Writes the final support and signs (first ``n_active`` slots), the events taken,
    and whether the row reached ``alpha`` within ``max_events`` with a positive definite
    :math:`G_{AA}`; a row whose active set would exceed the slots of ``support`` stops
    unfinished. With ``direct`` the Gram rows of the active atoms are formed from ``D`` when
    they enter (2NM each; ``G`` is not read), so no N x N matrix is needed.
    """
    n_rows, n_atoms = C.shape
    cap = support.shape[1]
    dt = C.dtype.type
    r = np.empty(n_atoms, dtype=C.dtype)
    a = np.empty(n_atoms, dtype=C.dtype)
    active = np.zeros(n_atoms, dtype=np.bool_)
    L = np.zeros((cap, cap), dtype=C.dtype)
    Gaa = np.zeros((cap, cap), dtype=C.dtype)
    w = np.empty(cap, dtype=C.dtype)
    z = np.empty(cap, dtype=C.dtype)
    sg = np.empty(cap, dtype=C.dtype)
    sup = np.empty(cap, dtype=np.int64)
    tmp = np.empty(cap, dtype=C.dtype)
    rows = np.empty((min(cap, 16) if direct else 0, n_atoms), dtype=C.dtype)  # Gram rows of the active set
    for b in range(n_rows):
        lam, j = dt(-np.inf), 0
        for i in range(n_atoms):
            r[i] = C[b, i]
            v = r[i] if nonnegative else abs(r[i])
            if v > lam:
                lam, j = v, i
        n_active[b], n_events[b] = 0, 0
        if lam <= alpha:
            finished[b] = True
            continue
        n = 1
        sup[0], sg[0], z[0] = j, (dt(1.0) if r[j] >= 0 else dt(-1.0)), dt(0.0)
        active[j] = True
        if direct:
            _gram_row(D, j, rows[0])
            Gaa[0, 0] = rows[0, j]
        else:
            Gaa[0, 0] = G[j, j]
        L[0, 0] = math.sqrt(Gaa[0, 0])
        events, done, ok = 1, False, True
        while True:
            _cholesky_solve(L, n, sg, w)
            # a = G_{:A} w, two Gram rows per pass over the atoms
            g0 = rows[0] if direct else G[sup[0]]
            w0 = w[0]
            for i in range(n_atoms):
                a[i] = w0 * g0[i]
            for k in range(1, n - 1, 2):
                g0, g1 = (rows[k], rows[k + 1]) if direct else (G[sup[k]], G[sup[k + 1]])
                w0, w1 = w[k], w[k + 1]
                for i in range(n_atoms):
                    a[i] += w0 * g0[i] + w1 * g1[i]
            if n % 2 == 0:
                g0 = rows[n - 1] if direct else G[sup[n - 1]]
                w0 = w[n - 1]
                for i in range(n_atoms):
                    a[i] += w0 * g0[i]
            floor = gamma_floor_rel * lam
            gamma = lam - alpha
            kind, who, new_sign = 0, 0, dt(1.0)  # 0: end, 1: entry, 2: drop
            # The step to each inactive atom's event is (lam -+ r_i) / (1 -+ a_i); a candidate is
            # screened by the products gamma * den and floor * den (den > 0) and divided only
            # when it is kept, which takes the divisions off the scan over the atoms.
            for i in range(n_atoms):
                if active[i]:
                    continue
                den = 1.0 - a[i]
                num = lam - r[i]
                if den > 0.0 and num < gamma * den and num > floor * den:
                    g_up = num / den
                    if g_up > floor and g_up < gamma:
                        gamma, kind, who, new_sign = g_up, 1, i, dt(1.0)
                if not nonnegative:
                    den = 1.0 + a[i]
                    num = lam + r[i]
                    if den > 0.0 and num < gamma * den and num > floor * den:
                        g_dn = num / den
                        if g_dn > floor and g_dn < gamma:
                            gamma, kind, who, new_sign = g_dn, 1, i, dt(-1.0)
            for k in range(n):
                if w[k] != 0.0:
                    g_lv = -z[k] / w[k]
                    if g_lv > floor and g_lv < gamma:
                        gamma, kind, who = g_lv, 2, k
            for k in range(n):
                z[k] += gamma * w[k]
            for i in range(n_atoms):
                r[i] -= gamma * a[i]
            if kind == 0:
                done = True
                break
            lam -= gamma
            events += 1
            if kind == 1:
                if n == cap:
                    ok = False
                    break
                if direct:
                    if n == rows.shape[0]:
                        bigger = np.empty((min(cap, 2 * n), n_atoms), dtype=C.dtype)
                        bigger[:n] = rows[:n]
                        rows = bigger
                    _gram_row(D, who, rows[n])
                    for k in range(n):
                        Gaa[n, k] = rows[n, sup[k]]
                        Gaa[k, n] = Gaa[n, k]
                    Gaa[n, n] = rows[n, who]
                else:
                    for k in range(n):
                        Gaa[n, k] = G[who, sup[k]]
                        Gaa[k, n] = Gaa[n, k]
                    Gaa[n, n] = G[who, who]
                # extend the factor: L l = G[A, who], d = sqrt(G_jj - |l|^2)
                d2 = Gaa[n, n]
                for i in range(n):
                    v = Gaa[n, i]
                    for k in range(i):
                        v -= L[i, k] * tmp[k]
                    tmp[i] = v / L[i, i]
                    d2 -= tmp[i] * tmp[i]
                if not d2 > 0.0:
                    ok = False
                    break
                for k in range(n):
                    L[n, k] = tmp[k]
                L[n, n] = math.sqrt(d2)
                sup[n], sg[n], z[n] = who, new_sign, dt(0.0)
                active[who] = True
                r[who] = new_sign * lam  # on the boundary exactly
                n += 1
            else:
                leaving = sup[who]
                active[leaving] = False
                r[leaving] = sg[who] * lam
                for k in range(who, n - 1):
                    sup[k], sg[k], z[k] = sup[k + 1], sg[k + 1], z[k + 1]
                    if direct:
                        rows[k] = rows[k + 1]
                n -= 1
                for p in range(n):
                    for q in range(n):
                        Gaa[p, q] = rows[p, sup[q]] if direct else G[sup[p], sup[q]]
                if n == 0 or not _cholesky(Gaa, n, L):
                    ok = False  # every atom left, or G_AA lost definiteness: FISTA finishes the row
                    break
            if events >= max_events:
                break
        for k in range(n):
            support[b, k] = sup[k]
            signs[b, k] = sg[k]
            active[sup[k]] = False
        n_active[b], n_events[b] = n, events
        finished[b] = done and ok


@_jit
def lasso_finish(X, D, G, C, direct, alpha, nonnegative, support, signs, n_active, codes, primal, gap, singular):
    r"""Exact float64 LASSO on each row's support and signs, with its duality-gap certificate.

    :math:`z_S = G_{SS}^{-1}(c_S - \alpha s_S)` (``c = x D^T``, ``G = D D^T``; clamped at 0 when
    ``nonnegative``); primal :math:`\tfrac12\|r\|^2 + \alpha\|z\|_1` with the residual
    :math:`r = x - z_S D_S` formed explicitly; dual point :math:`\theta = r\min(1, \alpha/m)`
    with :math:`m = \max_j (c - z_S G_{S:})_j` (signed: the largest magnitude), whose value
    :math:`x\cdot\theta - \tfrac12\|\theta\|^2` is subtracted to give the gap.
    Writes the codes into the rows of ``codes`` (B, N), which must be zero on entry. With
    ``direct``, :math:`G_{SS}` is formed from the rows of ``D`` and the correlations of the
    residual as :math:`r D^\top` (``G`` is not read).
    """
    n_rows, n_dims = X.shape
    n_atoms = D.shape[0]
    K = support.shape[1]
    A = np.empty((K, K))
    L = np.empty((K, K))
    rhs = np.empty(K)
    out = np.empty(K)
    rv = np.empty(n_dims)
    corr = np.empty(n_atoms)
    tiny = np.finfo(np.float64).tiny
    for b in range(n_rows):
        n = n_active[b]
        for s in range(n):
            rhs[s] = C[b, support[b, s]] - alpha * signs[b, s]
            for t in range(s + 1):  # the lower triangle of G_SS: all that _cholesky reads
                if direct:
                    A[s, t] = _dot(D[support[b, s]], D[support[b, t]])
                else:
                    A[s, t] = G[support[b, s], support[b, t]]
        if n and not _cholesky(A, n, L):
            singular[b] = True
            n = 0
        if n:
            _cholesky_solve(L, n, rhs, out)
        l1 = 0.0
        for s in range(n):
            v = out[s]
            if nonnegative and v < 0.0:
                v = 0.0
            out[s] = v
            codes[b, support[b, s]] = v
            l1 += abs(v)
        for m in range(n_dims):
            rv[m] = X[b, m]
        for s in range(n):
            v = out[s]
            d = D[support[b, s]]
            for m in range(n_dims):
                rv[m] -= v * d[m]
        if direct:
            for i in range(n_atoms):  # c - z_S G_S = (x - z_S D_S) D^T
                corr[i] = _dot(D[i], rv)
        else:  # c - z_S G_S, two Gram rows per pass over the atoms
            for i in range(n_atoms):
                corr[i] = C[b, i]
            for s in range(0, n - 1, 2):
                v0, v1, g0, g1 = out[s], out[s + 1], G[support[b, s]], G[support[b, s + 1]]
                for i in range(n_atoms):
                    corr[i] -= v0 * g0[i] + v1 * g1[i]
            if n % 2:
                v0, g0 = out[n - 1], G[support[b, n - 1]]
                for i in range(n_atoms):
                    corr[i] -= v0 * g0[i]
        worst = 0.0
        if nonnegative:
            for i in range(n_atoms):
                v = corr[i]
                worst = v if v > worst else worst
        else:
            for i in range(n_atoms):
                v = abs(corr[i])
                worst = v if v > worst else worst
        scale = min(1.0, alpha / max(worst, tiny))
        rr, xt = 0.0, 0.0
        for m in range(n_dims):
            rr += rv[m] * rv[m]
            xt += X[b, m] * rv[m]
        p = 0.5 * rr + alpha * l1
        dual = scale * xt - 0.5 * scale * scale * rr
        primal[b] = p
        gap[b] = max(p - dual, 0.0)
