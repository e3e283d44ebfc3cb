"""Checkpoints of one network's training: the files it leaves, the callback that writes them, and reading them back.

What training leaves in the expert's folder, each file written atomically (temporary file, then rename):

- ``training_log.csv``: one row per finished epoch;
- ``model.keras``: the network kept (``Settings.keep``: at its best validation loss so far, or after its
  last epoch), as of the last checkpoint;
- ``backup.keras`` and ``backup.json``: at each checkpoint, the network with its optimiser state after
  the epoch just finished, so that an interrupted training continues from there (removed once
  training ends).

A checkpoint is taken after the first epoch that ends ``checkpoint_seconds`` (default 30 s) after the
previous one, and after the last epoch; 0 checkpoints after every epoch. Saving a ``.keras`` file takes
about 0.3 s on a CPU, so with the short epochs of small datasets per-epoch checkpoints would cost a
third of the training time; an interruption loses at most ``checkpoint_seconds`` of training.
"""

from __future__ import annotations

import csv
import io
import json
import math
import time
from collections.abc import Callable
from pathlib import Path

import keras
import numpy as np

from common.storage import replaced_atomically, write_atomic
from common.training import losses as _registered  # noqa: F401 - registers the custom losses, so saved networks load
from common.training.files import NetworkFiles
from common.training.inference import load_network


def save_model_atomic(model: keras.Model, path: Path) -> None:
    """``model.save`` into a temporary ``.keras`` file, fsync, then rename: never a truncated model file.

    As in :func:`common.storage.write_atomic`: any failure removes the temporary file and leaves ``path``
    as it was, and an ``OSError`` (a full disk) becomes a :class:`~common.storage.StorageError` naming it.
    """
    path = Path(path)
    with replaced_atomically(path, path.with_name(f".{path.stem}.partial.keras")) as tmp:
        model.save(tmp)


def read_log(path: Path) -> list[dict[str, str]]:
    if not path.is_file():
        return []
    with path.open(newline="") as handle:
        return list(csv.DictReader(handle))


def write_log(path: Path, rows: list[dict]) -> None:
    out = io.StringIO()
    if rows:
        fields = list(rows[0])
        writer = csv.DictWriter(out, fieldnames=fields, lineterminator="\n")
        writer.writeheader()
        writer.writerows(rows)
    write_atomic(path, out.getvalue())


CHECKPOINT_SECONDS = 30.0


class EpochRecorder(keras.callbacks.Callback):
    """After each epoch: the CSV log and one plain-text line; at checkpoints, the best model and the backup.

    ``model.keras`` holds the weights the training keeps: with ``keep="best"`` those of the epoch with the
    best ``monitor`` value (kept in memory between checkpoints), with ``keep="last"`` (the study's) those
    after the latest epoch. At a checkpoint ``model.keras`` is written first and the backup last, so a
    resumed training never skips an epoch whose effects were not saved.
    With ``patience > 0`` it also stops training once ``patience`` epochs have passed without a better
    ``monitor`` value (early stopping). The count is taken from the rows of the log, so it survives a
    resume, which Keras's own ``EarlyStopping`` (whose counter lives in memory) would not.
    """

    def __init__(
        self,
        files: NetworkFiles,
        monitor: str,
        rows: list[dict],
        best: float,
        label: str,
        epochs: int,
        log: Callable[[str], None],
        patience: int = 0,
        checkpoint_seconds: float = CHECKPOINT_SECONDS,
        keep: str = "best",
    ):
        super().__init__()
        self.checkpoint_seconds, self.keep = checkpoint_seconds, keep
        self._best_weights: list | None = None
        self._last_checkpoint = time.perf_counter()
        self.files, self.monitor, self.rows, self.best = files, monitor, rows, best
        self.label, self.epochs, self.log, self.patience = label, epochs, log, patience
        values = [float(row[monitor]) for row in rows if monitor in row]
        self.best_epoch = int(np.argmin(values)) + 1 if values else 0
        self.stopped_early = False
        self._started = time.perf_counter()

    def on_epoch_begin(self, epoch, logs=None):
        self._started = time.perf_counter()

    def on_epoch_end(self, epoch, logs=None):
        logs = {k: float(v) for k, v in (logs or {}).items()}
        value = logs.get(self.monitor, math.inf)
        improved = value < self.best
        if improved:
            self.best, self.best_epoch = value, epoch + 1
            if self.keep == "best":
                self._best_weights = self.model.get_weights()
        self.rows.append({"epoch": epoch + 1, **{k: f"{v:.6g}" for k, v in sorted(logs.items())}})
        write_log(self.files.log, self.rows)
        metrics = ", ".join(f"{k} {v:.4f}" for k, v in sorted(logs.items()) if k != "learning_rate")
        self.log(
            f"{self.label} epoch {epoch + 1}/{self.epochs}: {metrics} ({time.perf_counter() - self._started:.1f} s)"
            + (" *" if improved else "")
        )
        if self.patience and epoch + 1 - self.best_epoch >= self.patience and epoch + 1 < self.epochs:
            self.stopped_early = True
            self.model.stop_training = True
            self.log(
                f"{self.label}: early stop after epoch {epoch + 1}: no better {self.monitor} for "
                f"{self.patience} epochs (best at epoch {self.best_epoch})"
            )
        due = time.perf_counter() - self._last_checkpoint >= self.checkpoint_seconds
        if due or self.stopped_early or epoch + 1 >= self.epochs:
            self.checkpoint(epoch + 1)

    def checkpoint(self, epoch: int) -> None:
        """Write the kept model (the best, if it changed; or the last) and then the backup after ``epoch``."""
        if self.keep == "last":
            save_model_atomic(self.model, self.files.model)
        elif self._best_weights is not None:
            current = self.model.get_weights()
            self.model.set_weights(self._best_weights)
            try:
                save_model_atomic(self.model, self.files.model)
            finally:  # a failed save (full disk) must not leave the best weights in the training network
                self.model.set_weights(current)
            self._best_weights = None
        save_model_atomic(self.model, self.files.backup)
        write_atomic(self.files.backup_state, json.dumps({"epoch": epoch, "best": self.best}) + "\n")
        self._last_checkpoint = time.perf_counter()


def load_saved(path: Path, files: NetworkFiles, compile: bool) -> keras.Model:
    """A saved network (a resumed training's backup) in Keras's safe mode: a file that carries code refused as
    such, a truncated or corrupt one by name with how to train it anew (:meth:`NetworkFiles.unreadable`)."""
    return load_network(path, files.unreadable, compile=compile)


def read_backup(files: NetworkFiles) -> tuple[int, float, keras.Model] | None:
    """The checkpoint to resume from (what :meth:`EpochRecorder.checkpoint` wrote): the epochs done, the
    best monitored loss so far and the network with its optimiser state; None without one.

    An unreadable ``backup.json`` is refused like an unreadable network, naming how to train anew.
    """
    if not (files.backup_state.is_file() and files.backup.is_file()):
        return None
    try:
        state = json.loads(files.backup_state.read_text())
        epoch, best = int(state["epoch"]), float(state["best"])
    except (OSError, ValueError, TypeError, KeyError) as error:
        raise files.unreadable(files.backup_state, error) from error
    return epoch, best, load_saved(files.backup, files, compile=True)
