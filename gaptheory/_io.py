"""Process-level output plumbing shared by the CLI, the sweep workers and every file writer.

Every result or artifact gaptheory writes goes through :func:`atomic_file`,
:func:`atomic_path` or :func:`write_atomic`: the bytes land in a fresh temporary in the
target's folder and are renamed over the target only once complete and on disk, so a
reader sees the old file or the new one, never a torn one.
"""

from __future__ import annotations

import contextlib
import os
import sys
import tempfile
from pathlib import Path


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


def _fsync_folder(folder: Path) -> None:
    """Make a rename in ``folder`` durable (POSIX); a no-op where folders cannot be opened."""
    try:
        descriptor = os.open(folder, os.O_RDONLY)
    except OSError:  # Windows cannot open a directory
        return
    try:
        os.fsync(descriptor)
    except OSError:  # some filesystems refuse fsync on a directory; the rename itself stands
        pass
    finally:
        os.close(descriptor)


def _umask() -> int:
    """The process umask, read without changing it where Linux shows it (``os.umask`` sets as it reads)."""
    with contextlib.suppress(OSError, ValueError):
        with open("/proc/self/status", encoding="ascii") as status:
            for line in status:
                if line.startswith("Umask:"):
                    return int(line.split()[1], 8)
    mask = os.umask(0o022)
    os.umask(mask)
    return mask


@contextlib.contextmanager
def _replacing(path):
    """Yield ``(descriptor, temporary)`` of a new file beside ``path``; rename it over ``path`` on success.

    The caller owns (and closes) the descriptor.

    ``tempfile.mkstemp`` creates the temporary with ``O_CREAT | O_EXCL`` under a random name,
    so a symlink planted in the folder is never followed, and a temporary is never shared
    with another writer. It is then given the permissions ``open`` would have given the
    target (0666 less the umask) instead of mkstemp's private 0600. On any error (the
    caller's included) the temporary is removed and ``path`` is left as it was; an
    ``OSError`` from the write names ``path``, the file the caller asked for.
    """
    path = Path(path)
    try:
        descriptor, temporary = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    except OSError as err:  # a read-only or full folder: name the target, not a random temporary
        err.filename = str(path)
        raise
    try:
        if hasattr(os, "fchmod"):
            os.fchmod(descriptor, 0o666 & ~_umask())
        yield descriptor, Path(temporary)
        os.replace(temporary, path)
    except BaseException as err:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(temporary)
        if isinstance(err, OSError) and err.filename in (None, temporary):
            err.filename = str(path)  # a failed write (ENOSPC, EFBIG) names the file the user asked for
        raise
    _fsync_folder(path.parent)


@contextlib.contextmanager
def atomic_file(path, mode: str = "wb", *, encoding: str | None = None):
    """Open a temporary file for writing that replaces ``path`` when the block ends without error.

    Parameters
    ----------
    path : str or Path
        The target; its folder must exist.
    mode : {"wb", "w"}
        Binary or text.
    encoding : str, optional
        Text encoding (default UTF-8 in text mode).

    Yields
    ------
    handle : file object
        Flushed and ``fsync``-ed before the rename; the folder is ``fsync``-ed after it.

    Examples
    --------
    >>> import tempfile, pathlib
    >>> target = pathlib.Path(tempfile.mkdtemp()) / "out.txt"
    >>> with atomic_file(target, "w") as handle:
    ...     _ = handle.write("done")
    >>> target.read_text()
    'done'
    """
    if mode not in ("wb", "w"):
        raise ValueError(f"mode={mode!r}; atomic_file writes a whole file: use 'wb' or 'w'.")
    with _replacing(path) as (descriptor, _):
        try:
            handle = os.fdopen(descriptor, mode, encoding=encoding or ("utf-8" if mode == "w" else None))
        except BaseException:
            os.close(descriptor)
            raise
        with handle:
            yield handle
            handle.flush()
            os.fsync(handle.fileno())


@contextlib.contextmanager
def atomic_path(path):
    """Yield the path of an empty temporary beside ``path``; it replaces ``path`` when the block ends.

    For writers that take a file name rather than a file object (``numpy.memmap``). The
    temporary is created empty with mode 0600 (``tempfile.mkstemp``); the writer opens it
    again by name. On success it is ``fsync``-ed, renamed over ``path`` and the folder
    ``fsync``-ed; on any error it is removed and ``path`` is left as it was.
    """
    with _replacing(path) as (descriptor, temporary):
        os.close(descriptor)
        yield temporary
        descriptor = os.open(temporary, os.O_RDONLY)
        try:
            os.fsync(descriptor)
        finally:
            os.close(descriptor)


def write_atomic(path, data: bytes | str) -> Path:
    """Write ``data`` (bytes, or text as UTF-8) to ``path`` atomically (see :func:`atomic_file`)."""
    with atomic_file(path, "w" if isinstance(data, str) else "wb") as handle:
        handle.write(data)
    return Path(path)
