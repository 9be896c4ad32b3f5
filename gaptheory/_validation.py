"""Input validation shared by every public entry point.

Public functions check their inputs once, here, and inner functions trust them
(scikit-learn's ``check_input`` pattern).  Every message names the argument,
shows what was received, states the rule and says what to change.
"""

from __future__ import annotations

import numbers

import numpy as np
import scipy.sparse

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


def check_k(K, N: int, name: str = "K") -> int:
    """Check the sparsity level: an int with ``1 <= K <= N``."""
    if isinstance(K, (bool, np.bool_)) or not isinstance(K, numbers.Integral):
        raise TypeError(f"{name} must be an int; got {type(K).__name__} ({K!r}).")
    K = int(K)
    if not 1 <= K <= N:
        raise ValueError(f"{name}={K} must satisfy 1 <= K <= N={N}; lower {name} or add atoms.")
    return K


def check_bool(value, name: str) -> bool:
    """Check that ``value`` is a bool (a string such as ``"no"`` would otherwise count as True)."""
    if not isinstance(value, (bool, np.bool_)):
        raise TypeError(f"{name} must be true or false; got {type(value).__name__} ({value!r}).")
    return bool(value)


def _is_torch_tensor(value) -> bool:
    return type(value).__module__.split(".")[0] == "torch" and hasattr(value, "detach")


def _torch_to_numpy(tensor, name: str) -> np.ndarray:
    """Host float64 copy of a torch tensor, refusing what float64 cannot hold."""
    if tensor.is_complex():
        raise TypeError(
            f"{name} is a complex tensor ({tensor.dtype}); gaptheory works over the reals. "
            f"Pass {name}.real if the imaginary part is meant to be zero."
        )
    if str(tensor.dtype) == "torch.bool":
        raise TypeError(f"{name} is a boolean tensor; pass {name}.double() if 0/1 values are meant.")
    # .double() first: numpy has no bfloat16, and float16/int upcast to float64 exactly.
    return tensor.detach().to("cpu").double().numpy()


def check_array(array, name: str, *, ndim: int = 2) -> np.ndarray:
    """Convert to a finite float64 array with ``ndim`` dimensions.

    Accepts numpy arrays, nested lists and torch tensors of any real dtype (int,
    float16, bfloat16, float32, float64, all upcast to float64 exactly). Refuses
    complex and boolean data with ``TypeError`` (a silent cast would drop the
    imaginary part or turn a mask into numbers), and empty, wrongly shaped or
    non-finite data with ``ValueError``.
    """
    if _is_torch_tensor(array):
        array = _torch_to_numpy(array, name)
    try:
        array = np.asarray(array)
    except (TypeError, ValueError) as err:  # ragged nested lists
        raise ValueError(
            f"{name} must be a rectangular real-valued array; could not convert it: {err}"
        ) from None
    kind = array.dtype.kind
    if kind == "c":
        raise TypeError(
            f"{name} is complex ({array.dtype}); gaptheory works over the reals. "
            f"Pass {name}.real if the imaginary part is meant to be zero."
        )
    if kind == "b":
        raise TypeError(
            f"{name} is boolean; pass {name}.astype(float) if 0/1 values are meant."
        )
    if kind == "O" and all(
        isinstance(v, numbers.Real) and not isinstance(v, (bool, np.bool_)) for v in array.flat
    ):
        kind = "f"  # e.g. fractions.Fraction or decimal-like reals: float64 is the working precision
    if kind not in "iuf":
        raise TypeError(
            f"{name} must hold real numbers; got dtype {array.dtype} "
            f"(e.g. {array.flat[0]!r} at the first entry). Pass a float array."
            if array.size else f"{name} must hold real numbers; got dtype {array.dtype}."
        )
    with np.errstate(over="ignore"):  # float128 beyond float64's range becomes inf, refused below
        array = array.astype(np.float64, copy=False)
    if array.ndim != ndim:
        hint = f" Pass a single row as {name}[None, :]." if ndim == 2 and array.ndim == 1 else ""
        raise ValueError(f"{name} must have {ndim} dimensions; got shape {array.shape}.{hint}")
    if array.size == 0:
        raise ValueError(f"{name} is empty (shape {array.shape}); pass at least one row and column.")
    if not np.isfinite(array).all():
        bad = int((~np.isfinite(array)).sum())
        raise ValueError(f"{name} contains {bad} NaN/inf entries; remove or impute them first.")
    return array


def times_power_of_two(A: np.ndarray, exponent) -> np.ndarray:
    r"""``A * 2**exponent`` (``exponent`` broadcast against ``A``), bit for bit ``np.ldexp``.

    Where every ``2**exponent`` is a normal number of ``A``'s dtype this multiplies by it (an
    exact power of two, so the product is rounded only where ``np.ldexp``'s is: to a
    subnormal, or past the largest float), which NumPy runs about a hundred times faster than
    ``np.ldexp``; otherwise it calls ``np.ldexp``. A scipy.sparse ``A`` (with a scalar
    ``exponent``) keeps its pattern: its stored values are scaled, as a new CSR array.
    """
    if scipy.sparse.issparse(A):
        A = A.tocsr()
        return scipy.sparse.csr_array((times_power_of_two(A.data, exponent), A.indices, A.indptr), shape=A.shape)
    A, exponent = np.asarray(A), np.asarray(exponent)
    info = np.finfo(A.dtype if A.dtype.kind == "f" else np.float64)
    if exponent.size and info.minexp <= exponent.min() and exponent.max() < info.maxexp:
        return A * np.ldexp(np.ones((), dtype=info.dtype), exponent)
    return np.ldexp(A, exponent)


def row_norms(A: np.ndarray) -> np.ndarray:
    r"""Euclidean norms of the rows of a finite float64 array, without overflow or underflow.

    Each row is rescaled by the power of two nearest its largest absolute entry before
    squaring (exact, so the norms equal ``np.linalg.norm``'s wherever that one does not
    overflow), and rows of size 1e-200 or 1e200 get their norms too (``np.linalg.norm``
    squares first and returns 0 or inf beyond about 1e-154 and 1e154). A zero row has norm 0.
    """
    peak = np.max(np.abs(A), axis=-1, keepdims=True)
    if A.size and peak.min() > 2.0**-400 and peak.max() < 2.0**400:
        # no square overflows, and a square small enough to be subnormal is below 2^-440 of
        # the row's sum, which it cannot change: the norms of the exact rescaling, unrescaled
        return np.linalg.norm(A, axis=-1)
    exponent = np.frexp(peak)[1]
    return times_power_of_two(np.linalg.norm(times_power_of_two(A, -exponent), axis=-1), exponent[..., 0])


def check_dictionary(D, *, name: str = "D", require_unit_norm: bool = True) -> np.ndarray:
    """Validate a dictionary of shape (N, M) whose rows are atoms.

    Raises ``ValueError`` naming the first zero row, or (when unit norm is required)
    the worst non-unit row with the advice to call ``normalize_atoms``. Norms are
    computed without overflow (:func:`row_norms`), so ``1e200 * D`` is reported as
    non-unit rather than as infinite.
    """
    D = check_array(D, name)
    norms = row_norms(D)
    zero = np.flatnonzero(norms == 0)
    if zero.size:
        raise ValueError(
            f"{name} has zero rows {zero[:10].tolist()}{' ...' if zero.size > 10 else ''}; an atom "
            f"must be a nonzero direction. Drop those rows ({name}[{name}.any(axis=1)])."
        )
    if require_unit_norm:
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


def check_codes(Z, N: int | None = None, *, name: str = "Z") -> np.ndarray:
    """Validate codes of shape (B, N)."""
    Z = check_array(Z, name)
    if N is not None and Z.shape[1] != N:
        raise ValueError(f"{name} must be (B, N) with N={N} columns; got shape {Z.shape}.")
    return Z


def sparse_rows(rows, name: str) -> scipy.sparse.csr_array:
    """``rows`` (m, N), dense or scipy.sparse, as a canonical float64 CSR array (sorted
    indices, no duplicates, no stored zeros). Values are kept as given, NaN and inf included
    (a certificate's check reports them); complex or boolean data and arrays that are not 2-D
    are refused."""
    if scipy.sparse.issparse(rows):
        kind = rows.dtype.kind
        array = None
    else:
        if _is_torch_tensor(rows):
            rows = _torch_to_numpy(rows, name)
        array = np.asarray(rows)
        kind = array.dtype.kind
    if kind == "c":
        raise TypeError(f"{name} is complex ({rows.dtype}); gaptheory works over the reals. Pass {name}.real.")
    if kind not in "iuf":
        raise TypeError(f"{name} must hold real numbers; got dtype {rows.dtype}. Pass a float array.")
    if array is not None and array.ndim != 2:
        raise ValueError(f"{name} must have 2 dimensions (m, N); got shape {array.shape}.")
    with np.errstate(over="ignore"):
        result = scipy.sparse.csr_array(rows if array is None else array, dtype=np.float64)
    result.sum_duplicates()
    result.eliminate_zeros()
    return result


def check_choice(value, name: str, choices) -> str:
    """Check that ``value`` is one of ``choices``."""
    if value not in choices:
        raise ValueError(f"{name}={value!r} is not supported; choose one of {sorted(choices)}.")
    return value


def parameter_defaults(source) -> dict:
    """Parameter name -> default of a config dataclass (its fields) or a function (its signature).

    Lets a CLI flag or a sweep parameter take its default from the one place that defines it.

    Examples
    --------
    >>> def f(a, b=2, *, c="x"): ...
    >>> parameter_defaults(f)
    {'b': 2, 'c': 'x'}
    """
    import dataclasses
    import inspect

    if dataclasses.is_dataclass(source):
        return {f.name: f.default for f in dataclasses.fields(source) if f.default is not dataclasses.MISSING}
    return {name: p.default for name, p in inspect.signature(source).parameters.items()
            if p.default is not inspect.Parameter.empty}
