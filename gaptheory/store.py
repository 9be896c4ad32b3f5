"""The results store: one SQLite file, one transaction per record, resumable sweeps.

Every number gaptheory reports goes through here: ``gaptheory run`` writes records,
``gaptheory table`` and ``gaptheory plot`` read them back (``report`` imports nothing
else), so any table or figure can be rebuilt from the database alone.

A *record* is a flat dict of JSON scalars (str, int, float, bool, None). It always
holds ``key`` (the task key: a hash of the task's canonical JSON config, see
:func:`task_key`), ``status`` (``"ok"`` or ``"failed"``) and whatever the task
measured; :mod:`gaptheory.experiments` adds the sweep name, task kind, package
version, seed, device, data split, wall time, FLOPs and, for failures, the traceback.

Exactly-once: ``key`` is the table's primary key and :meth:`ResultStore.put` writes
with ``INSERT ... ON CONFLICT`` inside one transaction, so a sweep killed at any
instant (even by SIGKILL) and re-run never loses a committed record and never
duplicates one. A failed record is replaced by a later successful run of the same
task; a successful record is never overwritten.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import math
import sqlite3
import time
from pathlib import Path

#: Seconds a connection waits for another writer's lock before raising; generous
#: because a reader (``gaptheory table``) may share the file with a running sweep.
BUSY_TIMEOUT_S = 60.0

#: Hex digits kept from the SHA-256 of a config: 64 bits make a collision between two
#: tasks of the same store negligible (< 1e-9 for a million tasks).
KEY_HEX_DIGITS = 16

STATUS_OK, STATUS_FAILED = "ok", "failed"

_SCHEMA = """
CREATE TABLE IF NOT EXISTS results (
    key     TEXT PRIMARY KEY,
    status  TEXT NOT NULL CHECK (status IN ('ok', 'failed')),
    written REAL NOT NULL,
    record  TEXT NOT NULL
)
"""

_JSON_SCALARS = (str, int, float, bool, type(None))


def canonical_json(config: dict) -> str:
    """The canonical JSON text of a config: sorted keys, no spaces, floats as repr.

    Examples
    --------
    >>> canonical_json({"b": 1, "a": [0.5, "x"]})
    '{"a":[0.5,"x"],"b":1}'
    """
    if not isinstance(config, dict):
        raise TypeError(f"config must be a dict; got {type(config).__name__}.")
    try:
        return json.dumps(config, sort_keys=True, separators=(",", ":"), allow_nan=False)
    except (TypeError, ValueError) as err:
        raise ValueError(
            f"config must contain only JSON values (no NaN/inf, arrays or objects): {err}. "
            "Convert numpy scalars with .item()."
        ) from None


def task_key(config: dict) -> str:
    """A stable key for a task: the first hex digits of SHA-256 of its canonical JSON.

    The key does not depend on dict order or on the package version, so re-running a
    sweep (after an upgrade too) finds its finished tasks.

    Examples
    --------
    >>> task_key({"N": 8, "M": 4}) == task_key({"M": 4, "N": 8})
    True
    >>> len(task_key({"N": 8}))
    16
    """
    return hashlib.sha256(canonical_json(config).encode()).hexdigest()[:KEY_HEX_DIGITS]


def _check_record(record) -> dict:
    if not isinstance(record, dict):
        raise TypeError(f"record must be a dict; got {type(record).__name__}.")
    for name in ("key", "status"):
        if name not in record:
            raise ValueError(f"record must have a {name!r} field; got keys {sorted(record)}.")
    if record["status"] not in (STATUS_OK, STATUS_FAILED):
        raise ValueError(f"record['status']={record['status']!r} must be 'ok' or 'failed'.")
    for name, value in record.items():
        if not isinstance(name, str):
            raise TypeError(f"record keys must be strings; got {name!r}.")
        if not isinstance(value, _JSON_SCALARS):
            raise ValueError(
                f"record[{name!r}] must be a JSON scalar (str, int, float, bool, None); got "
                f"{type(value).__name__}. Flatten lists into several fields or convert numpy "
                "scalars with .item()."
            )
        if isinstance(value, float) and not math.isfinite(value):
            raise ValueError(
                f"record[{name!r}]={value} is not finite; store None for a missing value, or "
                "record the failure with status='failed'."
            )
    return record


class ResultStore:
    """A SQLite results store (WAL journal, one transaction per record).

    Parameters
    ----------
    path : str or Path
        The database file; created with its table if missing.

    Examples
    --------
    >>> import tempfile, os
    >>> path = os.path.join(tempfile.mkdtemp(), "results.db")
    >>> with ResultStore(path) as store:
    ...     store.put({"key": "a1", "status": "ok", "mcc": 0.9})
    ...     store.put({"key": "a1", "status": "ok", "mcc": 0.1})
    ...     [r["mcc"] for r in store.records()]
    True
    False
    [0.9]
    """

    def __init__(self, path):
        self.path = Path(path)
        if self.path.parent and not self.path.parent.exists():
            raise ValueError(f"store path {str(self.path)!r}: folder {str(self.path.parent)!r} does not exist; create it first.")
        # isolation_level=None: autocommit, so each transaction is an explicit BEGIN/COMMIT.
        self._connection = sqlite3.connect(str(self.path), timeout=BUSY_TIMEOUT_S, isolation_level=None)
        self._connection.execute(f"PRAGMA busy_timeout = {int(BUSY_TIMEOUT_S * 1000)}")
        self._connection.execute("PRAGMA journal_mode = WAL")
        # NORMAL in WAL mode: a committed transaction survives a killed process (only a
        # power loss could drop the last commits), at a fraction of FULL's fsyncs.
        self._connection.execute("PRAGMA synchronous = NORMAL")
        self._connection.execute(_SCHEMA)

    # ----- writing ----------------------------------------------------------------------

    def put(self, record: dict) -> bool:
        """Write one record in its own transaction; return True if it was written.

        A record whose key already holds an ``"ok"`` row is ignored (returns False); a
        ``"failed"`` row is replaced by the new record.
        """
        record = _check_record(record)
        text = json.dumps(record, sort_keys=True, allow_nan=False)
        with self._transaction():
            cursor = self._connection.execute(
                "INSERT INTO results (key, status, written, record) VALUES (?, ?, ?, ?) "
                "ON CONFLICT(key) DO UPDATE SET status = excluded.status, written = excluded.written, "
                "record = excluded.record WHERE results.status = 'failed'",
                (record["key"], record["status"], time.time(), text),
            )
            return cursor.rowcount == 1

    @contextlib.contextmanager
    def _transaction(self):
        """BEGIN IMMEDIATE ... COMMIT (ROLLBACK on error): one record, all or nothing."""
        self._connection.execute("BEGIN IMMEDIATE")
        try:
            yield
        except BaseException:
            self._connection.execute("ROLLBACK")
            raise
        self._connection.execute("COMMIT")

    # ----- reading ----------------------------------------------------------------------

    def has(self, key: str, *, ok_only: bool = True) -> bool:
        """Whether ``key`` has a record (an ``"ok"`` one unless ``ok_only=False``)."""
        query = "SELECT 1 FROM results WHERE key = ?" + (" AND status = 'ok'" if ok_only else "")
        return self._connection.execute(query, (key,)).fetchone() is not None

    def keys(self, *, status: str | None = STATUS_OK) -> set[str]:
        """The keys of all records with ``status`` (all records for ``None``)."""
        if status is None:
            rows = self._connection.execute("SELECT key FROM results")
        else:
            rows = self._connection.execute("SELECT key FROM results WHERE status = ?", (status,))
        return {key for (key,) in rows}

    def records(self, status: str | None = STATUS_OK, **equal) -> list[dict]:
        """Records with ``status`` (``None``: any) whose fields equal ``equal``, oldest first.

        Examples
        --------
        ``store.records(kind="recovery", N=100)`` returns the successful recovery
        records with N = 100.
        """
        if status is None:
            rows = self._connection.execute("SELECT record FROM results ORDER BY written, key")
        else:
            rows = self._connection.execute(
                "SELECT record FROM results WHERE status = ? ORDER BY written, key", (status,)
            )
        out = []
        for (text,) in rows:
            record = json.loads(text)
            if all(record.get(name) == value for name, value in equal.items()):
                out.append(record)
        return out

    def failures(self, **equal) -> list[dict]:
        """Failed records (each with its ``traceback``), filtered like :meth:`records`."""
        return self.records(status=STATUS_FAILED, **equal)

    def count(self, status: str | None = None) -> int:
        """Number of rows (with ``status`` if given)."""
        if status is None:
            return self._connection.execute("SELECT COUNT(*) FROM results").fetchone()[0]
        return self._connection.execute("SELECT COUNT(*) FROM results WHERE status = ?", (status,)).fetchone()[0]

    def __len__(self) -> int:
        return self.count()

    # ----- lifetime ---------------------------------------------------------------------

    def close(self) -> None:
        """Close the connection (idempotent)."""
        if self._connection is not None:
            self._connection.close()
            self._connection = None

    def __enter__(self) -> "ResultStore":
        return self

    def __exit__(self, exc_type, exc, tb) -> None:
        self.close()

    def __repr__(self) -> str:
        return f"ResultStore({str(self.path)!r})"
