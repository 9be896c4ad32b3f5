"""The results store: one SQLite file, one transaction per record, resumable sweeps.

Every number gaptheory reports goes through here: ``gaptheory run`` writes records,
``gaptheory table`` and ``gaptheory plot`` read them back (``report`` imports nothing
else), so any table or figure can be rebuilt from the database alone.

A *record* is a flat dict of JSON scalars (str, int, float, bool, None). It always
holds ``key`` (the task key: a hash of the task's canonical JSON config, see
:func:`task_key`), ``status`` (``"ok"`` or ``"failed"``) and whatever the task
measured; :mod:`gaptheory.experiments.runner` adds the sweep name, task kind, package
version, seed, device, data split, wall time, FLOPs and, for failures, the traceback.

Exactly-once: ``key`` is the table's primary key and :meth:`ResultStore.put` writes
with ``INSERT ... ON CONFLICT`` inside one transaction, so a sweep killed at any
instant (even by SIGKILL) and re-run never loses a committed record and never
duplicates one. A failed record is replaced by a later successful run of the same
task; a successful record is never overwritten.

Claims: several ``gaptheory run`` processes may share one store. Before computing a task a
runner claims its key in the ``claims`` table (owner, lease expiry) inside one
``BEGIN IMMEDIATE`` transaction, so exactly one live runner holds each task; the runner
renews its leases while it works, and the claim of a runner that died expires after
:data:`LEASE_S` seconds and may be taken over.

Faults: every SQLite failure (a full disk, a read-only file, a file that is not a
gaptheory store) is raised as :class:`StoreError`, an ``OSError`` naming the file; the
transaction in progress is rolled back, so committed rows stay intact. Readers open the
file read-only (``readonly=True``): no journal or table is created, so a store on a
read-only filesystem can still be tabled.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import math
import os
import socket
import sqlite3
import time
import uuid
from pathlib import Path

#: Seconds a connection waits for another writer's lock before raising; generous
#: because a reader (``gaptheory table``) may share the file with a running sweep.
BUSY_TIMEOUT_S = 60.0

#: Hex digits kept from the SHA-256 of a config: 64 bits make a collision between two
#: tasks of the same store negligible (< 1e-9 for a million tasks).
KEY_HEX_DIGITS = 16

#: Seconds a claim lives without renewal: long enough that a busy runner's heartbeat
#: (every LEASE_S / 4) never lapses, short enough that a dead runner's tasks are taken over
#: by the next run within a minute.
LEASE_S = 60.0

STATUS_OK, STATUS_FAILED = "ok", "failed"

_SCHEMA = (
    """CREATE TABLE IF NOT EXISTS results (
    key     TEXT PRIMARY KEY,
    status  TEXT NOT NULL CHECK (status IN ('ok', 'failed')),
    written REAL NOT NULL,
    record  TEXT NOT NULL
)""",
    """CREATE TABLE IF NOT EXISTS claims (
    key     TEXT PRIMARY KEY,
    owner   TEXT NOT NULL,
    expires REAL NOT NULL
)""",
)


class StoreError(OSError):
    """The results file cannot be used: missing, not a store, corrupt, read-only or full.

    An ``OSError`` (a fault of the file, not of the caller's arguments): ``str(err)``
    names the file and what to do; committed records are never lost by the failing call.
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


def _owner_alive(owner: str) -> bool:
    """False only for an owner on this host whose process is gone (its claims are void at once)."""
    host, _, rest = owner.partition(":")
    pid = rest.partition(":")[0]
    if host != socket.gethostname() or not pid.isdigit():
        return True  # another machine: trust its lease
    try:
        os.kill(int(pid), 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


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
        The database file; created with its tables if missing (unless ``readonly``).
    readonly : bool
        Open for reading only (``gaptheory table`` / ``plot``): the file must exist,
        nothing is written, and a read-only filesystem works.

    Raises
    ------
    StoreError
        The file is a directory, not a SQLite database, truncated or corrupt, not a
        gaptheory store (``readonly``), or cannot be written.

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

    def __init__(self, path, *, readonly: bool = False):
        self.path = Path(path)
        self.readonly = bool(readonly)
        self._connection = None
        if self.path.is_dir():
            raise StoreError(f"store {str(self.path)!r} is a directory; give a file path such as {str(self.path / 'results.db')!r}.")
        if self.path.parent and not self.path.parent.exists():
            raise ValueError(f"store path {str(self.path)!r}: folder {str(self.path.parent)!r} does not exist; create it first.")
        if readonly and not self.path.exists():
            raise StoreError(f"store {str(self.path)!r} does not exist; run `gaptheory run SWEEP.toml --store {self.path}` first.")
        with self._errors("open"):
            self._connection = self._connect()
            if readonly:
                self._check_schema()
            else:
                self._connection.execute(f"PRAGMA busy_timeout = {int(BUSY_TIMEOUT_S * 1000)}")
                self._connection.execute("PRAGMA journal_mode = WAL")
                # NORMAL in WAL mode: a committed transaction survives a killed process (only a
                # power loss could drop the last commits), at a fraction of FULL's fsyncs.
                self._connection.execute("PRAGMA synchronous = NORMAL")
                for statement in _SCHEMA:
                    self._connection.execute(statement)
                self._check_schema()

    def _connect(self) -> sqlite3.Connection:
        # isolation_level=None: autocommit, so each transaction is an explicit BEGIN/COMMIT.
        if not self.readonly:
            return sqlite3.connect(str(self.path), timeout=BUSY_TIMEOUT_S, isolation_level=None)
        uri = self.path.resolve().as_uri()
        connection = sqlite3.connect(f"{uri}?mode=ro", uri=True, timeout=BUSY_TIMEOUT_S, isolation_level=None)
        try:
            connection.execute("SELECT COUNT(*) FROM sqlite_master").fetchone()
            return connection
        except sqlite3.OperationalError:
            # A WAL file on a read-only filesystem cannot get its shared-memory index; with
            # nothing able to write there, reading it as immutable is exact.
            connection.close()
            return sqlite3.connect(f"{uri}?immutable=1", uri=True, isolation_level=None)

    def _check_schema(self) -> None:
        tables = {name for (name,) in self._connection.execute("SELECT name FROM sqlite_master WHERE type = 'table'")}
        if "results" not in tables:
            raise StoreError(f"store {str(self.path)!r} is a SQLite file but not a gaptheory results store "
                             "(no 'results' table); point --store at a file written by `gaptheory run`.")
        self._connection.execute("SELECT COUNT(*) FROM results").fetchone()

    @contextlib.contextmanager
    def _errors(self, action: str):
        """Raise every SQLite failure as a StoreError naming the file."""
        try:
            yield
        except sqlite3.Error as err:
            if self._connection is not None and action == "open":
                self._connection.close()
                self._connection = None
            text = str(err)
            if "readonly" in text or "read-only" in text or "unable to open" in text:
                hint = "the file or its folder is read-only; make it writable or write to another --store"
            elif "full" in text:
                hint = "the disk is full; free space and rerun (committed records are intact)"
            elif "disk I/O error" in text and not action.startswith("read"):
                # SQLite reports a write the OS refused (EDQUOT, EFBIG, EIO) as SQLITE_IOERR: the
                # transaction in progress is rolled back and the committed rows are untouched.
                hint = ("the write was refused (disk quota exceeded, file-size limit or a failing disk); committed "
                        "records are intact: free space, raise the quota or limit, or write to another --store, and rerun")
            elif "not a database" in text or "malformed" in text or "corrupt" in text:
                hint = "the file is not an intact SQLite database; move it away and rerun to start a new store"
            else:
                hint = "check the file and rerun"
            raise StoreError(f"store {str(self.path)!r}: cannot {action} ({type(err).__name__}: {text}); {hint}.") from err

    def _require_writable(self) -> None:
        if self.readonly:
            raise StoreError(f"store {str(self.path)!r} was opened read-only; open it with readonly=False to write.")

    # ----- writing ----------------------------------------------------------------------

    def put(self, record: dict) -> bool:
        """Write one record in its own transaction; return True if it was written.

        A record whose key already holds an ``"ok"`` row is ignored (returns False); a
        ``"failed"`` row is replaced by the new record.
        """
        record = _check_record(record)
        self._require_writable()
        text = json.dumps(record, sort_keys=True, allow_nan=False)
        with self._errors("write a record"), self._transaction():
            cursor = self._connection.execute(
                "INSERT INTO results (key, status, written, record) VALUES (?, ?, ?, ?) "
                "ON CONFLICT(key) DO UPDATE SET status = excluded.status, written = excluded.written, "
                "record = excluded.record WHERE results.status = 'failed'",
                (record["key"], record["status"], time.time(), text),
            )
            self._connection.execute("DELETE FROM claims WHERE key = ?", (record["key"],))
            return cursor.rowcount == 1

    # ----- claims -----------------------------------------------------------------------

    @staticmethod
    def new_owner() -> str:
        """A fresh owner name for :meth:`claim`: ``host:pid:random``, unique per runner."""
        return f"{socket.gethostname()}:{os.getpid()}:{uuid.uuid4().hex[:12]}"

    def claim(self, keys, owner: str, *, lease_s: float = LEASE_S) -> list[str]:
        """Claim those of ``keys`` that no live runner holds and no ``"ok"`` record has.

        One ``BEGIN IMMEDIATE`` transaction: of two runners claiming at once, one waits
        and then sees the other's claims. A claim whose lease expired (its owner died or
        stopped renewing) is taken over. Returns the keys now held by ``owner``, in order.
        """
        self._require_writable()
        keys = list(keys)
        now = time.time()
        with self._errors("claim tasks"), self._transaction():
            done = self._keys_in("SELECT key FROM results WHERE status = 'ok' AND key IN ({})", keys)
            held = {key for key, holder in self._rows_in(
                "SELECT key, owner FROM claims WHERE expires > ? AND owner != ? AND key IN ({})", keys, now, owner)
                if _owner_alive(holder)}
            mine = [key for key in keys if key not in done and key not in held]
            self._connection.executemany(
                "INSERT INTO claims (key, owner, expires) VALUES (?, ?, ?) "
                "ON CONFLICT(key) DO UPDATE SET owner = excluded.owner, expires = excluded.expires",
                [(key, owner, now + lease_s) for key in mine])
        return mine

    def _rows_in(self, query: str, keys: list, *params) -> list[tuple]:
        out = []
        for start in range(0, len(keys), 500):  # SQLite's bound-parameter limit
            chunk = keys[start:start + 500]
            out += self._connection.execute(query.format(",".join("?" * len(chunk))), (*params, *chunk)).fetchall()
        return out

    def _keys_in(self, query: str, keys: list, *params) -> set[str]:
        return {row[0] for row in self._rows_in(query, keys, *params)}

    def renew(self, owner: str, *, lease_s: float = LEASE_S) -> int:
        """Extend every lease of ``owner`` (the runner's heartbeat); returns the number renewed."""
        self._require_writable()
        with self._errors("renew claims"), self._transaction():
            return self._connection.execute("UPDATE claims SET expires = ? WHERE owner = ?",
                                            (time.time() + lease_s, owner)).rowcount

    def release(self, owner: str, keys=None) -> None:
        """Drop the claims of ``owner`` (on ``keys`` only, if given): tasks it will not finish."""
        self._require_writable()
        with self._errors("release claims"), self._transaction():
            if keys is None:
                self._connection.execute("DELETE FROM claims WHERE owner = ?", (owner,))
            else:
                self._connection.executemany("DELETE FROM claims WHERE owner = ? AND key = ?",
                                             [(owner, key) for key in keys])

    def claimed(self, *, live: bool = True) -> dict[str, str]:
        """Key -> owner of the claims (unexpired only, unless ``live=False``)."""
        query = "SELECT key, owner FROM claims" + (" WHERE expires > ?" if live else "")
        with self._errors("read claims"):
            if "claims" not in {n for (n,) in self._connection.execute("SELECT name FROM sqlite_master")}:
                return {}
            return dict(self._connection.execute(query, (time.time(),) if live else ()).fetchall())

    @contextlib.contextmanager
    def _transaction(self):
        """BEGIN IMMEDIATE ... COMMIT (ROLLBACK on error): one record, all or nothing."""
        self._connection.execute("BEGIN IMMEDIATE")
        try:
            yield
            self._connection.execute("COMMIT")
        except BaseException:
            if self._connection.in_transaction:
                self._connection.execute("ROLLBACK")
            raise

    # ----- reading ----------------------------------------------------------------------

    def _read(self, query: str, params=()) -> list:
        with self._errors("read"):
            return self._connection.execute(query, params).fetchall()

    def has(self, key: str, *, ok_only: bool = True) -> bool:
        """Whether ``key`` has a record (an ``"ok"`` one unless ``ok_only=False``)."""
        query = "SELECT 1 FROM results WHERE key = ?" + (" AND status = 'ok'" if ok_only else "")
        return bool(self._read(query, (key,)))

    def keys(self, *, status: str | None = STATUS_OK) -> set[str]:
        """The keys of all records with ``status`` (all records for ``None``)."""
        if status is None:
            rows = self._read("SELECT key FROM results")
        else:
            rows = self._read("SELECT key FROM results WHERE status = ?", (status,))
        return {key for (key,) in rows}

    def records(self, status: str | None = STATUS_OK, **equal) -> list[dict]:
        """Records with ``status`` (``None``: any) whose fields equal ``equal``, oldest first.

        Examples
        --------
        ``store.records(kind="recovery", N=100)`` returns the successful recovery
        records with N = 100.
        """
        if status is None:
            rows = self._read("SELECT record FROM results ORDER BY written, key")
        else:
            rows = self._read("SELECT record FROM results WHERE status = ? ORDER BY written, key", (status,))
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
            return self._read("SELECT COUNT(*) FROM results")[0][0]
        return self._read("SELECT COUNT(*) FROM results WHERE status = ?", (status,))[0][0]

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
