"""Batched LASSO homotopy (LARS-lasso) with an exact, certified float64 finish on the support."""

from __future__ import annotations

import numpy as np
import torch

from .fista import _fista, _lasso_gap, _quiet_csr
from .results import GRAM_MEMORY_BUDGET, SolveResult, Status, status_message

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


def kernel_max_events(N: int, M: int) -> int:
    """Cap on events per row of the compiled CPU path: ``HOMOTOPY_MAX_EVENTS_PER_DIM *
    min(N, M) + HOMOTOPY_MIN_EVENTS``, with no absolute cap. There an entry extends the
    Cholesky factor (O(s^2)) instead of re-solving the active system, so an event costs
    O(s N) and a path of E events O(E^2 N): no more than the ~E^2 / (4 M) FISTA iterations
    (4 N M each) that would otherwise finish the row. Supports of K = 64 and beyond (the
    sizes of real SAEs) need more than HOMOTOPY_MAX_EVENTS events."""
    return HOMOTOPY_MAX_EVENTS_PER_DIM * min(N, M) + HOMOTOPY_MIN_EVENTS


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

def _exact_finish(C, G, support, signs, alpha, D=None):
    r"""Solve the LASSO exactly for a guessed support and sign pattern, per row.

    On support :math:`S` with signs :math:`s`, the optimality conditions read
    :math:`G_{SS} z_S = c_S - \alpha s` (``c = x D^T``). Slots with ``signs == 0`` are
    padding. Rows are solved in buckets of similar support size, so one long support
    does not make every row pay for its width. Returns dense codes (B, N) in the dtype
    of ``C`` and a (B,) flag of singular systems; whether the guess was right is for the
    duality gap to say. With ``G=None`` the blocks :math:`G_{SS}` are formed from the rows
    of ``D`` (direct form).
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
            if G is None:
                atoms = D[sup]
                gram = (atoms @ atoms.transpose(1, 2)) * (on[:, :, None] & on[:, None, :])
            else:
                gram = G[sup[:, :, None], sup[:, None, :]] * (on[:, :, None] & on[:, None, :])
            gram = gram + torch.diag_embed((~on).to(C.dtype))
            rhs = torch.where(on, torch.gather(C[rows], 1, sup) - alpha * sgn, torch.zeros_like(sgn))
            coef, info = torch.linalg.solve_ex(gram, rhs)
            bad = (info != 0) | ~torch.isfinite(coef).all(1)
            coef = torch.where(bad[:, None], torch.zeros_like(coef), coef) * on
            codes[rows] = torch.zeros_like(codes[rows]).scatter_add_(1, sup, coef)
            singular[rows] = bad
        if width >= largest:
            return codes, singular
        low, width = width, min(2 * width, largest)


def _homotopy_path(C, G, alpha, *, nonnegative, max_steps, stragglers=0):
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
        slope = torch.addmm(blocked, direction, G, alpha=-1.0)
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


def _lasso_lars_kernel(X, D, alpha, *, nonnegative, tol, max_iter) -> SolveResult:
    """LARS-lasso on the CPU, one row at a time in compiled kernels
    (:func:`gaptheory.solvers._kernels.lars_path` on ``C = X D^T`` and ``G = D D^T``, then the
    exact finish and duality-gap certificate of :func:`~gaptheory.solvers._kernels.lasso_finish`),
    all in float64: the finish needs the float64 ``C`` and ``G`` anyway, and a float32 path
    over them is no faster per row (it only adds rows whose path goes astray). Rows whose
    path did not finish or whose certificate fails go to the batched torch homotopy, which
    ends in warm-started FISTA where it must."""
    from . import _kernels

    n_samples, n_latents = X.shape[0], D.shape[0]
    direct = n_latents * n_latents * 8 > GRAM_MEMORY_BUDGET  # the float64 Gram matrix would not fit
    G, C = (np.empty((0, 0)) if direct else D @ D.T), X @ D.T
    cap = min(D.shape)
    max_steps = kernel_max_events(*D.shape)
    support = np.zeros((n_samples, cap), dtype=np.int64)
    signs = np.zeros((n_samples, cap))
    n_active = np.zeros(n_samples, dtype=np.int64)
    n_events = np.zeros(n_samples, dtype=np.int64)
    finished = np.zeros(n_samples, dtype=np.bool_)
    floor = HOMOTOPY_EVENT_EPS * np.finfo(np.float64).eps
    _kernels.lars_path(C, G, D, direct, float(alpha), nonnegative, max_steps, floor, support, signs, n_active,
                       n_events, finished)
    codes = np.zeros((n_samples, n_latents))
    primal, gap = np.empty(n_samples), np.empty(n_samples)
    singular = np.zeros(n_samples, dtype=np.bool_)
    _kernels.lasso_finish(X, D, G, C, direct, float(alpha), nonnegative, support, signs, n_active, codes, primal,
                          gap, singular)
    certified = finished & ~singular & np.isfinite(gap) & (gap <= tol * np.maximum(primal, np.finfo(float).tiny))
    status = np.full(n_samples, int(Status.OPTIMAL), dtype=np.int64)
    missed = np.flatnonzero(~certified)
    handed = ""
    if missed.size:
        rescue = _lasso_homotopy(X[missed], D, alpha, nonnegative=nonnegative, tol=tol, max_iter=max_iter,
                                 device=torch.device("cpu"), dtype=torch.float64)
        codes[missed], status[missed] = rescue.codes, rescue.status
        primal[missed], gap[missed] = rescue.objective, rescue.duality_gap
        n_events[missed] += rescue.n_iter
        handed = ": " + rescue.message[rescue.message.rfind("(") + 1:].rstrip(")")
    message = status_message(status, f"raise max_iter={max_iter} or loosen tol={tol:g}")
    message += (f" ({n_samples - missed.size} certified on a compiled float64 LARS path, "
                f"{missed.size} handed to the batched path{handed})")
    return SolveResult(codes=codes, status=status, objective=primal, n_iter=n_events, duality_gap=gap,
                       message=message, form="direct" if direct else "gram")


def _lasso_homotopy(X, D, alpha, *, nonnegative, tol, max_iter, device, dtype) -> SolveResult:
    """Homotopy path in ``dtype``, exact float64 finish on the support it ends with, and a
    float64 duality-gap certificate per row. Rows whose certificate fails are retried with
    a float64 path (when ``dtype`` is float32), then finished by warm-started FISTA."""
    n_samples, n_latents = X.shape[0], D.shape[0]
    D64 = torch.as_tensor(D, dtype=torch.float64, device=device)
    X64 = torch.as_tensor(X, dtype=torch.float64, device=device)
    G64 = D64 @ D64.T
    C64 = X64 @ D64.T
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
                C, G, alpha, nonnegative=nonnegative, max_steps=max_steps, stragglers=stragglers
            )
        found, singular = _exact_finish(C_p, G64, support, signs.to(torch.float64), alpha)
        if nonnegative:
            found = found.clamp_min(0.0)
        primal, row_gap = _lasso_gap(X_p, D64, found, alpha, nonnegative, C=C_p, G=G64, sparse=True)
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
    message = status_message(status, f"raise max_iter={max_iter} or loosen tol={tol:g}")
    message += f" ({n_samples - missed.size} certified on a homotopy support, {missed.size} by FISTA)"
    return SolveResult(codes=codes_np, status=status, objective=objective_np, n_iter=n_iter,
                       duality_gap=gap_np, message=message, form="gram")
