"""Files written safely: atomic replacement, and a full disk's one-line error.

The one way every file of a run is written (configuration, models, probability maps, results). It sits
below the stages, so the trainer and the prediction writer use it without importing the run folder's
module."""

from __future__ import annotations

import contextlib
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
