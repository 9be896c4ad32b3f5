"""Faults around a sweep, injected for real: killed workers, SIGINT, concurrent runs, broken stores."""

import contextlib
import json
import os
import signal
import sqlite3
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import pytest

from gaptheory.experiments.store import ResultStore, StoreError
from gaptheory.experiments.sweep import load_sweep

ROOT = Path(__file__).resolve().parents[1]
#: Seconds to wait for a sweep subprocess to reach the state a test needs before failing.
WAIT_S = 120.0


def _sweep_file(tmp_path, name="faults", n_seeds=12, solver="basis_pursuit"):
    path = tmp_path / f"{name}.toml"
    # Basis pursuit at N = 40 takes a fraction of a second per task: long enough to be hit mid-task.
    # OMP prints nothing (HiGHS, under basis pursuit, prints its banner on stderr).
    path.write_text(textwrap.dedent(f"""
        name = "{name}"
        kind = "recovery"
        [fixed]
        N = 40
        B = 8
        solver = "{solver}"
        [grid]
        M = [16, 24]
        K = [2, 4]
        seed = {list(range(n_seeds))}
    """))
    return path


def _cli(*args):
    env = {**os.environ, "PYTHONPATH": str(ROOT), "OMP_NUM_THREADS": "1"}
    return [sys.executable, "-m", "gaptheory", *args], env


def _rows(db) -> int:
    if not Path(db).exists():
        return 0
    try:
        with contextlib.closing(sqlite3.connect(f"file:{db}?mode=ro", uri=True)) as reader:
            return reader.execute("SELECT COUNT(*) FROM results").fetchone()[0]
    except sqlite3.OperationalError:
        return 0


def _wait(condition, process):
    deadline = time.monotonic() + WAIT_S
    while not condition():
        assert process.poll() is None, process.communicate()[1].decode()
        assert time.monotonic() < deadline, "the sweep did not get there in time"
        time.sleep(0.02)


def _children(pid: int) -> list[int]:
    out = []
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            with contextlib.suppress(OSError):
                if int((entry / "stat").read_text().rsplit(")", 1)[1].split()[1]) == pid:
                    out.append(int(entry.name))
    return out


def _descendants(pid: int) -> list[int]:
    out, frontier = [], [pid]
    while frontier:
        children = _children(frontier.pop())
        out += children
        frontier += children
    return out


@pytest.mark.skipif(not Path("/proc").is_dir(), reason="finds the worker processes through /proc")
def test_a_worker_killed_mid_sweep_is_retried_and_every_task_succeeds(tmp_path):
    sweep_file, db = _sweep_file(tmp_path), tmp_path / "r.db"
    cmd, env = _cli("run", str(sweep_file), "--store", str(db), "--workers", "2", "--no-progress", "--json")
    process = subprocess.Popen(cmd, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    try:
        _wait(lambda: _rows(db) >= 2, process)
        # The workers are the leaves (the fork server's children); kill one while it computes.
        leaves = [pid for pid in _descendants(process.pid) if not _children(pid)]
        assert leaves
        os.kill(leaves[0], signal.SIGKILL)
        out, err = process.communicate(timeout=WAIT_S)
    finally:
        if process.poll() is None:
            process.kill()
    assert process.returncode == 0, err.decode()
    outcome = json.loads(out)
    expected = {task.key for task in load_sweep(sweep_file).tasks()}
    with ResultStore(db, readonly=True) as store:
        assert store.keys() == expected and store.count() == len(expected) and not store.failures()
    assert outcome["ok"] == len(expected)


def test_sigint_exits_130_without_a_traceback_and_the_store_resumes(tmp_path):
    sweep_file, db = _sweep_file(tmp_path), tmp_path / "r.db"
    cmd, env = _cli("run", str(sweep_file), "--store", str(db), "--workers", "2", "--no-progress")
    for moment in ("start-up", "mid-sweep"):
        process = subprocess.Popen(cmd, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
        if moment == "start-up":
            _wait(db.exists, process)  # the store is open: the fork server and workers are starting
        else:
            _wait(lambda: _rows(db) >= 2, process)
        process.send_signal(signal.SIGINT)
        out, err = process.communicate(timeout=WAIT_S)
        assert process.returncode == 130, (moment, err.decode())
        assert b"Traceback" not in err and b"interrupted" in err, (moment, err.decode())
    expected = {task.key for task in load_sweep(sweep_file).tasks()}
    done_before = _rows(db)
    assert done_before < len(expected)
    rerun = subprocess.run(cmd[:-1] + ["--no-progress", "--json"], env=env, capture_output=True, timeout=WAIT_S * 3)
    assert rerun.returncode == 0, rerun.stderr.decode()
    assert json.loads(rerun.stdout)["skipped"] == done_before  # committed rows kept, not recomputed
    with ResultStore(db, readonly=True) as store:
        assert store.keys() == expected and store.count() == len(expected)
        assert store.claimed() == {}  # every claim released or completed


def test_two_concurrent_runs_on_one_store_compute_each_task_once(tmp_path):
    sweep_file, db = _sweep_file(tmp_path), tmp_path / "r.db"
    ResultStore(db).close()  # both runs open an existing store
    cmd, env = _cli("run", str(sweep_file), "--store", str(db), "--workers", "1", "--no-progress", "--json")
    runs = [subprocess.Popen(cmd, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE) for _ in range(2)]
    outcomes = []
    for process in runs:
        out, err = process.communicate(timeout=WAIT_S * 3)
        assert process.returncode == 0, err.decode()
        outcomes.append(json.loads(out))
    expected = {task.key for task in load_sweep(sweep_file).tasks()}
    # Each task was computed by exactly one of the two runs: the ok counts add up to the sweep.
    assert sum(o["ok"] for o in outcomes) == len(expected)
    assert all(o["ok"] > 0 for o in outcomes), outcomes  # both did part of the work
    with ResultStore(db, readonly=True) as store:
        assert store.keys() == expected and store.count() == len(expected)


def test_a_dead_runners_claims_are_taken_over(tmp_path):
    with ResultStore(tmp_path / "r.db") as store:
        dead = f"{os.uname().nodename}:999999999:x"  # no such process on this host
        assert store.claim(["a", "b"], dead) == ["a", "b"]
        assert store.claim(["a", "b", "c"], "elsewhere:1:y", lease_s=0.5) == ["a", "b", "c"]
        assert store.claim(["a"], "me:2:z") == []  # a live claim from another host is respected ...
        time.sleep(0.6)
        assert store.claim(["a"], "me:2:z") == ["a"]  # ... until its lease expires
        assert store.renew("me:2:z") == 1
        store.put({"key": "a", "status": "ok"})
        assert "a" not in store.claimed() and store.claim(["a"], "other:3:w") == []  # done, not claimable


@pytest.mark.parametrize("content", ["directory", "random", "truncated", "foreign"])
@pytest.mark.parametrize("readonly", [False, True])
def test_a_file_that_is_not_a_store_is_refused_naming_it(tmp_path, content, readonly):
    good = tmp_path / "good.db"
    with ResultStore(good) as store:
        for i in range(200):
            store.put({"key": f"k{i}", "status": "ok", "text": "x" * 200})
    path = tmp_path / "bad.db"
    if content == "directory":
        path.mkdir()
    elif content == "random":
        path.write_bytes(os.urandom(8192))
    elif content == "truncated":
        path.write_bytes(good.read_bytes()[:3000])
    else:
        with contextlib.closing(sqlite3.connect(path)) as connection:
            connection.execute("CREATE TABLE other (x)")
    if content == "foreign" and not readonly:
        with ResultStore(path) as store:  # a writer adds its tables to a SQLite file it is given
            assert store.count() == 0
        return
    with pytest.raises(StoreError, match="bad.db"):
        with ResultStore(path, readonly=readonly) as store:
            store.records()


def test_a_full_disk_is_a_store_error_and_committed_rows_stay(tmp_path):
    db = tmp_path / "r.db"
    with ResultStore(db) as store:
        store.put({"key": "first", "status": "ok"})
        pages = store._connection.execute("PRAGMA page_count").fetchone()[0]
        store._connection.execute(f"PRAGMA max_page_count = {pages + 2}")  # SQLite's own disk-full path
        with pytest.raises(StoreError, match="full"):
            for i in range(1000):
                store.put({"key": f"k{i}", "status": "ok", "text": "x" * 4000})
        written = store.count()
    with ResultStore(db, readonly=True) as store:
        assert store.count() == written and store.has("first")
        assert store.records(status=None)  # intact and readable


def test_a_read_only_store_refuses_writes_with_a_store_error(tmp_path):
    with ResultStore(tmp_path / "r.db") as store:
        store.put({"key": "a", "status": "ok"})
    with ResultStore(tmp_path / "r.db", readonly=True) as store:
        with pytest.raises(StoreError, match="read-only"):
            store.put({"key": "b", "status": "ok"})
        assert store.keys() == {"a"}
    with pytest.raises(StoreError, match="does not exist"):
        ResultStore(tmp_path / "missing.db", readonly=True)


def _read_only_mount_works() -> bool:
    try:
        import tempfile

        with tempfile.TemporaryDirectory() as folder:
            return subprocess.run(["unshare", "-m", "sh", "-c",
                                   f"mount --bind {folder} {folder} && mount -o remount,bind,ro {folder}"],
                                  capture_output=True, timeout=10).returncode == 0
    except (OSError, subprocess.SubprocessError):
        return False


@pytest.mark.skipif(not _read_only_mount_works(), reason="needs mount namespaces (unshare -m) for a read-only filesystem")
def test_table_reads_a_store_on_a_read_only_filesystem(tmp_path):
    folder = tmp_path / "ro"
    folder.mkdir()
    with ResultStore(folder / "r.db") as store:
        for seed in range(2):
            store.put({"key": f"k{seed}", "status": "ok", "sweep": "s", "kind": "recovery", "seed": seed,
                       "N": 4, "success_rate": 0.5 + seed / 4})
        held_open = ResultStore(folder / "r.db")  # keeps a -wal file beside it, as a running sweep would
    cmd, env = _cli("table", str(folder / "r.db"), "--group-by", "N", "--metrics", "success_rate")
    script = (f"mount --bind {folder} {folder} && mount -o remount,bind,ro {folder} && "
              + " ".join(f"'{part}'" for part in cmd))
    result = subprocess.run(["unshare", "-m", "sh", "-c", script], env=env, capture_output=True, timeout=WAIT_S)
    held_open.close()
    assert result.returncode == 0, result.stderr.decode()
    assert b"0.625" in result.stdout  # the mean of 0.5 and 0.75


# ----- a full disk and a read-only store, as the command line meets them ----------------------


def _store_with_committed_rows(db, sweep_file, n: int) -> set[str]:
    """Commit the first ``n`` tasks of the sweep as done; their keys."""
    keys = [task.key for task in load_sweep(sweep_file).tasks()[:n]]
    with ResultStore(db) as store:
        for key in keys:
            store.put({"key": key, "status": "ok", "sweep": "faults", "kind": "recovery", "success_rate": 1.0})
    return set(keys)


def _one_line(stderr: bytes) -> str:
    lines = [line for line in stderr.decode().splitlines() if line.strip()]
    assert len(lines) == 1 and "Traceback" not in lines[0], stderr.decode()
    return lines[0]


def _mount_namespace() -> list[str] | None:
    """An ``unshare`` prefix whose shell may mount a tmpfs: root's mount namespace, else a user namespace's."""
    import tempfile

    for prefix in (["unshare", "-m"], ["unshare", "-r", "-m"]):
        try:
            with tempfile.TemporaryDirectory() as folder:
                if subprocess.run([*prefix, "sh", "-c", f"mount -t tmpfs -o size=64k tmpfs {folder}"],
                                  capture_output=True, timeout=10).returncode == 0:
                    return prefix
        except (OSError, subprocess.SubprocessError):
            pass
    return None


MOUNT_NAMESPACE = _mount_namespace()


@pytest.mark.skipif(MOUNT_NAMESPACE is None, reason="needs a mount namespace (unshare -m or -rm) for a small tmpfs")
def test_a_full_disk_mid_sweep_exits_2_naming_the_store_and_keeps_the_committed_rows(tmp_path):
    sweep_file, db = _sweep_file(tmp_path, solver="omp"), tmp_path / "r.db"
    before = _store_with_committed_rows(db, sweep_file, 8)
    disk, after = tmp_path / "disk", tmp_path / "after"
    disk.mkdir()
    after.mkdir()
    # A filesystem with 64 KiB to spare: the WAL index (32 KiB) and a few commits fit, then ENOSPC.
    size = db.stat().st_size + 64 * 1024
    cmd, env = _cli("run", str(sweep_file), "--store", str(disk / "r.db"), "--workers", "1", "--no-progress")
    script = (f"mount -t tmpfs -o size={size} tmpfs '{disk}' && cp '{db}' '{disk}/' && "
              + " ".join(f"'{part}'" for part in cmd) + f"; code=$?; cp '{disk}'/r.db* '{after}/'; exit $code")
    result = subprocess.run([*MOUNT_NAMESPACE, "sh", "-c", script], env=env, capture_output=True, timeout=WAIT_S)
    assert result.returncode == 2, result.stderr.decode()
    line = _one_line(result.stderr)
    assert str(disk / "r.db") in line and "full" in line and "free space" in line, line
    with ResultStore(after / "r.db") as store:  # the copy, WAL included, as the disk held it
        keys = store.keys()
        assert before <= keys and len(keys) < len(load_sweep(sweep_file).tasks())
        assert len(store.records(status=None)) == store.count() == len(keys)  # every row reads back


def _refused_write_run(tmp_path):
    """The sweep with the kernel refusing writes past the store's size plus 64 KiB (RLIMIT_FSIZE, EFBIG),
    as a disk quota refuses them (EDQUOT): SQLite reports both as a failed write, not a full disk."""
    import resource

    sweep_file, db = _sweep_file(tmp_path, solver="omp"), tmp_path / "r.db"
    before = _store_with_committed_rows(db, sweep_file, 8)
    limit = db.stat().st_size + 64 * 1024

    def limit_file_size():
        signal.signal(signal.SIGXFSZ, signal.SIG_IGN)  # fail the write with EFBIG instead of killing
        resource.setrlimit(resource.RLIMIT_FSIZE, (limit, limit))

    cmd, env = _cli("run", str(sweep_file), "--store", str(db), "--workers", "1", "--no-progress")
    result = subprocess.run(cmd, env=env, capture_output=True, timeout=WAIT_S, preexec_fn=limit_file_size)
    return result, db, before, sweep_file


@pytest.fixture(scope="module")
def refused_write(tmp_path_factory):
    return _refused_write_run(tmp_path_factory.mktemp("quota"))


def test_a_write_refused_mid_sweep_exits_2_naming_the_store_and_keeps_the_committed_rows(refused_write):
    result, db, before, sweep_file = refused_write
    assert result.returncode == 2, result.stderr.decode()
    assert str(db) in _one_line(result.stderr)
    with ResultStore(db) as store:
        keys = store.keys()
        assert before <= keys and len(keys) < len(load_sweep(sweep_file).tasks())
        assert len(store.records(status=None)) == store.count() == len(keys)


def test_a_write_refused_mid_sweep_is_explained_with_its_fix(refused_write):
    line = _one_line(refused_write[0].stderr)
    assert "quota" in line and "committed records are intact" in line, line


PR_CAPBSET_DROP, CAP_DAC_OVERRIDE = 24, 1  # <linux/prctl.h>, <linux/capability.h>


def _obeying_file_modes():
    """preexec_fn: as root, drop CAP_DAC_OVERRIDE from the bounding set, so the command (exec'd
    after it) obeys file modes as any user does; a no-op for other users, who obey them anyway."""
    if os.geteuid() != 0:
        return
    import ctypes

    libc = ctypes.CDLL(None, use_errno=True)
    if libc.prctl(PR_CAPBSET_DROP, CAP_DAC_OVERRIDE, 0, 0, 0) != 0:
        raise OSError(ctypes.get_errno(), "prctl(PR_CAPBSET_DROP, CAP_DAC_OVERRIDE)")


def test_a_read_only_store_exits_2_naming_it_and_table_still_reads_it(tmp_path):
    sweep_file, folder = _sweep_file(tmp_path, solver="omp"), tmp_path / "results"
    folder.mkdir()
    db = folder / "r.db"
    before = _store_with_committed_rows(db, sweep_file, 8)
    db.chmod(0o444)
    folder.chmod(0o555)  # no -wal or -journal may be created beside it either
    try:
        cmd, env = _cli("run", str(sweep_file), "--store", str(db), "--workers", "1", "--no-progress")
        result = subprocess.run(cmd, env=env, capture_output=True, timeout=WAIT_S, preexec_fn=_obeying_file_modes)
        cmd, env = _cli("table", str(db), "--group-by", "kind", "--metrics", "success_rate")
        table = subprocess.run(cmd, env=env, capture_output=True, timeout=WAIT_S, preexec_fn=_obeying_file_modes)
    finally:
        folder.chmod(0o755)
        db.chmod(0o644)
    assert result.returncode == 2, result.stderr.decode()
    line = _one_line(result.stderr)
    assert str(db) in line and "read-only" in line and "another --store" in line, line
    assert table.returncode == 0 and "| recovery | 8 | 1 ± 0 |" in table.stdout.decode(), table.stderr.decode()
    with ResultStore(db, readonly=True) as store:
        assert store.keys() == before and store.count() == len(before)
