"""The architectures by name: the one table persistence and the experiment code look classes up in."""

from __future__ import annotations

from .base import Encoder
from .ito import SAEWithITO
from .mlp import MLPEncoder
from .relu import SparseAutoencoder
from .sparse_coding import SparseCoding

#: Encoder classes by name, as written to ``cfg.json`` under ``gaptheory.encoder``.
ENCODERS: dict[str, type[Encoder]] = {
    cls.__name__: cls for cls in (SparseAutoencoder, SAEWithITO, MLPEncoder, SparseCoding)
}
