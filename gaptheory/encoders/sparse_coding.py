r"""Sparse coding: per-sample inference on a dictionary learned by alternating minimisation."""

from __future__ import annotations

import math
import warnings
from dataclasses import dataclass
from typing import ClassVar

import numpy as np
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
from ..solvers import FISTA_TOL, ConvergenceWarning, Status, best_subset
from ..solvers.fista import fista_tensors
from .base import FLOP_STAGES, MIN_ATOM_NORM, Encoder, EncoderConfig, unit_rows

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
#: at N = 16, batch 256, 400 steps (docs/results.md): windows of 1, 2, 4, 8, 16, 32
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

    architecture: ClassVar[str] = "sparse_coding"
    inference: str = "lasso"  # "lasso" (FISTA on the penalised problem) or "best_subset" (exact, ||z||_0 <= K)
    K: int | None = None  # nonzeros per code of best_subset inference (required there; unused by the LASSO)
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
            if self.K is None:
                raise ValueError("inference='best_subset' needs K, the number of nonzeros per code; set K.")
            check_int(self.K, "K", minimum=1)
            if self.K > min(self.N, self.M):
                raise ValueError(f"K={self.K} must be <= min(N, M)={min(self.N, self.M)} for best_subset inference.")
        if self.statistics_window is not None:
            check_int(self.statistics_window, "statistics_window", minimum=1)


def _lasso_codes(model: Encoder, X: torch.Tensor, *, init, alpha, nonnegative, tol, max_iter,
                 quiet: bool = False) -> tuple[torch.Tensor, FlopCount]:
    """Batched FISTA for every row of ``X`` on the model's decoder, on the model's device in
    float64 (no validation, no host copy of the data); codes in the model's dtype and their FLOPs.
    Rows that did not converge raise a :class:`ConvergenceWarning` unless ``quiet``."""
    target = (X - model.b_dec).detach().double()
    D = unit_rows(model.W_dec.detach().double())
    start = None if init is None else init.detach().double().clamp_min(0.0) if nonnegative else init.detach().double()
    codes, status, _, n_iter, _ = fista_tensors(target, D, alpha, nonnegative=nonnegative, tol=tol,
                                                max_iter=max_iter, init=start)
    failed = int((status != int(Status.OPTIMAL)).sum())
    if failed and not quiet:
        warnings.warn(f"{failed} of {len(status)} rows did not converge within max_iter={max_iter}; raise max_iter "
                      f"or loosen tol={tol:g}.", ConvergenceWarning, stacklevel=3)
    return codes.to(model.W_dec.dtype), fista_flops(n_iter, N=model.cfg.N, M=model.cfg.M)


def _best_subset_codes(model: Encoder, X: torch.Tensor, *, k: int, nonnegative: bool) -> tuple[torch.Tensor, FlopCount]:
    """Exact K-sparse least squares on the model's decoder for every row of ``X``, and its FLOPs."""
    target = (X - model.b_dec).detach().double().cpu().numpy()
    result = best_subset(target, model.decoder_float64(), k, nonnegative=nonnegative, device=model.W_dec.device,
                         return_info=True)
    codes = torch.as_tensor(result.codes, dtype=model.W_dec.dtype, device=model.W_dec.device)
    return codes, best_subset_flops(len(target), N=model.cfg.N, M=model.cfg.M, K=k)


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
    Adam step on the reconstruction loss (with ``init_from_samples=False``: plain alternating
    minimisation from random atoms). Atoms start at
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
    >>> D = np.eye(4)
    >>> sc = SparseCoding(SparseCodingConfig(N=4, M=4, alpha=0.01), seed=0).fix_decoder(D)
    >>> sc.encode(np.array([[0.0, 2.0, 0.0, 0.0]])).round(3).tolist()
    [[0.0, 1.99, 0.0, 0.0]]
    """

    config_class = SparseCodingConfig

    def __init__(self, cfg: SparseCodingConfig, *, seed: int = 0):
        super().__init__(cfg, seed=seed)
        self.b_dec.requires_grad_(False)
        self.warm_codes_: dict[str, tuple[torch.Tensor, torch.Tensor]] = {}  # rows name -> (X, its last codes)
        self.statistics_ = None  # (A (N, N), B (N, M), steps averaged) of the least-squares update

    def encode_with_hidden_pre(self, X):
        """Codes of ``X`` by the inference of :meth:`encode` (cold start, tolerance ``tol``)."""
        return self._encode(X)[0], None

    def encode_for_training(self, X, *, rows):
        """The training path: inner solves at ``fit_tol`` / ``fit_max_iter``, warm-started from
        the last codes of the rows named ``rows`` when ``X`` holds exactly those rows again
        (full-batch training); returns ``(Z, None, FLOPs of the solve)``."""
        Z, _, flops, _ = self._training_solve(X, rows)
        return Z, None, flops

    def _training_solve(self, X, rows):
        """``(Z, None, FLOPs, whether X repeats the last rows of that name)``; caches the codes."""
        last = self.warm_codes_.get(rows)
        same_rows = last is not None and last[0].shape == X.shape and torch.equal(last[0], X)
        if self.cfg.inference == "best_subset":  # exhaustive: no warm start, no tolerance
            Z, flops = _best_subset_codes(self, X, k=self.cfg.K, nonnegative=self.cfg.nonnegative)
        else:
            Z, flops = _lasso_codes(self, X, init=last[1] if same_rows else None, alpha=self.cfg.alpha,
                                    nonnegative=self.cfg.nonnegative, tol=self.cfg.fit_tol,
                                    max_iter=self.cfg.fit_max_iter, quiet=True)
        self.warm_codes_[rows] = (X.detach(), Z)
        return Z, None, flops, same_rows

    def _encode(self, X):
        if self.cfg.inference == "best_subset":
            return _best_subset_codes(self, X, k=self.cfg.K, nonnegative=self.cfg.nonnegative)
        return _lasso_codes(self, X, init=None, alpha=self.cfg.alpha, nonnegative=self.cfg.nonnegative,
                            tol=self.cfg.tol, max_iter=self.cfg.max_iter)

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
        self.statistics_ = None

    @torch.no_grad()
    def closed_form_step_(self, X):
        """One alternation on the training batch: codes of ``X`` by warm-started FISTA, then the
        least-squares dictionary update (see the class notes); returns the loss at the codes
        before the update and the step's FLOPs (the solve's iterations plus the update)."""
        if self.cfg.dictionary_update != "least_squares" or not self.decoder_trainable:
            return None
        Z, _, solve_flops, same_rows = self._training_solve(X, "train")
        target = X - self.b_dec
        loss = ((Z @ self.W_dec - target) ** 2).sum(1).mean() + self.aux_loss(Z, None)
        Zd, Xd = Z.double(), target.double()
        A_step, B_step = Zd.T @ Zd / len(X), Zd.T @ Xd / len(X)
        if same_rows or self.statistics_ is None:  # full batch: the current codes are all there is
            A, B, count = A_step, B_step, 1
        else:  # minibatches: running means over a window of steps (Mairal et al. 2010, with forgetting)
            A, B, count = self.statistics_
            window = self.cfg.statistics_window or math.ceil(STATISTICS_ROWS_PER_ATOM * self.cfg.N / len(X))
            count = min(count + 1, window)
            A, B = A + (A_step - A) / count, B + (B_step - B) / count
        self.statistics_ = (A, B, count)
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
        self.warm_codes_["train"] = (X.detach(), Z * norms.to(Z.dtype))  # the same reconstruction
        return loss, solve_flops + self.flops(len(X), stage="train")

    def flops(self, n_samples, *, stage="encode"):
        """:meth:`Encoder.flops`: ``"train"`` (and ``"supervised"``) count the dictionary update
        alone (the inner solve's FLOPs come with its codes); ``"encode"`` is the bound at
        ``max_iter`` FISTA iterations per row (:meth:`encode_with_flops` counts those used) or
        best_subset's enumeration; ``"init"`` draws rows and costs nothing."""
        check_choice(stage, "stage", FLOP_STAGES)
        N, M = self.cfg.N, self.cfg.M
        if stage == "init":
            return FlopCount()
        if stage == "encode":
            if self.cfg.inference == "best_subset":
                return best_subset_flops(n_samples, N=N, M=M, K=self.cfg.K)
            return fista_flops(np.full(n_samples, self.cfg.max_iter), N=N, M=M)
        if self.cfg.dictionary_update == "gradient":
            return dictionary_step_flops(n_samples, N=N, M=M)
        return least_squares_update_flops(n_samples, N, M)


def least_squares_update_flops(B: int, N: int, M: int) -> FlopCount:
    r"""FLOPs of one least-squares (MOD) dictionary update of :class:`SparseCoding` on ``B`` rows.

    Matmuls: the statistics :math:`Z^\top Z` (2BN^2) and :math:`Z^\top X` (2BNM), the
    Cholesky/LU solve of the N x N system with M right-hand sides (:math:`\tfrac23 N^3 + 2N^2M`),
    and the residual :math:`Z W_{dec}` for the loss and dead-atom restarts (2BNM).
    Elementwise: the squared error (``SQUARED_ERROR_FLOPS`` per entry of X), the running
    means (2 per entry of A and B) and the row renormalisation. Upper bound for the
    restart (run only when an atom is dead).

    Examples
    --------
    >>> least_squares_update_flops(1024, 16, 8).matmul == 2*1024*16*16 + 2*2*1024*16*8 + (2*16**3)//3 + 2*16*16*8
    True
    """
    B = check_int(B, "B", minimum=0)
    N = check_int(N, "N", minimum=1)
    M = check_int(M, "M", minimum=1)
    matmul = matmul_flops(N, B, N) + 2 * matmul_flops(N, B, M) + (2 * N ** 3) // 3 + matmul_flops(N, N, M)
    elementwise = SQUARED_ERROR_FLOPS * B * M + 2 * (N ** 2 + N * M) + RENORM_FLOPS_PER_ENTRY * N * M
    return FlopCount(matmul, elementwise)

