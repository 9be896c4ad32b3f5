r"""Hypothesis strategies for compressed-sensing instances, for writing bound checks.

A bound such as "OMP recovers every K-sparse code when :math:`K < (1 + 1/\mu)/2`" is a
claim about *every* instance; hypothesis draws many and, when one breaks the claim,
shrinks it to the smallest it can find. These strategies are built so that shrinking is
meaningful: sizes are drawn first (``N``, then ``M``, then ``K``, then ``B``), each
toward its lower bound, and the randomness of the arrays is one integer seed passed to
:func:`gaptheory.instances.make_instance`, so a shrunk instance prints as a call that
rebuilds it exactly.

Sizes are given as an int (fixed) or an inclusive ``(lo, hi)`` pair. Every strategy
checks its ranges when it is built and raises ``ValueError`` naming the argument.

Examples
--------
>>> from hypothesis import given, settings
>>> from gaptheory.instances import mutual_coherence, welch_bound
>>> @settings(max_examples=20, database=None)
... @given(dictionaries(N=(4, 12), M=(2, 3)))
... def test_welch(D):
...     assert mutual_coherence(D) >= welch_bound(*D.shape) * (1 - 1e-12)
>>> test_welch()

See :func:`gaptheory.testing.check_bound` to run a bound over a strategy and get the
shrunk counterexample back as a value.
"""

from __future__ import annotations

import numbers

import numpy as np
from hypothesis import strategies as st

from ._validation import check_bool
from .instances import Instance, make_instance, mutual_coherence
from .instances import sparse_codes as _draw_sparse_codes

#: Dictionary kinds a strategy may draw (``identity_dct`` fixes N = 2M, so it is not a
#: free-size family and is left out).
STRATEGY_KINDS = ("gaussian", "rademacher", "dct")

_SEEDS = st.integers(min_value=0, max_value=2**32 - 1)


def _size_range(value, name: str, *, minimum: int) -> tuple[int, int]:
    """``value`` as an inclusive ``(lo, hi)`` pair of ints with ``minimum <= lo <= hi``."""
    if isinstance(value, numbers.Integral) and not isinstance(value, bool):
        pair = (int(value), int(value))
    else:
        try:
            lo, hi = value
        except (TypeError, ValueError):
            raise TypeError(f"{name} must be an int or a (lo, hi) pair of ints; got {value!r}.") from None
        if any(isinstance(v, bool) or not isinstance(v, numbers.Integral) for v in (lo, hi)):
            raise TypeError(f"{name} must be an int or a (lo, hi) pair of ints; got {value!r}.")
        pair = (int(lo), int(hi))
    if pair[0] < minimum:
        raise ValueError(f"{name}={value!r}: the lower end must be >= {minimum}.")
    if pair[0] > pair[1]:
        raise ValueError(f"{name}={value!r}: the range is empty (lo > hi); swap the ends.")
    return pair


def _check_kinds(kinds) -> tuple[str, ...]:
    if isinstance(kinds, str):
        kinds = (kinds,)
    kinds = tuple(kinds)
    unknown = [k for k in kinds if k not in STRATEGY_KINDS]
    if not kinds or unknown:
        raise ValueError(f"kinds={kinds!r}: choose one or more of {STRATEGY_KINDS}.")
    return kinds


def _dimension_range(N_range, M_range, overcomplete: bool) -> None:
    """Every ``N`` in its range must admit an ``M``: ``M_lo <= N_lo - 1`` (or ``N_lo``)."""
    largest_allowed = N_range[0] - 1 if overcomplete else N_range[0]
    if M_range[0] > largest_allowed:
        relation = "M < N" if overcomplete else "M <= N"
        raise ValueError(
            f"M={M_range!r} and N={N_range!r}: {relation} must be possible for the smallest N; "
            f"lower M's lower end to {largest_allowed} or raise N's."
        )


def dictionaries(N=(2, 16), M=(1, 8), *, kinds=STRATEGY_KINDS, overcomplete: bool = True):
    r"""Strategy for dictionaries ``D`` of shape (N, M) with unit-norm rows (float64).

    Parameters
    ----------
    N, M : int or (int, int)
        Atoms and dimension, inclusive ranges. ``M`` is capped at ``N - 1`` when
        ``overcomplete`` (the compressed-sensing regime ``M < N``), else at ``N``.
    kinds : str or sequence of str
        Families from :data:`STRATEGY_KINDS`, drawn by :func:`gaptheory.instances.random_dictionary`.
    overcomplete : bool

    Returns
    -------
    hypothesis.strategies.SearchStrategy of ndarray (N, M)
    """
    return instances(N=N, M=M, K=1, B=1, kinds=kinds, overcomplete=overcomplete).map(lambda inst: inst.D)


def sparse_codes(N, K=(1, 3), B=(1, 8), *, nonnegative: bool = True, magnitudes=(0.5, 1.5)):
    r"""Strategy for codes ``Z`` of shape (B, N) with exactly ``K`` nonzeros per row.

    ``N`` is fixed (an int: the number of latents of the dictionary the codes go with);
    ``K`` and ``B`` are ranges, ``K`` capped at ``N``. Magnitudes are uniform in
    ``magnitudes = (lo, hi)``, with random signs unless ``nonnegative``.

    Returns
    -------
    hypothesis.strategies.SearchStrategy of ndarray (B, N)
    """
    N_range = _size_range(N, "N", minimum=1)
    if N_range[0] != N_range[1]:
        raise TypeError(f"sparse_codes needs one N (the dictionary's); got N={N!r}. Use instances() for a range.")
    N = N_range[0]
    K_range = _size_range(K, "K", minimum=1)
    if K_range[0] > N:
        raise ValueError(f"K={K!r} with N={N}: K's lower end must be <= N; lower K.")
    B_range = _size_range(B, "B", minimum=1)
    nonnegative = check_bool(nonnegative, "nonnegative")

    @st.composite
    def draw_codes(draw):
        K_value = draw(st.integers(K_range[0], min(K_range[1], N)))
        B_value = draw(st.integers(*B_range))
        seed = draw(_SEEDS)
        return _draw_sparse_codes(B_value, N, K_value, seed=seed, nonnegative=nonnegative, magnitudes=magnitudes)

    return draw_codes()


def satisfies_coherence_condition(instance: Instance) -> bool:
    r"""True when :math:`K < (1 + 1/\mu(D))/2`, the mutual-coherence condition under which
    every K-sparse code is the unique sparsest one and basis pursuit and OMP recover it
    (Donoho & Elad 2003; Tropp 2004, Theorem A).

    :math:`\mu` is taken at its float64 upper bound :math:`\hat\mu + 4 M \epsilon`: the
    computed inner product of two rounded unit rows is within about :math:`2 M \epsilon` of
    the exact one, so two antipodal atoms (exact :math:`\mu = 1`) computed as
    :math:`1 - 3\cdot 10^{-16}` do not pass the condition at ``K = 1``.
    """
    mu = mutual_coherence(instance.D) + 4 * instance.M * np.finfo(np.float64).eps
    return instance.K < 0.5 * (1.0 + 1.0 / mu)


def instances(
    N=(2, 16),
    M=(1, 8),
    K=(1, 3),
    B=(1, 16),
    *,
    kinds=STRATEGY_KINDS,
    nonnegative: bool = True,
    magnitudes=(0.5, 1.5),
    overcomplete: bool = True,
    coherence_condition: bool = False,
):
    r"""Strategy for :class:`gaptheory.instances.Instance` objects (``.D``, ``.Z``, ``.X = Z @ D``).

    Parameters
    ----------
    N, M, K, B : int or (int, int)
        Inclusive ranges, drawn in this order so that shrinking minimises ``N`` first.
        ``M`` is capped at ``N - 1`` (``overcomplete``) or ``N``; ``K`` at ``N``.
    kinds : str or sequence of str
        Dictionary families (:data:`STRATEGY_KINDS`).
    nonnegative : bool
        Nonnegative codes (the ReLU-SAE setting) or random signs.
    magnitudes : (float, float)
        Nonzero magnitudes uniform in ``[lo, hi]``, ``0 < lo <= hi``.
    overcomplete : bool
        Keep ``M < N``.
    coherence_condition : bool
        Keep only instances with :func:`satisfies_coherence_condition`. Small Gaussian
        dictionaries are coherent, so with this on, ``K = 1`` is the common case.

    Returns
    -------
    hypothesis.strategies.SearchStrategy of Instance
        Its ``repr`` is the :func:`~gaptheory.instances.make_instance` call that rebuilds it.

    Examples
    --------
    >>> strategy = instances(N=(4, 8), M=(2, 3), K=(1, 2))
    """
    N_range = _size_range(N, "N", minimum=1)
    M_range = _size_range(M, "M", minimum=1)
    K_range = _size_range(K, "K", minimum=1)
    B_range = _size_range(B, "B", minimum=1)
    overcomplete = check_bool(overcomplete, "overcomplete")
    nonnegative = check_bool(nonnegative, "nonnegative")
    coherence_condition = check_bool(coherence_condition, "coherence_condition")
    kinds = _check_kinds(kinds)
    _dimension_range(N_range, M_range, overcomplete)
    if K_range[0] > N_range[0]:
        raise ValueError(f"K={K!r} and N={N!r}: K's lower end must be <= N's lower end; lower K.")
    # Fail here, not inside hypothesis, on bad magnitudes.
    _draw_sparse_codes(1, 1, 1, seed=0, magnitudes=magnitudes)

    @st.composite
    def draw_instance(draw):
        N_value = draw(st.integers(*N_range))
        M_value = draw(st.integers(M_range[0], min(M_range[1], N_value - 1 if overcomplete else N_value)))
        K_value = draw(st.integers(K_range[0], min(K_range[1], N_value)))
        B_value = draw(st.integers(*B_range))
        kind = draw(st.sampled_from(kinds))
        seed = draw(_SEEDS)
        return make_instance(
            N_value, M_value, K_value, B_value, kind=kind, seed=seed,
            nonnegative=nonnegative, magnitudes=magnitudes,
        )

    strategy = draw_instance()
    if coherence_condition:
        strategy = strategy.filter(satisfies_coherence_condition)
    return strategy


__all__ = [
    "STRATEGY_KINDS",
    "dictionaries",
    "instances",
    "satisfies_coherence_condition",
    "sparse_codes",
]
