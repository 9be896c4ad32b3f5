r"""Sweeps: a TOML grid expanded into keyed tasks.

A sweep file names a task *kind* and a grid::

    name = "phase_transition"
    kind = "recovery"              # recovery | gap | training | activations

    [fixed]                        # parameters shared by every task
    N = 100
    solver = "basis_pursuit"

    [grid]                         # the Cartesian product of these lists
    M_over_N = [0.2, 0.4, 0.6]     # ratios are resolved to M and K before keying
    K_over_M = [0.1, 0.3, 0.5]
    seed = [0, 1, 2]

:meth:`Sweep.tasks` turns it into :class:`Task` objects whose ``key`` is the hash of the
task's full, resolved config (defaults filled in), so the same task always has the same
key. :func:`~gaptheory.experiments.runner.run_sweep` runs them into a
:class:`~gaptheory.experiments.store.ResultStore`; the task kinds are
:mod:`~gaptheory.experiments.tasks`.
"""

from __future__ import annotations

import itertools
import sys
from dataclasses import dataclass, field

from .._validation import check_choice
from .store import task_key
from .tasks import TASK_KINDS, check_value

if sys.version_info >= (3, 11):
    import tomllib
else:  # pragma: no cover - exercised on 3.10 only
    import tomli as tomllib


@dataclass(frozen=True)
class Task:
    """One unit of work: a fully resolved config and its key."""

    key: str
    sweep: str
    config: dict = field(repr=False)


@dataclass(frozen=True)
class Sweep:
    """A named grid of tasks of one kind.

    Attributes
    ----------
    name : str
        Recorded in every record (``record["sweep"]``).
    kind : str
        One of :data:`TASK_KINDS`.
    fixed : dict
        Parameters shared by every task.
    grid : dict
        Parameter name -> tuple of values; tasks are their Cartesian product.
    cases : tuple of dict
        Partial configs (TOML ``[[case]]`` tables); the grid is expanded once per case,
        the case's values over ``fixed``. Lets one sweep hold the paper's (setting,
        method) pairs without the invalid combinations of a product.
    """

    name: str
    kind: str
    fixed: dict = field(default_factory=dict)
    grid: dict = field(default_factory=dict)
    cases: tuple = ()

    def __post_init__(self):
        if not isinstance(self.name, str) or not self.name:
            raise ValueError(f"sweep name must be a non-empty string; got {self.name!r}.")
        check_choice(self.kind, "kind", TASK_KINDS)
        allowed = set(TASK_KINDS[self.kind].defaults) | {"M_over_N", "K_over_M"}
        object.__setattr__(self, "cases", tuple(dict(case) for case in self.cases))
        sections = [("fixed", self.fixed), ("grid", self.grid)] + [(f"case[{i}]", c) for i, c in enumerate(self.cases)]
        for section, params in sections:
            unknown = sorted(set(params) - allowed)
            if unknown:
                raise ValueError(
                    f"[{section}] has parameters {unknown} that kind={self.kind!r} does not take; "
                    f"choose from {sorted(allowed)}."
                )
        for name, values in self.grid.items():
            if not isinstance(values, (list, tuple)) or len(values) == 0:
                raise ValueError(f"grid.{name} must be a non-empty list; got {values!r}. Put single values in [fixed].")
        both = sorted((set(self.fixed) | {n for case in self.cases for n in case}) & set(self.grid))
        if both:
            raise ValueError(f"{both} appear in both [fixed] and [grid]; keep each parameter in one.")

    @classmethod
    def from_dict(cls, data: dict) -> "Sweep":
        """Build from the parsed TOML document (keys ``name``, ``kind``, ``fixed``, ``grid``)."""
        unknown = sorted(set(data) - {"name", "kind", "fixed", "grid", "case", "description"})
        if unknown:
            raise ValueError(f"sweep file has unknown top-level keys {unknown}; use name, kind, description, [fixed], "
                             "[grid], [[case]].")
        for name in ("name", "kind"):
            if name not in data:
                raise ValueError(f"sweep file needs a top-level {name!r}.")
        grid = {name: tuple(values) if isinstance(values, list) else values for name, values in data.get("grid", {}).items()}
        cases = data.get("case", [])
        if not isinstance(cases, list) or not all(isinstance(case, dict) for case in cases):
            raise ValueError("[[case]] must be an array of tables, e.g. [[case]] setting = \"unknown\" method = \"sae\".")
        return cls(name=data["name"], kind=data["kind"], fixed=dict(data.get("fixed", {})), grid=grid,
                   cases=tuple(cases))

    def tasks(self) -> list[Task]:
        """Expand the grid into tasks, in grid order, dropping duplicate keys.

        Every value is checked against its parameter's type before anything runs; a bad
        one raises ValueError or TypeError naming ``fixed.NAME`` or ``grid.NAME``.
        """
        kind = TASK_KINDS[self.kind]
        sections = [("fixed", self.fixed), ("grid", self.grid)] + [(f"case[{i}]", c) for i, c in enumerate(self.cases)]
        for section, params in sections:
            for name, values in params.items():
                for value in (values if section == "grid" else (values,)):
                    check_value(self.kind, f"{section}.{name}", name, value)
        names = list(self.grid)
        seen, tasks = set(), []
        for case, values in itertools.product(self.cases or ({},), itertools.product(*(self.grid[n] for n in names))):
            config = {**kind.defaults, **self.fixed, **case, **dict(zip(names, values))}
            config = kind.check(config)
            config = {"kind": self.kind, **config}
            # The sweep name is part of the key: the same grid under two names is two sets of tasks.
            key = task_key({**config, "sweep": self.name})
            if key not in seen:  # two ratios can round to the same integers
                seen.add(key)
                tasks.append(Task(key=key, sweep=self.name, config=config))
        return tasks


def load_sweep(path) -> Sweep:
    """Read a sweep TOML file (see the module docstring for the format)."""
    try:
        with open(path, "rb") as handle:
            data = tomllib.load(handle)
    except FileNotFoundError:
        raise ValueError(f"sweep file {str(path)!r} does not exist.") from None
    except tomllib.TOMLDecodeError as err:
        raise ValueError(f"sweep file {str(path)!r} is not valid TOML: {err}") from None
    return Sweep.from_dict(data)
