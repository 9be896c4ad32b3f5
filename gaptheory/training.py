r"""One training loop for every encoder.

:func:`train` is the only optimisation loop: Adam on the trainable parameters, a batch
drawn by a private ``torch.Generator``, the loss

.. math:: \mathcal L = \tfrac1B \sum_b \|x_b - \hat x_b\|_2^2 + \text{aux}(z)

(reconstruction; the architecture supplies only its activation and ``aux_loss``) or,
given true codes, :math:`\tfrac1B \sum_b \|z_b - \hat z_b\|_2^2` (supervised), the decoder
rows renormalised after each update, validation-based best-model selection and early
stopping, and a NaN guard. A model may instead update itself in closed form
(``Encoder.closed_form_step_``; sparse coding's least-squares dictionary update), and the
loop then only batches, validates, counts FLOPs and stops. FLOPs per step are the model's
analytic count (``Encoder.flops``) plus what its per-sample solves report.

References
----------
.. [1] O'Neill, Gumran & Klindt (2024), "Compute optimal inference and provable
   amortisation gap in sparse autoencoders", arXiv 2411.13117, Section 4.
"""

from __future__ import annotations

import copy
import dataclasses
import math
import sys
import time
from dataclasses import dataclass, field

import numpy as np
import torch
from tqdm.auto import tqdm

from ._device import resolve_device
from ._validation import check_array, check_int, check_positive
from .encoders import Encoder
from .flops import FlopCount


@dataclass(frozen=True)
class TrainConfig:
    """Options of :func:`train` (the optimiser, batching, validation and stopping)."""

    steps: int = 2000  # maximum number of optimisation steps
    lr: float = 1e-3  # Adam learning rate
    batch_size: int | None = None  # rows per step; None uses the full training split
    eval_every: int = 100  # steps between validation evaluations (and loss-curve points)
    patience: int | None = None  # evaluations without validation improvement before stopping; None never stops
    seed: int = 0  # seed of the batch order (a private torch.Generator)
    progress: bool | None = None  # tqdm bar on stderr; None shows it only when stderr is a terminal

    def __post_init__(self):
        check_int(self.steps, "steps", minimum=0)
        check_positive(self.lr, "lr")
        if self.batch_size is not None:
            check_int(self.batch_size, "batch_size", minimum=1)
        check_int(self.eval_every, "eval_every", minimum=1)
        if self.patience is not None:
            check_int(self.patience, "patience", minimum=1)
        check_int(self.seed, "seed", minimum=0)

    def to_dict(self) -> dict:
        return dataclasses.asdict(self)


@dataclass(frozen=True)
class TrainHistory:
    """What :func:`train` did.

    Attributes
    ----------
    steps : ndarray of shape (E,)
        Steps at which the losses were recorded.
    train_loss, val_loss : ndarray of shape (E,)
        Training-batch loss and validation loss there (val NaN without a validation split).
    steps_run : int
        Optimisation steps taken (fewer than configured after early stopping).
    best_step : int
        Step whose parameters were kept (lowest validation loss; the last step without
        a validation split).
    flops : FlopCount
        Training FLOPs of all steps taken (validation evaluations not included).
    seconds : float
        Wall time of the loop.
    stopped_early : bool
    """

    steps: np.ndarray = field(repr=False)
    train_loss: np.ndarray = field(repr=False)
    val_loss: np.ndarray = field(repr=False)
    steps_run: int
    best_step: int
    flops: FlopCount
    seconds: float
    stopped_early: bool


class TrainingDivergedError(ValueError):
    """The training loss became NaN or infinite."""


def _as_tensor(array, name, like: torch.Tensor, columns: int) -> torch.Tensor:
    array = check_array(array, name)
    if array.shape[1] != columns:
        raise ValueError(f"{name} must have {columns} columns; got shape {array.shape}.")
    return torch.as_tensor(array, dtype=like.dtype, device=like.device)


def _loss(model: Encoder, X: torch.Tensor, codes: torch.Tensor | None, rows: str) -> tuple[torch.Tensor, FlopCount]:
    """The training loss on the rows named ``rows`` and the FLOPs its codes took beyond the analytic count."""
    Z, pre, solve_flops = model.encode_for_training(X, rows=rows)
    if codes is not None:
        return ((Z - codes) ** 2).sum(1).mean(), solve_flops
    return ((model.decode_tensor(Z) - X) ** 2).sum(1).mean() + model.aux_loss(Z, pre), solve_flops


def _training_tensors(model: Encoder, X, codes, X_val, codes_val):
    """The training and validation arrays as tensors in the model's dtype and device, checked."""
    like = model.W_dec
    Xt = _as_tensor(X, "X", like, model.cfg.M)
    Zt = None if codes is None else _as_tensor(codes, "codes", like, model.cfg.N)
    if Zt is not None and len(Zt) != len(Xt):
        raise ValueError(f"codes must have one row per row of X ({len(Xt)}); got {len(Zt)}.")
    Xv = None if X_val is None else _as_tensor(X_val, "X_val", like, model.cfg.M)
    Zv = None
    if Zt is not None and Xv is not None:
        if codes_val is None:
            raise ValueError("supervised training (codes given) needs codes_val with X_val.")
        Zv = _as_tensor(codes_val, "codes_val", like, model.cfg.N)
    return Xt, Zt, Xv, Zv


def _batches(n_rows: int, batch: int, generator: torch.Generator, device):
    """Row indices of each step, endlessly: all rows (``slice``) when ``batch == n_rows``, else
    consecutive slices of a fresh permutation per epoch drawn from ``generator``."""
    if batch == n_rows:
        while True:
            yield slice(None)
    while True:
        order = torch.randperm(n_rows, generator=generator).to(device)
        for cursor in range(0, n_rows - batch + 1, batch):
            yield order[cursor:cursor + batch]


def _step(model: Encoder, optimiser, X: torch.Tensor, codes: torch.Tensor | None) -> tuple[torch.Tensor, FlopCount]:
    """One training step on a batch: the model's closed-form update when it has one (reconstruction
    only), else an Adam step on :func:`_loss`; decoder rows renormalised. Returns the loss before
    the update and the step's FLOPs."""
    closed_form = model.closed_form_step_(X) if codes is None else None
    if closed_form is not None:
        loss, flops = closed_form
    else:
        loss, flops = _loss(model, X, codes, "train")
        flops = flops + model.flops(len(X), stage="train" if codes is None else "supervised")
        if torch.isfinite(loss):
            optimiser.zero_grad(set_to_none=True)
            loss.backward()
            optimiser.step()
    model.normalize_decoder_()
    return loss, flops


def train(model: Encoder, X, cfg: TrainConfig | None = None, *, codes=None, X_val=None, codes_val=None,
          device=None) -> TrainHistory:
    """Train ``model`` in place: the single loop shared by every architecture.

    Parameters
    ----------
    model : Encoder
        Its trainable parameters (``requires_grad``) are optimised; a frozen decoder
        (:meth:`Encoder.fix_decoder`) stays fixed.
    X : array_like of shape (B, M)
        Training observations.
    cfg : TrainConfig, optional
    codes : array_like of shape (B, N), optional
        True codes: supervised regression (setting 2) instead of reconstruction.
    X_val, codes_val : array_like, optional
        Validation split (``codes_val`` required when ``codes`` is given). The
        parameters with the lowest validation loss are restored at the end, and
        ``cfg.patience`` stops training early.
    device : str or torch.device, optional
        Default ``cuda`` when available.

    Returns
    -------
    TrainHistory

    Raises
    ------
    TrainingDivergedError
        (a ``ValueError``) when the loss is NaN/inf, naming the step and learning rate.

    Examples
    --------
    >>> from gaptheory.encoders import SAEConfig, SparseAutoencoder
    >>> from gaptheory.instances import make_instance
    >>> inst = make_instance(16, 8, 3, 128, seed=0)
    >>> sae = SparseAutoencoder(SAEConfig(N=16, M=8), seed=0)
    >>> history = train(sae, inst.X, TrainConfig(steps=50, eval_every=10, progress=False), device="cpu")
    >>> history.steps_run, bool(history.train_loss[-1] < history.train_loss[0])
    (50, True)
    """
    cfg = TrainConfig() if cfg is None else cfg
    if not isinstance(cfg, TrainConfig):
        raise TypeError(f"cfg must be a TrainConfig; got {type(cfg).__name__}.")
    model.to(resolve_device(device))
    Xt, Zt, Xv, Zv = _training_tensors(model, X, codes, X_val, codes_val)
    parameters = [p for p in model.parameters() if p.requires_grad]
    start = time.perf_counter()
    if not parameters or cfg.steps == 0:  # e.g. per-sample inference on a known dictionary
        empty = np.zeros(0)
        return TrainHistory(empty, empty, empty, 0, 0, FlopCount(), time.perf_counter() - start, False)

    flops = FlopCount()
    if not model.data_initialised_:
        model.init_from_data(Xt)
        model.data_initialised_ = True
        flops = model.flops(len(Xt), stage="init")  # a data-dependent initialisation's own cost
    optimiser = torch.optim.Adam(parameters, lr=cfg.lr)
    batch = len(Xt) if cfg.batch_size is None else min(cfg.batch_size, len(Xt))
    batches = _batches(len(Xt), batch, torch.Generator().manual_seed(cfg.seed), Xt.device)
    show = sys.stderr.isatty() if cfg.progress is None else bool(cfg.progress)
    record_steps, train_curve, val_curve = [], [], []
    best = (math.inf, 0, None)  # (validation loss, step, state)
    bad_evals, stopped_early, step = 0, False, 0
    for step in tqdm(range(1, cfg.steps + 1), disable=not show, file=sys.stderr, desc=type(model).__name__,
                     leave=False):
        index = next(batches)
        loss, step_flops = _step(model, optimiser, Xt[index], None if Zt is None else Zt[index])
        if not torch.isfinite(loss):
            raise TrainingDivergedError(
                f"training loss of {type(model).__name__} is {loss.item()} at step {step} with lr={cfg.lr:g}; "
                "lower lr (e.g. by 10x) or check X for extreme values."
            )
        flops = flops + step_flops
        if step % cfg.eval_every and step != cfg.steps:
            continue
        record_steps.append(step)
        train_curve.append(float(loss.detach()))
        if Xv is None:
            val_curve.append(math.nan)
            continue
        with torch.no_grad():
            val_loss = float(_loss(model, Xv, Zv, "val")[0])
        val_curve.append(val_loss)
        if val_loss < best[0]:
            best, bad_evals = (val_loss, step, copy.deepcopy(model.state_dict())), 0
        else:
            bad_evals += 1
            if cfg.patience is not None and bad_evals >= cfg.patience:
                stopped_early = True
                break
    best_step = step
    if best[2] is not None:
        model.load_state_dict(best[2])
        best_step = best[1]
    return TrainHistory(
        steps=np.asarray(record_steps), train_loss=np.asarray(train_curve), val_loss=np.asarray(val_curve),
        steps_run=step, best_step=best_step, flops=flops, seconds=time.perf_counter() - start,
        stopped_early=stopped_early,
    )
