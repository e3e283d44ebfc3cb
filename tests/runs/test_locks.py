"""The lock of a network: a second trainer refuses, naming the holder; a dead holder's lock is taken over."""

import errno
import fcntl
import json
import os
import signal
import socket
import subprocess
import sys
from pathlib import Path

import pytest

from common.runs import locks
from common.runs.locks import LOCK_FILE, LockHeld, LockWarning, NetworkLock
from common.spec import ConfigError
from common.storage import StorageError

ROOT = Path(__file__).resolve().parents[2]
HOST = socket.gethostname()
BOTH = pytest.mark.parametrize("use_flock", [True, False], ids=["flock", "fallback"])


def dead_pid() -> int:
    """A process id that no process has: above the kernel's largest."""
    return int(Path("/proc/sys/kernel/pid_max").read_text()) + 1


@BOTH
def test_a_second_acquire_refuses_and_names_the_holder(tmp_path, use_flock):
    path = tmp_path / "seg01" / LOCK_FILE
    with NetworkLock(path, "seg01", use_flock=use_flock) as first:
        assert first.held
        record = json.loads(path.read_text())
        assert record["host"] == HOST and record["pid"] == os.getpid() and record["command"] == sys.argv
        with pytest.raises(LockHeld) as refused:
            NetworkLock(path, "seg01", use_flock=use_flock).acquire()
    message = str(refused.value)
    assert message.startswith(f"seg01: process {os.getpid()} on {HOST} (started {record['started']}, command: ")
    assert str(path) in message and isinstance(refused.value, ConfigError)
    assert refused.value.holder == record and refused.value.path == path
    assert not first.held
    with NetworkLock(path, "seg01", use_flock=use_flock):  # released: free again
        pass
    assert not path.exists()  # released: the file is removed, a finished run leaves none


HOLD = """
import sys, time
from common.runs.locks import NetworkLock
NetworkLock(sys.argv[1], "seg02", use_flock=sys.argv[2] == "flock").acquire()
print("locked", flush=True)
time.sleep(120)
"""


@BOTH
def test_a_lock_held_by_another_process_refuses_until_it_is_killed(tmp_path, use_flock, recwarn):
    path = tmp_path / LOCK_FILE
    mode = "flock" if use_flock else "fallback"
    command = [sys.executable, "-c", HOLD, str(path), mode]
    holder = subprocess.Popen(command, cwd=ROOT, stdout=subprocess.PIPE, text=True)
    try:
        assert holder.stdout.readline().strip() == "locked"
        with pytest.raises(LockHeld, match=f"^seg02: process {holder.pid} on {HOST} "):
            NetworkLock(path, "seg02", use_flock=use_flock).acquire()
    finally:
        holder.send_signal(signal.SIGKILL)
        holder.wait()
        holder.stdout.close()
    with NetworkLock(path, "seg02", use_flock=use_flock):
        assert json.loads(path.read_text())["pid"] == os.getpid()
    taken_over = [w for w in recwarn if w.category is LockWarning]
    assert len(taken_over) == (0 if use_flock else 1)  # flock: the kernel released it, nothing was stale


@pytest.mark.parametrize(
    "record, refused",
    [
        ({"host": HOST, "pid": "dead"}, None),  # this host, no such process: taken over
        ({"host": HOST, "pid": os.getppid()}, f"process {os.getppid()} on {HOST}"),  # alive
        ({"host": "node17", "pid": 4242}, "if it has ended, delete"),  # another host: cannot tell
        ({}, "has not recorded itself yet"),  # empty or torn file: refused, told to delete it
    ],
)
def test_the_fallback_takes_over_only_a_dead_process_of_this_host(tmp_path, record, refused):
    path = tmp_path / LOCK_FILE
    if record.get("pid") == "dead":
        record = {**record, "pid": dead_pid()}
    path.write_text(json.dumps(record) if record else "")
    warned = []
    lock = NetworkLock(path, "seg01", use_flock=False, warn=warned.append)
    if refused is None:
        with lock:
            assert json.loads(path.read_text())["pid"] == os.getpid()
        assert warned == [f"seg01: taking over the lock {path} of process {record['pid']} on {HOST}, which has ended"]
        assert not path.exists()
    else:
        with pytest.raises(LockHeld, match=refused) as error:
            lock.acquire()
        assert str(path) in str(error.value) and not warned
        assert path.read_text() == (json.dumps(record) if record else "")  # left alone


def test_flock_not_supported_falls_back_to_an_exclusive_file(tmp_path, monkeypatch):
    def no_locks(fd, operation):
        raise OSError(errno.ENOLCK, os.strerror(errno.ENOLCK))

    monkeypatch.setattr(fcntl, "flock", no_locks)
    path = tmp_path / LOCK_FILE
    with NetworkLock(path, "seg03"):
        assert json.loads(path.read_text())["pid"] == os.getpid()
        with pytest.raises(LockHeld, match=f"process {os.getpid()} on {HOST}"):
            NetworkLock(path, "seg03").acquire()
    assert not path.exists()


def test_a_lock_file_that_cannot_be_created_is_a_storage_error(tmp_path, monkeypatch):
    def full(*args, **kwargs):
        raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))

    monkeypatch.setattr(locks.os, "open", full)
    path = tmp_path / LOCK_FILE
    with pytest.raises(StorageError, match=f"^cannot create the lock {path}: No space left on device"):
        NetworkLock(path, "seg01").acquire()


def test_acquiring_twice_with_one_object_is_a_programming_error(tmp_path):
    with NetworkLock(tmp_path / LOCK_FILE, "seg01") as lock, pytest.raises(RuntimeError, match="already held"):
        lock.acquire()
