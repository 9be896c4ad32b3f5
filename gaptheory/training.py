r"""One training loop for every encoder, and the three settings of the reference paper.

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

:func:`run_setting` runs one method in one setting on one data split and returns a flat
:class:`RunResult`:

1. ``known_dictionary`` (setting 1): the decoder is fixed to the true D and only the
   encoder learns; per-sample inference on the true D (``sparse_coding``) is the
   reference point;
2. ``known_codes`` (setting 2): supervised regression of the true codes from X;
3. ``unknown`` (setting 3): encoder and dictionary learned from X alone.

Model selection and early stopping read only the validation split, drawn with its own
seed; the test split is scored once, at the end.

References
----------
.. [1] O'Neill, Gumran & Klindt (2024), "Compute optimal inference and provable
   amortisation gap in sparse autoencoders", arXiv 2411.13117, Section 4.
"""

from __future__ import annotations

import copy
import dataclasses
import json
import math
import sys
import time
from dataclasses import dataclass, field

import numpy as np
import torch
from tqdm.auto import tqdm

from . import __version__
from ._device import resolve_device
from ._validation import as_generator, check_array, check_choice, check_int, check_positive
from .encoders import ENCODERS, Encoder
from .flops import FlopCount
from .instances import Instance, make_instance, sparse_codes
from .metrics import code_metrics, dictionary_recovery, mcc

SETTINGS = ("known_dictionary", "known_codes", "unknown")
#: Setting numbers of the paper, accepted as aliases.
SETTING_ALIASES = {1: "known_dictionary", 2: "known_codes", 3: "unknown"}

#: Methods and the settings they apply to. ``mlp_<h>`` means an MLP with one hidden layer
#: of width h (e.g. ``mlp_256``); ``sparse_coding`` in setting 1 is per-sample inference on
#: the true dictionary (no training); ``best_subset`` is sparse coding with exact K-sparse
#: inference (:func:`gaptheory.solvers.best_subset`) instead of the LASSO.
METHODS = {
    "sae": SETTINGS,
    "sae_topk": SETTINGS,
    "sae_jumprelu": SETTINGS,
    "mlp": SETTINGS,
    "sae_ito": ("known_dictionary", "unknown"),
    "sparse_coding": ("known_dictionary", "unknown"),
    "best_subset": ("known_dictionary", "unknown"),
}


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


# ---------------------------------------------------------------------------------------
# Data splits and the three settings
# ---------------------------------------------------------------------------------------


@dataclass(frozen=True)
class DataConfig:
    """A synthetic compressed-sensing task (defaults: the paper's size)."""

    N: int = 16  # latents (atoms)
    M: int = 8  # observed dimension
    K: int = 3  # nonzeros per code
    n_train: int = 1024  # training rows
    n_val: int = 512  # validation rows (model selection and early stopping only)
    n_test: int = 1024  # test rows (scored once)
    kind: str = "gaussian"  # dictionary family, see gaptheory.instances.random_dictionary
    seed: int = 0  # draws D and the training codes; validation and test use seeds spawned from it

    def __post_init__(self):
        for name in ("N", "M", "n_train", "n_val", "n_test"):
            check_int(getattr(self, name), name, minimum=1)
        check_int(self.K, "K", minimum=1, maximum=self.N)
        check_int(self.seed, "seed", minimum=0)

    def to_dict(self) -> dict:
        return dataclasses.asdict(self)


@dataclass(frozen=True)
class Splits:
    """One dictionary and three independent code splits drawn from it."""

    D: np.ndarray = field(repr=False)
    X_train: np.ndarray = field(repr=False)
    Z_train: np.ndarray = field(repr=False)
    X_val: np.ndarray = field(repr=False)
    Z_val: np.ndarray = field(repr=False)
    X_test: np.ndarray = field(repr=False)
    Z_test: np.ndarray = field(repr=False)
    k: int
    data_seed: int


def make_splits(data: DataConfig | Instance, *, n_val: int = 512, n_test: int = 1024) -> Splits:
    """Draw train/validation/test splits that share one dictionary.

    Parameters
    ----------
    data : DataConfig or Instance
        A config draws D and the training split from ``data.seed``; an
        :class:`~gaptheory.instances.Instance` provides D and the training split itself.
        Validation and test codes come from two seeds spawned from the data seed
        (``numpy.random.SeedSequence``), so they are independent of training and of
        each other.
    n_val, n_test : int
        Split sizes when ``data`` is an Instance (a DataConfig carries its own).

    Examples
    --------
    >>> splits = make_splits(DataConfig(n_train=8, n_val=4, n_test=6, seed=1))
    >>> splits.X_train.shape, splits.X_val.shape, splits.Z_test.shape
    ((8, 8), (4, 8), (6, 16))
    """
    if isinstance(data, DataConfig):
        inst = make_instance(data.N, data.M, data.K, data.n_train, kind=data.kind, seed=data.seed)
        n_val, n_test, seed = data.n_val, data.n_test, data.seed
    elif isinstance(data, Instance):
        inst, seed = data, 0 if data.seed is None else data.seed
        n_val, n_test = check_int(n_val, "n_val", minimum=1), check_int(n_test, "n_test", minimum=1)
    else:
        raise TypeError(f"data must be a DataConfig or an Instance; got {type(data).__name__}.")
    val_seed, test_seed = np.random.SeedSequence([seed, 1]).spawn(2)
    draw = dict(nonnegative=inst.nonnegative, magnitudes=inst.magnitudes)
    Z_val = sparse_codes(n_val, inst.N, inst.K, seed=np.random.default_rng(val_seed), **draw)
    Z_test = sparse_codes(n_test, inst.N, inst.K, seed=np.random.default_rng(test_seed), **draw)
    return Splits(D=inst.D, X_train=inst.X, Z_train=inst.Z, X_val=Z_val @ inst.D, Z_val=Z_val,
                  X_test=Z_test @ inst.D, Z_test=Z_test, k=inst.K, data_seed=seed)


@dataclass(frozen=True)
class RunResult:
    """One method in one setting: every score, its split, and the compute spent.

    Code scores (``test_*``) are on the test split; ``val_mcc`` on the validation split
    (the only one used for selection); dictionary scores are ``None`` where no dictionary
    is learned (settings 1 and 2). FLOPs follow :mod:`gaptheory.flops`: training FLOPs
    sum all optimisation steps; inference FLOPs encode the whole test split once.
    """

    setting: str
    method: str
    seed: int
    data_seed: int
    N: int
    M: int
    K: int
    n_train: int
    n_val: int
    n_test: int
    steps: int
    steps_run: int
    best_step: int
    lr: float
    hparams: str  # JSON of the config overrides
    test_mcc: float
    test_precision: float
    test_recall: float
    test_f1: float
    test_relative_code_error: float
    test_explained_variance: float
    test_mean_l0: float
    test_dead_latents: int
    val_mcc: float
    train_mcc: float
    dict_recovery: float | None
    dict_recovery_chance: float | None
    dict_recovery_chance_std: float | None
    train_flops: int
    inference_flops: int
    inference_flops_per_sample: float
    wall_seconds: float
    device: str
    metrics_split: str = "test"
    selection_split: str = "val"
    loss_curve: str = "{}"  # JSON {"steps", "train", "val"}: the losses at each validation check (null: none)
    version: str = __version__

    def to_dict(self) -> dict:
        """Flat JSON scalars (the record format of the results store)."""
        return dataclasses.asdict(self)


def _check_setting(setting) -> str:
    if setting in SETTING_ALIASES:
        return SETTING_ALIASES[setting]
    return check_choice(setting, "setting", SETTINGS)


def _parse_method(method: str) -> tuple[str, dict]:
    """Split ``mlp_256`` into ("mlp", {"hidden": (256,)}); other names pass through."""
    if isinstance(method, str) and method.startswith("mlp_"):
        widths = method[4:].split("_")
        if all(w.isdigit() and int(w) > 0 for w in widths):
            return "mlp", {"hidden": tuple(int(w) for w in widths)}
    if method not in METHODS:
        raise ValueError(f"method={method!r} is not supported; choose one of {sorted(METHODS)} or "
                         "'mlp_<width>' (e.g. 'mlp_256').")
    return method, {}


#: Each method's architecture (:data:`gaptheory.encoders.ENCODERS`), config defaults, and the
#: config fields that default to the task's K.
METHOD_ARCHITECTURES = {
    "sae": ("standard", {}, ()),
    "sae_topk": ("topk", {}, ("k",)),
    "sae_jumprelu": ("jumprelu", {}, ()),
    "sae_ito": ("sae_ito", {}, ()),
    "mlp": ("mlp", {}, ()),
    "sparse_coding": ("sparse_coding", {}, ()),
    "best_subset": ("sparse_coding", {"inference": "best_subset"}, ("k",)),
}


def build_model(method: str, N: int, M: int, K: int, *, hparams: dict | None = None, seed: int = 0) -> Encoder:
    """The encoder of a method name with config overrides ``hparams``.

    ``sae_topk`` and ``best_subset`` default to ``k = K``. Unknown ``hparams`` keys raise ``ValueError``.

    Examples
    --------
    >>> build_model("mlp_32", 16, 8, 3).cfg.hidden
    (32,)
    """
    base, implied = _parse_method(method)
    options = {**implied, **(hparams or {})}
    architecture, defaults, set_to_K = METHOD_ARCHITECTURES[base]
    defaults = {**defaults, **dict.fromkeys(set_to_K, K)}
    model_class = ENCODERS[architecture]
    names = {f.name for f in dataclasses.fields(model_class.config_class)} - {"N", "M"}
    unknown = set(options) - names
    if unknown:
        raise ValueError(f"hparams {sorted(unknown)} do not apply to method {method!r}; "
                         f"its options are {sorted(names)}.")
    return model_class(model_class.config_class(N=N, M=M, **{**defaults, **options}), seed=seed)


def run_setting(setting, method: str, data: DataConfig | Instance | Splits | None = None, *,
                steps: int = 2000, seed: int = 0, device=None, hparams: dict | None = None,
                train_cfg: TrainConfig | None = None, chance_draws: int = 5) -> RunResult:
    """Train one method in one setting and score it on the test split.

    Parameters
    ----------
    setting : {"known_dictionary", "known_codes", "unknown"} or {1, 2, 3}
    method : str
        ``sae`` (ReLU), ``sae_topk``, ``sae_jumprelu``, ``mlp`` / ``mlp_<width>``,
        ``sae_ito``, ``sparse_coding`` or ``best_subset`` (see ``METHODS`` for the settings of each).
    data : DataConfig, Instance or Splits, optional
        The task; default ``DataConfig()`` (the paper's size) with ``seed=seed``.
    steps : int
        Maximum training steps (ignored when ``train_cfg`` is given).
    seed : int
        Seed of the model initialisation and batch order.
    device : str or torch.device, optional
        Default ``cuda`` when available, else ``cpu``.
    hparams : dict, optional
        Config overrides of the method (e.g. ``{"l1_coefficient": 0.1}``).
    train_cfg : TrainConfig, optional
        Full control of the loop; default ``TrainConfig(steps=steps, seed=seed)``.
    chance_draws : int
        Random dictionaries for the chance level of dictionary recovery.

    Returns
    -------
    RunResult

    Examples
    --------
    >>> data = DataConfig(n_train=64, n_val=32, n_test=32)
    >>> result = run_setting("known_dictionary", "sae", data, steps=20, device="cpu")
    >>> result.setting, result.metrics_split, 0 <= result.test_mcc <= 1
    ('known_dictionary', 'test', True)
    """
    setting = _check_setting(setting)
    seed = check_int(seed, "seed", minimum=0)
    base, _ = _parse_method(method)
    if setting not in METHODS[base]:
        raise ValueError(f"method {method!r} does not apply to setting {setting!r}; it runs in "
                         f"{list(METHODS[base])}.")
    if data is None:
        data = DataConfig(seed=seed)
    splits = data if isinstance(data, Splits) else make_splits(data)
    N, M = splits.D.shape
    device = resolve_device(device)
    train_cfg = TrainConfig(steps=steps, seed=seed) if train_cfg is None else train_cfg
    model = build_model(method, N, M, splits.k, hparams=hparams, seed=seed)

    start = time.perf_counter()
    supervised = setting == "known_codes"
    if setting != "unknown":
        model.fix_decoder(splits.D)  # setting 2 uses D only to report explained variance
    history = train(model, splits.X_train, train_cfg, codes=splits.Z_train if supervised else None,
                    X_val=splits.X_val, codes_val=splits.Z_val if supervised else None, device=device)
    model.eval()
    Z_test, inference = model.encode_with_flops(splits.X_test)
    wall = time.perf_counter() - start
    scores = code_metrics(splits.Z_test, Z_test, splits.X_test, model.decode(Z_test))
    val_mcc = mcc(splits.Z_val, model.encode(splits.X_val))
    train_mcc = mcc(splits.Z_train, model.encode(splits.X_train))
    recovery = None
    if setting == "unknown":
        recovery = dictionary_recovery(splits.D, model.decoder_float64(), n_chance=chance_draws,
                                       seed=as_generator(seed))
    return RunResult(
        setting=setting, method=method, seed=seed, data_seed=splits.data_seed, N=N, M=M, K=splits.k,
        n_train=len(splits.X_train), n_val=len(splits.X_val), n_test=len(splits.X_test),
        steps=train_cfg.steps, steps_run=history.steps_run, best_step=history.best_step, lr=train_cfg.lr,
        hparams=json.dumps(hparams or {}, sort_keys=True, default=list),
        test_mcc=scores.mcc, test_precision=scores.precision, test_recall=scores.recall, test_f1=scores.f1,
        test_relative_code_error=scores.relative_code_error,
        test_explained_variance=scores.explained_variance, test_mean_l0=scores.mean_l0,
        test_dead_latents=scores.dead_latents, val_mcc=val_mcc, train_mcc=train_mcc,
        dict_recovery=None if recovery is None else recovery.score,
        dict_recovery_chance=None if recovery is None else recovery.chance,
        dict_recovery_chance_std=None if recovery is None else recovery.chance_std,
        train_flops=history.flops.total, inference_flops=inference.total,
        inference_flops_per_sample=inference.total / len(splits.X_test), wall_seconds=wall,
        device=str(device), loss_curve=_curve_json(history),
    )


def _curve_json(history: TrainHistory) -> str:
    """The loss curves of ``history`` as JSON (non-finite losses as null)."""
    def values(array):
        return [float(v) if math.isfinite(v) else None for v in np.asarray(array, dtype=float)]

    return json.dumps({"steps": [int(s) for s in history.steps], "train": values(history.train_loss),
                       "val": values(history.val_loss)})
