"""The run folder's files written safely: atomic replacement, the run's log, and a full disk's one-line error."""

from __future__ import annotations

import contextlib
import datetime as _dt
import errno
import json
import os
from collections.abc import Iterator
from pathlib import Path

import numpy as np


class StorageError(OSError):
    """A file of the run that could not be written: no space, a quota, a read-only or forbidden folder.

    An ``OSError`` (so code that already handles ``OSError`` keeps doing so; ``errno`` and ``strerror``
    are the OS's) that carries ``path``, ``folder`` and the OS ``reason``. Its message is one line for the
    command line and ends in a generic next step; a caller that knows a better one (``--resume RUN_DIR``
    continues this run) replaces it with :meth:`advise`.
    """

    def __init__(self, path: Path, error: OSError, action: str = "write", then: str = "run the command again"):
        path = Path(path)
        self.path, self.folder, self.action, self.then = path, path.parent, action, then
        self.reason = error.strerror or str(error)
        self.remedy = REMEDIES.get(error.errno, "check the disk")
        self.message = f"cannot {action} {path}: {self.reason} (folder {self.folder}); {self.remedy}, then {then}"
        super().__init__(self.message)
        self.errno, self.strerror, self.filename = error.errno, error.strerror, str(path)

    def __str__(self) -> str:
        return self.message

    def advise(self, then: str) -> StorageError:
        """The same error with another next step: ``error.advise(f"continue the run with --resume {run_dir}")``."""
        error = StorageError(self.path, OSError(self.errno, self.reason), self.action, then)
        error.__cause__ = self.__cause__
        return error


#: What to do about a failed write, by ``errno``.
REMEDIES = {
    errno.ENOSPC: "free some space",
    errno.EDQUOT: "free some space or raise the quota",
    errno.EROFS: "make the folder writable",
    errno.EACCES: "make the folder writable",
    errno.EPERM: "make the folder writable",
    errno.ENOENT: "check that the folder exists",
}


@contextlib.contextmanager
def replaced_atomically(path: Path, tmp: Path) -> Iterator[Path]:
    """Write ``path`` through ``tmp``: the body writes ``tmp``, which is then fsync'ed and renamed to ``path``.

    The one way every file of a run is written (text, models, probability maps). The temporary file is
    fsync'ed before the rename, because a full disk or an exceeded quota may only show at that point
    (delayed allocation, NFS), and a rename before the data reach the disk can leave an empty file after
    a crash. Any failure, in the body or after it, removes the temporary file and leaves ``path`` as it
    was; an ``OSError`` becomes a :class:`StorageError` naming the file and its folder.
    """
    path = Path(path)
    try:
        yield tmp
        fd = os.open(tmp, os.O_RDONLY)
        try:
            os.fsync(fd)
        finally:
            os.close(fd)
        os.replace(tmp, path)
    except BaseException as error:
        remove_quietly(tmp)
        if isinstance(error, OSError) and not isinstance(error, StorageError):
            raise StorageError(path, error) from error
        raise


def write_atomic(path: Path, text: str) -> None:
    """Write ``text`` to ``path`` through a temporary file and a rename: never a truncated file
    (:func:`replaced_atomically`)."""
    path = Path(path)
    with replaced_atomically(path, path.with_name(f".{path.name}.tmp")) as tmp, open(tmp, "w") as handle:
        handle.write(text)


def remove_quietly(path: Path) -> None:
    """Remove a temporary file if it is there; a failure to remove it (a read-only folder) is not the news."""
    with contextlib.suppress(OSError):
        Path(path).unlink(missing_ok=True)


def write_json(path: Path, data: dict) -> None:
    write_atomic(path, json.dumps(data, indent=2, default=_json_default) + "\n")


def _json_default(value):
    if isinstance(value, Path):
        return str(value)
    if isinstance(value, (np.integer, np.floating)):
        return value.item()
    if isinstance(value, np.ndarray):
        return value.tolist()
    raise TypeError(f"cannot write {type(value).__name__} to JSON")


class RunLog:
    """Progress lines: printed, and appended to the run folder's plain-text log with a time stamp."""

    def __init__(self, path: Path, echo=print):
        self.path = Path(path)
        self.echo = echo

    def __call__(self, message: str) -> None:
        self.echo(message)
        self.to_file(message)

    def to_file(self, message: str) -> None:
        """Append the message's lines in one write; a full disk raises :class:`StorageError`, not a traceback.

        On such a failure the log may end in a part of the last line (the lines before it are intact).
        """
        stamp = _dt.datetime.now().isoformat(timespec="seconds")
        text = "".join(f"{stamp} {line}\n" for line in str(message).splitlines() or [""])
        try:
            with self.path.open("a") as handle:
                handle.write(text)
        except OSError as error:
            raise StorageError(self.path, error, action="append to") from error


def retrain_hint(run_dir: Path, network: Path, what: str = "--resume") -> str:
    """How to train one network of a run anew: move its folder out of the run, then continue the run."""
    aside = Path(run_dir).parent / f"{Path(run_dir).name}-{network.name}-unreadable"
    command = f"{what} {run_dir}" if what == "--resume" else "the same command"
    return f"mv {network} {aside}, then {command} again (only that network is trained again)"
