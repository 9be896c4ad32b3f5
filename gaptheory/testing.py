r"""Check a claimed bound ``lhs <= rhs`` on every instance hypothesis draws.

A user who derives a bound writes it as a function of an instance returning the pair
``(lhs, rhs)`` and hands it to :func:`check_bound` with a strategy from
:mod:`gaptheory.strategies`. Hypothesis searches for an instance where the claim fails
and shrinks it; the report carries that minimal counterexample, or ``None`` when every
instance drawn satisfied the claim. A check registered with :func:`bound_check` in a
Python file runs beside the built-in ones under ``gaptheory verify --checks FILE.py``.

Examples
--------
A true bound: the mutual coherence is at least the Welch bound (``rtol`` covers the round-off
of the M-term dot products and of the bound's square root, a few eps).

>>> from gaptheory.instances import mutual_coherence, welch_bound
>>> from gaptheory.strategies import instances
>>> def welch(instance):
...     return welch_bound(instance.N, instance.M), mutual_coherence(instance.D)
>>> report = check_bound(welch, strategy=instances(N=(3, 10), M=(2, 4)), max_examples=30, rtol=1e-12)
>>> report.passed, report.counterexample
(True, None)

A false one: "every dictionary has coherence below 1/2".

>>> report = check_bound(lambda inst: (mutual_coherence(inst.D), 0.5),
...                      strategy=instances(N=(3, 10), M=(2, 4)), max_examples=50)
>>> report.passed, report.counterexample.N
(False, 3)
"""

from __future__ import annotations

import math
import numbers
from dataclasses import dataclass, field
from typing import Any, Callable

from hypothesis import HealthCheck, Phase, given, settings
from hypothesis import seed as hypothesis_seed
from hypothesis.strategies import SearchStrategy

from ._validation import check_int


@dataclass(frozen=True)
class BoundReport:
    r"""The outcome of :func:`check_bound`.

    Attributes
    ----------
    name : str
    passed : bool
        True when no instance drawn broke ``lhs <= rhs + rtol * max(|lhs|, |rhs|)``.
    examples : int
        Instances the bound was evaluated on (the search and the shrinking together).
    worst_margin : float
        The smallest ``rhs - lhs`` seen (negative when the claim failed; NaN when the
        function returned NaN).
    counterexample : object or None
        The shrunk instance on which the claim fails; ``None`` when it held throughout.
    lhs, rhs : float
        The values at the counterexample (NaN when none).
    error : str
        ``"TypeName: message"`` when the function raised on the counterexample instead of
        returning a pair; empty otherwise.
    """

    name: str
    passed: bool
    examples: int
    worst_margin: float
    counterexample: Any = field(default=None, repr=True)
    lhs: float = math.nan
    rhs: float = math.nan
    error: str = ""

    def __str__(self) -> str:
        if self.passed:
            return f"{self.name}: holds on {self.examples} instances (smallest margin rhs - lhs = {self.worst_margin:.3g})"
        what = self.error or f"lhs = {self.lhs!r} > rhs = {self.rhs!r}"
        return f"{self.name}: fails on {self.counterexample!r}: {what}"


class _ClaimFailed(AssertionError):
    def __init__(self, instance, lhs: float, rhs: float, error: str = ""):
        super().__init__(error or f"lhs={lhs!r} > rhs={rhs!r}")
        self.instance, self.lhs, self.rhs, self.error = instance, lhs, rhs, error


def _as_pair(value) -> tuple[float, float]:
    try:
        lhs, rhs = value
        lhs, rhs = float(lhs), float(rhs)
    except (TypeError, ValueError):
        raise TypeError(
            f"the bound function must return a pair (lhs, rhs) of real numbers claimed to satisfy "
            f"lhs <= rhs; it returned {value!r}."
        ) from None
    return lhs, rhs


def check_bound(
    f: Callable[[Any], tuple[float, float]],
    *,
    strategy: SearchStrategy,
    max_examples: int = 100,
    seed: int = 0,
    rtol: float = 0.0,
    name: str | None = None,
) -> BoundReport:
    r"""Search for an instance on which ``lhs <= rhs`` fails, and shrink it.

    Parameters
    ----------
    f : callable
        ``f(instance) -> (lhs, rhs)``; the claim is ``lhs <= rhs``. NaN on either side,
        or an exception, counts as a failure (reported, never hidden).
    strategy : hypothesis SearchStrategy
        Usually :func:`gaptheory.strategies.instances`.
    max_examples : int
        Instances to try before accepting the claim (hypothesis's ``max_examples``).
    seed : int
        Same seed, same search and the same report.
    rtol : float
        Relative slack for round-off: the claim checked is
        :math:`\mathrm{lhs} \le \mathrm{rhs} + \mathrm{rtol}\,\max(|\mathrm{lhs}|, |\mathrm{rhs}|)`.
        Set it from the floating-point analysis of ``f`` (e.g. a few ulps times the
        number of operations); 0 asks for the bound exactly as computed.
    name : str, optional
        Defaults to ``f.__name__``.

    Returns
    -------
    BoundReport
    """
    if not callable(f):
        raise TypeError(f"f must be a function instance -> (lhs, rhs); got {type(f).__name__}.")
    if not isinstance(strategy, SearchStrategy):
        raise TypeError(
            f"strategy must be a hypothesis strategy, e.g. gaptheory.strategies.instances(); got {type(strategy).__name__}."
        )
    max_examples = check_int(max_examples, "max_examples", minimum=1)
    seed = check_int(seed, "seed", minimum=0)
    if isinstance(rtol, bool) or not isinstance(rtol, numbers.Real) or not (0 <= rtol < math.inf):
        raise ValueError(f"rtol must be a finite number >= 0; got {rtol!r}.")
    name = name or getattr(f, "__name__", "bound")
    tally = {"examples": 0, "worst": math.inf}

    @hypothesis_seed(seed)
    @settings(
        max_examples=max_examples,
        database=None,
        deadline=None,
        report_multiple_bugs=False,
        phases=(Phase.generate, Phase.shrink),
        suppress_health_check=list(HealthCheck),
    )
    @given(strategy)
    def search(instance):
        tally["examples"] += 1
        try:
            lhs, rhs = _as_pair(f(instance))
        except Exception as err:  # the bound itself crashing is a failure to report
            tally["worst"] = math.nan
            raise _ClaimFailed(instance, math.nan, math.nan, f"{type(err).__name__}: {err}") from err
        margin = rhs - lhs
        if math.isnan(margin):
            tally["worst"] = math.nan
        elif not math.isnan(tally["worst"]):
            tally["worst"] = min(tally["worst"], margin)
        if not lhs <= rhs + rtol * max(abs(lhs), abs(rhs)):
            raise _ClaimFailed(instance, lhs, rhs)

    try:
        search()
    except _ClaimFailed as failure:
        return BoundReport(
            name=name, passed=False, examples=tally["examples"], worst_margin=tally["worst"],
            counterexample=failure.instance, lhs=failure.lhs, rhs=failure.rhs, error=failure.error,
        )
    return BoundReport(name=name, passed=True, examples=tally["examples"], worst_margin=tally["worst"])


@dataclass(frozen=True)
class RegisteredBound:
    """A bound check registered with :func:`bound_check`."""

    name: str
    description: str
    function: Callable
    strategy: SearchStrategy
    max_examples: int
    rtol: float

    def run(self, seed: int = 0) -> BoundReport:
        return check_bound(
            self.function, strategy=self.strategy, max_examples=self.max_examples,
            seed=seed, rtol=self.rtol, name=self.name,
        )


#: Bound checks registered so far, in registration order.
REGISTERED_BOUNDS: list[RegisteredBound] = []


def bound_check(name: str, *, strategy: SearchStrategy, max_examples: int = 100, rtol: float = 0.0, description: str = ""):
    """Register ``f(instance) -> (lhs, rhs)`` as a named check for ``gaptheory verify --checks``.

    Examples
    --------
    In ``my_bounds.py``::

        from gaptheory.testing import bound_check
        from gaptheory.strategies import instances
        from gaptheory.instances import mutual_coherence, welch_bound

        @bound_check("welch", strategy=instances(N=(3, 12), M=(2, 5)), rtol=1e-12)
        def welch(instance):
            return welch_bound(instance.N, instance.M), mutual_coherence(instance.D)

    then ``gaptheory verify --checks my_bounds.py``.
    """
    if not isinstance(name, str) or not name:
        raise TypeError(f"name must be a non-empty string; got {name!r}.")
    if not isinstance(strategy, SearchStrategy):
        raise TypeError(f"strategy must be a hypothesis strategy; got {type(strategy).__name__}.")
    max_examples = check_int(max_examples, "max_examples", minimum=1)

    def register(function):
        REGISTERED_BOUNDS.append(
            RegisteredBound(name, description or (function.__doc__ or "").strip().split("\n")[0] or name,
                            function, strategy, max_examples, float(rtol))
        )
        return function

    return register


__all__ = ["BoundReport", "REGISTERED_BOUNDS", "RegisteredBound", "bound_check", "check_bound"]
