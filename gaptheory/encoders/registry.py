"""The one table of architectures: ``cfg.architecture`` name -> encoder class."""

from __future__ import annotations

from .base import Encoder
from .ito import SAEWithITO
from .jumprelu import JumpReLUSAE
from .mlp import MLPEncoder
from .relu import SparseAutoencoder
from .sparse_coding import SparseCoding
from .topk import TopKSAE

#: Encoder classes by architecture name (``cfg.json``'s ``architecture``; the first three are SAELens's).
ENCODERS: dict[str, type[Encoder]] = {
    cls.config_class.architecture: cls
    for cls in (SparseAutoencoder, TopKSAE, JumpReLUSAE, SAEWithITO, MLPEncoder, SparseCoding)
}

#: The architectures SAELens itself saves and gaptheory reads from its folders.
SAELENS_ARCHITECTURES = ("standard", "topk", "jumprelu")
