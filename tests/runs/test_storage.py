"""A full disk (or a read-only folder) never leaves a partial file, and ends in a StorageError naming the file."""

import builtins
import contextlib
import errno
import os
import pathlib
import shutil
import subprocess

import keras
import numpy as np
import pytest

from common.runs.log import RunLog
from common.storage import StorageError, write_atomic, write_json
from common.training.checkpoints import save_model_atomic, write_log


def os_error(code: int) -> OSError:
    return OSError(code, os.strerror(code))


class FillsUp:
    """A file object that takes ``room`` bytes (or characters) and then fails like a full disk."""

    def __init__(self, handle, room: int, code: int = errno.ENOSPC):
        self.handle, self.room, self.code = handle, room, code

    def write(self, data):
        taken = self.handle.write(data[: self.room])
        self.room -= taken
        if taken < len(data):
            self.handle.flush()
            raise os_error(self.code)
        return taken

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.handle.close()

    def __getattr__(self, name):
        return getattr(self.handle, name)


def fail_writes(monkeypatch, step: str, code: int, room: int = 10):
    """Make the temporary file's ``step`` (write, fsync or replace) fail with ``code``."""
    if step == "write":
        real_open = builtins.open

        def filling_open(file, mode="r", *args, **kwargs):
            handle = real_open(file, mode, *args, **kwargs)
            return FillsUp(handle, room, code) if "w" in mode and str(file).endswith((".tmp", ".keras")) else handle

        monkeypatch.setattr(builtins, "open", filling_open)
    else:

        def fails(*args, **kwargs):
            raise os_error(code)

        monkeypatch.setattr(os, step, fails)


def assert_refused(error: StorageError, path, code: int, action: str = "write") -> None:
    assert isinstance(error, OSError) and error.errno == code
    assert error.path == path and error.folder == path.parent
    assert str(error).startswith(f"cannot {action} {path}: {os.strerror(code)} (folder {path.parent}); ")


@pytest.mark.parametrize(
    "step, code, before",
    [
        ("write", errno.ENOSPC, "old results\n"),  # the disk fills up half-way through the text
        ("write", errno.EDQUOT, None),
        ("fsync", errno.ENOSPC, "old results\n"),  # delayed allocation, NFS: the error shows at fsync
        ("replace", errno.EROFS, "old results\n"),
        ("replace", errno.EACCES, None),
    ],
)
def test_a_failed_write_keeps_the_old_file_and_leaves_no_temporary(tmp_path, monkeypatch, step, code, before):
    path = tmp_path / "results.json"
    if before is not None:
        path.write_text(before)
    fail_writes(monkeypatch, step, code)
    with pytest.raises(StorageError) as refused:
        write_atomic(path, "new results " * 100)
    monkeypatch.undo()
    assert_refused(refused.value, path, code)
    assert sorted(p.name for p in tmp_path.iterdir()) == ([] if before is None else ["results.json"])
    assert before is None or path.read_text() == before


@pytest.mark.parametrize(
    "code, advice",
    [
        (errno.ENOSPC, "free some space, then run the command again"),
        (errno.EDQUOT, "free some space or raise the quota, then run the command again"),
        (errno.EROFS, "make the folder writable, then run the command again"),
        (errno.EIO, "check the disk, then run the command again"),
    ],
)
def test_the_message_says_what_to_do(tmp_path, monkeypatch, code, advice):
    fail_writes(monkeypatch, "replace", code)
    with pytest.raises(StorageError) as refused:
        write_json(tmp_path / "config.json", {"seed": 0})
    assert str(refused.value).endswith(f"; {advice}")
    then = f"continue the run with --resume {tmp_path}"
    resumed = refused.value.advise(then)
    assert str(resumed) == str(refused.value).replace("run the command again", then)
    assert (resumed.path, resumed.errno, resumed.__cause__) == (refused.value.path, code, refused.value.__cause__)


def test_an_interruption_leaves_no_temporary_either(tmp_path, monkeypatch):
    def interrupted(*args):
        raise KeyboardInterrupt

    monkeypatch.setattr(os, "replace", interrupted)
    with pytest.raises(KeyboardInterrupt):
        write_atomic(tmp_path / "dice_matrix.csv", "case,mean\n")
    assert list(tmp_path.iterdir()) == []


def test_the_training_log_is_written_atomically(tmp_path, monkeypatch):
    path = tmp_path / "training_log.csv"
    write_log(path, [{"epoch": 1, "loss": "0.5"}])
    fail_writes(monkeypatch, "write", errno.ENOSPC)
    with pytest.raises(StorageError):
        write_log(path, [{"epoch": 1, "loss": "0.5"}, {"epoch": 2, "loss": "0.4"}])
    monkeypatch.undo()
    assert path.read_text() == "epoch,loss\n1,0.5\n" and sorted(os.listdir(tmp_path)) == ["training_log.csv"]


def test_a_full_disk_while_appending_to_the_run_log_is_a_storage_error(tmp_path, monkeypatch):
    path = tmp_path / "run.log"
    log = RunLog(path, echo=lambda message: None)
    log("first line")
    real_open = pathlib.Path.open
    monkeypatch.setattr(pathlib.Path, "open", lambda self, mode="r", **kw: FillsUp(real_open(self, mode, **kw), 5))
    with pytest.raises(StorageError) as refused:
        log("second line")
    monkeypatch.undo()
    assert_refused(refused.value, path, errno.ENOSPC, action="append to")
    assert path.read_text().splitlines()[0].endswith(" first line")  # what was there stays


def tiny_model(weight: float) -> keras.Model:
    model = keras.Sequential([keras.Input((4,)), keras.layers.Dense(1)])
    model.set_weights([np.full((4, 1), weight, np.float32), np.zeros(1, np.float32)])
    return model


@pytest.mark.parametrize(
    "step, code",
    [
        ("write", errno.ENOSPC),  # the .keras archive fills the disk part-way
        ("fsync", errno.EDQUOT),
        ("replace", errno.EROFS),
    ],
)
def test_a_failed_model_save_keeps_the_old_model(tmp_path, monkeypatch, step, code):
    path = tmp_path / "model.keras"
    save_model_atomic(tiny_model(1.0), path)
    fail_writes(monkeypatch, step, code, room=200)
    with pytest.raises(StorageError) as refused:
        save_model_atomic(tiny_model(2.0), path)
    monkeypatch.undo()
    assert_refused(refused.value, path, code)
    assert sorted(os.listdir(tmp_path)) == ["model.keras"]
    assert keras.saving.load_model(path).get_weights()[0][0, 0] == 1.0


@pytest.fixture
def small_disk(tmp_path):
    """A 64 KiB tmpfs (needs the right to mount: root, outside most containers); skipped where not allowed."""
    folder = tmp_path / "disk"
    folder.mkdir()
    mounted = shutil.which("mount") and subprocess.run(
        ["mount", "-t", "tmpfs", "-o", "size=64k", "tmpfs", str(folder)], capture_output=True
    )
    if not mounted or mounted.returncode != 0:
        pytest.skip("cannot mount a small tmpfs here")
    try:
        yield folder
    finally:
        subprocess.run(["umount", str(folder)], check=True)


def test_a_really_full_disk(small_disk):
    results, model = small_disk / "results.json", small_disk / "model.keras"
    write_atomic(results, "old results\n")
    save_model_atomic(tiny_model(1.0), model)
    with pytest.raises(StorageError) as refused:
        write_atomic(results, "x" * 200_000)
    assert_refused(refused.value, results, errno.ENOSPC)
    with contextlib.suppress(OSError), (small_disk / "filler").open("ab", buffering=0) as filler:
        while True:  # take what room is left
            filler.write(b"\0" * 1024)
    with pytest.raises(StorageError) as refused:
        save_model_atomic(tiny_model(2.0), model)
    assert_refused(refused.value, model, errno.ENOSPC)
    assert sorted(os.listdir(small_disk)) == ["filler", "model.keras", "results.json"]
    assert results.read_text() == "old results\n"
    assert keras.saving.load_model(model).get_weights()[0][0, 0] == 1.0
