"""Thread pools: run BLAS on one thread where many small products would only contend."""

from __future__ import annotations

import contextlib


def one_blas_thread():
    """A context that limits BLAS/OpenMP pools to one thread (threadpoolctl), or a no-op without it."""
    try:
        from threadpoolctl import threadpool_limits
    except ImportError:
        return contextlib.nullcontext()
    return threadpool_limits(1)
