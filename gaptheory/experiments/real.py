r"""The ``activations`` task kind: one encoder trained on real transformer activations and scored.

A task extracts (once, then from its cache) the activations of one hook point of a model over
a corpus, split over whole documents into training and held-out text
(:func:`gaptheory.activations.extract_split`), trains one method on the training rows, and
scores it on held-out tokens. Every method of a sweep gets the same FLOP budget, that of
``steps`` ReLU-SAE steps at ``batch_size`` (:mod:`gaptheory.flops`; sparse coding's
data-dependent step cost is measured by a short pilot), the same scaled rows
(:math:`E\|x\|^2 = 1` on the training rows), batch size and learning rate.

With a ``sparsity_grid`` the method trains at each value of its sparsity knob
(:attr:`~gaptheory.experiments.methods.Method.sparsity`) and keeps the point whose L0 on the
validation rows (the last ``n_val`` training rows, never trained on) is closest to ``target_l0``
(:func:`gaptheory.interpret.select_closest_l0`); only that model is scored on held-out tokens,
as Gao et al. (2024) compare SAEs at matched L0.

Metrics: explained variance, L0 and dead latents on held-out tokens, training and inference
FLOPs, the judge-free detection scores of :func:`gaptheory.interpret.detection_scores` with their
shuffled-codes chance level, the per-latent F1 (JSON, for comparisons between methods:
:func:`gaptheory.interpret.compare_scores`), and for SAEs the largest code difference after a
round trip through the SAELens file layout.

References
----------
.. [1] Gao et al. (2024), "Scaling and evaluating sparse autoencoders", arXiv 2406.04093.
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass
from pathlib import Path

from .._validation import check_choice, check_int, parameter_defaults
from .methods import METHODS, check_method_in_setting
from .store import task_key


@dataclass(frozen=True)
class ActivationsTaskConfig:
    r"""An ``activations`` task's own parameters and their defaults: budgets, encoder, training, scoring.

    The remaining parameters, those of the extraction (``model``, ``corpus``, ``layer``,
    ``site``, ``context_length``, ``held_out_fraction`` and ``data_seed``), default to
    :func:`gaptheory.activations.extract_split`'s (:func:`real_defaults`).

    Attributes
    ----------
    train_tokens : int
        Token budget of the training split (tokens).
    test_tokens : int
        Token budget of the held-out split (tokens).
    cache : str
        Folder of the extracted activations, one entry per (model, corpus, hook, budgets, split).
    method : str
        The encoder: ``sae``, ``sae_topk``, ``sae_jumprelu``, ``mlp``, ``sae_ito`` or ``sparse_coding``.
    expansion : int
        Latents per input dimension, N / M.
    l1_coefficient : float
        ReLU SAE, MLP, SAE + ITO: weight of the mean :math:`\|z\|_1` in the loss (rows scaled to
        :math:`E\|x\|^2 = 1`).
    l0_coefficient : float
        JumpReLU SAE: weight of its L0 penalty.
    K : int
        TopK SAE: active latents per row.
    mlp_hidden : int
        MLP: hidden width (units).
    mlp_fit_output : bool
        MLP: start its output layer at the SAE's start (a ridge fit to :math:`X W_{dec}^T`).
    mlp_init_rows : int or None
        MLP: training rows of its data initialisation (None: all), paid from the budget.
    steps : int
        ReLU-SAE steps whose FLOPs are every method's training budget.
    batch_size : int
        Rows per training step.
    lr : float
        Adam learning rate.
    fista_max_iter : int
        SAE + ITO, sparse coding: FISTA iteration cap per row at inference.
    fista_tol : float
        SAE + ITO, sparse coding: FISTA relative duality-gap tolerance at inference.
    fit_max_iter : int
        Sparse coding: FISTA iteration cap of the inner solves during training.
    sparsity_grid : str
        JSON list of values of the method's sparsity knob; ``[]`` trains once at the default.
    target_l0 : float
        With a grid: keep the point whose validation L0 (nonzeros per row) is closest to this.
    n_val : int
        Last training rows held out for selection and early stopping (tokens).
    n_score_train : int
        Training tokens encoded to choose each latent's associated tokens.
    n_score_test : int
        Held-out tokens encoded for every reported metric.
    n_examples : int
        Example latents (highest held-out F1) recorded with their contexts.
    device : str
        ``cpu`` or ``cuda``: extraction and training.
    seed : int
        Seed of the model initialisation and the batch order.
    """

    train_tokens: int = 40000
    test_tokens: int = 12000
    cache: str = "~/.cache/gaptheory/activations"
    method: str = "sae"
    expansion: int = 2
    l1_coefficient: float = 0.1
    l0_coefficient: float = 0.03
    K: int = 32
    mlp_hidden: int = 1024
    mlp_fit_output: bool = False
    mlp_init_rows: int | None = None
    steps: int = 400
    batch_size: int = 256
    lr: float = 1e-3
    fista_max_iter: int = 100
    fista_tol: float = 1e-3
    fit_max_iter: int = 30
    sparsity_grid: str = "[]"
    target_l0: float = 32.0
    n_val: int = 1000
    n_score_train: int = 6000
    n_score_test: int = 3000
    n_examples: int = 3
    device: str = "cpu"
    seed: int = 0


def real_defaults() -> dict:
    """Parameters of an ``activations`` task: the extraction (:func:`gaptheory.activations.extract_split`'s
    defaults) and the task's own (:class:`ActivationsTaskConfig`'s fields)."""
    from ..activations import extract_split

    extraction = parameter_defaults(extract_split)
    return {
        **{name: extraction[name] for name in ("model", "corpus", "layer", "site", "context_length",
                                               "held_out_fraction")},
        "data_seed": extraction["split_seed"],
        **parameter_defaults(ActivationsTaskConfig),
    }


#: The fields that decide which activations a task reads (its cache entry).
EXTRACTION_FIELDS = ("model", "corpus", "layer", "site", "train_tokens", "test_tokens", "context_length",
                     "held_out_fraction", "data_seed")

#: Steps of the throwaway pilot run that measures a sparse-coding step's FLOPs (its inner
#: FISTA cost depends on the data, so the budget cannot be matched analytically).
PILOT_STEPS = 2

#: Held-out rows whose codes are compared after the SAELens round trip.
ROUND_TRIP_ROWS = 256


def check_real(config: dict) -> dict:
    """Check an ``activations`` task config (before anything runs); returns it."""
    base, _ = check_method_in_setting(config["method"], "unknown")  # the dictionary is learned from X
    if METHODS[base].sparsity is None:
        raise ValueError(f"method={config['method']!r} has no sparsity knob to set on activations; choose one of "
                         f"{[name for name, m in METHODS.items() if m.sparsity and 'unknown' in m.settings]}.")
    for name in ("layer", "n_examples"):
        check_int(config[name], name, minimum=0)
    for name in ("train_tokens", "test_tokens", "context_length", "expansion", "K", "mlp_hidden", "steps",
                 "batch_size", "fista_max_iter", "fit_max_iter", "n_val", "n_score_train", "n_score_test"):
        check_int(config[name], name, minimum=1)
    if config["mlp_init_rows"] is not None:
        check_int(config["mlp_init_rows"], "mlp_init_rows", minimum=1)
    from ..activations import SITES  # loaded already: the defaults come from its extract_split

    check_choice(config["site"], "site", SITES)
    check_choice(config["device"], "device", ("cpu", "cuda"))
    if not 0 < config["held_out_fraction"] < 1:
        raise ValueError(f"held_out_fraction={config['held_out_fraction']} must lie in (0, 1).")
    for name in ("l1_coefficient", "l0_coefficient", "lr", "fista_tol", "target_l0"):
        if not config[name] > 0:
            raise ValueError(f"{name}={config[name]} must be > 0.")
    sparsity_grid(config)
    return config


def sparsity_grid(config: dict) -> tuple:
    """The knob values a task trains at: ``sparsity_grid``, or the method's single default value."""
    base = check_method_in_setting(config["method"], "unknown")[0]
    knob = METHODS[base].sparsity
    try:
        values = json.loads(config["sparsity_grid"])
        if not isinstance(values, list) or not all(isinstance(v, (int, float)) and not isinstance(v, bool)
                                                   and v > 0 for v in values):
            raise ValueError
    except (TypeError, ValueError):
        raise ValueError(f"sparsity_grid={config['sparsity_grid']!r} must be a JSON list of numbers > 0, "
                         "e.g. '[0.05, 0.1, 0.2]'.") from None
    if len(set(values)) != len(values):
        raise ValueError(f"sparsity_grid={values} repeats a value; each point trains a model, so list each once.")
    if knob == "K":
        if not all(float(v).is_integer() for v in values):
            raise ValueError(f"sparsity_grid={values} must hold integers: it sets the K of {config['method']}.")
        return tuple(int(v) for v in values) or (config["K"],)
    default = config["l1_coefficient"] / 2 if knob == "alpha" else config[knob]
    return tuple(float(v) for v in values) or (default,)


def method_options(config: dict, value) -> dict:
    """Config overrides of the task's method with its sparsity knob at ``value``.

    The per-sample weight alpha of SAE + ITO is the SAE's l1 / 2, so the per-sample objective
    :math:`\\tfrac12\\|x - zD\\|^2 + \\alpha\\|z\\|_1` is the SAE loss halved.
    """
    method = config["method"]
    if method == "sae_ito":
        return {"l1_coefficient": value, "ito_alpha": value / 2, "ito_tol": config["fista_tol"],
                "ito_max_iter": config["fista_max_iter"]}
    if method == "sparse_coding":
        return {"alpha": value, "tol": config["fista_tol"], "max_iter": config["fista_max_iter"],
                "fit_max_iter": config["fit_max_iter"]}
    if method.startswith("mlp"):
        return {"l1_coefficient": value, "hidden": (config["mlp_hidden"],),
                "fit_output_to_decoder": config["mlp_fit_output"], "init_rows": config["mlp_init_rows"]}
    return {METHODS[method].sparsity: value}


def cached_activations(config: dict) -> dict:
    """Paths of the task's training and held-out activation files, extracted on first use.

    The cache entry is named by the key of the extraction fields, so every task of a sweep that
    reads the same activations shares one pair of files; a file is written atomically, so two
    workers extracting it at once leave one complete file.
    """
    from ..activations import extract_split

    spec = {name: config[name] for name in EXTRACTION_FIELDS}
    folder = Path(os.path.expanduser(config["cache"])) / task_key(spec)
    folder.mkdir(parents=True, exist_ok=True)
    paths = {}
    for split, tokens in (("train", config["train_tokens"]), ("test", config["test_tokens"])):
        paths[split] = folder / f"{split}.safetensors"
        if not paths[split].exists():
            extract_split(paths[split], model=config["model"], corpus=config["corpus"], split=split,
                          held_out_fraction=config["held_out_fraction"], split_seed=config["data_seed"],
                          layer=config["layer"], site=config["site"], max_tokens=tokens,
                          context_length=config["context_length"], device=config["device"])
    return paths


def _rows(config: dict, train, test) -> dict:
    """The scaled training, validation, scoring and held-out rows (float64) and the scale."""
    import numpy as np

    if train.X.shape[1] != test.X.shape[1]:
        raise ValueError(f"train ({train.X.shape[1]}) and test ({test.X.shape[1]}) activations have different "
                         "widths; extract both with the same model and hook.")
    T, n_val = train.X.shape[0], config["n_val"]
    if T <= n_val + config["batch_size"]:
        raise ValueError(f"the training split has {T} tokens, too few for n_val={n_val} plus one batch of "
                         f"{config['batch_size']}; raise train_tokens or lower n_val.")
    fit = train.X[: T - n_val].astype(np.float64)
    scale = float(np.sqrt((fit ** 2).sum(1).mean()))
    n_score, n_test = min(config["n_score_train"], T - n_val), min(config["n_score_test"], test.X.shape[0])
    return {"fit": fit / scale, "val": train.X[T - n_val:].astype(np.float64) / scale, "scale": scale,
            "score": fit[:n_score] / scale, "score_ids": train.token_ids[:n_score],
            "test": test.X[:n_test].astype(np.float64) / scale, "test_ids": test.token_ids[:n_test],
            "test_windows": test.window_ids[:n_test]}


def budgeted_steps(model, budget: int, config: dict, X) -> int:
    """Steps of ``model`` that fit in ``budget`` FLOPs once its data initialisation is paid
    (a short pilot for data-dependent costs)."""
    import copy

    from ..encoders import SparseCoding
    from ..training import TrainConfig, train

    batch = config["batch_size"]
    if isinstance(model, SparseCoding):
        pilot = copy.deepcopy(model)
        history = train(pilot, X, TrainConfig(steps=PILOT_STEPS, batch_size=batch, lr=config["lr"],
                                              seed=config["seed"], progress=False), device=config["device"])
        per_step = history.flops.total / PILOT_STEPS
    else:
        per_step = model.flops(batch, stage="train").total
    left = budget - model.flops(len(X), stage="init").total
    if left < per_step:
        raise ValueError(f"{type(model).__name__} spends {budget - left:.3g} FLOPs initialising on {len(X)} rows, "
                         f"leaving less than one step of the {budget:.3g}-FLOP budget; raise steps or train on fewer rows.")
    return int(left // per_step)


def _round_trip(model, X) -> float:
    """Largest code difference after saving ``model`` in the SAELens layout and loading it back."""
    import tempfile

    import numpy as np

    from ..encoders import Encoder

    with tempfile.TemporaryDirectory() as folder:
        model.save(folder)
        loaded = Encoder.load(folder, device="cpu")
        return float(np.abs(loaded.encode(X) - model.to("cpu").encode(X)).max())


def run_real(config: dict) -> dict:
    """Train the task's method on real activations within the budget, select on validation L0, score held-out."""
    import numpy as np

    from ..activations import load_activations
    from ..encoders import SparseAutoencoder
    from ..interpret import detection_scores, example_latents, select_closest_l0, shuffled_baseline, token_strings
    from ..metrics import dead_latents, explained_variance, mean_l0
    from ..training import TrainConfig, train
    from .settings import build_model

    paths = cached_activations(config)
    train_acts, test_acts = load_activations(paths["train"]), load_activations(paths["test"])
    rows = _rows(config, train_acts, test_acts)
    M = rows["fit"].shape[1]
    N, K, seed = config["expansion"] * M, config["K"], config["seed"]
    reference = build_model("sae", N, M, K, hparams={"l1_coefficient": config["l1_coefficient"]}, seed=seed)
    budget = reference.flops(config["batch_size"], stage="train").total * config["steps"]

    points = []
    for value in sparsity_grid(config):
        model = build_model(config["method"], N, M, K, hparams=method_options(config, value), seed=seed)
        steps = budgeted_steps(model, budget, config, rows["fit"])
        history = train(model, rows["fit"], TrainConfig(steps=steps, batch_size=config["batch_size"], lr=config["lr"],
                                                        eval_every=max(1, steps // 10), seed=seed, progress=False),
                        X_val=rows["val"], device=config["device"])
        Z_val = model.encode(rows["val"])
        points.append({"value": value, "model": model, "history": history, "val_l0": mean_l0(Z_val),
                       "val_explained_variance": explained_variance(rows["val"], model.decode(Z_val)),
                       "val_dead_latents": dead_latents(Z_val)})
    chosen = points[select_closest_l0([p["val_l0"] for p in points], config["target_l0"])]

    model, history = chosen["model"], chosen["history"]
    Z_test, inference = model.encode_with_flops(rows["test"])
    Z_score = model.encode(rows["score"])
    scores = detection_scores(Z_score, rows["score_ids"], Z_test, rows["test_ids"])
    chance = shuffled_baseline(Z_score, rows["score_ids"], Z_test, rows["test_ids"], seed=seed)
    knob = METHODS[check_method_in_setting(config["method"], "unknown")[0]].sparsity
    return {
        "N": N, "M": M, "knob": knob, "selected": chosen["value"], "n_points": len(points),
        "steps_run": history.steps_run, "budget_flops": int(budget), "train_flops": int(history.flops.total),
        "train_seconds": history.seconds, "inference_flops_per_token": inference.total / len(rows["test"]),
        "explained_variance": explained_variance(rows["test"], model.decode(Z_test)), "mean_l0": mean_l0(Z_test),
        "dead_latents": dead_latents(np.vstack([Z_score, Z_test])),
        "val_l0": chosen["val_l0"], "val_explained_variance": chosen["val_explained_variance"],
        **scores.summary(), "chance_f1": float(np.median(chance.f1)) if chance.f1.size else None,
        "f1_per_latent": json.dumps([float(v) for v in scores.f1]),
        "example_latents": json.dumps(example_latents(
            scores, Z_test, rows["test_ids"], rows["test_windows"],
            {**token_strings(train_acts.metadata), **token_strings(test_acts.metadata)}, config["n_examples"])),
        "sweep_points": json.dumps([{name: p[name] for name in ("value", "val_l0", "val_explained_variance",
                                                                  "val_dead_latents")}
                                    | {"steps": p["history"].steps_run} for p in points]),
        "saelens_round_trip_max_abs_diff": (_round_trip(model, rows["test"][:ROUND_TRIP_ROWS])
                                            if isinstance(model, SparseAutoencoder) else None),
        "scale": rows["scale"], "n_test_tokens": len(rows["test"]), "hook_name": train_acts.metadata.get("hook_name"),
        "device": config["device"],
    }
