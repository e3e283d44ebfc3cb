"""A run's progress lines: printed, and appended with a time stamp to the run folder's plain-text log."""

from __future__ import annotations

import datetime as _dt
from pathlib import Path

from common.storage import StorageError


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
