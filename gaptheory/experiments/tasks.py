r"""Task kinds: what one task of a sweep computes, its parameters and their defaults.

A kind (:class:`TaskKind`) names its parameters with defaults, checks a config before
anything runs, and maps a resolved config to flat JSON-scalar metrics:

- ``recovery``: basis pursuit / LASSO / OMP recovery of K-sparse codes from M measurements,
  beside the statistical-dimension prediction of the l1 phase transition;
- ``gap``: the exact best ReLU encoder (LP), the T2 lower bound and per-sample inference on
  one dictionary;
- ``training``: one method trained in one of the paper's three settings, with validation
  selection (:mod:`~gaptheory.experiments.selection`);
- ``activations``: one method trained on real transformer activations and scored on held-out
  text (:mod:`~gaptheory.experiments.real`).

Model code is imported inside the task functions: sweeps are expanded and checked in the
parent without torch, and workers import only what their kind needs.
"""

from __future__ import annotations

import functools
import json
import math
from dataclasses import dataclass
from typing import Callable

import numpy as np

from .._validation import check_choice, check_int, parameter_defaults
from .methods import SETTINGS, check_method_in_setting, parse_method
from .real import check_real, real_defaults, run_real

#: A recovered code counts as exact when ``max_i |z_hat_i - z_i| <= RECOVERY_RTOL * max_i |z_i|``.
#: Interior-point solvers are accurate to ~1e-8; failed l1 recoveries are off by O(1), so
#: any value between those separates the two cleanly.
RECOVERY_RTOL = 1e-4

#: An entry belongs to the recovered support when ``|z_hat_i| > SUPPORT_RTOL * max_i |z_i|``
#: (LASSO shrinks but does not zero small spurious entries exactly on every solver).
SUPPORT_RTOL = 1e-3

SOLVERS = ("basis_pursuit", "lasso", "omp")


@dataclass(frozen=True)
class TaskKind:
    """A task kind: its parameters with defaults, their check, and the function that runs one task.

    ``make_defaults() -> dict`` gives the parameters and their defaults, read where possible from
    the config dataclass or function that owns them (so a kind's model code loads only when a
    sweep of that kind is expanded). ``check(config) -> config`` runs when a sweep is expanded (so
    a bad grid fails before anything runs) and may resolve parameters (ratios to integers).
    ``run(config) -> dict`` returns flat JSON-scalar metrics; it may include ``device`` and
    ``split`` to override the record's defaults.
    """

    name: str
    make_defaults: Callable[[], dict]
    run: Callable[[dict], dict]
    check: Callable[[dict], dict]
    description: str = ""

    @functools.cached_property
    def defaults(self) -> dict:
        """Parameter name -> default (TOML has no null: ``None`` only where a parameter may be left unset)."""
        return self.make_defaults()


@dataclass(frozen=True)
class RecoveryTaskConfig:
    """A ``recovery`` task's parameters and their defaults.

    Attributes
    ----------
    N : int
        Latents: the dimension of the codes and the number of atoms of D.
    M : int or None
        Measurements, the input dimension; or give ``M_over_N``.
    K : int or None
        Nonzeros per code; or give ``K_over_M``.
    B : int
        Codes per instance, all measured by the same dictionary.
    solver : str
        ``basis_pursuit``, ``lasso`` or ``omp`` (:data:`SOLVERS`).
    alpha : float
        LASSO penalty weight (``solver = "lasso"`` only).
    nonnegative : bool
        Nonnegative codes and a nonnegative l1 problem.
    dictionary : str
        Dictionary family (:func:`gaptheory.instances.random_dictionary`).
    magnitude_lo, magnitude_hi : float
        Nonzero magnitudes are uniform in ``[magnitude_lo, magnitude_hi]``.
    seed : int
        Seed of D and the codes.
    """

    N: int = 100
    M: int | None = None
    K: int | None = None
    B: int = 10
    solver: str = "basis_pursuit"
    alpha: float = 1e-3
    nonnegative: bool = False
    dictionary: str = "gaussian"
    magnitude_lo: float = 0.5
    magnitude_hi: float = 1.5
    seed: int = 0


def _resolve_ratios(config: dict) -> dict:
    """Replace ``M_over_N`` and ``K_over_M`` by the integers ``M`` and ``K`` they imply."""
    config = dict(config)
    if "M_over_N" in config:
        ratio = config.pop("M_over_N")
        if config.get("M") is not None:
            raise ValueError("give either M or M_over_N, not both.")
        config["M"] = max(1, int(round(ratio * config["N"])))
    if "K_over_M" in config:
        ratio = config.pop("K_over_M")
        if config.get("K") is not None:
            raise ValueError("give either K or K_over_M, not both.")
        if config.get("M") is None:
            raise ValueError("K_over_M needs M (or M_over_N).")
        config["K"] = max(1, int(round(ratio * config["M"])))
    return config


def run_recovery(config: dict) -> dict:
    r"""One recovery trial: draw D (N, M) and B K-sparse codes, infer them, score them.

    Metrics: ``success_rate`` (fraction of codes recovered exactly, within
    :data:`RECOVERY_RTOL`), ``support_rate`` (fraction with the exact support, within
    :data:`SUPPORT_RTOL`), ``max_error`` (worst :math:`\|\hat z - z\|_\infty`), and the
    statistical-dimension prediction: ``statdim`` (:func:`gaptheory.bounds.statistical_dimension` at
    this K), ``predicted_success`` (M > statdim) and ``transition_K_over_M`` (the
    predicted threshold K/M at this M/N). ``lp_fallback`` says that basis pursuit was
    re-solved by HiGHS simplex (inside :func:`gaptheory.solvers.basis_pursuit`) after Clarabel could not certify
    its answer.
    """
    from ..bounds import l1_transition_sparsity_ratio, statistical_dimension
    from ..flops import fista_flops
    from ..instances import make_instance
    from ..solvers import basis_pursuit, lasso, omp

    N, M, K, B = config["N"], config["M"], config["K"], config["B"]
    nonnegative = config["nonnegative"]
    inst = make_instance(N, M, K, B, kind=config["dictionary"], seed=config["seed"], nonnegative=nonnegative,
                         magnitudes=(config["magnitude_lo"], config["magnitude_hi"]))
    fallback = False
    if config["solver"] == "basis_pursuit":
        # Rows Clarabel cannot certify are re-solved by HiGHS inside basis_pursuit; recorded below.
        result = basis_pursuit(inst.X, inst.D, nonnegative=nonnegative, return_info=True)
        fallback = bool(result.fallback_rows)
    elif config["solver"] == "lasso":
        result = lasso(inst.X, inst.D, config["alpha"], nonnegative=nonnegative, return_info=True)
    else:
        result = omp(inst.X, inst.D, K, return_info=True)
    Z_hat, Z = result.codes, inst.Z
    scale = np.abs(Z).max(axis=1)
    error = np.abs(Z_hat - Z).max(axis=1)
    support_ok = ((np.abs(Z_hat) > SUPPORT_RTOL * scale[:, None]) == (Z != 0)).all(axis=1)
    statdim = statistical_dimension(N, K, nonnegative=nonnegative)
    return {
        "success_rate": float(np.mean(error <= RECOVERY_RTOL * scale)),
        "support_rate": float(np.mean(support_ok)),
        "max_error": float(error.max()),
        "n_converged": int(result.converged.sum()),
        "lp_fallback": fallback,
        # FLOPs are counted for FISTA only (gaptheory.flops); interior-point and OMP costs are not modelled.
        "inference_flops_per_sample": (fista_flops(result.n_iter, N=N, M=M).total / B) if config["solver"] == "lasso" else None,
        "statdim": statdim,
        "predicted_success": bool(M > statdim),
        "transition_K_over_M": l1_transition_sparsity_ratio(min(M / N, 1.0), nonnegative=nonnegative),
        "device": "cpu" if config["solver"] == "basis_pursuit" else _device_name(),
    }


def _check_recovery(config: dict) -> dict:
    config = _resolve_ratios(config)
    check_choice(config["solver"], "solver", SOLVERS)
    for name in ("M", "K"):
        if config[name] is None:
            raise ValueError(f"recovery tasks need {name} (or {'M_over_N' if name == 'M' else 'K_over_M'}); add it to [fixed] or [grid].")
    N = check_int(config["N"], "N", minimum=1)
    check_int(config["M"], "M", minimum=1)
    check_int(config["K"], "K", minimum=1, maximum=N)
    if config["M"] > N:
        raise ValueError(f"M={config['M']} exceeds N={N}; the phase transition is defined for M <= N.")
    return config


@dataclass(frozen=True)
class GapTaskConfig:
    r"""A ``gap`` task's parameters and their defaults.

    Attributes
    ----------
    N : int
        Latents (atoms of D).
    M : int or None
        Input dimension; or give ``M_over_N``.
    K : int
        Largest number of nonzeros of a code in the code set.
    dictionary : str
        Dictionary family (:func:`gaptheory.instances.random_dictionary`).
    magnitude_lo, magnitude_hi : float
        Nonzeros lie in ``[magnitude_lo, magnitude_hi]``; ``(1, 1)`` is the binary code set of
        theorem T2.
    B : int
        Codes sampled from the set for per-sample inference.
    method : str
        The gap LP's solver: ``highs`` (fast, with certificates) or ``cvxpy`` (a cross-check).
    sae_steps : int
        Above 0: also train a ReLU SAE on this D (the known-dictionary setting) for this many steps
        and score its worst case.
    sae_n_train : int
        Training codes of that SAE, drawn from the same code set.
    sae_lr : float
        Adam learning rate of that SAE.
    sae_l1_coefficient : float
        Weight of the mean :math:`\|z\|_1` in that SAE's loss.
    seed : int
        Seed of D, the sampled codes and the SAE.
    """

    N: int = 16
    M: int | None = None
    K: int = 3
    dictionary: str = "gaussian"
    magnitude_lo: float = 1.0
    magnitude_hi: float = 1.0
    B: int = 200
    method: str = "highs"
    sae_steps: int = 0
    sae_n_train: int = 1024
    sae_lr: float = 1e-3
    sae_l1_coefficient: float = 0.03
    seed: int = 0


def run_gap(config: dict) -> dict:
    r"""The amortisation gap on one dictionary: exact best ReLU encoder vs bound vs per-sample inference.

    Metrics: ``eps_star`` (:math:`\max_i \varepsilon^*_i` from
    :func:`gaptheory.gap.relu_minimax_gap`, the best worst-case error any ReLU encoder
    reaches on the whole code set), ``eps_star_mean`` (mean over latents),
    ``eps_star_exact`` (the LP value is the exact optimum, eps* < lo), ``gap_lower_bound``
    (:math:`\max_i` of :func:`gaptheory.gap.gap_lower_bound`, theorem T2; None where its
    code set is not inside this one: K < 2 or 1 outside [lo, hi]),
    ``per_sample_error`` (worst :math:`\|\hat z - z\|_\infty` of nonnegative basis
    pursuit over ``B`` codes sampled from the set), ``eps_star_on_samples`` (the best
    encoder's worst error on those same codes) and ``mu`` (mutual coherence). With
    ``sae_steps > 0`` a ReLU SAE is trained with the decoder fixed to ``D`` (the paper's
    setting 1) on codes from the same set, and ``sae_worst_case``
    (:func:`gaptheory.gap.worst_case_error` of its encoder over the whole set, max over
    latents) and ``sae_error_on_samples`` are added: by construction
    ``sae_worst_case >= eps_star``.
    """
    from ..gap import code_set_error, gap_lower_bound, relu_minimax_gap
    from ..instances import mutual_coherence, random_dictionary, sparse_codes
    from ..solvers import basis_pursuit

    N, M, K = config["N"], config["M"], config["K"]
    lo, hi = config["magnitude_lo"], config["magnitude_hi"]
    rng = np.random.default_rng(config["seed"])
    D = random_dictionary(N, M, config["dictionary"], seed=rng)
    result = relu_minimax_gap(D, K, magnitudes=(lo, hi), method=config["method"])
    Z = sparse_codes(config["B"], N, K, seed=rng, nonnegative=True, magnitudes=(lo, hi))
    Z_hat = basis_pursuit(Z @ D, D, nonnegative=True)
    t2_applies = K >= 2 and lo <= 1.0 <= hi
    sae = _trained_sae_errors(config, D, Z, rng) if config["sae_steps"] > 0 else {}
    return {
        **sae,
        "eps_star": result.worst,
        "eps_star_mean": float(np.nanmean(result.eps)),
        "eps_star_exact": bool(result.exact.all()),
        "lp_optimal": result.success,
        "lp_seconds": result.seconds,
        "gap_lower_bound": float(gap_lower_bound(D).max()) if t2_applies else None,
        "per_sample_error": float(np.abs(Z_hat - Z).max()),
        "eps_star_on_samples": float(code_set_error(result.encoder, D, Z).max()),
        "mu": mutual_coherence(D),
        "device": "cpu",
    }


def _trained_sae_errors(config: dict, D: np.ndarray, Z_eval: np.ndarray, rng) -> dict:
    """Train a ReLU SAE with its decoder fixed to ``D`` and return its worst-case errors."""
    from ..gap import code_set_error, worst_case_error
    from ..instances import sparse_codes
    from ..training import TrainConfig, train
    from .settings import build_model

    N, M, K = config["N"], config["M"], config["K"]
    magnitudes = (config["magnitude_lo"], config["magnitude_hi"])
    Z_train = sparse_codes(config["sae_n_train"], N, K, seed=rng, nonnegative=True, magnitudes=magnitudes)
    model = build_model("sae", N, M, K, hparams={"l1_coefficient": config["sae_l1_coefficient"]}, seed=config["seed"])
    model.fix_decoder(D)
    train(model, Z_train @ D, TrainConfig(steps=config["sae_steps"], lr=config["sae_lr"], seed=config["seed"],
                                          progress=False))
    encoder = _Weights(model.W_enc.detach().double().cpu().numpy(), model.b_enc.detach().double().cpu().numpy())
    return {
        "sae_worst_case": float(worst_case_error(encoder, D, K, magnitudes=magnitudes).max()),
        "sae_error_on_samples": float(code_set_error(encoder, D, Z_eval).max()),
    }


@dataclass(frozen=True)
class _Weights:
    """Encoder weights in float64 for the exact error evaluations of :mod:`gaptheory.gap`."""

    W_enc: np.ndarray
    b_enc: np.ndarray


def _check_gap(config: dict) -> dict:
    config = _resolve_ratios(config)
    if config["M"] is None:
        raise ValueError("gap tasks need M (or M_over_N); add it to [fixed] or [grid].")
    N = check_int(config["N"], "N", minimum=2)
    check_int(config["M"], "M", minimum=1)
    check_int(config["K"], "K", minimum=1, maximum=N)
    check_int(config["B"], "B", minimum=1)
    return config


@dataclass(frozen=True)
class TrainingTaskConfig:
    """A ``training`` task's own parameters and their defaults.

    The task's size, splits and dictionary (``N``, ``M``, ``K``, ``n_train``, ``n_val``,
    ``n_test``, ``dictionary``) default to :class:`~gaptheory.experiments.settings.DataConfig`'s
    fields and its loop (``steps``, ``lr``, ``eval_every``) to
    :class:`~gaptheory.training.TrainConfig`'s (:func:`_training_defaults`).

    Attributes
    ----------
    setting : str
        ``known_dictionary``, ``known_codes`` or ``unknown``: the paper's settings 1-3.
    method : str
        A name of :data:`~gaptheory.experiments.methods.METHODS`, or ``mlp_<width>``.
    batch_size : int
        Rows per step; 0: the full training split (TrainConfig's None).
    patience : int
        Evaluations without validation improvement before stopping; 0: never (TrainConfig's None).
    hparams : str
        JSON object of method options, e.g. ``'{"l1_coefficient": 0.01}'``.
    select : str
        Validation selection: ``none``, ``paper``
        (:data:`~gaptheory.experiments.selection.PAPER_GRIDS`) or a JSON object of lists.
    refit_steps : int
        Above 0: retrain the selected point for this many steps, without early stopping.
    data_seed : int or None
        Seed of D and the codes; None uses ``seed``.
    seed : int
        Seed of the model initialisation and the batch order.
    """

    setting: str = "known_dictionary"
    method: str = "sae"
    batch_size: int = 0
    patience: int = 0
    hparams: str = "{}"
    select: str = "none"
    refit_steps: int = 0
    data_seed: int | None = None
    seed: int = 0


def _training_defaults() -> dict:
    """Parameters of a training task: the task (DataConfig's fields), the loop (TrainConfig's) and
    the task's own (:class:`TrainingTaskConfig`'s)."""
    from ..training import TrainConfig
    from .settings import DataConfig

    data, loop = parameter_defaults(DataConfig), parameter_defaults(TrainConfig)
    return {
        **{name: data[name] for name in ("N", "M", "K", "n_train", "n_val", "n_test")},
        "dictionary": data["kind"],
        **{name: loop[name] for name in ("steps", "lr", "eval_every")},
        **parameter_defaults(TrainingTaskConfig),
    }


def run_training(config: dict) -> dict:
    """Train one method in one of the paper's settings, with validation selection.

    Without ``select`` the method trains once (:func:`~gaptheory.experiments.settings.run_setting`).
    With it, every point of the grid (``select = "paper"``: :data:`~gaptheory.experiments.selection.PAPER_GRIDS`; or a JSON
    object of lists) is trained on the training split and scored on the validation split,
    the point with the best validation MCC is kept (:func:`~gaptheory.experiments.selection.select_on_validation`) and only
    its test scores are reported; the test split is never read for selection.
    ``refit_steps > 0`` retrains the selected point for that many steps without early
    stopping (an "is it undertrained?" check at a longer budget).

    Metrics: every field of :class:`~gaptheory.experiments.settings.RunResult` that is not a config
    field (``test_mcc``, ``val_mcc``, ``train_flops``, ``inference_flops_per_sample``, ...),
    ``selected`` (JSON of the chosen point) and ``n_points`` (grid points trained); the
    record's ``split`` is the split the scores come from (``test``). ``train_flops``
    counts the kept run only.
    """
    from .selection import select_point, selection_axes, train_at_point
    from .settings import DataConfig, make_splits

    data_seed = config["seed"] if config["data_seed"] is None else config["data_seed"]
    data = DataConfig(N=config["N"], M=config["M"], K=config["K"], n_train=config["n_train"], n_val=config["n_val"],
                      n_test=config["n_test"], kind=config["dictionary"], seed=data_seed)
    splits = make_splits(data)
    result, point, n_points = select_point(config, splits, config["method"], selection_axes(config))
    if config["refit_steps"] > 0:
        result = train_at_point(config, splits, config["method"], point, steps=config["refit_steps"], patience=None)
    out = {name: value for name, value in result.to_dict().items()
           if name not in config and name not in ("version", "hparams")}
    out["split"] = out.pop("metrics_split", "test")
    out["selected"] = json.dumps(point, sort_keys=True, default=list)
    out["n_points"] = n_points
    return out


def _check_training(config: dict) -> dict:
    config = _resolve_ratios(config)
    check_method_in_setting(config["method"], config["setting"])
    for name in ("N", "M", "n_train", "n_val", "n_test", "eval_every"):
        check_int(config[name], name, minimum=1)
    for name in ("steps", "refit_steps", "batch_size", "patience"):
        check_int(config[name], name, minimum=0)
    check_int(config["K"], "K", minimum=1, maximum=config["N"])
    try:
        if not isinstance(json.loads(config["hparams"]), dict):
            raise ValueError
    except (TypeError, ValueError):
        raise ValueError(f"hparams={config['hparams']!r} must be a JSON object string, e.g. '{{\"l1_coefficient\": 0.01}}'.") from None
    if config["select"] not in ("none", "paper"):
        try:
            axes = json.loads(config["select"])
            if not isinstance(axes, dict) or not all(isinstance(v, list) and v for v in axes.values()):
                raise ValueError
        except (TypeError, ValueError):
            raise ValueError(f"select={config['select']!r} must be 'none', 'paper' or a JSON object of non-empty lists, "
                             "e.g. '{\"lr\": [0.001, 0.01], \"l1_coefficient\": [0.1, 0.3]}'.") from None
    return config


def _device_name() -> str:
    from .._device import default_device

    return str(default_device())


TASK_KINDS: dict[str, TaskKind] = {
    "recovery": TaskKind("recovery", functools.partial(parameter_defaults, RecoveryTaskConfig), run_recovery, _check_recovery,
                         "basis pursuit / LASSO / OMP recovery of K-sparse codes from M measurements"),
    "gap": TaskKind("gap", functools.partial(parameter_defaults, GapTaskConfig), run_gap, _check_gap,
                    "exact best ReLU encoder (LP), the T2 lower bound and per-sample inference on one dictionary"),
    "training": TaskKind("training", _training_defaults, run_training, _check_training,
                         "one method trained in one of the paper's three settings"),
    "activations": TaskKind("activations", real_defaults, run_real, check_real,
                            "one encoder trained on real transformer activations, scored on held-out text"),
}


#: Parameters that are not of their default's type, with the values they take.
_NULLABLE = {"M", "K", "data_seed", "mlp_init_rows"}
_RATIOS = ("M_over_N", "K_over_M")


def check_value(kind: str, where: str, name: str, value) -> None:
    """Check one parameter value of a task kind against the type of its default."""
    from ..instances import DICTIONARY_KINDS

    default = TASK_KINDS[kind].defaults.get(name)
    if name in _RATIOS:
        if isinstance(value, bool) or not isinstance(value, (int, float)) or not 0 < value <= 1e6:
            raise ValueError(f"{where}={value!r} must be a positive number (a ratio); e.g. 0.5.")
        return
    if value is None and name in _NULLABLE:
        return
    if isinstance(default, bool) and not isinstance(value, bool):
        raise TypeError(f"{where}={value!r} must be true or false (a TOML boolean, not a string).")
    if (isinstance(default, int) and not isinstance(default, bool)) or name in ("M", "K"):
        if isinstance(value, bool) or not isinstance(value, int):
            raise TypeError(f"{where}={value!r} must be an integer.")
        if value < 0:
            raise ValueError(f"{where}={value} must be >= 0.")
    if isinstance(default, float) and (isinstance(value, bool) or not isinstance(value, (int, float))
                                       or not math.isfinite(value)):
        raise TypeError(f"{where}={value!r} must be a finite number.")
    if isinstance(default, str) and not isinstance(value, str):
        raise TypeError(f"{where}={value!r} must be a string.")
    if name == "dictionary":
        check_choice(value, where, DICTIONARY_KINDS)
    if name == "solver":
        check_choice(value, where, SOLVERS)
    if name == "seed" or name == "data_seed":
        check_int(value, where, minimum=0)
    if name in ("magnitude_lo", "magnitude_hi") and not value > 0:
        raise ValueError(f"{where}={value} must be > 0 (nonzero magnitudes are uniform in [lo, hi]).")
    if kind in ("training", "activations") and name == "method":
        try:
            parse_method(value)
        except ValueError as err:
            raise ValueError(f"{where}: {err}") from None
    if kind == "gap" and name == "method":
        from ..gap import GAP_METHODS  # torch: imported only for gap sweeps, whose workers need it anyway

        check_choice(value, where, GAP_METHODS)
    if name in ("lr", "sae_lr", "alpha") and not value > 0:
        raise ValueError(f"{where}={value} must be > 0.")
    if kind == "training" and name == "setting":
        check_choice(value, where, SETTINGS)
