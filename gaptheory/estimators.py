r"""scikit-learn estimators over gaptheory's encoders: ``clone``, ``Pipeline`` and ``GridSearchCV`` work.

Each estimator keeps its hyperparameters as constructor arguments (``get_params`` /
``set_params``), builds its encoder in :meth:`fit` once it has seen ``M = X.shape[1]``, and
trains it with the single loop :func:`gaptheory.training.train`. ``transform`` gives codes
``Z (B, N)``, ``inverse_transform`` reconstructions ``(B, M)``, and ``score`` the explained
variance :math:`1 - \|X - \hat X\|_F^2 / \|X - \bar X\|_F^2`, so a grid search selects the
model that reconstructs held-out rows best.

Examples
--------
>>> from sklearn.base import clone
>>> from gaptheory.instances import make_instance
>>> inst = make_instance(16, 8, 3, 128, seed=0)
>>> sae = SAETransformer(N=16, steps=20, random_state=0).fit(inst.X)
>>> sae.transform(inst.X).shape, clone(sae).get_params()["N"]
((128, 16), 16)
"""

from __future__ import annotations

import numpy as np
from sklearn.base import BaseEstimator, TransformerMixin
from sklearn.utils.validation import check_is_fitted, check_random_state, validate_data

from .encoders import (
    JumpReLUSAE,
    JumpReLUSAEConfig,
    MLPEncoder,
    MLPEncoderConfig,
    SAEConfig,
    SparseAutoencoder,
    SparseCoding,
    SparseCodingConfig,
    TopKSAE,
    TopKSAEConfig,
)
from .training import TrainConfig, train

#: Seeds drawn from ``random_state`` lie below this (torch generators take 64-bit seeds;
#: 2**31 keeps them valid NumPy seeds too).
SEED_BOUND = 2**31


class _EncoderTransformer(TransformerMixin, BaseEstimator):
    """Shared fit/transform/inverse_transform/score; subclasses build the encoder."""

    def _build(self, M: int, seed: int):
        raise NotImplementedError

    def fit(self, X, y=None):
        """Train the encoder on ``X (B, M)``; returns ``self``. ``y`` is ignored."""
        X = validate_data(self, X, dtype=np.float64)
        seed = int(check_random_state(self.random_state).randint(SEED_BOUND))
        self.encoder_ = self._build(X.shape[1], seed)
        self.history_ = train(self.encoder_, X, TrainConfig(steps=self.steps, lr=self.lr, batch_size=self.batch_size,
                                                            seed=seed, progress=False), device="cpu")
        return self

    def transform(self, X):
        """Codes ``Z (B, N)`` of ``X (B, M)``."""
        check_is_fitted(self)
        return self.encoder_.encode(validate_data(self, X, dtype=np.float64, reset=False))

    def inverse_transform(self, X):
        """Reconstructions ``(B, M)`` of codes ``X (B, N)``."""
        check_is_fitted(self)
        return self.encoder_.decode(np.asarray(X, dtype=np.float64))

    def score(self, X, y=None):
        r"""Explained variance of the reconstruction, :math:`1 - \|X - \hat X\|^2 / \|X - \bar X\|^2`."""
        X = validate_data(self, X, dtype=np.float64, reset=False)
        residual = ((X - self.inverse_transform(self.transform(X))) ** 2).sum()
        total = ((X - X.mean(0)) ** 2).sum()
        return float(1.0 - residual / total) if total > 0 else float(-residual)


class SAETransformer(_EncoderTransformer):
    """An SAE: ``activation="relu"`` (:class:`~gaptheory.encoders.SparseAutoencoder`, L1 weight
    ``l1_coefficient``), ``"topk"`` (:class:`~gaptheory.encoders.TopKSAE`, ``K`` active latents) or
    ``"jumprelu"`` (:class:`~gaptheory.encoders.JumpReLUSAE`)."""

    def __init__(self, N=16, *, activation="relu", K=None, l1_coefficient=0.03, steps=200, lr=1e-3,
                 batch_size=None, random_state=None):
        self.N, self.activation, self.K, self.l1_coefficient = N, activation, K, l1_coefficient
        self.steps, self.lr, self.batch_size, self.random_state = steps, lr, batch_size, random_state

    def _build(self, M, seed):
        if self.activation == "topk":
            if self.K is None:
                raise ValueError("activation='topk' needs K (active latents per row); pass e.g. K=3.")
            return TopKSAE(TopKSAEConfig(N=self.N, M=M, K=self.K), seed=seed)
        if self.activation == "jumprelu":
            return JumpReLUSAE(JumpReLUSAEConfig(N=self.N, M=M), seed=seed)
        if self.activation != "relu":
            raise ValueError(f"activation={self.activation!r} must be 'relu', 'topk' or 'jumprelu'.")
        return SparseAutoencoder(SAEConfig(N=self.N, M=M, l1_coefficient=self.l1_coefficient), seed=seed)


class MLPTransformer(_EncoderTransformer):
    """A :class:`~gaptheory.encoders.MLPEncoder` with hidden widths ``hidden``."""

    def __init__(self, N=16, *, hidden=(256,), l1_coefficient=0.03, steps=200, lr=1e-3, batch_size=None,
                 random_state=None):
        self.N, self.hidden, self.l1_coefficient = N, hidden, l1_coefficient
        self.steps, self.lr, self.batch_size, self.random_state = steps, lr, batch_size, random_state

    def _build(self, M, seed):
        return MLPEncoder(MLPEncoderConfig(N=self.N, M=M, hidden=tuple(self.hidden),
                                           l1_coefficient=self.l1_coefficient), seed=seed)


class SparseCodingTransformer(_EncoderTransformer):
    """:class:`~gaptheory.encoders.SparseCoding`: per-sample LASSO on a learned dictionary."""

    def __init__(self, N=16, *, alpha=0.01, nonnegative=True, steps=50, lr=1e-3, batch_size=None,
                 random_state=None):
        self.N, self.alpha, self.nonnegative = N, alpha, nonnegative
        self.steps, self.lr, self.batch_size, self.random_state = steps, lr, batch_size, random_state

    def _build(self, M, seed):
        return SparseCoding(SparseCodingConfig(N=self.N, M=M, alpha=self.alpha, nonnegative=self.nonnegative),
                            seed=seed)
