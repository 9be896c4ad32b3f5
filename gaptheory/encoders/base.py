"""The encoder base: decoder weights, unit-norm upkeep, validated NumPy/tensor I/O.

An :class:`Encoder` is a ``torch.nn.Module`` with the SAELens decoder ``W_dec (N, M)``,
``b_dec (M,)``; an architecture adds its encoder weights, ``encode_with_hidden_pre``
(the activation) and ``aux_loss`` (its sparsity penalty).
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from typing import ClassVar

import numpy as np
import torch
from torch import nn

from .._validation import check_array, check_choice, check_dictionary, check_int
from ..flops import FlopCount, encoder_flops, training_step_flops

_INTEGER_DTYPES = (torch.int8, torch.int16, torch.int32, torch.int64, torch.uint8)

#: Rows of W_dec with a norm below this are re-drawn rather than normalised (dead atoms).
MIN_ATOM_NORM = 1e-12

#: Stages :meth:`Encoder.flops` counts.
FLOP_STAGES = ("encode", "train", "supervised", "init")


@dataclass(frozen=True)
class EncoderConfig:
    """Fields every encoder has; subclasses add their hyperparameters."""

    architecture: ClassVar[str]  # the name written to cfg.json (SAELens's where SAELens has one)
    N: int  # number of latents (SAELens d_sae)
    M: int  # input dimension (SAELens d_in)

    def __post_init__(self):
        check_int(self.N, "N", minimum=1)
        check_int(self.M, "M", minimum=1)

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


def unit_rows(W: torch.Tensor) -> torch.Tensor:
    """Rows of ``W`` rescaled to unit norm (rows below ``MIN_ATOM_NORM`` are divided by it)."""
    return W / W.norm(dim=1, keepdim=True).clamp_min(MIN_ATOM_NORM)


class Encoder(nn.Module):
    """Base class: decoder, unit-norm maintenance, validated NumPy/tensor I/O, save and load.

    Subclasses set ``config_class`` and implement ``encode_with_hidden_pre`` (and
    ``aux_loss`` when they have a sparsity penalty); ``flop_activation`` and ``widths``
    describe them to :meth:`flops`.
    """

    #: The activation :func:`gaptheory.flops.encoder_flops` counts for this architecture.
    flop_activation: ClassVar[str] = "relu"

    config_class: ClassVar[type] = EncoderConfig

    def __init__(self, cfg: EncoderConfig, *, seed: int = 0):
        super().__init__()
        if not isinstance(cfg, self.config_class):
            raise TypeError(f"{type(self).__name__} needs a {self.config_class.__name__}; got "
                            f"{type(cfg).__name__}.")
        self.cfg = cfg
        self.seed = check_int(seed, "seed", minimum=0)
        self._generator = torch.Generator().manual_seed(self.seed)
        self.W_dec = nn.Parameter(unit_rows(self._randn(cfg.N, cfg.M)))  # (N, M)
        self.b_dec = nn.Parameter(torch.zeros(cfg.M))  # (M,)
        self.data_initialised_ = False  # set by the training loop after init_from_data (and by load)

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
            self.W_dec.copy_(unit_rows(self.W_dec))

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

    def encode_for_training(self, X: torch.Tensor, *, rows: str) -> tuple[torch.Tensor, torch.Tensor | None, FlopCount]:
        """Codes and pre-activations for the training loss on the trusted tensor ``X (B, M)``,
        and the FLOPs spent beyond ``flops(B, stage)`` (per-sample solves). ``rows`` names
        the rows of ``X`` (``"train"``, ``"val"``) for encoders that warm-start from the last
        codes of the same rows. Default: :meth:`encode_with_hidden_pre`, nothing extra."""
        Z, pre = self.encode_with_hidden_pre(X)
        return Z, pre, FlopCount()

    def closed_form_step_(self, X: torch.Tensor) -> tuple[torch.Tensor, FlopCount] | None:
        """Hook: update the parameters in closed form on the training batch ``X (B, M)`` and
        return the loss before the update with the step's FLOPs, or ``None`` (default) for
        the loop's gradient step."""
        return None

    @property
    def widths(self) -> tuple[int, ...]:
        """Layer widths from input to codes, ``(M, N)`` for a one-layer encoder."""
        return (self.cfg.M, self.cfg.N)

    def flops(self, n_samples: int, *, stage: str = "encode") -> FlopCount:
        """Analytic FLOPs on ``n_samples`` rows (:mod:`gaptheory.flops`).

        ``stage``: ``"encode"`` (one forward pass), ``"train"`` (one step on the
        reconstruction loss, the decoder learned or fixed), ``"supervised"`` (one step
        regressing known codes) or ``"init"`` (:meth:`init_from_data`; none by default).
        Per-sample encoders add what their solves used: :meth:`encode_with_flops`,
        :meth:`encode_for_training`.
        """
        check_choice(stage, "stage", FLOP_STAGES)
        if stage == "encode":
            return encoder_flops(n_samples, self.widths, activation=self.flop_activation)
        if stage == "init":
            return FlopCount()
        decoder = "none" if stage == "supervised" else ("learned" if self.decoder_trainable else "fixed")
        return training_step_flops(n_samples, self.widths, activation=self.flop_activation,
                                   decoder=decoder, M=self.cfg.M)

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
        if X.numel():
            self._check_representable(X.detach(), name)
        return X.to(self.W_dec.device, self.W_dec.dtype), numpy_in

    def _check_representable(self, X: torch.Tensor, name: str) -> None:
        """Refuse rows this model's dtype cannot compute on: X @ W stays finite and normal for
        |X|, |W| in [sqrt(tiny), sqrt(max)] (float32: about [1.1e-19, 1.8e19]), so a row above
        that overflows and a nonzero row wholly below it is flushed towards zero."""
        info, dtype = torch.finfo(self.W_dec.dtype), str(self.W_dec.dtype).removeprefix("torch.")
        low, high = info.tiny ** 0.5, info.max ** 0.5
        row_scale = X.abs().amax(1).double()
        fix = f"rescale {name} (e.g. divide by its RMS norm) or use model.double()"
        if float(row_scale.max()) > high:
            raise ValueError(f"{name} has entries up to {float(row_scale.max()):.3g}, beyond what this {dtype} model "
                             f"computes safely (|{name}| <= {high:.3g}); {fix}.")
        tiny_rows = (row_scale > 0) & (row_scale < low)
        if bool(tiny_rows.any()):
            raise ValueError(f"{int(tiny_rows.sum())} row(s) of {name} have no entry above {low:.3g} in magnitude "
                             f"(the smallest largest-entry is {float(row_scale[tiny_rows].min()):.3g}): this {dtype} "
                             f"model would flush them towards zero; {fix}.")

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
            Z, flops = self._encode(Xt)
        if not bool(torch.isfinite(Z).all()):
            raise ValueError(f"codes overflowed {str(self.W_dec.dtype).removeprefix('torch.')} for X with entries up "
                             f"to {float(Xt.detach().abs().max()):.3g}; rescale X or use model.double().")
        return (Z.detach().double().cpu().numpy() if numpy_in else Z), flops

    def _encode(self, X: torch.Tensor) -> tuple[torch.Tensor, FlopCount]:
        """Codes of a validated tensor and the FLOPs spent (per-sample encoders override)."""
        return self.encode_with_hidden_pre(X)[0], self.flops(X.shape[0], stage="encode")

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

    # -- persistence -----------------------------------------------------------------------
    def _saelens_state(self, input_scale: float) -> dict:
        """State dict for ``save`` with the input scale folded in (SAEs and MLPs override)."""
        if input_scale != 1.0:
            raise ValueError(f"input_scale={input_scale} cannot be folded into a {type(self).__name__} "
                             "(its per-sample solve depends on the data's scale); save with input_scale=1.0.")
        return {name: t.detach().cpu().contiguous() for name, t in self.state_dict().items()}

    def save(self, path, *, input_scale: float = 1.0, hook_name: str | None = None,
             model_name: str | None = None):
        """Write the model as a SAELens 6 folder; see :func:`gaptheory.encoders.persistence.save`."""
        from .persistence import save

        return save(self, path, input_scale=input_scale, hook_name=hook_name, model_name=model_name)

    @classmethod
    def load(cls, path, *, device=None) -> "Encoder":
        """Rebuild an encoder of this class (or a subclass) from a folder written by :meth:`save`
        or by SAELens 6; see :func:`gaptheory.encoders.persistence.load`."""
        from .persistence import load

        return load(path, expected=cls, device=device)
