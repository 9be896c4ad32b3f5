r"""The standard sparse autoencoder ``Z = activation(X W_enc + b_enc)`` (SAELens ``standard``)."""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import nn

from .._validation import check_choice, check_int, check_positive
from .base import Encoder, EncoderConfig

#: JumpReLU thresholds are clamped to at least this so the gate never opens at zero
#: pre-activation (a zero threshold would turn JumpReLU into a plain ReLU).
MIN_THRESHOLD = 1e-6

ACTIVATIONS = ("relu", "topk", "jumprelu")
#: SAELens architecture names of each SAE activation.
SAELENS_ARCHITECTURE = {"relu": "standard", "topk": "topk", "jumprelu": "jumprelu"}


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


