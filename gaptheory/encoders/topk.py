r"""The TopK sparse autoencoder (SAELens ``topk``; Gao et al. 2024): ReLU of the K largest pre-activations."""

from __future__ import annotations

from dataclasses import dataclass
from typing import ClassVar

import torch

from .._validation import check_int
from .base import EncoderConfig
from .relu import SparseAutoencoder


@dataclass(frozen=True)
class TopKSAEConfig(EncoderConfig):
    """A TopK SAE: exactly the K largest pre-activations of each row pass (through a ReLU)."""

    architecture: ClassVar[str] = "topk"
    K: int  # active latents per row, 1 <= K <= N (SAELens's cfg.json calls it k)

    def __post_init__(self):
        super().__post_init__()
        check_int(self.K, "K", minimum=1, maximum=self.N)


class TopKSAE(SparseAutoencoder):
    r"""TopK SAE: :math:`Z = \mathrm{ReLU}(\mathrm{TopK}_K(X W_{enc} + b_{enc}))`, no sparsity penalty.

    References
    ----------
    .. [1] Gao et al. (2024), "Scaling and evaluating sparse autoencoders", arXiv 2406.04093.

    Examples
    --------
    >>> import numpy as np
    >>> sae = TopKSAE(TopKSAEConfig(N=16, M=8, K=2), seed=0)
    >>> int((sae.encode(np.ones((3, 8))) > 0).sum(1).max())
    2
    """

    config_class = TopKSAEConfig
    flop_activation = "topk"

    def encode_with_hidden_pre(self, X):
        pre = X @ self.W_enc + self.b_enc
        values, indices = pre.topk(self.cfg.K, dim=1)
        return torch.zeros_like(pre).scatter(1, indices, torch.relu(values)), pre

    def aux_loss(self, Z, hidden_pre):
        return Z.new_zeros(())
