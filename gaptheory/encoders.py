r"""Encoders that map observations ``X (B, M)`` to codes ``Z (B, N)``, one interface for all.

Every encoder is a ``torch.nn.Module`` with SAELens weight names and layout,
``W_enc (M, N)``, ``b_enc (N,)``, ``W_dec (N, M)``, ``b_dec (M,)`` (an MLP has its own
hidden layers instead of ``W_enc``), and is used like this (scikit-learn estimators over them: :mod:`gaptheory.estimators`):

- ``Encoder(cfg, seed=0)`` builds it from a frozen config dataclass (``cfg.architecture``,
  ``cfg.to_dict()``, ``Config.from_dict(d)``);
- ``fit(X, ...)`` trains it with :func:`gaptheory.training.train` and returns ``self``;
- ``encode(X) -> Z`` and ``decode(Z) -> X_hat``; NumPy in gives NumPy (float64) out,
  a tensor in gives a tensor out;
- ``save(path)`` / ``load(path)`` use the SAELens files ``sae_weights.safetensors`` and
  ``cfg.json`` (with ``d_in = M``, ``d_sae = N`` and ``architecture``).

Decoder rows (atoms) are kept unit-norm after every update. What differs between
architectures is only the activation (``encode_with_hidden_pre``) and the auxiliary
sparsity loss (``aux_loss``); the loop is shared.

=====================  =============================================================
``SparseAutoencoder``  ``activation(X W_enc + b_enc)``: ``relu`` (+ L1), ``topk``,
                       ``jumprelu`` (+ L0 through a straight-through estimator)
``MLPEncoder``         ReLU MLP ``M -> h_1 -> ... -> N`` (the paper used 32, 256, 1024)
``SAEWithITO``         SAE codes refined per sample by FISTA on the learned decoder
                       (inference-time optimisation, warm-started from the SAE codes)
``SparseCoding``       no encoder: per-sample LASSO (FISTA) on a learned dictionary
=====================  =============================================================

References
----------
.. [1] O'Neill, Gumran & Klindt (2024), "Compute optimal inference and provable
   amortisation gap in sparse autoencoders", arXiv 2411.13117.
.. [2] Gao et al. (2024), "Scaling and evaluating sparse autoencoders", arXiv 2406.04093 (TopK).
.. [3] Rajamanoharan et al. (2024), "Jumping ahead: improving reconstruction fidelity with
   JumpReLU sparse autoencoders", arXiv 2407.14435 (JumpReLU, straight-through estimator).
.. [4] Olshausen & Field (1996), "Emergence of simple-cell receptive field properties by
   learning a sparse code for natural images", Nature 381 (sparse coding).
"""

from __future__ import annotations

import dataclasses
import importlib
import json
import math
import warnings
from dataclasses import dataclass
from pathlib import Path
from typing import ClassVar

import numpy as np
import torch
from torch import nn

from ._device import resolve_device
from ._validation import check_array, check_choice, check_dictionary, check_int, check_positive
from .flops import (
    RENORM_FLOPS_PER_ENTRY,
    SQUARED_ERROR_FLOPS,
    FlopCount,
    best_subset_flops,
    dictionary_step_flops,
    encoder_flops,
    fista_flops,
    matmul_flops,
    training_step_flops,
)
from .solvers import FISTA_TOL, ConvergenceWarning, best_subset, lasso

_INTEGER_DTYPES = (torch.int8, torch.int16, torch.int32, torch.int64, torch.uint8)

#: SAELens file names.
WEIGHTS_FILENAME, CONFIG_FILENAME = "sae_weights.safetensors", "cfg.json"

#: JumpReLU thresholds are clamped to at least this so the gate never opens at zero
#: pre-activation (a zero threshold would turn JumpReLU into a plain ReLU).
MIN_THRESHOLD = 1e-6

#: Rows of W_dec with a norm below this are re-drawn rather than normalised (dead atoms).
MIN_ATOM_NORM = 1e-12

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

#: Ridge of the least-squares fit of the MLP's output layer (``fit_output_to_decoder``),
#: relative to the mean diagonal of the hidden-feature Gram matrix: the hidden layer can be
#: wider than the number of training rows (1024 units, 1024 rows), so the plain normal
#: equations are singular; this keeps the fit unique and its weights of moderate size.
MLP_OUTPUT_RIDGE = 1e-3

#: Dictionary updates of :class:`SparseCoding`: the exact least-squares (MOD) solve on the
#: codes, or an Adam gradient step of the shared training loop.
DICTIONARY_UPDATES = ("least_squares", "gradient")

#: Per-sample inference of :class:`SparseCoding`: the LASSO by FISTA, or exact K-sparse
#: least squares by enumeration (:func:`gaptheory.solvers.best_subset`, small N only).
SPARSE_INFERENCE = ("lasso", "best_subset")

ACTIVATIONS = ("relu", "topk", "jumprelu")
#: SAELens architecture names of each SAE activation.
SAELENS_ARCHITECTURE = {"relu": "standard", "topk": "topk", "jumprelu": "jumprelu"}
#: The SAELens config format ``save`` writes (read as current by SAELens >= 6).
SAELENS_FORMAT_VERSION = "6.0.0"


# ---------------------------------------------------------------------------------------
# Configs
# ---------------------------------------------------------------------------------------


@dataclass(frozen=True)
class EncoderConfig:
    """Fields every encoder has; subclasses add their hyperparameters."""

    M: int  # input dimension (SAELens d_in)
    N: int  # number of latents (SAELens d_sae)

    def __post_init__(self):
        check_int(self.M, "M", minimum=1)
        check_int(self.N, "N", minimum=1)

    @property
    def architecture(self) -> str:
        """Architecture name written to ``cfg.json``."""
        return self._architecture

    def to_dict(self) -> dict:
        """Fields as JSON scalars plus ``architecture``."""
        out = {f.name: getattr(self, f.name) for f in dataclasses.fields(self)}
        out = {k: list(v) if isinstance(v, tuple) else v for k, v in out.items()}
        return {**out, "architecture": self.architecture}

    @classmethod
    def from_dict(cls, d: dict) -> "EncoderConfig":
        """Inverse of :meth:`to_dict`; ``architecture`` and unknown keys raise unless equal."""
        names = {f.name for f in dataclasses.fields(cls)}
        unknown = set(d) - names - {"architecture"}
        if unknown:
            raise ValueError(f"{cls.__name__}.from_dict got unknown keys {sorted(unknown)}; "
                             f"known: {sorted(names)}.")
        cfg = cls(**{k: tuple(v) if isinstance(v, list) else v for k, v in d.items() if k in names})
        if "architecture" in d and d["architecture"] != cfg.architecture:
            raise ValueError(f"architecture={d['architecture']!r} does not match {cls.__name__} "
                             f"({cfg.architecture!r}); use the matching config class.")
        return cfg


@dataclass(frozen=True)
class SAEConfig(EncoderConfig):
    """A one-layer sparse autoencoder ``Z = activation(X @ W_enc + b_enc)``."""

    activation: str = "relu"  # "relu" (L1 penalty), "topk" (keeps k largest) or "jumprelu" (L0 penalty)
    l1_coefficient: float = 0.03  # relu: weight of mean_b ||z_b||_1 in the loss
    k: int | None = None  # topk: active latents per row, 1 <= k <= N
    l0_coefficient: float = 0.03  # jumprelu: weight of the (straight-through) mean L0 in the loss
    jumprelu_threshold: float = 0.1  # jumprelu: initial threshold of every latent
    jumprelu_bandwidth: float = 0.05  # jumprelu: width of the rectangle kernel of the pseudo-gradient

    def __post_init__(self):
        super().__post_init__()
        check_choice(self.activation, "activation", ACTIVATIONS)
        check_positive(self.l1_coefficient, "l1_coefficient", allow_zero=True)
        check_positive(self.l0_coefficient, "l0_coefficient", allow_zero=True)
        check_positive(self.jumprelu_threshold, "jumprelu_threshold")
        check_positive(self.jumprelu_bandwidth, "jumprelu_bandwidth")
        if self.activation == "topk":
            if self.k is None:
                raise ValueError("activation='topk' needs k (active latents per row); pass e.g. k=3.")
            check_int(self.k, "k", minimum=1, maximum=self.N)
        elif self.k is not None:
            raise ValueError(f"k={self.k} only applies to activation='topk'; got activation="
                             f"{self.activation!r}. Drop k or set activation='topk'.")

    @property
    def architecture(self) -> str:
        return SAELENS_ARCHITECTURE[self.activation]


@dataclass(frozen=True)
class SAEITOConfig(SAEConfig):
    """An SAE whose codes are refined per sample by nonnegative LASSO (FISTA) at inference."""

    @property
    def architecture(self) -> str:
        return "sae_ito"  # not a SAELens architecture: SAELens would skip the refinement

    ito_alpha: float = 0.01  # l1 weight of the per-sample LASSO 0.5||x - z W_dec||^2 + alpha ||z||_1
    ito_tol: float = FISTA_TOL  # relative duality-gap tolerance of FISTA
    ito_max_iter: int = 5000  # FISTA iteration cap per row

    def __post_init__(self):
        super().__post_init__()
        check_positive(self.ito_alpha, "ito_alpha")
        check_positive(self.ito_tol, "ito_tol")
        check_int(self.ito_max_iter, "ito_max_iter", minimum=1)


@dataclass(frozen=True)
class MLPEncoderConfig(EncoderConfig):
    """A ReLU MLP encoder ``M -> hidden[0] -> ... -> N`` with a ReLU on the codes."""

    _architecture: ClassVar[str] = "mlp"
    hidden: tuple[int, ...] = (256,)  # hidden widths; the paper used (32,), (256,), (1024,)
    l1_coefficient: float = 0.03  # weight of mean_b ||z_b||_1 in the reconstruction loss
    center_output_bias: bool = True  # before training, set the output bias so every latent is active on half the rows
    fit_output_to_decoder: bool = False  # before training, fit the output layer by ridge least squares to X W_dec^T (the SAE's start)
    init_rows: int | None = None  # rows the data initialisation uses (a random subset drawn with the model's seed); None: all

    def __post_init__(self):
        super().__post_init__()
        if self.init_rows is not None:
            check_int(self.init_rows, "init_rows", minimum=1)
        if isinstance(self.hidden, (int, np.integer)) or not all(
            isinstance(h, (int, np.integer)) and h >= 1 for h in self.hidden
        ):
            raise ValueError(f"hidden must be a tuple of widths >= 1; got {self.hidden!r}. Pass e.g. (256,).")
        object.__setattr__(self, "hidden", tuple(int(h) for h in self.hidden))
        check_positive(self.l1_coefficient, "l1_coefficient", allow_zero=True)


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


# ---------------------------------------------------------------------------------------
# Shared machinery
# ---------------------------------------------------------------------------------------


def _unit_rows(W: torch.Tensor) -> torch.Tensor:
    return W / W.norm(dim=1, keepdim=True).clamp_min(MIN_ATOM_NORM)


class Encoder(nn.Module):
    """Base class: decoder, unit-norm maintenance, NumPy/tensor I/O, fit, save and load.

    Subclasses set ``config_class`` and implement ``encode_with_hidden_pre`` (and
    ``aux_loss`` when they have a sparsity penalty), ``_widths`` and ``_activation``
    for the FLOP counts.
    """

    config_class: ClassVar[type] = EncoderConfig

    def __init__(self, cfg: EncoderConfig, *, seed: int = 0):
        super().__init__()
        if not isinstance(cfg, self.config_class):
            raise TypeError(f"{type(self).__name__} needs a {self.config_class.__name__}; got "
                            f"{type(cfg).__name__}.")
        self.cfg = cfg
        self.seed = check_int(seed, "seed", minimum=0)
        self._generator = torch.Generator().manual_seed(self.seed)
        self.W_dec = nn.Parameter(_unit_rows(self._randn(cfg.N, cfg.M)))  # (N, M)
        self.b_dec = nn.Parameter(torch.zeros(cfg.M))  # (M,)

    def _randn(self, *shape) -> torch.Tensor:
        return torch.randn(*shape, generator=self._generator)

    # -- decoder -----------------------------------------------------------------------
    @property
    def decoder_trainable(self) -> bool:
        """False after :meth:`fix_decoder` (setting 1: the true dictionary is known)."""
        return self.W_dec.requires_grad

    def fix_decoder(self, D) -> "Encoder":
        """Set the decoder to a known dictionary and freeze it (and ``b_dec = 0``).

        Parameters
        ----------
        D : array_like of shape (N, M), unit-norm rows.

        Returns
        -------
        self
        """
        D = check_dictionary(D)
        if D.shape != tuple(self.W_dec.shape):
            raise ValueError(f"D must have shape (N, M) = {tuple(self.W_dec.shape)}; got {D.shape}.")
        with torch.no_grad():
            self.W_dec.copy_(torch.as_tensor(D, dtype=self.W_dec.dtype))
            self.b_dec.zero_()
        self.W_dec.requires_grad_(False)
        self.b_dec.requires_grad_(False)
        self._after_fix_decoder()
        return self

    def _after_fix_decoder(self):
        """Hook: re-initialise the encoder from the fixed decoder (SAEs use W_enc = W_dec^T)."""

    @torch.no_grad()
    def normalize_decoder_(self) -> None:
        """Rescale every decoder row to unit norm, in place (called after each update)."""
        if self.decoder_trainable:
            self.W_dec.copy_(_unit_rows(self.W_dec))

    def decoder_float64(self) -> np.ndarray:
        """The dictionary ``W_dec`` in float64, rows renormalised to unit norm, shape (N, M)."""
        D = self.W_dec.detach().double().cpu().numpy()
        return D / np.maximum(np.linalg.norm(D, axis=1, keepdims=True), MIN_ATOM_NORM)

    # -- the per-architecture parts ------------------------------------------------------
    def encode_with_hidden_pre(self, X: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor | None]:
        """Codes ``Z (B, N)`` and the pre-activations, from a float tensor ``X (B, M)``."""
        raise NotImplementedError

    def aux_loss(self, Z: torch.Tensor, hidden_pre: torch.Tensor | None) -> torch.Tensor:
        """The architecture's sparsity penalty, averaged over the batch (default: none)."""
        return Z.new_zeros(())

    def init_from_data(self, X: torch.Tensor) -> None:
        """Hook called by the training loop once, before the first step (default: nothing)."""

    def init_from_data_flops(self, n_samples: int) -> FlopCount:
        """FLOPs of :meth:`init_from_data` on ``n_samples`` rows (default: none); the training
        loop adds them to the training FLOPs, and FLOP-budgeted comparisons subtract them first."""
        return FlopCount()

    def closed_form_step_(self, X: torch.Tensor) -> torch.Tensor | None:
        """Hook: update the parameters in closed form on the batch ``X (B, M)`` and return
        the loss before the update, or ``None`` (default) for the loop's gradient step."""
        return None

    def training_step_flops(self, n_samples: int, *, supervised: bool) -> FlopCount:
        """Analytic FLOPs of one training step on ``n_samples`` rows (see :mod:`gaptheory.flops`)."""
        decoder = "none" if supervised else ("learned" if self.decoder_trainable else "fixed")
        return training_step_flops(n_samples, self._widths(), activation=self._activation(),
                                   decoder=decoder, n_dims=self.cfg.M)

    def _widths(self) -> tuple[int, ...]:
        return (self.cfg.M, self.cfg.N)

    def _activation(self) -> str:
        return "relu"

    # -- public API ------------------------------------------------------------------------
    def _as_input(self, X, name: str = "X", columns: int | None = None) -> tuple[torch.Tensor, bool]:
        """``X`` as a float tensor on the model's device, validated like an array (finite, real,
        2-D, representable in the model's dtype); whether the caller passed NumPy."""
        columns = self.cfg.M if columns is None else columns
        letter = "M" if name == "X" else "N"
        numpy_in = not isinstance(X, torch.Tensor)
        if numpy_in:
            X = torch.as_tensor(check_array(X, name))
        elif X.is_complex() or not (X.is_floating_point() or X.dtype in _INTEGER_DTYPES):
            raise TypeError(f"{name} must be a real float tensor; got dtype {X.dtype}. Pass X.real or cast it.")
        if X.ndim != 2 or X.shape[1] != columns:
            raise ValueError(f"{name} must have shape (B, {letter}={columns}); got {tuple(X.shape)}. "
                             f"Pass one row as {name}[None, :].")
        if X.numel() and not bool(torch.isfinite(X).all()):
            raise ValueError(f"{name} contains NaN or inf; remove those rows first.")
        limit = torch.finfo(self.W_dec.dtype).max ** 0.5  # X @ W stays finite for |X|, |W| below sqrt(max)
        if X.numel() and float(X.detach().abs().max()) > limit:
            raise ValueError(f"{name} has entries up to {float(X.detach().abs().max()):.3g}, beyond what this "
                             f"{str(self.W_dec.dtype).removeprefix('torch.')} model computes safely (|{name}| <= "
                             f"{limit:.3g}); rescale {name} (e.g. divide by its RMS norm) or use model.double().")
        return X.to(self.W_dec.device, self.W_dec.dtype), numpy_in

    def encode(self, X):
        """Codes of ``X``: ``(B, M) -> (B, N)``.

        Parameters
        ----------
        X : ndarray or torch.Tensor of shape (B, M)

        Returns
        -------
        Z : ndarray (float64) of shape (B, N) for NumPy input, else a tensor.
        """
        return self.encode_with_flops(X)[0]

    def encode_with_flops(self, X) -> tuple[object, FlopCount]:
        """:meth:`encode` and the FLOPs it spent (per-sample solvers: from their iterations)."""
        Xt, numpy_in = self._as_input(X)
        with torch.set_grad_enabled(torch.is_grad_enabled() and not numpy_in):
            Z, flops = self._encode_counted(Xt)
        if not bool(torch.isfinite(Z).all()):
            raise ValueError(f"codes overflowed {str(self.W_dec.dtype).removeprefix('torch.')} for X with entries up "
                             f"to {float(Xt.detach().abs().max()):.3g}; rescale X or use model.double().")
        return (Z.detach().double().cpu().numpy() if numpy_in else Z), flops

    def _encode_counted(self, X: torch.Tensor) -> tuple[torch.Tensor, FlopCount]:
        Z = self.encode_with_hidden_pre(X)[0]
        return Z, encoder_flops(X.shape[0], self._widths(), activation=self._activation())

    def decode(self, Z):
        """Reconstruction ``Z @ W_dec + b_dec``: ``(B, N) -> (B, M)``; NumPy in, NumPy out."""
        Zt, numpy_in = self._as_input(Z, "Z", self.cfg.N)
        if not numpy_in:
            return self.decode_tensor(Zt)
        with torch.no_grad():
            return self.decode_tensor(Zt).double().cpu().numpy()

    def decode_tensor(self, Z: torch.Tensor) -> torch.Tensor:
        """:meth:`decode` of a trusted tensor, without validation (the training loop's path)."""
        return Z @ self.W_dec + self.b_dec

    def fit(self, X, *, codes=None, train_cfg=None, X_val=None, codes_val=None, device=None) -> "Encoder":
        """Train with the shared loop :func:`gaptheory.training.train`; returns ``self``.

        Parameters
        ----------
        X : array_like of shape (B, M)
        codes : array_like of shape (B, N), optional
            True codes: supervised regression of ``codes`` from ``X`` (setting 2) instead
            of reconstruction with the sparsity penalty.
        train_cfg : gaptheory.training.TrainConfig, optional
        X_val, codes_val : optional
            Validation split for early stopping and best-model selection.
        device : str or torch.device, optional

        Notes
        -----
        ``training`` sits above ``encoders`` in the module layers (it drives encoders), so
        it is resolved here at call time. The history lands in ``self.history_``.
        """
        training = importlib.import_module(f"{__package__}.training")
        self.history_ = training.train(self, X, train_cfg, codes=codes, X_val=X_val,
                                       codes_val=codes_val, device=device)
        return self

    # -- persistence -----------------------------------------------------------------------
    def _saelens_state(self, input_scale: float) -> dict:
        """State dict for ``save`` with the input scale folded in (SAEs and MLPs override)."""
        if input_scale != 1.0:
            raise ValueError(f"input_scale={input_scale} cannot be folded into a {type(self).__name__} "
                             "(its per-sample solve depends on the data's scale); save with input_scale=1.0.")
        return {name: t.detach().cpu().contiguous() for name, t in self.state_dict().items()}

    def save(self, path, *, input_scale: float = 1.0, hook_name: str | None = None,
             model_name: str | None = None) -> Path:
        r"""Write ``sae_weights.safetensors`` and ``cfg.json`` in SAELens 6's format into ``path``.

        ``cfg.json`` holds SAELens's fields (``architecture``, ``d_in = M``, ``d_sae = N``,
        ``dtype``, ``apply_b_dec_to_input = False``, ``normalize_activations = "none"``, ``k``
        for TopK, and ``metadata`` with ``hook_name``, ``model_name``, ``sae_lens_version``)
        plus a ``gaptheory`` entry (the class, its config, seed, decoder state) that SAELens
        ignores. A model trained on ``X / input_scale`` is saved as one on raw ``X``:
        :math:`W_{enc} / s`, :math:`W_{dec} s`, :math:`b_{dec} s`, so SAELens (or
        :meth:`load`) on raw activations gives the same codes and ``s`` times the reconstruction.

        Parameters
        ----------
        path : str or Path
            Folder (created if missing).
        input_scale : float
            ``s > 0``, the divisor applied to the activations during training.
        hook_name, model_name : str, optional
            Where the activations came from (SAELens metadata).
        """
        from safetensors.torch import save_file

        input_scale = float(check_positive(input_scale, "input_scale"))
        path = Path(path)
        path.mkdir(parents=True, exist_ok=True)
        save_file(self._saelens_state(input_scale), str(path / WEIGHTS_FILENAME))
        metadata = {"sae_lens_version": SAELENS_FORMAT_VERSION, "model_name": model_name, "hook_name": hook_name,
                    "input_scale_folded": input_scale}
        cfg = {"architecture": self.cfg.architecture, "d_in": self.cfg.M, "d_sae": self.cfg.N,
               "dtype": str(self.W_dec.dtype).removeprefix("torch."), "device": "cpu",
               "apply_b_dec_to_input": False, "normalize_activations": "none", "reshape_activations": "none",
               "metadata": metadata,
               "gaptheory": {"encoder": type(self).__name__, "config": self.cfg.to_dict(), "seed": self.seed,
                             "decoder_trainable": self.decoder_trainable}}
        if self.cfg.architecture == "topk":
            cfg.update(k=self.cfg.k, rescale_acts_by_decoder_norm=False)
        (path / CONFIG_FILENAME).write_text(json.dumps(cfg, indent=2, sort_keys=True))
        return path

    @classmethod
    def load(cls, path, *, device=None) -> "Encoder":
        """Rebuild an encoder from a folder written by :meth:`save` or by SAELens 6.

        SAELens folders (``standard``, ``topk``, ``jumprelu``) become a
        :class:`SparseAutoencoder` with equal codes: where SAELens subtracts ``b_dec`` before
        encoding, ``b_enc - b_dec W_enc`` is folded into ``b_enc``; a TopK SAE that rescales
        by decoder norms gets ``W_enc n``, ``b_enc n``, ``W_dec / n``. The weights file's header
        is checked against ``cfg.json`` before anything is allocated.

        Raises
        ------
        ValueError
            Missing, corrupt or truncated files; shapes that disagree with ``cfg.json``;
            NaN/inf weights; what gaptheory cannot represent (activation normalisation,
            reshaping, other architectures).
        """
        path = Path(path)
        cfg_file, weights_file = path / CONFIG_FILENAME, path / WEIGHTS_FILENAME
        if not cfg_file.is_file() or not weights_file.is_file():
            raise ValueError(f"{path} must contain {CONFIG_FILENAME} and {WEIGHTS_FILENAME} (a folder written by "
                             "Encoder.save or SAELens's save_model).")
        try:
            raw = json.loads(cfg_file.read_text())
        except (UnicodeDecodeError, json.JSONDecodeError) as err:
            raise ValueError(f"{cfg_file} is not valid JSON ({err}); re-save the model.") from None
        if not isinstance(raw, dict):
            raise ValueError(f"{cfg_file} must hold a JSON object; got {type(raw).__name__}.")
        own = raw.get("gaptheory")
        if isinstance(own, dict):
            target = ENCODERS.get(own.get("encoder"))
            if target is None:
                raise ValueError(f"{cfg_file} names encoder {own.get('encoder')!r}; known: {sorted(ENCODERS)}.")
            cfg = target.config_class.from_dict(own.get("config", {}))
            seed, trainable = own.get("seed", 0), own.get("decoder_trainable", True)
        else:
            target, cfg = SparseAutoencoder, _config_from_saelens(raw, cfg_file)
            seed, trainable = 0, True
        if not issubclass(target, cls):
            raise ValueError(f"{cfg_file} holds a {target.__name__}, not a {cls.__name__}; load it with Encoder.load.")
        tensors = _read_weights(weights_file, _expected_shapes(target, cfg))
        if own is None:
            tensors = _state_from_saelens(raw, tensors)
        model = target(cfg, seed=seed)
        if not trainable:
            model.W_dec.requires_grad_(False)
            model.b_dec.requires_grad_(False)
        model.load_state_dict({k: v.to(model.W_dec.dtype) for k, v in tensors.items()})
        model.data_initialised_ = True  # trained weights: no data-dependent re-initialisation
        return model.to(resolve_device(device))


def _config_from_saelens(raw: dict, cfg_file: Path) -> SAEConfig:
    """The :class:`SAEConfig` of a SAELens 6 ``cfg.json``; refuses what gaptheory cannot represent."""
    architecture = raw.get("architecture", "standard")
    activation = {v: k for k, v in SAELENS_ARCHITECTURE.items()}.get(architecture)
    if activation is None:
        raise ValueError(f"{cfg_file}: SAELens architecture {architecture!r} has no gaptheory equivalent; "
                         f"gaptheory loads {sorted(SAELENS_ARCHITECTURE.values())}.")
    for field_name, plain in (("normalize_activations", "none"), ("reshape_activations", "none")):
        if raw.get(field_name, plain) != plain:
            raise ValueError(f"{cfg_file}: {field_name}={raw[field_name]!r} is not representable in gaptheory "
                             f"(only {plain!r}); fold it into the weights before saving.")
    if raw.get("hook_head_index") is not None:
        raise ValueError(f"{cfg_file}: hook_head_index={raw['hook_head_index']!r} is not representable in gaptheory.")
    for name in ("d_in", "d_sae"):
        if not isinstance(raw.get(name), int) or isinstance(raw.get(name), bool) or raw[name] < 1:
            raise ValueError(f"{cfg_file}: {name} must be a positive integer; got {raw.get(name)!r}.")
    return SAEConfig(M=raw["d_in"], N=raw["d_sae"], activation=activation,
                     k=raw.get("k", 100) if activation == "topk" else None)


def _expected_shapes(target: type, cfg: EncoderConfig) -> dict:
    """Parameter shapes of ``target(cfg)`` computed without building it (nothing allocated)."""
    with torch.device("meta"):
        shapes = {k: tuple(v.shape) for k, v in target(cfg, seed=0).state_dict().items()}
    return shapes


def _read_weights(weights_file: Path, expected: dict) -> dict:
    """The tensors of ``weights_file``; its header (names, shapes) is checked against ``expected``
    before any tensor is read, and every tensor must be finite."""
    from safetensors import SafetensorError, safe_open

    try:
        with safe_open(str(weights_file), framework="pt") as handle:
            shapes = {name: tuple(handle.get_slice(name).get_shape()) for name in handle.keys()}
            if set(shapes) != set(expected):
                raise ValueError(f"{weights_file} holds tensors {sorted(shapes)}; cfg.json implies "
                                 f"{sorted(expected)}; the files do not belong together.")
            for name, shape in shapes.items():
                if shape != expected[name]:
                    raise ValueError(f"{weights_file}: {name} has shape {shape}, but cfg.json implies "
                                     f"{expected[name]}; the files do not belong together.")
            tensors = {name: handle.get_tensor(name) for name in shapes}
    except SafetensorError as err:
        raise ValueError(f"{weights_file} is not a readable safetensors file ({err}); re-save the model.") from None
    for name, tensor in tensors.items():
        if not tensor.is_floating_point():
            raise ValueError(f"{weights_file}: {name} has dtype {tensor.dtype}; weights must be floating point.")
        if not torch.isfinite(tensor).all():
            raise ValueError(f"{weights_file}: {name} contains NaN or inf; the model is corrupt.")
    return tensors


@torch.no_grad()
def _state_from_saelens(raw: dict, tensors: dict) -> dict:
    """SAELens weights as gaptheory's :class:`SparseAutoencoder` state with equal codes (float64 folds)."""
    t = {k: v.double() for k, v in tensors.items()}
    if raw.get("apply_b_dec_to_input", True):  # SAELens encodes (x - b_dec) W_enc + b_enc
        t["b_enc"] = t["b_enc"] - t["b_dec"] @ t["W_enc"]
    if raw.get("architecture") == "topk" and raw.get("rescale_acts_by_decoder_norm", False):
        norms = t["W_dec"].norm(dim=1)
        t["W_enc"], t["b_enc"], t["W_dec"] = t["W_enc"] * norms, t["b_enc"] * norms, t["W_dec"] / norms[:, None]
    if raw.get("architecture") == "jumprelu" and (t["threshold"] < 0).any():
        raise ValueError("a SAELens JumpReLU threshold is negative; gaptheory's JumpReLU needs thresholds >= 0.")
    return t


# ---------------------------------------------------------------------------------------
# Sparse autoencoders
# ---------------------------------------------------------------------------------------


class _JumpReLU(torch.autograd.Function):
    """``z * H(z - theta)`` with the pseudo-derivative of Rajamanoharan et al. (2024), Eq. 11:
    d/d theta = -(theta / eps) K((z - theta) / eps), K the unit rectangle."""

    @staticmethod
    def forward(ctx, z, theta, bandwidth):
        ctx.save_for_backward(z, theta)
        ctx.bandwidth = bandwidth
        return z * (z > theta)

    @staticmethod
    def backward(ctx, grad):
        z, theta = ctx.saved_tensors
        eps = ctx.bandwidth
        window = ((z - theta).abs() < eps / 2).to(z.dtype)
        grad_theta = (-(theta / eps) * window * grad).sum(0)
        return grad * (z > theta), grad_theta, None


class _Step(torch.autograd.Function):
    """``H(z - theta)`` with d/d theta = -(1 / eps) K((z - theta) / eps) (ibid., Eq. 12)."""

    @staticmethod
    def forward(ctx, z, theta, bandwidth):
        ctx.save_for_backward(z, theta)
        ctx.bandwidth = bandwidth
        return (z > theta).to(z.dtype)

    @staticmethod
    def backward(ctx, grad):
        z, theta = ctx.saved_tensors
        eps = ctx.bandwidth
        window = ((z - theta).abs() < eps / 2).to(z.dtype)
        return torch.zeros_like(z), (-(1.0 / eps) * window * grad).sum(0), None


class SparseAutoencoder(Encoder):
    r"""One-layer sparse autoencoder with SAELens weights.

    .. math:: Z = \sigma(X W_{enc} + b_{enc}), \qquad \hat X = Z W_{dec} + b_{dec}

    with :math:`\sigma` = ReLU (loss adds ``l1_coefficient * mean ||z||_1``), TopK (ReLU
    of the k largest pre-activations, no penalty) or JumpReLU (``z * H(z - theta)`` with a
    learned threshold per latent; loss adds ``l0_coefficient * mean ||z||_0`` through the
    straight-through estimator of Rajamanoharan et al. 2024). The reconstruction loss is
    ``mean_b ||x_b - x_hat_b||^2``. Initialisation: random unit atoms, ``W_enc = W_dec^T``,
    zero biases (SAELens).

    Parameters
    ----------
    cfg : SAEConfig
    seed : int
        Seed of the initial weights (a private ``torch.Generator``; no global state).

    Examples
    --------
    >>> from gaptheory.instances import make_instance
    >>> inst = make_instance(16, 8, 3, 64, seed=0)
    >>> sae = SparseAutoencoder(SAEConfig(M=8, N=16), seed=0)
    >>> sae.encode(inst.X).shape, sae.decode(sae.encode(inst.X)).shape
    ((64, 16), (64, 8))
    """

    config_class = SAEConfig

    def __init__(self, cfg: SAEConfig, *, seed: int = 0):
        super().__init__(cfg, seed=seed)
        self.W_enc = nn.Parameter(self.W_dec.detach().T.clone())  # (M, N)
        self.b_enc = nn.Parameter(torch.zeros(cfg.N))  # (N,)
        if cfg.activation == "jumprelu":
            self.threshold = nn.Parameter(torch.full((cfg.N,), float(cfg.jumprelu_threshold)))

    def _after_fix_decoder(self):
        with torch.no_grad():
            self.W_enc.copy_(self.W_dec.T)

    def _saelens_state(self, input_scale):
        state = {name: t.detach().cpu().clone().contiguous() for name, t in self.state_dict().items()}
        state["W_enc"] /= input_scale  # f((x / s) W_enc + b_enc) = f(x (W_enc / s) + b_enc)
        state["W_dec"] *= input_scale
        state["b_dec"] *= input_scale
        return state

    def encode_with_hidden_pre(self, X):
        pre = X @ self.W_enc + self.b_enc
        activation = self.cfg.activation
        if activation == "relu":
            return torch.relu(pre), pre
        if activation == "topk":
            values, indices = pre.topk(self.cfg.k, dim=1)
            return torch.zeros_like(pre).scatter(1, indices, torch.relu(values)), pre
        theta = self.threshold.clamp_min(MIN_THRESHOLD)
        return _JumpReLU.apply(pre, theta, self.cfg.jumprelu_bandwidth), pre

    def aux_loss(self, Z, hidden_pre):
        if self.cfg.activation == "relu":
            return self.cfg.l1_coefficient * Z.abs().sum(1).mean()
        if self.cfg.activation == "jumprelu":
            theta = self.threshold.clamp_min(MIN_THRESHOLD)
            return self.cfg.l0_coefficient * _Step.apply(hidden_pre, theta, self.cfg.jumprelu_bandwidth).sum(1).mean()
        return Z.new_zeros(())

    def _activation(self) -> str:
        return self.cfg.activation


class SAEWithITO(SparseAutoencoder):
    r"""SAE + inference-time optimisation: SAE codes refined per sample on the learned decoder.

    Training is that of the SAE. At inference every row solves the nonnegative LASSO

    .. math:: \min_{z \ge 0} \tfrac12 \|x - b_{dec} - z W_{dec}\|_2^2 + \alpha \|z\|_1

    by FISTA (:func:`gaptheory.solvers.lasso`, ``method="fista"``) **started from the SAE's
    codes** (the reference implementation discarded them and started from scratch).
    The inference FLOPs are the SAE's plus those of the iterations FISTA actually used.

    Examples
    --------
    >>> from gaptheory.instances import make_instance
    >>> inst = make_instance(16, 8, 3, 32, seed=0)
    >>> model = SAEWithITO(SAEITOConfig(M=8, N=16), seed=0).fix_decoder(inst.D)
    >>> Z = model.encode(inst.X)
    >>> bool(np.abs(model.decode(Z) - inst.X).max() < 0.2)
    True
    """

    config_class = SAEITOConfig
    _saelens_state = Encoder._saelens_state  # the per-sample solve is not scale-free: no folding

    def _encode_counted(self, X):
        # Training goes through encode_with_hidden_pre (plain SAE codes); encode refines them.
        Z0, flops = super()._encode_counted(X)
        Z, solve_flops = _per_sample_codes(self, X, init=Z0, alpha=self.cfg.ito_alpha, nonnegative=True,
                                           tol=self.cfg.ito_tol, max_iter=self.cfg.ito_max_iter)
        return Z, flops + solve_flops


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


# ---------------------------------------------------------------------------------------
# MLP encoder
# ---------------------------------------------------------------------------------------


class MLPEncoder(Encoder):
    r"""ReLU MLP encoder with an SAE-style decoder.

    .. math:: H_0 = X,\quad H_{l} = \mathrm{ReLU}(H_{l-1} W_l + b_l),\quad Z = H_{L+1}

    with widths ``(M, *hidden, N)``; weights ``weights[l]`` of shape (w_l, w_{l+1}) and
    ``biases[l]``, initialised like ``torch.nn.Linear`` (uniform in
    :math:`\pm 1/\sqrt{w_l}`) from the model's own generator; before training the output
    bias is median-centred on the data (:meth:`init_from_data`) so no latent starts dead;
    with ``fit_output_to_decoder`` the output layer is first fitted to the SAE's start
    ``X W_dec^T``, so each latent starts on its own atom (without it, latents the L1 term
    silences early stay dead: docs/results.md, issue 4).
    The loss is that of the ReLU
    SAE (reconstruction plus ``l1_coefficient * mean ||z||_1``), or the squared code error
    when trained on known codes.

    Examples
    --------
    >>> mlp = MLPEncoder(MLPEncoderConfig(M=8, N=16, hidden=(32,)), seed=0)
    >>> mlp.encode(np.ones((5, 8))).shape
    (5, 16)
    """

    config_class = MLPEncoderConfig

    def __init__(self, cfg: MLPEncoderConfig, *, seed: int = 0):
        super().__init__(cfg, seed=seed)
        widths = self._widths()
        self.weights = nn.ParameterList()
        self.biases = nn.ParameterList()
        for a, b in zip(widths[:-1], widths[1:]):
            bound = 1.0 / np.sqrt(a)
            self.weights.append(nn.Parameter((torch.rand(a, b, generator=self._generator) * 2 - 1) * bound))
            self.biases.append(nn.Parameter((torch.rand(b, generator=self._generator) * 2 - 1) * bound))

    def _widths(self):
        return (self.cfg.M, *self.cfg.hidden, self.cfg.N)

    def _saelens_state(self, input_scale):
        state = {name: t.detach().cpu().clone().contiguous() for name, t in self.state_dict().items()}
        state["weights.0"] /= input_scale  # the first layer sees x / s
        state["W_dec"] *= input_scale
        state["b_dec"] *= input_scale
        return state

    def encode_with_hidden_pre(self, X):
        H = X
        for W, b in zip(self.weights, self.biases):
            pre = H @ W + b
            H = torch.relu(pre)
        return H, pre

    def aux_loss(self, Z, hidden_pre):
        return self.cfg.l1_coefficient * Z.abs().sum(1).mean()

    @torch.no_grad()
    def init_from_data(self, X):
        """Initialise the output layer on the training rows: optionally fit it to the SAE's
        start (``fit_output_to_decoder``, :meth:`_fit_output_layer`), then median-centre its
        pre-activations (``center_output_bias``).

        ReLU hidden features have a positive mean shared by all inputs, so with random
        output weights a latent's pre-activation is often negative on *every* row: the
        latent starts dead and never receives a gradient. Setting
        ``b_out = -median_b(h_b W_out)`` makes each latent active on half the rows at the
        start, as the SAE initialisation ``W_enc = W_dec^T`` does. With ``init_rows`` both
        use a random subset of that many rows (their cost grows with the rows; a FLOP budget
        pays for them).
        """
        if self.cfg.init_rows is not None and len(X) > self.cfg.init_rows:
            X = X[torch.randperm(len(X), generator=self._generator)[: self.cfg.init_rows].to(X.device)]
        H = X
        for W, b in zip(list(self.weights)[:-1], list(self.biases)[:-1]):
            H = torch.relu(H @ W + b)
        if self.cfg.fit_output_to_decoder:
            self._fit_output_layer(H, (X - self.b_dec) @ self.W_dec.T)
        if self.cfg.center_output_bias:
            self.biases[-1].copy_(-(H @ self.weights[-1]).median(0).values)

    def init_from_data_flops(self, n_samples):
        """:func:`mlp_output_init_flops` of this MLP's widths and initialisation options."""
        if self.cfg.init_rows is not None:
            n_samples = min(n_samples, self.cfg.init_rows)
        return mlp_output_init_flops(n_samples, self._widths(), fit=self.cfg.fit_output_to_decoder,
                                     center=self.cfg.center_output_bias)

    @torch.no_grad()
    def _fit_output_layer(self, H, target):
        r"""Ridge least squares ``[H, 1] [W_out; b_out] ~ target`` (``fit_output_to_decoder``).

        With ``target = X W_dec^T`` each latent starts as the SAE initialisation
        ``W_enc = W_dec^T`` sees it (its atom's projection), read from the random hidden
        features: latent i starts correlated with its own atom instead of a random
        direction, so the MLP starts where the SAE starts and L1 does not silence latents
        with no signal. In setting 1 (decoder fixed to the true D) that is the matched-filter
        code. Solve: :math:`(A^\top A + \lambda \bar d I)^{-1} A^\top T` with
        :math:`A = [H, 1]`, :math:`\lambda` = ``MLP_OUTPUT_RIDGE``.
        """
        A = torch.cat([H, H.new_ones(len(H), 1)], 1).double()
        gram = A.T @ A
        ridge = MLP_OUTPUT_RIDGE * torch.diagonal(gram).mean()
        solution = torch.linalg.solve(gram + ridge * torch.eye(len(gram), dtype=gram.dtype, device=gram.device),
                                      A.T @ target.double())
        self.weights[-1].copy_(solution[:-1].to(self.weights[-1].dtype))
        self.biases[-1].copy_(solution[-1].to(self.biases[-1].dtype))


def mlp_output_init_flops(n_samples: int, widths, *, fit: bool, center: bool) -> FlopCount:
    r"""FLOPs of :meth:`MLPEncoder.init_from_data` on ``B`` rows (counted as training FLOPs).

    With widths ``(M, h_1, ..., h, N)``: the hidden features (the stack up to ``h``); with
    ``fit``, the target :math:`X W_{dec}^\top` (2BMN), the Gram matrix of :math:`A = [H, 1]`
    (2B(h+1)^2), :math:`A^\top T` (2B(h+1)N) and the solve (:math:`\tfrac23 (h+1)^3 + 2(h+1)^2 N`);
    with ``center``, the output pre-activations (2BhN) and one subtraction per entry (the
    median's comparisons are not counted).

    Examples
    --------
    >>> mlp_output_init_flops(4, (8, 16), fit=False, center=False).total
    0
    """
    n_samples = check_int(n_samples, "n_samples", minimum=0)
    widths = tuple(widths)
    if not (fit or center) or len(widths) < 3:
        return FlopCount()
    B, M, h, N = n_samples, widths[0], widths[-2], widths[-1]
    total = encoder_flops(B, widths[:-1])
    if fit:
        total = total + FlopCount(matmul_flops(B, M, N) + matmul_flops(h + 1, B, h + 1) + matmul_flops(h + 1, B, N)
                                  + (2 * (h + 1) ** 3) // 3 + matmul_flops(h + 1, h + 1, N), 0)
    if center:
        total = total + FlopCount(matmul_flops(B, h, N), B * N)
    return total


# ---------------------------------------------------------------------------------------
# Sparse coding
# ---------------------------------------------------------------------------------------


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
        self.W_dec[: len(rows)][keep] = _unit_rows(samples[keep]).to(self.W_dec.dtype)
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


#: Encoder classes by name, as written to ``cfg.json`` under ``gaptheory_encoder``.
ENCODERS: dict[str, type[Encoder]] = {
    cls.__name__: cls for cls in (SparseAutoencoder, SAEWithITO, MLPEncoder, SparseCoding)
}
