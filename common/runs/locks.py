"""One process per network: a lock file in the network's folder, held while the network trains.

Two processes that train the same expert's network into one run folder (two jobs of a job array given
the same ``--experts``, a ``--resume`` started twice) would both train it, interleave their lines in its
job log and race each other's checkpoints. :class:`NetworkLock` makes the second one refuse with
:class:`LockHeld`, whose message names the process that holds the network.

The lock is ``fcntl.flock(LOCK_EX | LOCK_NB)`` on a descriptor of the lock file kept open while the lock
is held. Such a lock belongs to the open file description, so:

- the kernel releases it when the holder dies, however it dies (SIGKILL, out of memory, a node that
  reboots): a lock file left behind by a dead process blocks nothing, and is taken over silently;
- two opens conflict even within one process, which makes the lock testable in one process;
- a child forked *without* exec shares the description and so holds the lock until it exits too
  (descriptors from :func:`os.open` are not inherited across exec).

Once it holds the lock, the holder writes a record into the file (JSON: host, pid, started, command), so
that the refusal can say who holds it. :meth:`NetworkLock.release` removes the file while still holding
the lock, so a finished run leaves no lock file; a process that had opened the file meanwhile sees, once
it gets the lock, that the name no longer leads to its file, and starts again on a new one. A file left
by a process that died is unlocked, blocks nothing and is taken over.

Limits, honestly:

- On NFS, Linux emulates ``flock`` with POSIX byte-range locks. Across hosts that works where the NFS
  lock manager runs (NFSv4, or NFSv3 with lockd); but POSIX locks belong to a process, so on NFS a second
  acquire within the *same* process is not refused.
- On file systems without locks (Lustre mounted without ``flock``, some FUSE and SMB mounts, NFS without a
  lock manager) ``flock`` fails with ``ENOLCK``, ``ENOSYS`` or ``EOPNOTSUPP``. Then the lock falls back to
  creating the file with ``O_EXCL`` and removing it on release. A file left by a process that died is
  recognised by its record: on this host, with a process id that no longer runs, it is taken over with a
  warning; from another host, whose processes cannot be seen from here, it is refused with a message that
  says to delete the file if that process has ended. Two processes that take over the same stale file at
  the same instant may both go ahead, a process id reused since is taken for the holder (refused, to be
  safe), and containers that share a host name but not their process ids can fool the check.
"""

from __future__ import annotations

import contextlib
import datetime as _dt
import errno
import json
import os
import shlex
import socket
import sys
import warnings
from collections.abc import Callable
from pathlib import Path

from common.spec import ConfigError
from common.storage import StorageError

try:
    import fcntl
except ImportError:  # not a POSIX system: only the fallback
    fcntl = None

#: The lock file's name in a network's folder.
LOCK_FILE = ".lock"

#: ``flock`` errors that mean "held by another open file", as opposed to "not supported here".
HELD_ERRNOS = (errno.EWOULDBLOCK, errno.EAGAIN, errno.EACCES)


class LockHeld(ConfigError):
    """Another process holds the network's lock; the message names it (a ConfigError: one line, exit 2).

    Attributes: ``what`` (the network), ``path`` (the lock file) and ``holder`` (its record, a dict that may
    be empty when the holder has not written it yet).
    """

    def __init__(self, what: str, path: Path, holder: dict, advice: str):
        self.what, self.path, self.holder = what, Path(path), holder
        super().__init__(f"{what}: {describe(holder)} holds the lock {path}; {advice}")


class LockWarning(UserWarning):
    """A stale lock file (its process has ended) was taken over; only with the fallback without ``flock``."""


def describe(holder: dict) -> str:
    """``process 4242 on node17 (started 2025-01-02T03:04:05, command: python Kidney.py --experts 1)``."""
    if not holder.get("pid"):
        return "another process (it has not recorded itself yet)"
    text = f"process {holder['pid']} on {holder.get('host', 'an unknown host')}"
    details = []
    if holder.get("started"):
        details.append(f"started {holder['started']}")
    if holder.get("command"):
        details.append(f"command: {shlex.join(str(part) for part in holder['command'])}")
    return text + (f" ({', '.join(details)})" if details else "")


def holder_record() -> dict:
    """What this process writes into a lock it holds."""
    return {
        "host": socket.gethostname(),
        "pid": os.getpid(),
        "started": _dt.datetime.now().isoformat(timespec="seconds"),
        "command": list(sys.argv),
    }


def parse_record(data: bytes) -> dict:
    """The holder's record, or ``{}`` if the file is empty or not (yet) a whole record."""
    try:
        record = json.loads(data.decode("utf-8", "replace"))
    except ValueError:
        return {}
    return record if isinstance(record, dict) else {}


def pid_alive(pid: int) -> bool:
    """Whether a process with this id runs on this host (a process of another user counts)."""
    if os.name != "posix":  # os.kill(pid, 0) would end the process on Windows
        return True
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


class NetworkLock:
    """The lock of one network: ``with NetworkLock(net_dir / LOCK_FILE, "seg01"): train...``.

    ``what`` names the network in the refusal. :meth:`acquire` raises :class:`LockHeld` if another process
    (or another open in this one) holds it, and :class:`~common.storage.StorageError` if the lock file
    cannot be created or written (a full disk). ``use_flock=False`` forces the fallback for file systems
    without locks, which is also taken when ``flock`` reports that it is not supported; ``warn`` receives
    the warning of a stale lock file taken over there (default: :func:`warnings.warn`).
    """

    def __init__(self, path: Path, what: str, *, use_flock: bool = True, warn: Callable[[str], None] | None = None):
        self.path, self.what = Path(path), what
        self.use_flock = use_flock and fcntl is not None
        self.warn = warn
        self._fd: int | None = None
        self._flocked = False

    @property
    def held(self) -> bool:
        return self._fd is not None

    def __enter__(self) -> NetworkLock:
        self.acquire()
        return self

    def __exit__(self, *exc) -> None:
        self.release()

    def acquire(self) -> None:
        if self.held:
            raise RuntimeError(f"{self.what}: the lock {self.path} is already held by this NetworkLock")
        try:
            self.path.parent.mkdir(parents=True, exist_ok=True)
        except OSError as error:
            raise StorageError(self.path, error, action="create the lock") from error
        if self.use_flock and self._acquire_flock():
            return
        self._acquire_exclusive()

    def release(self) -> None:
        """Unlock and close; the fallback's file is removed (if it is still this lock's)."""
        fd, self._fd = self._fd, None
        if fd is None:
            return
        try:
            # The file is removed while still locked (if it is still this lock's), so a finished run
            # leaves none; a process that opened it meanwhile finds it unlinked once it gets the lock,
            # and starts again on a new file (see _acquire_flock).
            with contextlib.suppress(OSError):
                if os.stat(self.path).st_ino == os.fstat(fd).st_ino:
                    os.unlink(self.path)
            if self._flocked:
                fcntl.flock(fd, fcntl.LOCK_UN)
        finally:
            os.close(fd)
            self._flocked = False

    def _acquire_flock(self) -> bool:
        """True once locked; False if ``flock`` is not supported here (then the fallback).

        The holder removes the file when it releases the lock; a lock won on a file removed meanwhile
        (its name now names another file, or none) guards nothing, so it is dropped and tried again.
        """
        for _ in range(100):
            locked = self._flock_once()
            if locked is None:
                continue  # won a removed file's lock
            return locked
        raise LockHeld(self.what, self.path, self._read_holder(), self.advice())

    def _flock_once(self) -> bool | None:
        try:
            fd, created = self._open(os.O_RDWR | os.O_CREAT | os.O_EXCL), True
        except FileExistsError:
            fd, created = self._open(os.O_RDWR), False
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError as error:
            os.close(fd)
            if error.errno in HELD_ERRNOS:
                raise LockHeld(self.what, self.path, self._read_holder(), self.advice()) from None
            if created:  # an empty file would stop the fallback's O_EXCL
                with contextlib.suppress(OSError):
                    os.unlink(self.path)
            return False
        try:
            current = os.stat(self.path).st_ino
        except FileNotFoundError:
            current = None
        if current != os.fstat(fd).st_ino:
            os.close(fd)
            return None
        self._fd, self._flocked = fd, True
        self._record()
        return True

    def _acquire_exclusive(self) -> None:
        for _ in range(2):  # once more after taking over a stale file
            try:
                self._fd = self._open(os.O_RDWR | os.O_CREAT | os.O_EXCL)
            except FileExistsError:
                holder = self._read_holder()
                if not self._stale(holder):
                    raise LockHeld(self.what, self.path, holder, self.advice(holder)) from None
                self._warn(f"{self.what}: taking over the lock {self.path} of {describe(holder)}, which has ended")
                with contextlib.suppress(FileNotFoundError):
                    os.unlink(self.path)
                continue
            self._record()
            return
        raise LockHeld(self.what, self.path, self._read_holder(), self.advice())

    def advice(self, holder: dict | None = None) -> str:
        if holder is not None and holder.get("host") not in (None, socket.gethostname()):
            return (
                f"wait for it to end or stop it; this host cannot tell whether it still runs: "
                f"if it has ended, delete {self.path} and start again"
            )
        if holder is not None and not holder.get("pid"):
            return f"wait for it to end or stop it; if no process trains {self.what}, delete {self.path}"
        return "wait for it to end or stop it (a process that has ended holds no lock)"

    def _stale(self, holder: dict) -> bool:
        """The fallback's file of a process of this host that no longer runs."""
        pid = holder.get("pid")
        return holder.get("host") == socket.gethostname() and isinstance(pid, int) and not pid_alive(pid)

    def _open(self, flags: int) -> int:
        try:
            return os.open(self.path, flags, 0o644)
        except FileExistsError:
            raise
        except OSError as error:
            raise StorageError(self.path, error, action="create the lock") from error

    def _read_holder(self) -> dict:
        try:
            return parse_record(self.path.read_bytes())
        except OSError:
            return {}

    def _record(self) -> None:
        """Write this process's record through the held descriptor; a failure releases the lock."""
        data = (json.dumps(holder_record()) + "\n").encode()
        try:
            os.ftruncate(self._fd, 0)
            os.pwrite(self._fd, data, 0)
            os.fsync(self._fd)
        except OSError as error:
            self.release()
            raise StorageError(self.path, error, action="write the lock") from error

    def _warn(self, message: str) -> None:
        if self.warn is not None:
            self.warn(message)
        else:
            warnings.warn(message, LockWarning, stacklevel=4)
