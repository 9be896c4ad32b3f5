r"""The standard sparse autoencoder (SAELens ``standard``): ``Z = ReLU(X W_enc + b_enc)`` with an L1 penalty."""

from __future__ import annotations

from dataclasses import dataclass
from typing import ClassVar

import torch
from torch import nn

from .._validation import check_positive
from .base import Encoder, EncoderConfig


@dataclass(frozen=True)
class SAEConfig(EncoderConfig):
    """A one-layer ReLU sparse autoencoder trained with an L1 penalty on the codes."""

    architecture: ClassVar[str] = "standard"
    l1_coefficient: float = 0.03  # weight of mean_b ||z_b||_1 in the loss

    def __post_init__(self):
        super().__post_init__()
        check_positive(self.l1_coefficient, "l1_coefficient", allow_zero=True)


class SparseAutoencoder(Encoder):
    r"""One-layer sparse autoencoder with SAELens weights; the base of the SAE architectures.

    .. math:: Z = \mathrm{ReLU}(X W_{enc} + b_{enc}), \qquad \hat X = Z W_{dec} + b_{dec}

    The loss is ``mean_b ||x_b - x_hat_b||^2 + l1_coefficient * mean_b ||z_b||_1``.
    Initialisation (SAELens): random unit atoms, ``W_enc = W_dec^T``, zero biases.
    :class:`~gaptheory.encoders.TopKSAE` and :class:`~gaptheory.encoders.JumpReLUSAE` change
    only the activation and the penalty.

    Parameters
    ----------
    cfg : SAEConfig
    seed : int
        Seed of the initial weights (a private ``torch.Generator``; no global state).

    Examples
    --------
    >>> from gaptheory.instances import make_instance
    >>> inst = make_instance(16, 8, 3, 64, seed=0)
    >>> sae = SparseAutoencoder(SAEConfig(N=16, M=8), seed=0)
    >>> sae.encode(inst.X).shape, sae.decode(sae.encode(inst.X)).shape
    ((64, 16), (64, 8))
    """

    config_class = SAEConfig
    flop_activation = "relu"

    def __init__(self, cfg, *, seed: int = 0):
        super().__init__(cfg, seed=seed)
        self.W_enc = nn.Parameter(self.W_dec.detach().T.clone())  # (M, N)
        self.b_enc = nn.Parameter(torch.zeros(cfg.N))  # (N,)

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
        return torch.relu(pre), pre

    def aux_loss(self, Z, hidden_pre):
        return self.cfg.l1_coefficient * Z.abs().sum(1).mean()
