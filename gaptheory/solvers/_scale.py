"""Exact power-of-two rescaling that makes the solvers scale-equivariant.

Every problem here is homogeneous in ``x``: basis pursuit, OMP and best subset map ``c x`` to
``c z``, and the LASSO maps ``(c x, c alpha)`` to ``c z``. Each solver therefore works on
``x 2^{-e}`` with ``e`` the binary exponent of ``max |x|`` (so the data lie in [0.5, 1),
far from overflow and underflow in float64 and float32) and multiplies the codes back by
``2^e``. Multiplying by a power of two is exact in binary floating point, so the only
change is that round-off is now relative to the data's scale.
"""

from __future__ import annotations

import dataclasses

import numpy as np

from .._validation import times_power_of_two
from .results import SolveResult


def row_exponents(X: np.ndarray) -> np.ndarray:
    """(B,) int: per row, ``e`` with ``max |x| = m 2^e``, ``m`` in [0.5, 1); 0 for zero rows."""
    _, exponent = np.frexp(np.abs(X).max(axis=1))
    return exponent.astype(np.int64)


def scale_rows(X: np.ndarray, exponent: np.ndarray) -> np.ndarray:
    """``X`` with row ``b`` multiplied by ``2^-exponent[b]`` (exact)."""
    return times_power_of_two(X, -exponent[:, None])


def unscale_result(result: SolveResult, exponent: np.ndarray, *, objective_degree: int) -> SolveResult:
    """Codes times ``2^e`` per row; objective and duality gap times ``2^(degree e)``
    (degree 1 for an l1 norm, 2 for a squared residual). They over- or underflow only
    where the true value is outside float64's range."""
    with np.errstate(over="ignore", under="ignore"):  # the true value is outside float64
        return dataclasses.replace(
            result,
            codes=times_power_of_two(result.codes, exponent[:, None]),
            objective=times_power_of_two(result.objective, objective_degree * exponent),
            duality_gap=times_power_of_two(result.duality_gap, objective_degree * exponent),
        )
