r"""Encoders that map observations ``X (B, M)`` to codes ``Z (B, N)``, one module per architecture.

Every encoder is a ``torch.nn.Module`` with SAELens weight names and layout,
``W_enc (M, N)``, ``b_enc (N,)``, ``W_dec (N, M)``, ``b_dec (M,)`` (an MLP has its own
hidden layers instead of ``W_enc``), and is used like this (scikit-learn estimators over
them: :mod:`gaptheory.estimators`):

- ``Encoder(cfg, seed=0)`` builds it from a frozen config dataclass (``cfg.architecture``,
  ``cfg.to_dict()``, ``Config.from_dict(d)``; fields ``N``, ``M`` first, as in
  ``random_dictionary(N, M)``);
- :func:`gaptheory.training.train` trains it (the one loop for every architecture);
- ``encode(X) -> Z`` and ``decode(Z) -> X_hat``; NumPy in gives NumPy (float64) out,
  a tensor in gives a tensor out; ``encode_with_flops`` also returns the FLOPs spent and
  ``flops(B, stage=...)`` counts them analytically;
- ``save(path)`` / ``load(path)`` (:mod:`~gaptheory.encoders.persistence`) use the SAELens
  files ``sae_weights.safetensors`` and ``cfg.json``, both ways with SAELens 6.

Decoder rows (atoms) are kept unit-norm after every update. An architecture adds only its
activation (``encode_with_hidden_pre``) and its sparsity loss (``aux_loss``).

- ``relu.SparseAutoencoder``: ``ReLU(X W_enc + b_enc)`` with an L1 penalty (SAELens ``standard``);
- ``topk.TopKSAE``: ReLU of the k largest pre-activations (SAELens ``topk``);
- ``jumprelu.JumpReLUSAE``: ``z H(z - theta)``, L0 penalty by a straight-through estimator (SAELens ``jumprelu``);
- ``ito.SAEWithITO``: SAE codes refined per sample by FISTA on the learned decoder;
- ``mlp.MLPEncoder``: ReLU MLP ``M -> h_1 -> ... -> N`` (the paper used 32, 256, 1024);
- ``sparse_coding.SparseCoding``: no encoder, per-sample LASSO (FISTA) on a learned dictionary.

:data:`ENCODERS` (``registry``) maps each ``architecture`` name to its class.

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

from .base import FLOP_STAGES, MIN_ATOM_NORM, Encoder, EncoderConfig
from .ito import SAEITOConfig, SAEWithITO
from .jumprelu import MIN_THRESHOLD, JumpReLUSAE, JumpReLUSAEConfig
from .mlp import MLP_OUTPUT_RIDGE, MLPEncoder, MLPEncoderConfig, mlp_output_init_flops
from .persistence import CONFIG_FILENAME, SAELENS_FORMAT_VERSION, WEIGHTS_FILENAME, load, save
from .registry import ENCODERS, SAELENS_ARCHITECTURES
from .relu import SAEConfig, SparseAutoencoder
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
from .topk import TopKSAE, TopKSAEConfig

__all__ = [
    "CONFIG_FILENAME", "DEAD_ATOM_ENERGY", "DICTIONARY_RIDGE", "DICTIONARY_UPDATES", "ENCODERS", "FLOP_STAGES",
    "MIN_ATOM_NORM", "MIN_THRESHOLD", "MLP_OUTPUT_RIDGE", "SAELENS_ARCHITECTURES", "SAELENS_FORMAT_VERSION",
    "SPARSE_INFERENCE", "STATISTICS_ROWS_PER_ATOM", "WEIGHTS_FILENAME", "Encoder", "EncoderConfig", "JumpReLUSAE",
    "JumpReLUSAEConfig", "MLPEncoder", "MLPEncoderConfig", "SAEConfig", "SAEITOConfig", "SAEWithITO",
    "SparseAutoencoder", "SparseCoding", "SparseCodingConfig", "TopKSAE", "TopKSAEConfig",
    "least_squares_update_flops", "load", "mlp_output_init_flops", "save",
]
