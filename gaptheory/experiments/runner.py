"""Running a sweep: each unfinished task once, on local processes or Dask, each record stored as it arrives.

:func:`run_sweep` skips keys already in the store, runs the rest on local processes
(``concurrent.futures``) or a ``dask.distributed`` cluster, and writes each record from
the parent process in its own transaction as soon as it arrives. A task that raises is
stored as ``status="failed"`` with its traceback and does not stop the sweep; the next
run retries it. Several runners may share one store: each claims a task before running it
(:meth:`~gaptheory.experiments.store.ResultStore.claim`) and renews its claims from a
heartbeat thread.
"""

from __future__ import annotations

import collections
import concurrent.futures
import contextlib
import math
import multiprocessing
import signal
import socket
import sys
import threading
import time
import traceback
from dataclasses import dataclass

import numpy as np

from .. import __version__
from .._io import stdout_to_stderr
from .._validation import check_int
from .store import LEASE_S, STATUS_FAILED, STATUS_OK, ResultStore
from .sweep import Sweep, Task
from .tasks import TASK_KINDS


def _record_base(task: Task) -> dict:
    """The provenance and config fields every record of ``task`` carries, ok or failed."""
    return {**{name: value for name, value in task.config.items() if name != "kind"},
            "key": task.key, "sweep": task.sweep, "kind": task.config["kind"], "version": __version__,
            "seed": task.config.get("seed"), "device": "cpu", "split": "test", "host": socket.gethostname()}


def execute_task(task: Task) -> dict:
    """Run one task and return its record; never raises for errors inside the task.

    Runs in a worker process (or a Dask worker); the parent writes the record.
    """
    config = task.config
    record = _record_base(task)
    start = time.perf_counter()
    try:
        with stdout_to_stderr():
            metrics = TASK_KINDS[config["kind"]].run(config)
        clash = sorted(set(metrics) & (set(config) - {"device", "split"}))
        if clash:
            raise RuntimeError(f"task metrics {clash} clash with config fields; rename them in the task kind.")
        record.update(_json_scalars(metrics))
        record.update(status=STATUS_OK, metrics=",".join(name for name in metrics if name not in ("device", "split")))
    except Exception as err:  # noqa: BLE001 - the failure is data: stored with its traceback
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
    elsewhere: int = 0  # claimed by another live runner on the same store (not run here)

    def to_dict(self) -> dict:
        return dict(self.__dict__)


def _mp_context():
    # forkserver: workers fork from a clean server process (safe with torch threads in the
    # parent, unlike fork) without re-importing everything per worker (unlike spawn).
    if "forkserver" not in multiprocessing.get_all_start_methods():
        return multiprocessing.get_context("spawn")
    context = multiprocessing.get_context("forkserver")
    # The server imports the task code once; every worker forks from it ready to run.
    context.set_forkserver_preload(["gaptheory.experiments.runner", "gaptheory.solvers", "gaptheory.instances",
                                     "gaptheory.bounds"])
    return context


def _worker_init() -> None:
    """Worker initialiser: one torch thread per process (W workers use W cores, not W^2),
    and Ctrl-C left to the parent, which stops the workers itself."""
    import torch

    signal.signal(signal.SIGINT, signal.SIG_IGN)
    torch.set_num_threads(1)


#: Attempts of a task whose worker process died (killed, out of memory) before it is
#: stored as failed; a pool that breaks takes every task in flight with it, so each of
#: those gets a fresh attempt on a new pool.
MAX_ATTEMPTS = 3


def _start_pool(workers: int) -> concurrent.futures.ProcessPoolExecutor:
    context = _mp_context()
    if context.get_start_method() == "forkserver" and threading.current_thread() is threading.main_thread():
        from multiprocessing import forkserver

        # The fork server (and every worker forked from it) inherits SIGINT ignored, so a
        # Ctrl-C while it imports torch reaches only this process, not a worker's traceback.
        previous = signal.signal(signal.SIGINT, signal.SIG_IGN)
        try:
            forkserver.ensure_running()
        finally:
            signal.signal(signal.SIGINT, previous)
    return concurrent.futures.ProcessPoolExecutor(max_workers=workers, mp_context=context, initializer=_worker_init)


def _stop_pool(pool: concurrent.futures.ProcessPoolExecutor) -> None:
    """Kill the workers now (they ignore SIGINT, and a running task is not interruptible)."""
    # ProcessPoolExecutor has no public way to stop running workers before Python 3.14.
    for process in list((getattr(pool, "_processes", None) or {}).values()):
        with contextlib.suppress(Exception):
            process.kill()
    pool.shutdown(wait=False, cancel_futures=True)


def _local_results(tasks, workers):
    """Yield records as tasks finish on ``workers`` local processes (in-process for 1).

    Tasks are pulled from the iterable ``tasks`` only when a worker is free (so a claim is
    taken just before its task runs). A dead worker breaks the pool: the pool is rebuilt
    and the tasks in flight are retried, up to :data:`MAX_ATTEMPTS` times each.
    """
    tasks = iter(tasks)
    if workers == 1:
        for task in tasks:
            yield execute_task(task)
        return
    attempts: dict[str, int] = {}
    retry: collections.deque = collections.deque()
    while True:
        pool, futures, broken = _start_pool(workers), {}, False
        try:
            while not broken:
                while len(futures) < workers:
                    task = retry.popleft() if retry else next(tasks, None)
                    if task is None:
                        break
                    futures[pool.submit(execute_task, task)] = task
                if not futures:
                    pool.shutdown(wait=True)
                    return
                done, _ = concurrent.futures.wait(futures, return_when=concurrent.futures.FIRST_COMPLETED)
                for future in done:
                    task = futures.pop(future)
                    try:
                        yield future.result()
                    except concurrent.futures.process.BrokenProcessPool as err:
                        broken = True
                        attempts[task.key] = attempts.get(task.key, 0) + 1
                        if attempts[task.key] >= MAX_ATTEMPTS:
                            yield _failure(task, err)
                        else:
                            retry.append(task)
            # Every other task in flight died with the pool: retry it on the next one.
            retry.extend(futures.values())
            for task in futures.values():
                attempts[task.key] = attempts.get(task.key, 0) + 1
        except BaseException:
            _stop_pool(pool)
            raise
        _stop_pool(pool)


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
        if cluster is not None and dask_processes:
            client.run(_worker_init)  # our own worker processes only; a shared cluster is left as configured
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
    except Exception as err:  # noqa: BLE001 - e.g. KilledWorker after Dask's own retries
        return _failure(task, err)


def _failure(task: Task, err: BaseException) -> dict:
    return {**_record_base(task), "status": STATUS_FAILED, "error": f"{type(err).__name__}: {err}",
            "traceback": "".join(traceback.format_exception(err)), "wall_time_s": None}


class _Heartbeat:
    """Renew this runner's claims every ``LEASE_S / 4`` seconds from a thread of its own."""

    def __init__(self, path, owner: str):
        self._path, self._owner, self._stop = path, owner, threading.Event()
        self._thread = threading.Thread(target=self._beat, name="gaptheory-heartbeat", daemon=True)

    def _beat(self) -> None:
        with ResultStore(self._path) as store:  # SQLite connections belong to one thread
            while not self._stop.wait(LEASE_S / 4):
                with contextlib.suppress(OSError):  # a transient lock; the next beat retries
                    store.renew(self._owner)

    def __enter__(self):
        self._thread.start()
        return self

    def __exit__(self, *exc) -> None:
        self._stop.set()
        self._thread.join()


def _claimed(store: ResultStore, tasks, owner: str, elsewhere: list):
    """Yield the tasks this runner claims, one claim per task as a worker asks for it."""
    for task in tasks:
        if store.claim([task.key], owner):
            yield task
        elif not store.has(task.key):
            elsewhere.append(task.key)


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
        executor = "none"
    elif scheduler is not None or dask_local is not None:
        executor = f"dask:{scheduler}" if scheduler is not None else f"dask-local:{dask_local}"
    else:
        executor = f"local:{workers}"
    ok = failed = 0
    owner, elsewhere = ResultStore.new_owner(), []
    source = _claimed(store, pending, owner, elsewhere)
    if pending and executor.startswith("dask"):
        source = list(source)  # Dask schedules everything it is given at once
    results = iter(()) if not pending else (
        _dask_results(source, scheduler=scheduler, dask_local=dask_local, dask_processes=dask_processes)
        if executor.startswith("dask") else _local_results(source, workers))
    try:
        with _Heartbeat(store.path, owner), tqdm(total=len(pending), desc=sweep.name, unit="task", file=sys.stderr,
                                                 disable=not progress) as bar:
            for record in results:
                store.put(record)
                if record["status"] == STATUS_OK:
                    ok += 1
                else:
                    failed += 1
                bar.set_postfix(failed=failed, refresh=False)
                bar.update(1)
    finally:
        results.close() if hasattr(results, "close") else None
        with contextlib.suppress(OSError):  # a rerun may take over at once (else the leases expire)
            store.release(owner)
    return SweepSummary(sweep=sweep.name, total=len(tasks), skipped=len(tasks) - len(pending), ok=ok,
                        failed=failed, wall_time_s=time.perf_counter() - start, executor=executor,
                        elsewhere=len(elsewhere))
