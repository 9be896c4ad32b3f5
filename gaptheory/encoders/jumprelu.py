r"""The JumpReLU sparse autoencoder (SAELens ``jumprelu``; Rajamanoharan et al. 2024).

``z * H(z - theta)`` with a learned threshold per latent, trained with an L0 penalty through
the straight-through estimator of the paper (rectangle-kernel pseudo-derivatives).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import ClassVar

import torch
from torch import nn

from .._validation import check_positive
from .base import EncoderConfig
from .relu import SparseAutoencoder

#: JumpReLU thresholds are clamped to at least this so the gate never opens at zero
#: pre-activation (a zero threshold would turn JumpReLU into a plain ReLU).
MIN_THRESHOLD = 1e-6


@dataclass(frozen=True)
class JumpReLUSAEConfig(EncoderConfig):
    """A JumpReLU SAE trained with an L0 penalty."""

    architecture: ClassVar[str] = "jumprelu"
    l0_coefficient: float = 0.03  # weight of the (straight-through) mean L0 in the loss
    initial_threshold: float = 0.1  # initial threshold of every latent
    bandwidth: float = 0.05  # width of the rectangle kernel of the pseudo-gradient

    def __post_init__(self):
        super().__post_init__()
        check_positive(self.l0_coefficient, "l0_coefficient", allow_zero=True)
        check_positive(self.initial_threshold, "initial_threshold")
        check_positive(self.bandwidth, "bandwidth")


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


class JumpReLUSAE(SparseAutoencoder):
    r"""JumpReLU SAE: :math:`z = \pi \, H(\pi - \theta)`, :math:`\pi = X W_{enc} + b_{enc}`,
    loss adds ``l0_coefficient * mean ||z||_0`` (straight-through estimator).

    ``threshold (N,)`` is a parameter (SAELens's name), clamped to at least ``MIN_THRESHOLD``.

    References
    ----------
    .. [1] Rajamanoharan et al. (2024), "Jumping ahead: improving reconstruction fidelity with
       JumpReLU sparse autoencoders", arXiv 2407.14435.

    Examples
    --------
    >>> import numpy as np
    >>> sae = JumpReLUSAE(JumpReLUSAEConfig(N=16, M=8), seed=0)
    >>> tuple(sae.threshold.shape)
    (16,)
    """

    config_class = JumpReLUSAEConfig
    flop_activation = "jumprelu"

    def __init__(self, cfg: JumpReLUSAEConfig, *, seed: int = 0):
        super().__init__(cfg, seed=seed)
        self.threshold = nn.Parameter(torch.full((cfg.N,), float(cfg.initial_threshold)))

    def encode_with_hidden_pre(self, X):
        pre = X @ self.W_enc + self.b_enc
        return _JumpReLU.apply(pre, self.threshold.clamp_min(MIN_THRESHOLD), self.cfg.bandwidth), pre

    def aux_loss(self, Z, hidden_pre):
        theta = self.threshold.clamp_min(MIN_THRESHOLD)
        return self.cfg.l0_coefficient * _Step.apply(hidden_pre, theta, self.cfg.bandwidth).sum(1).mean()
