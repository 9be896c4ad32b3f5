"""Input validation shared by every public entry point.

Public functions check their inputs once, here, and inner functions trust them
(scikit-learn's ``check_input`` pattern).  Every message names the argument,
shows what was received, states the rule and says what to change.
"""

from __future__ import annotations

import numbers

import numpy as np

#: Atoms count as unit-norm when | ||d_i|| - 1 | <= this; float64 renormalisation
#: leaves errors near 1e-16, while a forgotten normalisation is off by O(1).
UNIT_NORM_ATOL = 1e-8


def as_generator(seed) -> np.random.Generator:
    """Return a ``numpy.random.Generator`` from an int seed or a Generator.

    Library code never touches global RNG state; randomness always flows from here.
    """
    if isinstance(seed, np.random.Generator):
        return seed
    if isinstance(seed, (bool, np.bool_)) or not isinstance(seed, numbers.Integral):
        raise TypeError(
            f"seed must be an int or a numpy.random.Generator; got {type(seed).__name__} "
            f"({seed!r}). Pass e.g. seed=0."
        )
    if seed < 0:
        raise ValueError(f"seed must be >= 0; got {seed}. Pass a non-negative integer.")
    return np.random.default_rng(int(seed))


def check_int(value, name: str, *, minimum: int | None = None, maximum: int | None = None) -> int:
    """Check that ``value`` is an integer within ``[minimum, maximum]``."""
    if isinstance(value, (bool, np.bool_)) or not isinstance(value, numbers.Integral):
        raise TypeError(f"{name} must be an int; got {type(value).__name__} ({value!r}).")
    value = int(value)
    if minimum is not None and value < minimum:
        raise ValueError(f"{name}={value} must be >= {minimum}; raise {name}.")
    if maximum is not None and value > maximum:
        raise ValueError(f"{name}={value} must be <= {maximum}; lower {name}.")
    return value


def check_positive(value, name: str, *, allow_zero: bool = False) -> float:
    """Check that ``value`` is a finite real number > 0 (or >= 0 with ``allow_zero``)."""
    if isinstance(value, (bool, np.bool_)) or not isinstance(value, numbers.Real):
        raise TypeError(f"{name} must be a real number; got {type(value).__name__} ({value!r}).")
    value = float(value)
    if not np.isfinite(value) or value < 0 or (value == 0 and not allow_zero):
        rule = ">= 0" if allow_zero else "> 0"
        raise ValueError(f"{name}={value} must be finite and {rule}.")
    return value


def check_k(k, n_latents: int, name: str = "k") -> int:
    """Check the sparsity level: an int with ``1 <= K <= N``."""
    if isinstance(k, (bool, np.bool_)) or not isinstance(k, numbers.Integral):
        raise TypeError(f"{name} must be an int; got {type(k).__name__} ({k!r}).")
    k = int(k)
    if not 1 <= k <= n_latents:
        raise ValueError(
            f"{name}={k} must satisfy 1 <= K <= N={n_latents}; lower {name} or add atoms."
        )
    return k


def check_array(array, name: str, *, ndim: int = 2) -> np.ndarray:
    """Convert to a finite float64 array with ``ndim`` dimensions."""
    if hasattr(array, "detach"):  # torch tensors: move to host without keeping the graph
        array = array.detach().cpu().numpy()
    try:
        array = np.asarray(array, dtype=np.float64)
    except (TypeError, ValueError) as err:
        raise ValueError(f"{name} must be a real-valued array; could not convert it: {err}") from None
    if array.ndim != ndim:
        hint = f" Pass a single row as {name}[None, :]." if ndim == 2 and array.ndim == 1 else ""
        raise ValueError(f"{name} must have {ndim} dimensions; got shape {array.shape}.{hint}")
    if array.size == 0:
        raise ValueError(f"{name} is empty (shape {array.shape}); pass at least one row and column.")
    if not np.isfinite(array).all():
        bad = int((~np.isfinite(array)).sum())
        raise ValueError(f"{name} contains {bad} NaN/inf entries; remove or impute them first.")
    return array


def check_dictionary(D, *, name: str = "D", require_unit_norm: bool = True) -> np.ndarray:
    """Validate a dictionary of shape (N, M) whose rows are atoms.

    Raises ``ValueError`` if any row is not unit-norm (when required), naming the
    worst row and suggesting ``normalize_atoms``.
    """
    D = check_array(D, name)
    if require_unit_norm:
        norms = np.linalg.norm(D, axis=1)
        deviation = np.abs(norms - 1.0)
        worst = int(np.argmax(deviation))
        if deviation[worst] > UNIT_NORM_ATOL:
            raise ValueError(
                f"{name} must have unit-norm rows (atoms, shape (N, M)); row {worst} has norm "
                f"{norms[worst]:.6g}. Normalise with gaptheory.instances.normalize_atoms({name}); "
                f"if your atoms are columns, pass {name}.T."
            )
    return D


def check_observations(X, D: np.ndarray, *, name: str = "X") -> np.ndarray:
    """Validate observations ``X`` of shape (B, M) against a checked ``D`` of shape (N, M)."""
    X = check_array(X, name)
    if X.shape[1] != D.shape[1]:
        raise ValueError(
            f"{name} must be (B, M) with the same M as D (N, M); got {name}{X.shape} and "
            f"D{D.shape}. Data is X = Z @ D; pass a single observation as {name}[None, :]."
        )
    return X


def check_codes(Z, n_latents: int | None = None, *, name: str = "Z") -> np.ndarray:
    """Validate codes of shape (B, N)."""
    Z = check_array(Z, name)
    if n_latents is not None and Z.shape[1] != n_latents:
        raise ValueError(f"{name} must have N={n_latents} columns; got shape {Z.shape}.")
    return Z


def check_choice(value, name: str, choices) -> str:
    """Check that ``value`` is one of ``choices``."""
    if value not in choices:
        raise ValueError(f"{name}={value!r} is not supported; choose one of {sorted(choices)}.")
    return value
