"""Process-level output plumbing shared by the CLI and the sweep workers."""

from __future__ import annotations

import contextlib
import os
import sys


@contextlib.contextmanager
def stdout_to_stderr():
    """Send file descriptor 1 to stderr while the block runs.

    Solver libraries write to the C-level stdout (HiGHS prints a banner from C++ when it
    starts), and child processes inherit descriptor 1; stdout must carry only the
    command's result, so everything else is routed to stderr at the descriptor level.
    """
    sys.stdout.flush()
    try:
        saved = os.dup(1)
    except OSError:  # no usable stdout (e.g. a daemon): nothing to protect
        yield
        return
    try:
        os.dup2(2, 1)
        yield
    finally:
        sys.stdout.flush()
        os.dup2(saved, 1)
        os.close(saved)
