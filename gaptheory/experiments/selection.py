"""Validation selection: a hyperparameter grid per method, the best point kept on validation MCC.

Each point of a grid is trained on the training split and scored on the validation split;
:func:`select_on_validation` keeps the best, and only then is its test score read. The grids
of the paper-size table are :data:`PAPER_GRIDS` (``select = "paper"`` in a training sweep).
"""

from __future__ import annotations

import itertools
import json
import math

from ..training import TrainConfig
from .methods import parse_method
from .settings import RunResult, Splits, run_setting

#: Adam learning rates tried for every amortised encoder in the paper-size comparison.
LR_GRID = (1e-3, 3e-3, 1e-2, 3e-2, 1e-1)
#: Sparsity weights tried: ReLU SAE L1, MLP L1, JumpReLU L0 (TopK's K is the task's).
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


def selection_axes(config: dict):
    """The grid ``config["select"]`` of a training task asks for: None (no selection), a dict
    of axes, or a (sae method, sparse-coding method) pair for ``sae_ito``."""
    select = config["select"]
    if select == "none":
        return None
    if select == "paper":
        base, _ = parse_method(config["method"])
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


def train_at_point(config: dict, splits: Splits, method: str, point: dict, *, steps: int | None = None,
                   patience="config") -> RunResult:
    """Train ``method`` of training task ``config`` at grid ``point`` (``lr`` and model options) on ``splits``."""
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


def select_point(config: dict, splits: Splits, method: str, axes) -> tuple[RunResult, dict, int]:
    """Train every point of ``axes`` (:func:`selection_axes`) and return the run with the best
    validation MCC, its point and the number of points trained."""
    if isinstance(axes, tuple):  # sae_ito: the SAE's chosen point refined with sparse coding's chosen alpha
        sae_axes, sc_axes = (PAPER_GRIDS[config["setting"]][name] for name in axes)
        _, sae_point, n_sae = select_point(config, splits, axes[0], sae_axes)
        _, sc_point, n_sc = select_point(config, splits, axes[1], sc_axes)
        point = {**sae_point, "ito_alpha": sc_point["alpha"]}
        return train_at_point(config, splits, method, point), point, n_sae + n_sc + 1
    points = grid_points(axes) if axes else [{}]
    results = [train_at_point(config, splits, method, point) for point in points]
    best = select_on_validation(results)
    return results[best], points[best], len(points)
