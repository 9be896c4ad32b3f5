"""Independent per-latent work split into contiguous blocks: in this process, in ``n_jobs``
worker processes, or as tasks of an executor (``concurrent.futures`` or ``dask.distributed``).

Used for the latents' LPs (:func:`gaptheory.gap.relu_minimax_gap`), their exact
certificate checks (:meth:`gaptheory.gap.GapResult.verify`) and the T2 bounds
(:func:`gaptheory.gap.gap_lower_bound`).
"""

from __future__ import annotations

import os

import numpy as np

from .._validation import check_int


#: Tasks a ``relu_minimax_gap(..., executor=...)`` call is split into (blocks of latents).
EXECUTOR_TASKS = 256


def _check_jobs(n_jobs) -> int:
    """Worker count: a positive int, or -1 for one per CPU."""
    if n_jobs == -1:
        return os.cpu_count() or 1
    return check_int(n_jobs, "n_jobs", minimum=1)


def _map_blocks(fn, D, items, args, n_jobs: int, executor=None) -> list:
    """``fn(D, block, *args)`` (a list per block) over contiguous blocks of ``items``, concatenated
    in order: in this process, in ``n_jobs`` processes (one block each), or as ``EXECUTOR_TASKS``
    tasks of ``executor`` (anything with ``submit(fn, *args)`` returning a future; a Dask client
    gets ``D`` scattered to its workers once)."""
    items = list(items)
    if executor is None and min(n_jobs, len(items)) <= 1:
        return fn(D, items, *args)
    if executor is None:
        from concurrent.futures import ProcessPoolExecutor

        with ProcessPoolExecutor(max_workers=min(n_jobs, len(items))) as pool:
            return _gather(pool, fn, D, items, args, min(n_jobs, len(items)))
    # hash=False: a fresh key, so releasing an earlier scatter of the same D cannot cancel these tasks.
    shared = executor.scatter(D, broadcast=True, hash=False) if hasattr(executor, "scatter") else D
    return _gather(executor, fn, shared, items, args, min(EXECUTOR_TASKS, len(items)))


def _gather(executor, fn, D, items, args, tasks: int) -> list:
    futures = [executor.submit(fn, D, [items[j] for j in block], *args)
               for block in np.array_split(np.arange(len(items)), tasks)]
    return [outcome for future in futures for outcome in future.result()]
