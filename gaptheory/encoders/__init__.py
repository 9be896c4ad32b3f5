r"""Encoders that map observations ``X (B, M)`` to codes ``Z (B, N)``, one interface for all.

Every encoder is a ``torch.nn.Module`` with SAELens weight names and layout,
``W_enc (M, N)``, ``b_enc (N,)``, ``W_dec (N, M)``, ``b_dec (M,)`` (an MLP has its own
hidden layers instead of ``W_enc``), and is used like this (scikit-learn estimators over them: :mod:`gaptheory.estimators`):

- ``Encoder(cfg, seed=0)`` builds it from a frozen config dataclass (``cfg.architecture``,
  ``cfg.to_dict()``, ``Config.from_dict(d)``);
- :func:`gaptheory.training.train` trains it (the one loop for every architecture);
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

from .base import MIN_ATOM_NORM, Encoder, EncoderConfig
from .ito import SAEITOConfig, SAEWithITO
from .mlp import MLP_OUTPUT_RIDGE, MLPEncoder, MLPEncoderConfig, mlp_output_init_flops
from .persistence import CONFIG_FILENAME, SAELENS_FORMAT_VERSION, WEIGHTS_FILENAME, load, save
from .registry import ENCODERS
from .relu import ACTIVATIONS, MIN_THRESHOLD, SAELENS_ARCHITECTURE, SAEConfig, SparseAutoencoder
from .sparse_coding import (
    DEAD_ATOM_ENERGY,
    DICTIONARY_RIDGE,
    DICTIONARY_UPDATES,
    SPARSE_INFERENCE,
    STATISTICS_ROWS_PER_ATOM,
    SparseCoding,
    SparseCodingConfig,
    least_squares_update_flops,
)

__all__ = [
    "ACTIVATIONS", "CONFIG_FILENAME", "DEAD_ATOM_ENERGY", "DICTIONARY_RIDGE", "DICTIONARY_UPDATES", "ENCODERS",
    "MIN_ATOM_NORM", "MIN_THRESHOLD", "MLP_OUTPUT_RIDGE", "SAELENS_ARCHITECTURE", "SAELENS_FORMAT_VERSION",
    "SPARSE_INFERENCE", "STATISTICS_ROWS_PER_ATOM", "WEIGHTS_FILENAME", "Encoder", "EncoderConfig", "MLPEncoder",
    "MLPEncoderConfig", "SAEConfig", "SAEITOConfig", "SAEWithITO", "SparseAutoencoder", "SparseCoding",
    "SparseCodingConfig", "least_squares_update_flops", "load", "mlp_output_init_flops", "save",
]
