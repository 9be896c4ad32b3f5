r"""Sparse coding: per-sample inference on a dictionary learned by alternating minimisation."""

from __future__ import annotations

import math
import warnings
from dataclasses import dataclass
from typing import ClassVar

import torch

from .._validation import check_choice, check_int, check_positive
from ..flops import (
    RENORM_FLOPS_PER_ENTRY,
    SQUARED_ERROR_FLOPS,
    FlopCount,
    best_subset_flops,
    dictionary_step_flops,
    fista_flops,
    matmul_flops,
)
from ..solvers import FISTA_TOL, ConvergenceWarning, best_subset, lasso
from .base import MIN_ATOM_NORM, Encoder, EncoderConfig, unit_rows

#: Ridge added to the code Gram matrix of the least-squares dictionary update, relative to
#: its mean diagonal: keeps the N x N solve well posed when two atoms are used by almost
#: the same rows, and is far below the data term otherwise.
DICTIONARY_RIDGE = 1e-6

#: An atom whose accumulated code energy (diagonal of Z^T Z) is at most this is unused
#: (dead): the least-squares update cannot move it, so it is resampled.
DEAD_ATOM_ENERGY = 1e-12

#: Minibatch least-squares updates average the code statistics over the recent steps that
#: hold about this many rows per atom (``statistics_window=None``): enough for a well-posed
#: N x N solve, few enough that codes of an older dictionary do not slow learning. Measured
#: at N = 16, batch 256, 400 steps (docs/results.md, issue 4): windows of 1, 2, 4, 8, 16, 32
#: and all steps gave validation MCC 0.733, 0.726, 0.670, 0.588, 0.536, 0.515, 0.492.
STATISTICS_ROWS_PER_ATOM = 4

#: Dictionary updates of :class:`SparseCoding`: the exact least-squares (MOD) solve on the
#: codes, or an Adam gradient step of the shared training loop.
DICTIONARY_UPDATES = ("least_squares", "gradient")

#: Per-sample inference of :class:`SparseCoding`: the LASSO by FISTA, or exact K-sparse
#: least squares by enumeration (:func:`gaptheory.solvers.best_subset`, small N only).
SPARSE_INFERENCE = ("lasso", "best_subset")


@dataclass(frozen=True)
class SparseCodingConfig(EncoderConfig):
    """Per-sample inference (LASSO or exact K-sparse) on a dictionary learned by alternating minimisation."""

    _architecture: ClassVar[str] = "sparse_coding"
    inference: str = "lasso"  # "lasso" (FISTA on the penalised problem) or "best_subset" (exact, ||z||_0 <= k)
    k: int | None = None  # K of best_subset inference (required there; unused by the LASSO)
    alpha: float = 0.01  # l1 weight of the per-sample LASSO 0.5||x - z W_dec||^2 + alpha ||z||_1
    nonnegative: bool = True  # constrain codes z >= 0 (the generative model's codes are)
    tol: float = FISTA_TOL  # FISTA relative duality-gap tolerance at inference
    max_iter: int = 5000  # FISTA iteration cap per row at inference
    fit_tol: float = 1e-4  # looser tolerance of the inner solves during dictionary learning
    fit_max_iter: int = 200  # iteration cap of those inner solves
    dictionary_update: str = "least_squares"  # "least_squares" (MOD on accumulated code statistics) or "gradient" (Adam)
    init_from_samples: bool = True  # start the atoms at normalised training rows drawn by the model's seed
    resample_dead: bool = True  # least_squares: re-draw unused atoms at the worst-reconstructed rows
    statistics_window: int | None = None  # least_squares on minibatches: steps averaged (exponential window); None: STATISTICS_ROWS_PER_ATOM * N rows

    def __post_init__(self):
        super().__post_init__()
        for name in ("alpha", "tol", "fit_tol"):
            check_positive(getattr(self, name), name)
        check_int(self.max_iter, "max_iter", minimum=1)
        check_int(self.fit_max_iter, "fit_max_iter", minimum=1)
        check_choice(self.dictionary_update, "dictionary_update", DICTIONARY_UPDATES)
        check_choice(self.inference, "inference", SPARSE_INFERENCE)
        if self.inference == "best_subset":
            if self.k is None:
                raise ValueError("inference='best_subset' needs k, the number of nonzeros per code; set k=K.")
            check_int(self.k, "k", minimum=1)
            if self.k > min(self.N, self.M):
                raise ValueError(f"k={self.k} must be <= min(N, M)={min(self.N, self.M)} for best_subset inference.")
        if self.statistics_window is not None:
            check_int(self.statistics_window, "statistics_window", minimum=1)


def _per_sample_codes(model: Encoder, X: torch.Tensor, *, init, alpha, nonnegative, tol, max_iter,
                      quiet: bool = False) -> tuple[torch.Tensor, FlopCount]:
    """FISTA on the model's decoder for every row of ``X``; codes as a tensor and their FLOPs."""
    start = None if init is None else init.detach().double().cpu().numpy()

    def solve(target, D):
        with warnings.catch_warnings():
            if quiet:
                warnings.simplefilter("ignore", ConvergenceWarning)
            result = lasso(target, D, alpha, nonnegative=nonnegative, method="fista", tol=tol, max_iter=max_iter,
                           init=start, device=model.W_dec.device, return_info=True)
        return result, fista_flops(result.n_iter, model.cfg.M, model.cfg.N)

    return _solve_on_decoder(model, X, solve)


def _best_subset_codes(model: Encoder, X: torch.Tensor, *, k: int, nonnegative: bool) -> tuple[torch.Tensor, FlopCount]:
    """Exact K-sparse least squares on the model's decoder for every row of ``X``, and its FLOPs."""
    def solve(target, D):
        result = best_subset(target, D, k, nonnegative=nonnegative, device=model.W_dec.device, return_info=True)
        return result, best_subset_flops(len(target), model.cfg.M, model.cfg.N, k)

    return _solve_on_decoder(model, X, solve)


def _solve_on_decoder(model: Encoder, X: torch.Tensor, solve) -> tuple[torch.Tensor, FlopCount]:
    """Run a float64 per-sample solver ``solve(X - b_dec, W_dec) -> (SolveResult, FlopCount)``
    and return its codes in the model's dtype and device (the result is kept as ``last_solve_``)."""
    target = (X - model.b_dec).detach().double().cpu().numpy()
    result, flops = solve(target, model.decoder_float64())
    model.last_solve_ = result
    return torch.as_tensor(result.codes, dtype=model.W_dec.dtype, device=model.W_dec.device), flops


class SparseCoding(Encoder):
    r"""Dictionary learning with per-sample inference; no amortised encoder.

    Codes are LASSO solutions on the current dictionary,

    .. math:: \hat z(x) = \arg\min_{z (\ge 0)} \tfrac12 \|x - b_{dec} - z W_{dec}\|_2^2 + \alpha \|z\|_1,

    computed by batched FISTA, or (``inference="best_subset"``) exact K-sparse least squares,

    .. math:: \hat z(x) = \arg\min_{z (\ge 0),\ \|z\|_0 \le K} \|x - b_{dec} - z W_{dec}\|_2^2,

    by enumerating supports (:func:`gaptheory.solvers.best_subset`; small N only; with it,
    dictionary learning is MOD with exact L0 coding). Training alternates these solves (tolerance ``fit_tol``,
    warm-started from the previous codes of the same rows, detached from the graph) with a
    dictionary update; ``b_dec`` stays 0 (the generative model has no offset).

    ``dictionary_update="least_squares"`` (default) is the method of optimal directions
    (Engan, Aase & Husoy 1999) on code statistics accumulated as in online dictionary
    learning (Mairal et al. 2010, Alg. 1): with :math:`A = \overline{Z^\top Z}` (N, N) and
    :math:`B = \overline{Z^\top X}` (N, M) averaged over the recent steps that cover about
    ``STATISTICS_ROWS_PER_ATOM * N`` rows (``statistics_window``; only the current step when
    a step sees the same rows as the last, i.e. full-batch training),

    .. math:: W_{dec} \leftarrow \operatorname{rownorm}\big((A_{UU} + \epsilon I)^{-1} B_U\big)

    on the used atoms U (unused atoms have zero rows in A and B), then rows rescaled to unit
    norm (the cached codes are rescaled inversely, so the warm start reconstructs the same
    X). Atoms no row has used (``resample_dead``) are re-drawn at the rows with the largest
    residual, the standard K-SVD/MOD restart. ``"gradient"`` instead takes the shared loop's
    Adam step on the reconstruction loss (with ``init_from_samples=False``, the earlier
    algorithm). Atoms start at
    normalised training rows (``init_from_samples``). The loss the loop reports and
    validates is twice the mean LASSO objective, ``mean ||x - x_hat||^2 + 2 alpha mean ||z||_1``.

    With a fixed true dictionary (setting 1) there is nothing to train and this is the
    per-sample inference reference point. Inference FLOPs follow the iterations FISTA used
    per row.

    References
    ----------
    .. [1] Engan, Aase & Husoy (1999), "Method of optimal directions for frame design", ICASSP.
    .. [2] Mairal, Bach, Ponce & Sapiro (2010), "Online learning for matrix factorization and
       sparse coding", JMLR 11.
    .. [3] Aharon, Elad & Bruckstein (2006), "K-SVD", IEEE Trans. Signal Process. 54 (dead-atom restarts).

    Examples
    --------
    >>> import numpy as np
    >>> D = np.eye(4)
    >>> sc = SparseCoding(SparseCodingConfig(M=4, N=4, alpha=0.01), seed=0).fix_decoder(D)
    >>> sc.encode(np.array([[0.0, 2.0, 0.0, 0.0]])).round(3).tolist()
    [[0.0, 1.99, 0.0, 0.0]]
    """

    config_class = SparseCodingConfig

    def __init__(self, cfg: SparseCodingConfig, *, seed: int = 0):
        super().__init__(cfg, seed=seed)
        self.b_dec.requires_grad_(False)
        self._warm_codes: dict = {}  # batch shape -> (rows, their last codes), for warm starts
        self._warm_hit = False  # whether the last training solve was warm-started (same rows as before)
        self._statistics = None  # (A (N, N), B (N, M), steps averaged) of the least-squares update

    def encode_with_hidden_pre(self, X):
        """The training path: inner solves at ``fit_tol`` (``encode`` uses ``tol``), warm-started
        from the previous solve when ``X`` holds the same rows (full-batch training)."""
        warm = self._warm_codes.get(tuple(X.shape))
        self._warm_hit = warm is not None and torch.equal(warm[0], X)
        Z, self._last_fit_flops = self._infer(X, init=warm[1] if self._warm_hit else None, tol=self.cfg.fit_tol,
                                              max_iter=self.cfg.fit_max_iter, quiet=True)
        self._warm_codes[tuple(X.shape)] = (X.detach(), Z)
        return Z, None

    def _infer(self, X, *, init, tol, max_iter, quiet):
        """Codes of ``X`` on the current dictionary by the configured per-sample inference."""
        if self.cfg.inference == "best_subset":  # exhaustive: no warm start, no tolerance
            return _best_subset_codes(self, X, k=self.cfg.k, nonnegative=self.cfg.nonnegative)
        return _per_sample_codes(self, X, init=init, alpha=self.cfg.alpha, nonnegative=self.cfg.nonnegative,
                                 tol=tol, max_iter=max_iter, quiet=quiet)

    def aux_loss(self, Z, hidden_pre):
        """LASSO inference: ``2 alpha mean ||z||_1``, so that with the loop's squared error the
        loss is twice the mean LASSO objective; best_subset: 0 (sparsity is a constraint)."""
        if self.cfg.inference == "best_subset":
            return Z.new_zeros(())
        return 2 * self.cfg.alpha * Z.abs().sum(1).mean()

    @torch.no_grad()
    def init_from_data(self, X):
        """Atoms at ``N`` distinct training rows drawn with the model's seed, normalised
        (``init_from_samples``; rows of ``X`` with zero norm keep their random atom)."""
        if not self.cfg.init_from_samples or not self.decoder_trainable:
            return
        rows = torch.randperm(len(X), generator=self._generator)[: self.cfg.N].to(X.device)
        samples = X[rows] - self.b_dec
        keep = samples.norm(dim=1) > MIN_ATOM_NORM
        self.W_dec[: len(rows)][keep] = unit_rows(samples[keep]).to(self.W_dec.dtype)
        self._statistics = None

    @torch.no_grad()
    def closed_form_step_(self, X):
        """One alternation: codes of ``X`` by warm-started FISTA, then the least-squares
        dictionary update (see the class notes); returns the loss at the codes before the update."""
        if self.cfg.dictionary_update != "least_squares" or not self.decoder_trainable:
            return None
        Z, _ = self.encode_with_hidden_pre(X)
        target = X - self.b_dec
        loss = ((Z @ self.W_dec - target) ** 2).sum(1).mean() + self.aux_loss(Z, None)
        Zd, Xd = Z.double(), target.double()
        A_step, B_step = Zd.T @ Zd / len(X), Zd.T @ Xd / len(X)
        if self._warm_hit or self._statistics is None:  # full batch: the current codes are all there is
            A, B, count = A_step, B_step, 1
        else:  # minibatches: running means over a window of steps (Mairal et al. 2010, with forgetting)
            A, B, count = self._statistics
            window = self.cfg.statistics_window or math.ceil(STATISTICS_ROWS_PER_ATOM * self.cfg.N / len(X))
            count = min(count + 1, window)
            A, B = A + (A_step - A) / count, B + (B_step - B) / count
        self._statistics = (A, B, count)
        used = torch.diagonal(A) > DEAD_ATOM_ENERGY
        D = self.W_dec.detach().double().clone()
        if used.any():
            A_used = A[used][:, used]
            ridge = DICTIONARY_RIDGE * torch.diagonal(A_used).mean()
            D[used] = torch.linalg.solve(A_used + ridge * torch.eye(len(A_used), dtype=A.dtype, device=A.device),
                                         B[used])
        dead = (~used).nonzero().flatten()
        if self.cfg.resample_dead and len(dead):
            residual = ((Xd - Zd @ D) ** 2).sum(1)
            worst = residual.topk(min(len(dead), len(X))).indices
            D[dead[: len(worst)]] = Xd[worst] - Zd[worst] @ D
        norms = D.norm(dim=1).clamp_min(MIN_ATOM_NORM)
        self.W_dec.copy_((D / norms[:, None]).to(self.W_dec.dtype))
        key = tuple(X.shape)
        self._warm_codes[key] = (self._warm_codes[key][0], Z * norms.to(Z.dtype))  # same reconstruction
        return loss

    def _encode_counted(self, X):
        return self._infer(X, init=None, tol=self.cfg.tol, max_iter=self.cfg.max_iter, quiet=False)

    def training_step_flops(self, n_samples, *, supervised):
        """The inner FISTA solve of this step (from its iterations) plus the dictionary update."""
        update = (dictionary_step_flops(n_samples, self.cfg.M, self.cfg.N)
                  if self.cfg.dictionary_update == "gradient" else least_squares_update_flops(n_samples, self.cfg.M, self.cfg.N))
        return getattr(self, "_last_fit_flops", FlopCount()) + update


def least_squares_update_flops(n_samples: int, n_dims: int, n_latents: int) -> FlopCount:
    r"""FLOPs of one least-squares (MOD) dictionary update of :class:`SparseCoding` on ``B`` rows.

    Matmuls: the statistics :math:`Z^\top Z` (2BN^2) and :math:`Z^\top X` (2BNM), the
    Cholesky/LU solve of the N x N system with M right-hand sides (:math:`\tfrac23 N^3 + 2N^2M`),
    and the residual :math:`Z W_{dec}` for the loss and dead-atom restarts (2BNM).
    Elementwise: the squared error (``SQUARED_ERROR_FLOPS`` per entry of X), the running
    means (2 per entry of A and B) and the row renormalisation. Upper bound for the
    restart (run only when an atom is dead).

    Examples
    --------
    >>> least_squares_update_flops(1024, 8, 16).matmul == 2*1024*16*16 + 2*2*1024*16*8 + (2*16**3)//3 + 2*16*16*8
    True
    """
    n_samples = check_int(n_samples, "n_samples", minimum=0)
    n_dims = check_int(n_dims, "n_dims", minimum=1)
    n_latents = check_int(n_latents, "n_latents", minimum=1)
    matmul = (matmul_flops(n_latents, n_samples, n_latents) + 2 * matmul_flops(n_latents, n_samples, n_dims)
              + (2 * n_latents ** 3) // 3 + matmul_flops(n_latents, n_latents, n_dims))
    elementwise = (SQUARED_ERROR_FLOPS * n_samples * n_dims + 2 * (n_latents ** 2 + n_latents * n_dims)
                   + RENORM_FLOPS_PER_ENTRY * n_latents * n_dims)
    return FlopCount(matmul, elementwise)

