r"""Sweeps: a TOML grid expanded into keyed tasks, run locally or on Dask, stored once each.

A sweep file names a task *kind* and a grid::

    name = "phase_transition"
    kind = "recovery"              # recovery | gap | training

    [fixed]                        # parameters shared by every task
    N = 100
    solver = "basis_pursuit"

    [grid]                         # the Cartesian product of these lists
    M_over_N = [0.2, 0.4, 0.6]     # ratios are resolved to M and K before keying
    K_over_M = [0.1, 0.3, 0.5]
    seed = [0, 1, 2]

:func:`expand` turns it into :class:`Task` objects whose ``key`` is the hash of the
task's full, resolved config (defaults filled in), so the same task always has the same
key. :func:`run_sweep` skips keys already in the store, runs the rest on local processes
(``concurrent.futures``) or a ``dask.distributed`` cluster, and writes each record from
the parent process in its own transaction as soon as it arrives. A task that raises is
stored as ``status="failed"`` with its traceback and does not stop the sweep; the next
run retries it.
"""

from __future__ import annotations

import concurrent.futures
import itertools
import math
import multiprocessing
import socket
import sys
import time
import traceback
from dataclasses import dataclass, field
from typing import Callable

import numpy as np

from . import __version__
from ._validation import check_choice, check_int
from .bounds import gaussian_tail_integral, statistical_dimension, statistical_dimension_threshold
from .store import STATUS_FAILED, STATUS_OK, ResultStore, task_key

if sys.version_info >= (3, 11):
    import tomllib
else:  # pragma: no cover - exercised on 3.10 only
    import tomli as tomllib

#: A recovered code counts as exact when ``max_i |z_hat_i - z_i| <= RECOVERY_RTOL * max_i |z_i|``.
#: Interior-point solvers are accurate to ~1e-8; failed l1 recoveries are off by O(1), so
#: any value between those separates the two cleanly.
RECOVERY_RTOL = 1e-4

#: An entry belongs to the recovered support when ``|z_hat_i| > SUPPORT_RTOL * max_i |z_i|``
#: (LASSO shrinks but does not zero small spurious entries exactly on every solver).
SUPPORT_RTOL = 1e-3

SOLVERS = ("basis_pursuit", "lasso", "omp")


# ---------------------------------------------------------------------------------------
# The l1 phase transition (Amelunxen, Lotz, McCoy & Tropp 2014).
# ---------------------------------------------------------------------------------------


def _psi(rho: float, nonnegative: bool) -> float:
    """Normalised statistical dimension delta / N at sparsity rho = K / N (fractional K allowed)."""
    if rho <= 0.0:
        return 0.0
    if rho >= 1.0:
        return 1.0
    tau = statistical_dimension_threshold(rho, nonnegative=nonnegative)
    factor = 1.0 if nonnegative else 2.0
    return rho * (1.0 + tau * tau) + (1.0 - rho) * factor * float(gaussian_tail_integral(tau))


def l1_transition_sparsity_ratio(m_over_n: float, *, nonnegative: bool = False) -> float:
    r"""The predicted l1 phase-transition point: the K/M at which the statistical dimension equals M.

    Solves :math:`\psi(\rho\,\delta) = \delta` for :math:`\rho = K/M` at
    :math:`\delta = M/N` (Donoho-Tanner coordinates), with :math:`\psi` the normalised
    statistical dimension of :func:`gaptheory.bounds.statistical_dimension`.

    Examples
    --------
    The Donoho-Tanner weak threshold at M/N = 1/2 is about 0.385 (signed codes):

    >>> round(l1_transition_sparsity_ratio(0.5), 3)
    0.386
    """
    from scipy.optimize import brentq

    if not 0.0 < m_over_n <= 1.0:
        raise ValueError(f"m_over_n={m_over_n} must lie in (0, 1]; the transition is defined for M <= N.")
    if m_over_n == 1.0:
        return 1.0
    eps = brentq(lambda e: _psi(e, nonnegative) - m_over_n, 1e-12, 1.0 - 1e-12, xtol=1e-12)
    return eps / m_over_n


# ---------------------------------------------------------------------------------------
# Task kinds: each resolves its config (defaults filled in) and computes metrics.
# ---------------------------------------------------------------------------------------


@dataclass(frozen=True)
class TaskKind:
    """A task kind: its parameters with defaults and the function that runs one task.

    ``run(config) -> dict`` returns flat JSON-scalar metrics; it may include ``device``
    and ``split`` to override the record's defaults.
    """

    name: str
    defaults: dict
    run: Callable[[dict], dict]
    description: str = ""


_RECOVERY_DEFAULTS = {
    "N": 100,               # latents (ambient dimension of the codes)
    "M": None,              # measurements; or give M_over_N
    "K": None,              # nonzeros per code; or give K_over_M
    "B": 10,                # codes per instance, all against the same dictionary
    "solver": "basis_pursuit",
    "alpha": 1e-3,          # LASSO penalty (solver="lasso" only)
    "nonnegative": False,   # nonnegative codes and a nonnegative l1 problem
    "dictionary": "gaussian",
    "magnitude_lo": 0.5,    # nonzero magnitudes are uniform in [lo, hi]
    "magnitude_hi": 1.5,
    "seed": 0,
}


def _resolve_ratios(config: dict) -> dict:
    """Replace ``M_over_N`` and ``K_over_M`` by the integers ``M`` and ``K`` they imply."""
    config = dict(config)
    if "M_over_N" in config:
        ratio = config.pop("M_over_N")
        if config.get("M") is not None:
            raise ValueError("give either M or M_over_N, not both.")
        config["M"] = max(1, int(round(ratio * config["N"])))
    if "K_over_M" in config:
        ratio = config.pop("K_over_M")
        if config.get("K") is not None:
            raise ValueError("give either K or K_over_M, not both.")
        if config.get("M") is None:
            raise ValueError("K_over_M needs M (or M_over_N).")
        config["K"] = max(1, int(round(ratio * config["M"])))
    return config


def run_recovery(config: dict) -> dict:
    r"""One recovery trial: draw D (N, M) and B K-sparse codes, infer them, score them.

    Metrics: ``success_rate`` (fraction of codes recovered exactly, within
    :data:`RECOVERY_RTOL`), ``support_rate`` (fraction with the exact support, within
    :data:`SUPPORT_RTOL`), ``max_error`` (worst :math:`\|\hat z - z\|_\infty`), and the
    statistical-dimension prediction: ``statdim`` (:func:`gaptheory.bounds.statistical_dimension` at
    this K), ``predicted_success`` (M > statdim) and ``transition_K_over_M`` (the
    predicted threshold K/M at this M/N).
    """
    from .instances import make_instance
    from .solvers import basis_pursuit, lasso, omp

    N, M, K, B = config["N"], config["M"], config["K"], config["B"]
    nonnegative = config["nonnegative"]
    inst = make_instance(N, M, K, B, kind=config["dictionary"], seed=config["seed"], nonnegative=nonnegative,
                         magnitudes=(config["magnitude_lo"], config["magnitude_hi"]))
    if config["solver"] == "basis_pursuit":
        result = basis_pursuit(inst.X, inst.D, nonnegative=nonnegative, return_info=True)
    elif config["solver"] == "lasso":
        result = lasso(inst.X, inst.D, config["alpha"], nonnegative=nonnegative, return_info=True)
    else:
        result = omp(inst.X, inst.D, K, return_info=True)
    Z_hat, Z = result.codes, inst.Z
    scale = np.abs(Z).max(axis=1)
    error = np.abs(Z_hat - Z).max(axis=1)
    support_ok = ((np.abs(Z_hat) > SUPPORT_RTOL * scale[:, None]) == (Z != 0)).all(axis=1)
    statdim = statistical_dimension(N, K, nonnegative=nonnegative)
    return {
        "success_rate": float(np.mean(error <= RECOVERY_RTOL * scale)),
        "support_rate": float(np.mean(support_ok)),
        "max_error": float(error.max()),
        "n_converged": int(result.converged.sum()),
        "statdim": statdim,
        "predicted_success": bool(M > statdim),
        "transition_K_over_M": l1_transition_sparsity_ratio(min(M / N, 1.0), nonnegative=nonnegative),
        "device": "cpu" if config["solver"] == "basis_pursuit" else _device_name(),
    }


def _check_recovery(config: dict) -> dict:
    config = _resolve_ratios(config)
    check_choice(config["solver"], "solver", SOLVERS)
    for name in ("M", "K"):
        if config[name] is None:
            raise ValueError(f"recovery tasks need {name} (or {'M_over_N' if name == 'M' else 'K_over_M'}); add it to [fixed] or [grid].")
    N = check_int(config["N"], "N", minimum=1)
    check_int(config["M"], "M", minimum=1)
    check_int(config["K"], "K", minimum=1, maximum=N)
    if config["M"] > N:
        raise ValueError(f"M={config['M']} exceeds N={N}; the phase transition is defined for M <= N.")
    return config


def _device_name() -> str:
    from ._device import default_device

    return str(default_device())


TASK_KINDS: dict[str, TaskKind] = {
    "recovery": TaskKind("recovery", _RECOVERY_DEFAULTS, run_recovery,
                         "basis pursuit / LASSO / OMP recovery of K-sparse codes from M measurements"),
}

#: Per-kind config checks applied at expansion time (so bad grids fail before running).
_CHECKS: dict[str, Callable[[dict], dict]] = {"recovery": _check_recovery}


# ---------------------------------------------------------------------------------------
# Sweeps and tasks.
# ---------------------------------------------------------------------------------------


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
    """

    name: str
    kind: str
    fixed: dict = field(default_factory=dict)
    grid: dict = field(default_factory=dict)

    def __post_init__(self):
        if not isinstance(self.name, str) or not self.name:
            raise ValueError(f"sweep name must be a non-empty string; got {self.name!r}.")
        check_choice(self.kind, "kind", TASK_KINDS)
        allowed = set(TASK_KINDS[self.kind].defaults) | {"M_over_N", "K_over_M"}
        for section, params in (("fixed", self.fixed), ("grid", self.grid)):
            unknown = sorted(set(params) - allowed)
            if unknown:
                raise ValueError(
                    f"[{section}] has parameters {unknown} that kind={self.kind!r} does not take; "
                    f"choose from {sorted(allowed)}."
                )
        for name, values in self.grid.items():
            if not isinstance(values, (list, tuple)) or len(values) == 0:
                raise ValueError(f"grid.{name} must be a non-empty list; got {values!r}. Put single values in [fixed].")
        both = sorted(set(self.fixed) & set(self.grid))
        if both:
            raise ValueError(f"{both} appear in both [fixed] and [grid]; keep each parameter in one.")

    @classmethod
    def from_dict(cls, data: dict) -> "Sweep":
        """Build from the parsed TOML document (keys ``name``, ``kind``, ``fixed``, ``grid``)."""
        unknown = sorted(set(data) - {"name", "kind", "fixed", "grid", "description"})
        if unknown:
            raise ValueError(f"sweep file has unknown top-level keys {unknown}; use name, kind, description, [fixed], [grid].")
        for name in ("name", "kind"):
            if name not in data:
                raise ValueError(f"sweep file needs a top-level {name!r}.")
        grid = {name: tuple(values) if isinstance(values, list) else values for name, values in data.get("grid", {}).items()}
        return cls(name=data["name"], kind=data["kind"], fixed=dict(data.get("fixed", {})), grid=grid)

    def tasks(self) -> list[Task]:
        """Expand the grid into tasks, in grid order, dropping duplicate keys."""
        kind = TASK_KINDS[self.kind]
        names = list(self.grid)
        seen, tasks = set(), []
        for values in itertools.product(*(self.grid[n] for n in names)):
            config = {**kind.defaults, **self.fixed, **dict(zip(names, values))}
            config = _CHECKS.get(self.kind, dict)(config)
            config = {"kind": self.kind, **config}
            key = task_key(config)
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


def expand(sweep: Sweep) -> list[Task]:
    """The tasks of ``sweep`` (same as ``sweep.tasks()``)."""
    return sweep.tasks()


# ---------------------------------------------------------------------------------------
# Running one task (in a worker) and a whole sweep (in the parent).
# ---------------------------------------------------------------------------------------


def execute_task(task: Task) -> dict:
    """Run one task and return its record; never raises for errors inside the task.

    Runs in a worker process (or a Dask worker); the parent writes the record.
    """
    config = task.config
    record = {"key": task.key, "sweep": task.sweep, "kind": config["kind"], "version": __version__,
              "seed": config.get("seed"), "device": "cpu", "split": "test", "host": socket.gethostname()}
    start = time.perf_counter()
    try:
        metrics = TASK_KINDS[config["kind"]].run(config)
        clash = sorted(set(metrics) & (set(config) - {"device", "split"}))
        if clash:
            raise RuntimeError(f"task metrics {clash} clash with config fields; rename them in the task kind.")
        record.update({name: value for name, value in config.items() if name != "kind"})
        record.update(_json_scalars(metrics))
        record.update(status=STATUS_OK, metrics=",".join(name for name in metrics if name not in ("device", "split")))
    except Exception as err:  # noqa: BLE001 - the failure is data: stored with its traceback
        record.update({name: value for name, value in config.items() if name != "kind"})
        record.update(status=STATUS_FAILED, error=f"{type(err).__name__}: {err}", traceback=traceback.format_exc())
    record["wall_time_s"] = time.perf_counter() - start
    return record


def _json_scalars(metrics: dict) -> dict:
    """Convert numpy scalars to Python ones and non-finite floats to None."""
    out = {}
    for name, value in metrics.items():
        if isinstance(value, np.generic):
            value = value.item()
        if isinstance(value, float) and not math.isfinite(value):
            value = None
        out[name] = value
    return out


@dataclass(frozen=True)
class SweepSummary:
    """What :func:`run_sweep` did."""

    sweep: str
    total: int          # tasks in the sweep
    skipped: int        # already finished in the store
    ok: int             # finished successfully in this run
    failed: int         # failed in this run (stored with their traceback)
    wall_time_s: float
    executor: str

    def to_dict(self) -> dict:
        return dict(self.__dict__)


def _mp_context():
    # forkserver: workers fork from a clean server process (safe with torch threads in the
    # parent, unlike fork) without re-importing everything per worker (unlike spawn).
    if "forkserver" not in multiprocessing.get_all_start_methods():
        return multiprocessing.get_context("spawn")
    context = multiprocessing.get_context("forkserver")
    # The server imports the task code once; every worker forks from it ready to run.
    context.set_forkserver_preload(["gaptheory.experiments", "gaptheory.solvers", "gaptheory.instances"])
    return context


def _local_results(tasks, workers):
    """Yield records as tasks finish on ``workers`` local processes (in-process for 1)."""
    if workers == 1:
        for task in tasks:
            yield execute_task(task)
        return
    with concurrent.futures.ProcessPoolExecutor(max_workers=workers, mp_context=_mp_context()) as pool:
        futures = {pool.submit(execute_task, task): task for task in tasks}
        try:
            for future in concurrent.futures.as_completed(futures):
                yield _result_or_failure(future, futures[future])
        except BaseException:
            pool.shutdown(wait=False, cancel_futures=True)
            raise


def _dask_results(tasks, *, scheduler, dask_local, dask_processes):
    """Yield records as tasks finish on a Dask cluster (existing, or a LocalCluster)."""
    from distributed import Client, LocalCluster, as_completed

    cluster = None
    if scheduler is None:
        # Loopback only: processes talk over tcp://127.0.0.1; threads use the in-process transport.
        where = {"host": "127.0.0.1"} if dask_processes else {}
        cluster = LocalCluster(n_workers=dask_local, threads_per_worker=1, processes=dask_processes,
                               dashboard_address=None, **where)
    client = Client(cluster if cluster is not None else scheduler)
    try:
        futures = {client.submit(execute_task, task, key=f"gaptheory-{task.key}", pure=False): task for task in tasks}
        for future in as_completed(list(futures)):
            yield _result_or_failure(future, futures[future])
    finally:
        client.close()
        if cluster is not None:
            cluster.close()


def _result_or_failure(future, task: Task) -> dict:
    """The record a finished future holds, or a failed record if the worker itself died."""
    try:
        return future.result()
    except Exception as err:  # noqa: BLE001 - e.g. BrokenProcessPool, KilledWorker
        return {
            **{name: value for name, value in task.config.items() if name != "kind"},
            "key": task.key, "sweep": task.sweep, "kind": task.config["kind"], "version": __version__,
            "seed": task.config.get("seed"), "status": STATUS_FAILED, "error": f"{type(err).__name__}: {err}",
            "traceback": "".join(traceback.format_exception(err)), "wall_time_s": None,
        }


def run_sweep(
    sweep: Sweep,
    store: ResultStore,
    *,
    workers: int = 1,
    scheduler: str | None = None,
    dask_local: int | None = None,
    dask_processes: bool = True,
    retry_failed: bool = True,
    progress: bool = False,
) -> SweepSummary:
    """Run the unfinished tasks of ``sweep`` and store each record as it completes.

    Parameters
    ----------
    sweep : Sweep
    store : ResultStore
        Only this (parent) process writes to it, one transaction per record.
    workers : int
        Local worker processes (1: run in this process). Ignored with Dask.
    scheduler : str, optional
        Address of a running Dask scheduler, e.g. ``"tcp://10.0.0.1:8786"``.
    dask_local : int, optional
        Start a ``distributed.LocalCluster`` with this many single-threaded workers.
    dask_processes : bool
        LocalCluster workers as processes (True) or threads in this process.
    retry_failed : bool
        Re-run tasks whose stored record failed (default); False skips them too.
    progress : bool
        Show a tqdm bar with counts and ETA on stderr.

    Returns
    -------
    SweepSummary
    """
    workers = check_int(workers, "workers", minimum=1)
    if scheduler is not None and dask_local is not None:
        raise ValueError("give either scheduler (an existing Dask cluster) or dask_local (start one), not both.")
    if dask_local is not None:
        check_int(dask_local, "dask_local", minimum=1)
    from tqdm.auto import tqdm

    start = time.perf_counter()
    tasks = sweep.tasks()
    done = store.keys(status=STATUS_OK) | (set() if retry_failed else store.keys(status=STATUS_FAILED))
    pending = [task for task in tasks if task.key not in done]
    if not pending:
        executor, results = "none", iter(())
    elif scheduler is not None or dask_local is not None:
        executor = f"dask:{scheduler}" if scheduler is not None else f"dask-local:{dask_local}"
        results = _dask_results(pending, scheduler=scheduler, dask_local=dask_local, dask_processes=dask_processes)
    else:
        executor = f"local:{workers}"
        results = _local_results(pending, workers)
    ok = failed = 0
    with tqdm(total=len(pending), desc=sweep.name, unit="task", file=sys.stderr, disable=not progress) as bar:
        for record in results:
            store.put(record)
            if record["status"] == STATUS_OK:
                ok += 1
            else:
                failed += 1
            bar.set_postfix(failed=failed, refresh=False)
            bar.update(1)
    return SweepSummary(sweep=sweep.name, total=len(tasks), skipped=len(tasks) - len(pending), ok=ok,
                        failed=failed, wall_time_s=time.perf_counter() - start, executor=executor)
