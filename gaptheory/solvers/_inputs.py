"""Solver-specific input checks (the generic ones live in :mod:`gaptheory._validation`)."""

from __future__ import annotations

import numpy as np

from .._validation import check_k


def check_flag(value, name: str) -> bool:
    """A switch such as ``nonnegative``: a bool, not a truthy string or number."""
    if not isinstance(value, (bool, np.bool_)):
        raise TypeError(f"{name} must be True or False; got {type(value).__name__} ({value!r}).")
    return bool(value)


def check_support_size(K, D: np.ndarray) -> int:
    """K for a least-squares fit on K atoms: ``1 <= K <= min(N, M)``."""
    K = check_k(K, D.shape[0], name="K")
    if K > D.shape[1]:
        raise ValueError(
            f"K={K} exceeds M={D.shape[1]}: more than M atoms are linearly dependent, so least "
            f"squares on the support is singular. Use K <= {D.shape[1]}."
        )
    return K
