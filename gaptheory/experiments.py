r"""Sweeps: a TOML grid expanded into keyed tasks, run locally or on Dask, stored once each.

A sweep file names a task *kind* and a grid::

    name = "phase_transition"
    kind = "recovery"              # recovery | gap | training

    [fixed]                        # parameters shared by every task
    N = 100
    solver = "basis_pursuit"

    [grid]                         # the Cartesian product of these lists
    M_over_N = [0.2, 0.4, 0.6]     # ratios are resolved to M and K before keying
    K_over_M = [0.1, 0.3, 0.5]
    seed = [0, 1, 2]

:func:`expand` turns it into :class:`Task` objects whose ``key`` is the hash of the
task's full, resolved config (defaults filled in), so the same task always has the same
key. :func:`run_sweep` skips keys already in the store, runs the rest on local processes
(``concurrent.futures``) or a ``dask.distributed`` cluster, and writes each record from
the parent process in its own transaction as soon as it arrives. A task that raises is
stored as ``status="failed"`` with its traceback and does not stop the sweep; the next
run retries it.
"""

from __future__ import annotations

import collections
import concurrent.futures
import contextlib
import itertools
import math
import multiprocessing
import signal
import socket
import sys
import threading
import time
import traceback
from dataclasses import dataclass, field
from typing import Callable

import numpy as np

from . import __version__
from ._io import stdout_to_stderr
from ._validation import check_choice, check_int
from .store import LEASE_S, STATUS_FAILED, STATUS_OK, ResultStore, task_key

if sys.version_info >= (3, 11):
    import tomllib
else:  # pragma: no cover - exercised on 3.10 only
    import tomli as tomllib

#: A recovered code counts as exact when ``max_i |z_hat_i - z_i| <= RECOVERY_RTOL * max_i |z_i|``.
#: Interior-point solvers are accurate to ~1e-8; failed l1 recoveries are off by O(1), so
#: any value between those separates the two cleanly.
RECOVERY_RTOL = 1e-4

#: An entry belongs to the recovered support when ``|z_hat_i| > SUPPORT_RTOL * max_i |z_i|``
#: (LASSO shrinks but does not zero small spurious entries exactly on every solver).
SUPPORT_RTOL = 1e-3

SOLVERS = ("basis_pursuit", "lasso", "omp")



# ---------------------------------------------------------------------------------------
# The l1 phase transition (Amelunxen, Lotz, McCoy & Tropp 2014).
# ---------------------------------------------------------------------------------------


def _psi(rho: float, nonnegative: bool) -> float:
    """Normalised statistical dimension delta / N at sparsity rho = K / N (fractional K allowed)."""
    from .bounds import gaussian_tail_integral, statistical_dimension_threshold  # sympy: import on use

    if rho <= 0.0:
        return 0.0
    if rho >= 1.0:
        return 1.0
    tau = statistical_dimension_threshold(rho, nonnegative=nonnegative)
    factor = 1.0 if nonnegative else 2.0
    return rho * (1.0 + tau * tau) + (1.0 - rho) * factor * float(gaussian_tail_integral(tau))


def l1_transition_sparsity_ratio(m_over_n: float, *, nonnegative: bool = False) -> float:
    r"""The predicted l1 phase-transition point: the K/M at which the statistical dimension equals M.

    Solves :math:`\psi(\rho\,\delta) = \delta` for :math:`\rho = K/M` at
    :math:`\delta = M/N` (Donoho-Tanner coordinates), with :math:`\psi` the normalised
    statistical dimension of :func:`gaptheory.bounds.statistical_dimension`.

    Examples
    --------
    The Donoho-Tanner weak threshold at M/N = 1/2 is about 0.385 (signed codes):

    >>> round(l1_transition_sparsity_ratio(0.5), 3)
    0.386
    """
    from scipy.optimize import brentq

    if not 0.0 < m_over_n <= 1.0:
        raise ValueError(f"m_over_n={m_over_n} must lie in (0, 1]; the transition is defined for M <= N.")
    if m_over_n == 1.0:
        return 1.0
    eps = brentq(lambda e: _psi(e, nonnegative) - m_over_n, 1e-12, 1.0 - 1e-12, xtol=1e-12)
    return eps / m_over_n


# ---------------------------------------------------------------------------------------
# Task kinds: each resolves its config (defaults filled in) and computes metrics.
# ---------------------------------------------------------------------------------------


@dataclass(frozen=True)
class TaskKind:
    """A task kind: its parameters with defaults and the function that runs one task.

    ``run(config) -> dict`` returns flat JSON-scalar metrics; it may include ``device``
    and ``split`` to override the record's defaults.
    """

    name: str
    defaults: dict
    run: Callable[[dict], dict]
    description: str = ""


_RECOVERY_DEFAULTS = {
    "N": 100,               # latents (ambient dimension of the codes)
    "M": None,              # measurements; or give M_over_N
    "K": None,              # nonzeros per code; or give K_over_M
    "B": 10,                # codes per instance, all against the same dictionary
    "solver": "basis_pursuit",
    "alpha": 1e-3,          # LASSO penalty (solver="lasso" only)
    "nonnegative": False,   # nonnegative codes and a nonnegative l1 problem
    "dictionary": "gaussian",
    "magnitude_lo": 0.5,    # nonzero magnitudes are uniform in [lo, hi]
    "magnitude_hi": 1.5,
    "seed": 0,
}


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
    from .bounds import statistical_dimension
    from .flops import fista_flops
    from .instances import make_instance
    from .solvers import basis_pursuit, lasso, omp

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
        "inference_flops_per_sample": (fista_flops(result.n_iter, M, N).total / B) if config["solver"] == "lasso" else None,
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


_GAP_DEFAULTS = {
    "N": 16,                # latents
    "M": None,              # input dimension; or give M_over_N
    "K": 3,                 # largest number of nonzeros of a code
    "dictionary": "gaussian",
    "magnitude_lo": 1.0,    # nonzeros in [lo, hi]; (1, 1) is the binary code set of theorem T2
    "magnitude_hi": 1.0,
    "B": 200,               # codes sampled from the set for per-sample inference
    "method": "highs",      # the gap LP: "highs" (fast, certificates) or "cvxpy" (cross-check)
    "sae_steps": 0,         # > 0: also train a ReLU SAE on this D (known dictionary) and score its worst case
    "sae_n_train": 1024,    # training codes for that SAE, drawn from the same code set
    "sae_lr": 1e-3,
    "sae_l1_coefficient": 0.03,
    "seed": 0,
}


def run_gap(config: dict) -> dict:
    r"""The amortisation gap on one dictionary: exact best ReLU encoder vs bound vs per-sample inference.

    Metrics: ``eps_star`` (:math:`\max_i arepsilon^*_i` from
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
    from .gap import code_set_error, gap_lower_bound, relu_minimax_gap
    from .instances import mutual_coherence, random_dictionary, sparse_codes
    from .solvers import basis_pursuit

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
    from .gap import code_set_error, worst_case_error
    from .instances import sparse_codes
    from .training import TrainConfig, build_model, train

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


_TRAINING_DEFAULTS = {
    "setting": "known_dictionary",  # known_dictionary | known_codes | unknown (the paper's settings 1-3)
    "method": "sae",        # sae, sae_topk, sae_jumprelu, mlp / mlp_<width>, sae_ito, sparse_coding, best_subset
    "N": 16,
    "M": 8,
    "K": 3,
    "n_train": 1024,
    "n_val": 512,
    "n_test": 1024,
    "dictionary": "gaussian",
    "steps": 2000,
    "lr": 1e-3,
    "batch_size": 0,        # rows per step; 0: the full training split
    "eval_every": 100,      # steps between validation evaluations
    "patience": 0,          # evaluations without validation improvement before stopping; 0: never
    "hparams": "{}",        # JSON object of method options, e.g. '{"l1_coefficient": 0.01}'
    "select": "none",       # validation selection: "none", "paper" (PAPER_GRIDS) or a JSON object of lists
    "refit_steps": 0,       # > 0: retrain the selected point for this many steps (no early stopping)
    "data_seed": None,      # seed of D and the codes; None uses ``seed``
    "seed": 0,
}

#: Adam learning rates tried for every amortised encoder in the paper-size comparison.
LR_GRID = (1e-3, 3e-3, 1e-2, 3e-2, 1e-1)
#: Sparsity weights tried: ReLU SAE L1, MLP L1, JumpReLU L0 (TopK's k is K).
SAE_L1_GRID = (0.03, 0.1, 0.3, 1.0)
MLP_L1_GRID = (0.03, 0.1, 0.3)
JUMPRELU_L0_GRID = (0.01, 0.03, 0.1)
#: LASSO weights of per-sample inference on the true dictionary (setting 1).
LASSO_ALPHA_GRID = (1e-3, 3e-3, 1e-2, 3e-2)
#: LASSO weights of sparse coding with an unknown dictionary (the SAE loss's l1 coefficient
#: is 2 alpha, so this spans l1 = 0.05 ... 0.4).
SC_ALPHA_GRID = (0.025, 0.05, 0.1, 0.2)
#: MLPs start where the SAE starts (``MLPEncoderConfig.fit_output_to_decoder``; without it latents die).
MLP_INIT = {"fit_output_to_decoder": True}

#: The paper-size grids (``select = "paper"``): per (setting, base method) the axes tried,
#: each point trained on the training split and scored on validation MCC. ``lr`` goes to
#: the training loop, the rest to the model config; supervised training (setting 2) has no
#: sparsity term, so only the learning rate is tuned there. ``sae_ito`` trains the SAE at the
#: point chosen for ``sae`` and refines with the alpha chosen for ``sparse_coding`` (its
#: entry names those two). Missing entries train once at the given hparams.
PAPER_GRIDS = {
    "known_dictionary": {
        "sparse_coding": {"alpha": LASSO_ALPHA_GRID},
        "sae": {"l1_coefficient": SAE_L1_GRID, "lr": LR_GRID},
        "sae_topk": {"lr": LR_GRID},
        "sae_jumprelu": {"l0_coefficient": JUMPRELU_L0_GRID, "lr": LR_GRID},
        "mlp": {**{k: (v,) for k, v in MLP_INIT.items()}, "l1_coefficient": MLP_L1_GRID, "lr": LR_GRID},
        "sae_ito": ("sae", "sparse_coding"),
    },
    "known_codes": {
        "sae": {"lr": LR_GRID},
        "mlp": {**{k: (v,) for k, v in MLP_INIT.items()}, "lr": LR_GRID},
    },
    "unknown": {
        "sae": {"l1_coefficient": SAE_L1_GRID, "lr": LR_GRID},
        "mlp": {**{k: (v,) for k, v in MLP_INIT.items()}, "l1_coefficient": MLP_L1_GRID, "lr": LR_GRID},
        "sparse_coding": {"alpha": SC_ALPHA_GRID},
        "sae_ito": ("sae", "sparse_coding"),
    },
}


def grid_points(axes: dict) -> list[dict]:
    """Every combination of the axes' values, each a dict, in grid order (last axis fastest).

    Examples
    --------
    >>> grid_points({"a": (1, 2), "b": ("x",)})
    [{'a': 1, 'b': 'x'}, {'a': 2, 'b': 'x'}]
    """
    names = list(axes)
    return [dict(zip(names, values)) for values in itertools.product(*(axes[n] for n in names))]


def _selection_axes(config: dict):
    """The grid ``config["select"]`` asks for: None (no selection), a dict of axes, or a
    (sae method, sparse-coding method) pair for ``sae_ito``."""
    import json

    from .training import _parse_method

    select = config["select"]
    if select == "none":
        return None
    if select == "paper":
        base, _ = _parse_method(config["method"])
        return PAPER_GRIDS[config["setting"]].get(base)
    axes = json.loads(select)
    return {name: tuple(values) for name, values in axes.items()}


def select_on_validation(candidates, score=lambda result: result.val_mcc) -> int:
    """Index of the candidate with the highest validation score (the first among ties).

    Only the validation score enters; test scores of the candidates are never read.

    Examples
    --------
    >>> from types import SimpleNamespace as R
    >>> select_on_validation([R(val_mcc=0.5), R(val_mcc=0.9), R(val_mcc=0.9)])
    1
    """
    scores = [score(c) for c in candidates]
    if not scores:
        raise ValueError("select_on_validation needs at least one candidate.")
    finite = [s if s == s else -math.inf for s in scores]  # NaN (a diverged run) never wins
    return max(range(len(finite)), key=lambda i: (finite[i], -i))


def _train_one(config: dict, splits, method: str, point: dict, *, steps: int | None = None, patience="config"):
    """Train ``method`` at grid ``point`` (``lr`` and model options) on ``splits``; a RunResult."""
    import json

    from .training import TrainConfig, run_setting

    point = dict(point)
    lr = point.pop("lr", config["lr"])
    hparams = {**json.loads(config["hparams"]), **point}
    patience = config["patience"] if patience == "config" else patience
    train_cfg = TrainConfig(steps=config["steps"] if steps is None else steps, lr=lr,
                            batch_size=config["batch_size"] or None, eval_every=config["eval_every"],
                            patience=patience or None,
                            seed=config["seed"], progress=False)
    return run_setting(config["setting"], method, splits, seed=config["seed"], device="cpu", hparams=hparams,
                       train_cfg=train_cfg)


def _select(config: dict, splits, method: str, axes):
    """Train every point of ``axes`` and return (best RunResult, its point, number of points)."""
    if isinstance(axes, tuple):  # sae_ito: the SAE's chosen point refined with sparse coding's chosen alpha
        sae_axes, sc_axes = (PAPER_GRIDS[config["setting"]][name] for name in axes)
        _, sae_point, n_sae = _select(config, splits, axes[0], sae_axes)
        _, sc_point, n_sc = _select(config, splits, axes[1], sc_axes)
        point = {**sae_point, "ito_alpha": sc_point["alpha"]}
        return _train_one(config, splits, method, point), point, n_sae + n_sc + 1
    points = grid_points(axes) if axes else [{}]
    results = [_train_one(config, splits, method, point) for point in points]
    best = select_on_validation(results)
    return results[best], points[best], len(points)


def run_training(config: dict) -> dict:
    """Train one method in one of the paper's settings, with validation selection.

    Without ``select`` the method trains once (:func:`gaptheory.training.run_setting`).
    With it, every point of the grid (``select = "paper"``: :data:`PAPER_GRIDS`; or a JSON
    object of lists) is trained on the training split and scored on the validation split,
    the point with the best validation MCC is kept (:func:`select_on_validation`) and only
    its test scores are reported; the test split is never read for selection.
    ``refit_steps > 0`` retrains the selected point for that many steps without early
    stopping (an "is it undertrained?" check at a longer budget).

    Metrics: every field of :class:`gaptheory.training.RunResult` that is not a config
    field (``test_mcc``, ``val_mcc``, ``train_flops``, ``inference_flops_per_sample``, ...),
    ``selected`` (JSON of the chosen point) and ``n_points`` (grid points trained); the
    record's ``split`` is the split the scores come from (``test``). ``train_flops``
    counts the kept run only.
    """
    import json

    from .training import DataConfig, make_splits

    data_seed = config["seed"] if config["data_seed"] is None else config["data_seed"]
    data = DataConfig(N=config["N"], M=config["M"], K=config["K"], n_train=config["n_train"], n_val=config["n_val"],
                      n_test=config["n_test"], kind=config["dictionary"], seed=data_seed)
    splits = make_splits(data)
    result, point, n_points = _select(config, splits, config["method"], _selection_axes(config))
    if config["refit_steps"] > 0:
        result = _train_one(config, splits, config["method"], point, steps=config["refit_steps"], patience=None)
    out = {name: value for name, value in result.to_dict().items()
           if name not in config and name not in ("version", "hparams")}
    out["split"] = out.pop("metrics_split", "test")
    out["selected"] = json.dumps(point, sort_keys=True, default=list)
    out["n_points"] = n_points
    return out


def _check_training(config: dict) -> dict:
    import json

    from .training import METHODS, _parse_method

    config = _resolve_ratios(config)
    base, _ = _parse_method(config["method"])
    if config["setting"] not in METHODS[base]:
        raise ValueError(f"method={config['method']!r} does not run in setting={config['setting']!r}; "
                         f"it runs in {list(METHODS[base])}.")
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
    from ._device import default_device

    return str(default_device())


TASK_KINDS: dict[str, TaskKind] = {
    "recovery": TaskKind("recovery", _RECOVERY_DEFAULTS, run_recovery,
                         "basis pursuit / LASSO / OMP recovery of K-sparse codes from M measurements"),
    "gap": TaskKind("gap", _GAP_DEFAULTS, run_gap,
                    "exact best ReLU encoder (LP), the T2 lower bound and per-sample inference on one dictionary"),
    "training": TaskKind("training", _TRAINING_DEFAULTS, run_training,
                         "one method trained in one of the paper's three settings"),
}

#: Per-kind config checks applied at expansion time (so bad grids fail before running).
_CHECKS: dict[str, Callable[[dict], dict]] = {"recovery": _check_recovery, "gap": _check_gap,
                                               "training": _check_training}


# ---------------------------------------------------------------------------------------
# Sweeps and tasks.
# ---------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Task:
    """One unit of work: a fully resolved config and its key."""

    key: str
    sweep: str
    config: dict = field(repr=False)


@dataclass(frozen=True)
class Sweep:
    """A named grid of tasks of one kind.

    Attributes
    ----------
    name : str
        Recorded in every record (``record["sweep"]``).
    kind : str
        One of :data:`TASK_KINDS`.
    fixed : dict
        Parameters shared by every task.
    grid : dict
        Parameter name -> tuple of values; tasks are their Cartesian product.
    cases : tuple of dict
        Partial configs (TOML ``[[case]]`` tables); the grid is expanded once per case,
        the case's values over ``fixed``. Lets one sweep hold the paper's (setting,
        method) pairs without the invalid combinations of a product.
    """

    name: str
    kind: str
    fixed: dict = field(default_factory=dict)
    grid: dict = field(default_factory=dict)
    cases: tuple = ()

    def __post_init__(self):
        if not isinstance(self.name, str) or not self.name:
            raise ValueError(f"sweep name must be a non-empty string; got {self.name!r}.")
        check_choice(self.kind, "kind", TASK_KINDS)
        allowed = set(TASK_KINDS[self.kind].defaults) | {"M_over_N", "K_over_M"}
        object.__setattr__(self, "cases", tuple(dict(case) for case in self.cases))
        sections = [("fixed", self.fixed), ("grid", self.grid)] + [(f"case[{i}]", c) for i, c in enumerate(self.cases)]
        for section, params in sections:
            unknown = sorted(set(params) - allowed)
            if unknown:
                raise ValueError(
                    f"[{section}] has parameters {unknown} that kind={self.kind!r} does not take; "
                    f"choose from {sorted(allowed)}."
                )
        for name, values in self.grid.items():
            if not isinstance(values, (list, tuple)) or len(values) == 0:
                raise ValueError(f"grid.{name} must be a non-empty list; got {values!r}. Put single values in [fixed].")
        both = sorted((set(self.fixed) | {n for case in self.cases for n in case}) & set(self.grid))
        if both:
            raise ValueError(f"{both} appear in both [fixed] and [grid]; keep each parameter in one.")

    @classmethod
    def from_dict(cls, data: dict) -> "Sweep":
        """Build from the parsed TOML document (keys ``name``, ``kind``, ``fixed``, ``grid``)."""
        unknown = sorted(set(data) - {"name", "kind", "fixed", "grid", "case", "description"})
        if unknown:
            raise ValueError(f"sweep file has unknown top-level keys {unknown}; use name, kind, description, [fixed], "
                             "[grid], [[case]].")
        for name in ("name", "kind"):
            if name not in data:
                raise ValueError(f"sweep file needs a top-level {name!r}.")
        grid = {name: tuple(values) if isinstance(values, list) else values for name, values in data.get("grid", {}).items()}
        cases = data.get("case", [])
        if not isinstance(cases, list) or not all(isinstance(case, dict) for case in cases):
            raise ValueError("[[case]] must be an array of tables, e.g. [[case]] setting = \"unknown\" method = \"sae\".")
        return cls(name=data["name"], kind=data["kind"], fixed=dict(data.get("fixed", {})), grid=grid,
                   cases=tuple(cases))

    def tasks(self) -> list[Task]:
        """Expand the grid into tasks, in grid order, dropping duplicate keys.

        Every value is checked against its parameter's type before anything runs; a bad
        one raises ValueError or TypeError naming ``fixed.NAME`` or ``grid.NAME``.
        """
        kind = TASK_KINDS[self.kind]
        sections = [("fixed", self.fixed), ("grid", self.grid)] + [(f"case[{i}]", c) for i, c in enumerate(self.cases)]
        for section, params in sections:
            for name, values in params.items():
                for value in (values if section == "grid" else (values,)):
                    _check_value(self.kind, f"{section}.{name}", name, value)
        names = list(self.grid)
        seen, tasks = set(), []
        for case, values in itertools.product(self.cases or ({},), itertools.product(*(self.grid[n] for n in names))):
            config = {**kind.defaults, **self.fixed, **case, **dict(zip(names, values))}
            config = _CHECKS.get(self.kind, dict)(config)
            config = {"kind": self.kind, **config}
            # The sweep name is part of the key: the same grid under two names is two sets of tasks.
            key = task_key({**config, "sweep": self.name})
            if key not in seen:  # two ratios can round to the same integers
                seen.add(key)
                tasks.append(Task(key=key, sweep=self.name, config=config))
        return tasks


#: Parameters that are not of their default's type, with the values they take.
_NULLABLE = {"M", "K", "data_seed"}
_RATIOS = ("M_over_N", "K_over_M")


def _check_value(kind: str, where: str, name: str, value) -> None:
    """Check one parameter value of a task kind against the type of its default."""
    from .instances import DICTIONARY_KINDS

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
    if kind == "training" and name == "method":
        from .training import _parse_method

        try:
            _parse_method(value)
        except ValueError as err:
            raise ValueError(f"{where}: {err}") from None
    if kind == "gap" and name == "method":
        check_choice(value, where, ("highs", "cvxpy"))
    if name in ("lr", "sae_lr", "alpha") and not value > 0:
        raise ValueError(f"{where}={value} must be > 0.")
    if kind == "training" and name == "setting":
        check_choice(value, where, ("known_dictionary", "known_codes", "unknown"))


def load_sweep(path) -> Sweep:
    """Read a sweep TOML file (see the module docstring for the format)."""
    try:
        with open(path, "rb") as handle:
            data = tomllib.load(handle)
    except FileNotFoundError:
        raise ValueError(f"sweep file {str(path)!r} does not exist.") from None
    except tomllib.TOMLDecodeError as err:
        raise ValueError(f"sweep file {str(path)!r} is not valid TOML: {err}") from None
    return Sweep.from_dict(data)


# ---------------------------------------------------------------------------------------
# Running one task (in a worker) and a whole sweep (in the parent).
# ---------------------------------------------------------------------------------------


def _record_base(task: Task) -> dict:
    """The provenance and config fields every record of ``task`` carries, ok or failed."""
    return {**{name: value for name, value in task.config.items() if name != "kind"},
            "key": task.key, "sweep": task.sweep, "kind": task.config["kind"], "version": __version__,
            "seed": task.config.get("seed"), "device": "cpu", "split": "test", "host": socket.gethostname()}


def execute_task(task: Task) -> dict:
    """Run one task and return its record; never raises for errors inside the task.

    Runs in a worker process (or a Dask worker); the parent writes the record.
    """
    config = task.config
    record = _record_base(task)
    start = time.perf_counter()
    try:
        with stdout_to_stderr():
            metrics = TASK_KINDS[config["kind"]].run(config)
        clash = sorted(set(metrics) & (set(config) - {"device", "split"}))
        if clash:
            raise RuntimeError(f"task metrics {clash} clash with config fields; rename them in the task kind.")
        record.update(_json_scalars(metrics))
        record.update(status=STATUS_OK, metrics=",".join(name for name in metrics if name not in ("device", "split")))
    except Exception as err:  # noqa: BLE001 - the failure is data: stored with its traceback
        record.update(status=STATUS_FAILED, error=f"{type(err).__name__}: {err}", traceback=traceback.format_exc())
    record["wall_time_s"] = time.perf_counter() - start
    return record


def _json_scalars(metrics: dict) -> dict:
    """Convert numpy scalars to Python ones and non-finite floats to None."""
    out = {}
    for name, value in metrics.items():
        if isinstance(value, np.generic):
            value = value.item()
        if isinstance(value, float) and not math.isfinite(value):
            value = None
        out[name] = value
    return out


@dataclass(frozen=True)
class SweepSummary:
    """What :func:`run_sweep` did."""

    sweep: str
    total: int          # tasks in the sweep
    skipped: int        # already finished in the store
    ok: int             # finished successfully in this run
    failed: int         # failed in this run (stored with their traceback)
    wall_time_s: float
    executor: str
    elsewhere: int = 0  # claimed by another live runner on the same store (not run here)

    def to_dict(self) -> dict:
        return dict(self.__dict__)


def _mp_context():
    # forkserver: workers fork from a clean server process (safe with torch threads in the
    # parent, unlike fork) without re-importing everything per worker (unlike spawn).
    if "forkserver" not in multiprocessing.get_all_start_methods():
        return multiprocessing.get_context("spawn")
    context = multiprocessing.get_context("forkserver")
    # The server imports the task code once; every worker forks from it ready to run.
    context.set_forkserver_preload(["gaptheory.experiments", "gaptheory.solvers", "gaptheory.instances", "gaptheory.bounds"])
    return context


def _worker_init() -> None:
    """Worker initialiser: one torch thread per process (W workers use W cores, not W^2),
    and Ctrl-C left to the parent, which stops the workers itself."""
    import torch

    signal.signal(signal.SIGINT, signal.SIG_IGN)
    torch.set_num_threads(1)


#: Attempts of a task whose worker process died (killed, out of memory) before it is
#: stored as failed; a pool that breaks takes every task in flight with it, so each of
#: those gets a fresh attempt on a new pool.
MAX_ATTEMPTS = 3


def _start_pool(workers: int) -> concurrent.futures.ProcessPoolExecutor:
    context = _mp_context()
    if context.get_start_method() == "forkserver" and threading.current_thread() is threading.main_thread():
        from multiprocessing import forkserver

        # The fork server (and every worker forked from it) inherits SIGINT ignored, so a
        # Ctrl-C while it imports torch reaches only this process, not a worker's traceback.
        previous = signal.signal(signal.SIGINT, signal.SIG_IGN)
        try:
            forkserver.ensure_running()
        finally:
            signal.signal(signal.SIGINT, previous)
    return concurrent.futures.ProcessPoolExecutor(max_workers=workers, mp_context=context, initializer=_worker_init)


def _stop_pool(pool: concurrent.futures.ProcessPoolExecutor) -> None:
    """Kill the workers now (they ignore SIGINT, and a running task is not interruptible)."""
    # ProcessPoolExecutor has no public way to stop running workers before Python 3.14.
    for process in list((getattr(pool, "_processes", None) or {}).values()):
        with contextlib.suppress(Exception):
            process.kill()
    pool.shutdown(wait=False, cancel_futures=True)


def _local_results(tasks, workers):
    """Yield records as tasks finish on ``workers`` local processes (in-process for 1).

    Tasks are pulled from the iterable ``tasks`` only when a worker is free (so a claim is
    taken just before its task runs). A dead worker breaks the pool: the pool is rebuilt
    and the tasks in flight are retried, up to :data:`MAX_ATTEMPTS` times each.
    """
    tasks = iter(tasks)
    if workers == 1:
        for task in tasks:
            yield execute_task(task)
        return
    attempts: dict[str, int] = {}
    retry: collections.deque = collections.deque()
    while True:
        pool, futures, broken = _start_pool(workers), {}, False
        try:
            while not broken:
                while len(futures) < workers:
                    task = retry.popleft() if retry else next(tasks, None)
                    if task is None:
                        break
                    futures[pool.submit(execute_task, task)] = task
                if not futures:
                    pool.shutdown(wait=True)
                    return
                done, _ = concurrent.futures.wait(futures, return_when=concurrent.futures.FIRST_COMPLETED)
                for future in done:
                    task = futures.pop(future)
                    try:
                        yield future.result()
                    except concurrent.futures.process.BrokenProcessPool as err:
                        broken = True
                        attempts[task.key] = attempts.get(task.key, 0) + 1
                        if attempts[task.key] >= MAX_ATTEMPTS:
                            yield _failure(task, err)
                        else:
                            retry.append(task)
            # Every other task in flight died with the pool: retry it on the next one.
            retry.extend(futures.values())
            for task in futures.values():
                attempts[task.key] = attempts.get(task.key, 0) + 1
        except BaseException:
            _stop_pool(pool)
            raise
        _stop_pool(pool)


def _dask_results(tasks, *, scheduler, dask_local, dask_processes):
    """Yield records as tasks finish on a Dask cluster (existing, or a LocalCluster)."""
    from distributed import Client, LocalCluster, as_completed

    cluster = None
    if scheduler is None:
        # Loopback only: processes talk over tcp://127.0.0.1; threads use the in-process transport.
        where = {"host": "127.0.0.1"} if dask_processes else {}
        cluster = LocalCluster(n_workers=dask_local, threads_per_worker=1, processes=dask_processes,
                               dashboard_address=None, **where)
    client = Client(cluster if cluster is not None else scheduler)
    try:
        if cluster is not None and dask_processes:
            client.run(_worker_init)  # our own worker processes only; a shared cluster is left as configured
        futures = {client.submit(execute_task, task, key=f"gaptheory-{task.key}", pure=False): task for task in tasks}
        for future in as_completed(list(futures)):
            yield _result_or_failure(future, futures[future])
    finally:
        client.close()
        if cluster is not None:
            cluster.close()


def _result_or_failure(future, task: Task) -> dict:
    """The record a finished future holds, or a failed record if the worker itself died."""
    try:
        return future.result()
    except Exception as err:  # noqa: BLE001 - e.g. KilledWorker after Dask's own retries
        return _failure(task, err)


def _failure(task: Task, err: BaseException) -> dict:
    return {**_record_base(task), "status": STATUS_FAILED, "error": f"{type(err).__name__}: {err}",
            "traceback": "".join(traceback.format_exception(err)), "wall_time_s": None}


class _Heartbeat:
    """Renew this runner's claims every ``LEASE_S / 4`` seconds from a thread of its own."""

    def __init__(self, path, owner: str):
        self._path, self._owner, self._stop = path, owner, threading.Event()
        self._thread = threading.Thread(target=self._beat, name="gaptheory-heartbeat", daemon=True)

    def _beat(self) -> None:
        with ResultStore(self._path) as store:  # SQLite connections belong to one thread
            while not self._stop.wait(LEASE_S / 4):
                with contextlib.suppress(OSError):  # a transient lock; the next beat retries
                    store.renew(self._owner)

    def __enter__(self):
        self._thread.start()
        return self

    def __exit__(self, *exc) -> None:
        self._stop.set()
        self._thread.join()


def _claimed(store: ResultStore, tasks, owner: str, elsewhere: list):
    """Yield the tasks this runner claims, one claim per task as a worker asks for it."""
    for task in tasks:
        if store.claim([task.key], owner):
            yield task
        elif not store.has(task.key):
            elsewhere.append(task.key)


def run_sweep(
    sweep: Sweep,
    store: ResultStore,
    *,
    workers: int = 1,
    scheduler: str | None = None,
    dask_local: int | None = None,
    dask_processes: bool = True,
    retry_failed: bool = True,
    progress: bool = False,
) -> SweepSummary:
    """Run the unfinished tasks of ``sweep`` and store each record as it completes.

    Parameters
    ----------
    sweep : Sweep
    store : ResultStore
        Only this (parent) process writes to it, one transaction per record.
    workers : int
        Local worker processes (1: run in this process). Ignored with Dask.
    scheduler : str, optional
        Address of a running Dask scheduler, e.g. ``"tcp://10.0.0.1:8786"``.
    dask_local : int, optional
        Start a ``distributed.LocalCluster`` with this many single-threaded workers.
    dask_processes : bool
        LocalCluster workers as processes (True) or threads in this process.
    retry_failed : bool
        Re-run tasks whose stored record failed (default); False skips them too.
    progress : bool
        Show a tqdm bar with counts and ETA on stderr.

    Returns
    -------
    SweepSummary
    """
    workers = check_int(workers, "workers", minimum=1)
    if scheduler is not None and dask_local is not None:
        raise ValueError("give either scheduler (an existing Dask cluster) or dask_local (start one), not both.")
    if dask_local is not None:
        check_int(dask_local, "dask_local", minimum=1)
    from tqdm.auto import tqdm

    start = time.perf_counter()
    tasks = sweep.tasks()
    done = store.keys(status=STATUS_OK) | (set() if retry_failed else store.keys(status=STATUS_FAILED))
    pending = [task for task in tasks if task.key not in done]
    if not pending:
        executor = "none"
    elif scheduler is not None or dask_local is not None:
        executor = f"dask:{scheduler}" if scheduler is not None else f"dask-local:{dask_local}"
    else:
        executor = f"local:{workers}"
    ok = failed = 0
    owner, elsewhere = ResultStore.new_owner(), []
    source = _claimed(store, pending, owner, elsewhere)
    if pending and executor.startswith("dask"):
        source = list(source)  # Dask schedules everything it is given at once
    results = iter(()) if not pending else (
        _dask_results(source, scheduler=scheduler, dask_local=dask_local, dask_processes=dask_processes)
        if executor.startswith("dask") else _local_results(source, workers))
    try:
        with _Heartbeat(store.path, owner), tqdm(total=len(pending), desc=sweep.name, unit="task", file=sys.stderr,
                                                 disable=not progress) as bar:
            for record in results:
                store.put(record)
                if record["status"] == STATUS_OK:
                    ok += 1
                else:
                    failed += 1
                bar.set_postfix(failed=failed, refresh=False)
                bar.update(1)
    finally:
        results.close() if hasattr(results, "close") else None
        with contextlib.suppress(OSError):  # a rerun may take over at once (else the leases expire)
            store.release(owner)
    return SweepSummary(sweep=sweep.name, total=len(tasks), skipped=len(tasks) - len(pending), ok=ok,
                        failed=failed, wall_time_s=time.perf_counter() - start, executor=executor,
                        elsewhere=len(elsewhere))
