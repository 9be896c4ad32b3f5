r"""The three settings of the reference paper on synthetic data: splits, one run, its result.

:func:`run_setting` runs one method (:data:`~gaptheory.experiments.methods.METHODS`) in one
setting on one data split and returns a flat :class:`RunResult`:

1. ``known_dictionary`` (setting 1): the decoder is fixed to the true D and only the
   encoder learns; per-sample inference on the true D (``sparse_coding``) is the
   reference point;
2. ``known_codes`` (setting 2): supervised regression of the true codes from X;
3. ``unknown`` (setting 3): encoder and dictionary learned from X alone.

Training is :func:`gaptheory.training.train`. Model selection and early stopping read only the
validation split, drawn with its own seed; the test split is scored once, at the end.

References
----------
.. [1] O'Neill, Gumran & Klindt (2024), "Compute optimal inference and provable
   amortisation gap in sparse autoencoders", arXiv 2411.13117, Section 4.
"""

from __future__ import annotations

import dataclasses
import json
import math
import time
from dataclasses import dataclass, field

import numpy as np

from .. import __version__
from .._device import resolve_device
from .._validation import as_generator, check_int
from ..encoders import ENCODERS, Encoder
from ..instances import Instance, make_instance, sparse_codes
from ..metrics import code_metrics, dictionary_recovery, mcc
from ..training import TrainConfig, TrainHistory, train
from .methods import METHODS, check_method_in_setting, parse_method



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


def build_model(method: str, N: int, M: int, K: int, *, hparams: dict | None = None, seed: int = 0) -> Encoder:
    """The encoder of a method name with config overrides ``hparams``.

    ``sae_topk`` and ``best_subset`` default to the task's ``K``. Unknown ``hparams`` keys raise ``ValueError``.

    Examples
    --------
    >>> build_model("mlp_32", 16, 8, 3).cfg.hidden
    (32,)
    """
    base, implied = parse_method(method)
    options = {**implied, **(hparams or {})}
    entry = METHODS[base]
    defaults = {**entry.defaults, **dict.fromkeys(entry.K_fields, K)}
    model_class = ENCODERS[entry.architecture]
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
        ``sae_ito``, ``sparse_coding`` or ``best_subset`` (:data:`~gaptheory.experiments.methods.METHODS` lists the settings of each).
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
    _, setting = check_method_in_setting(method, setting)
    seed = check_int(seed, "seed", minimum=0)
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
