r"""An SAE whose codes are refined per sample by nonnegative LASSO at inference (ITO)."""

from __future__ import annotations

from dataclasses import dataclass
from typing import ClassVar

from .._validation import check_int, check_positive
from ..solvers import FISTA_TOL
from .base import Encoder
from .relu import SAEConfig, SparseAutoencoder
from .sparse_coding import _lasso_codes


@dataclass(frozen=True)
class SAEITOConfig(SAEConfig):
    """An SAE whose codes are refined per sample by nonnegative LASSO (FISTA) at inference."""

    architecture: ClassVar[str] = "sae_ito"  # not a SAELens architecture: SAELens would skip the refinement
    ito_alpha: float = 0.01  # l1 weight of the per-sample LASSO 0.5||x - z W_dec||^2 + alpha ||z||_1
    ito_tol: float = FISTA_TOL  # relative duality-gap tolerance of FISTA
    ito_max_iter: int = 5000  # FISTA iteration cap per row

    def __post_init__(self):
        super().__post_init__()
        check_positive(self.ito_alpha, "ito_alpha")
        check_positive(self.ito_tol, "ito_tol")
        check_int(self.ito_max_iter, "ito_max_iter", minimum=1)


class SAEWithITO(SparseAutoencoder):
    r"""SAE + inference-time optimisation: SAE codes refined per sample on the learned decoder.

    Training is that of the SAE. At inference every row solves the nonnegative LASSO

    .. math:: \min_{z \ge 0} \tfrac12 \|x - b_{dec} - z W_{dec}\|_2^2 + \alpha \|z\|_1

    by batched FISTA (the torch core of :func:`gaptheory.solvers.lasso`'s ``method="fista"``),
    **started from the SAE's codes** rather than from zero.
    The inference FLOPs are the SAE's plus those of the iterations FISTA actually used.

    Examples
    --------
    >>> import numpy as np
    >>> from gaptheory.instances import make_instance
    >>> inst = make_instance(16, 8, 3, 32, seed=0)
    >>> model = SAEWithITO(SAEITOConfig(N=16, M=8), seed=0).fix_decoder(inst.D)
    >>> Z = model.encode(inst.X)
    >>> bool(np.abs(model.decode(Z) - inst.X).max() < 0.2)
    True
    """

    config_class = SAEITOConfig
    _saelens_state = Encoder._saelens_state  # the per-sample solve is not scale-free: no folding

    def _encode(self, X):
        # Training goes through encode_with_hidden_pre (plain SAE codes); encode refines them.
        Z0, flops = super()._encode(X)
        Z, solve_flops = _lasso_codes(self, X, init=Z0, alpha=self.cfg.ito_alpha, nonnegative=True,
                                      tol=self.cfg.ito_tol, max_iter=self.cfg.ito_max_iter)
        return Z, flops + solve_flops

