"""Training one expert's network: the seeded tf.data stream, Keras callbacks, and resuming.

What training leaves in the expert's folder, each file written atomically (temporary file, then rename):

- ``training_log.csv``: one row per finished epoch;
- ``model.keras``: the network at its best validation loss so far, as of the last checkpoint;
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
import os
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass
from pathlib import Path

import keras
import numpy as np
import tensorflow as tf

from common.augmentation import Augmentation, random_transform
from common.losses import MultiHeadLoss, SoftLabelBCELoss, dice_coefficient, make_loss, multi_head_dice
from common.models import build_unet
from common.reporting import write_atomic
from common.spec import Settings

MODEL_FILE = "model.keras"
LOG_FILE = "training_log.csv"
BACKUP_FILE = "backup.keras"
BACKUP_STATE = "backup.json"


def seed_everything(seed: int, deterministic: bool = False) -> None:
    """The one place that seeds Python, numpy and TensorFlow (and so Keras).

    With ``deterministic``, TensorFlow's op determinism is switched on too: the same seed then gives
    the same weights on the same machine and software, at some cost in speed (see the README).
    """
    keras.utils.set_random_seed(seed)
    if deterministic:
        tf.config.experimental.enable_op_determinism()


def build_model(settings: Settings, channels: int, outputs: int = 1) -> keras.Model:
    """The study's U-Net for ``settings`` (input ``input_size x input_size x channels``, ``outputs`` sigmoid maps)."""
    return build_unet(
        (settings.input_size, settings.input_size, channels),
        outputs=outputs,
        depth=settings.depth,
        base_filters=settings.base_filters,
        dropout=settings.dropout,
        dropout_rate=settings.dropout_rate,
        batch_norm=settings.batch_norm,
        convlstm=settings.convlstm,
    )


def augmentation_of(settings: Settings) -> Augmentation | None:
    """The random transform's ranges, or None when augmentation is switched off."""
    if not settings.augment:
        return None
    return Augmentation(rotation=settings.rotation, shift=settings.shift, flip=settings.flip)


def training_dataset(
    images: np.ndarray,
    masks: np.ndarray,
    batch_size: int,
    seed: int,
    augmentation: Augmentation | None,
    epochs: int,
    first_epoch: int = 0,
    available: np.ndarray | None = None,
    binary: bool = True,
) -> tf.data.Dataset:
    """The batches of epochs ``first_epoch .. epochs - 1``, shuffled and augmented.

    Epoch ``e`` visits the samples in an order drawn from ``(seed, e)`` and augments its ``i``-th sample
    with the seed ``(seed, e * N + i)``: the stream is a function of the seed and the epoch alone, so a
    resumed training sees exactly the batches an uninterrupted one would have seen. Each epoch has
    ``ceil(N / batch_size)`` batches (the last may be smaller).

    ``masks`` may hold several channels (one per head of a multi-head network); ``available``
    ``(N, heads)`` then says which experts annotated each image, and is appended to the targets as
    constant channels after augmentation (see ``MultiHeadLoss``). Soft targets (``binary=False``)
    are warped without re-binarising.
    """
    count = len(images)
    images_t, masks_t = tf.constant(images), tf.constant(masks)
    available_t = None if available is None else tf.constant(available, tf.float32)
    augment = augmentation is not None and not augmentation.is_identity

    def sample(index, position):
        image, mask = tf.gather(images_t, index), tf.gather(masks_t, index)
        if augment:
            image, mask = random_transform(
                image, mask, tf.stack([tf.constant(seed, tf.int64), position]), augmentation, binary
            )
        if available_t is not None:
            flags = tf.cast(tf.gather(available_t, index), mask.dtype)
            mask = tf.concat([mask, tf.broadcast_to(flags, tf.shape(mask))], axis=-1)
        return image, mask

    def one_epoch(epoch):
        order = tf.random.experimental.stateless_shuffle(
            tf.range(count, dtype=tf.int64), seed=tf.stack([tf.constant(seed, tf.int64), epoch])
        )
        positions = epoch * count + tf.range(count, dtype=tf.int64)
        return (
            tf.data.Dataset.from_tensor_slices((order, positions))
            .map(sample, num_parallel_calls=tf.data.AUTOTUNE, deterministic=True)
            .batch(batch_size)
        )

    return tf.data.Dataset.range(first_epoch, epochs).flat_map(one_epoch).prefetch(tf.data.AUTOTUNE)


def with_availability(masks: np.ndarray, available: np.ndarray | None) -> np.ndarray:
    """Multi-head targets: the masks ``(N, S, S, E)`` followed by ``available (N, E)`` as constant channels."""
    if available is None:
        return masks
    flags = np.broadcast_to(available[:, np.newaxis, np.newaxis, :], masks.shape).astype(masks.dtype)
    return np.concatenate([masks, flags], axis=-1)


def evaluation_dataset(images: np.ndarray, masks: np.ndarray, batch_size: int) -> tf.data.Dataset:
    return tf.data.Dataset.from_tensor_slices((images, masks)).batch(batch_size).prefetch(tf.data.AUTOTUNE)


def save_model_atomic(model: keras.Model, path: Path) -> None:
    """``model.save`` into a temporary ``.keras`` file, then rename: never a truncated model file."""
    tmp = path.with_name(f".{path.stem}.partial.keras")
    model.save(tmp)
    os.replace(tmp, path)


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

    The best weights are kept in memory between checkpoints. At a checkpoint ``model.keras`` is written
    first and the backup last, so a resumed training never skips an epoch whose effects were not saved.
    With ``patience > 0`` it also stops training once ``patience`` epochs have passed without a better
    ``monitor`` value (early stopping). The count is taken from the rows of the log, so it survives a
    resume, which Keras's own ``EarlyStopping`` (whose counter lives in memory) would not.
    """

    def __init__(
        self,
        out_dir: Path,
        monitor: str,
        rows: list[dict],
        best: float,
        label: str,
        epochs: int,
        log: Callable[[str], None],
        patience: int = 0,
        checkpoint_seconds: float = CHECKPOINT_SECONDS,
    ):
        super().__init__()
        self.checkpoint_seconds = checkpoint_seconds
        self._best_weights: list | None = None
        self._last_checkpoint = time.perf_counter()
        self.out_dir, self.monitor, self.rows, self.best = out_dir, monitor, rows, best
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
            self._best_weights = self.model.get_weights()
        self.rows.append({"epoch": epoch + 1, **{k: f"{v:.6g}" for k, v in sorted(logs.items())}})
        write_log(self.out_dir / LOG_FILE, self.rows)
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
        """Write the best model (if it changed) and then the backup after ``epoch``."""
        if self._best_weights is not None:
            current = self.model.get_weights()
            self.model.set_weights(self._best_weights)
            save_model_atomic(self.model, self.out_dir / MODEL_FILE)
            self.model.set_weights(current)
            self._best_weights = None
        save_model_atomic(self.model, self.out_dir / BACKUP_FILE)
        write_atomic(self.out_dir / BACKUP_STATE, json.dumps({"epoch": epoch, "best": self.best}) + "\n")
        self._last_checkpoint = time.perf_counter()


@dataclass
class TrainedExpert:
    """What training one expert's network left behind (saved as ``result.json`` when complete)."""

    expert: int
    model_path: Path
    best_epoch: int
    best_loss: float
    monitor: str
    epochs: int
    seconds: float
    resumed_from_epoch: int = 0
    parameters: int = 0
    stopped_early: bool = False

    def to_dict(self) -> dict:
        return {**asdict(self), "model_path": str(self.model_path)}


def compile_for(model: keras.Model, settings: Settings) -> None:
    """Adam with the strategy's loss: ``--loss`` per network or per head; BCE on the mean mask for soft-label."""
    if settings.strategy == "multi-head":
        loss, metrics = MultiHeadLoss(settings.loss), [multi_head_dice]
    elif settings.strategy == "soft-label":
        loss, metrics = SoftLabelBCELoss(), [dice_coefficient]
    else:
        loss, metrics = make_loss(settings.loss), [dice_coefficient]
    model.compile(optimizer=keras.optimizers.Adam(learning_rate=settings.learning_rate), loss=loss, metrics=metrics)


def network_label(expert: int | str) -> str:
    return f"seg{expert:02d}" if isinstance(expert, int) else str(expert)


def train_expert(
    expert: int | str,
    train: tuple[np.ndarray, np.ndarray],
    validation: tuple[np.ndarray, np.ndarray] | None,
    settings: Settings,
    out_dir: Path,
    seed: int,
    verbose: int = 2,
    log: Callable[[str], None] = print,
    tensorboard_dir: Path | None = None,
    checkpoint_seconds: float = CHECKPOINT_SECONDS,
    available: tuple[np.ndarray, np.ndarray | None] | None = None,
) -> TrainedExpert:
    """Train one network on one expert's masks; keep the weights with the best validation loss.

    If ``out_dir`` holds a backup of an interrupted training, it continues from the backup's epoch
    with the saved weights, optimiser state and learning rate.

    Args:
        expert: the expert's number, or a name for a network that learns from all experts (for names only).
        train: images ``(N, S, S, C)`` and targets ``(N, S, S, K)`` on the network's grid: one expert's
            masks (K = 1), the mean expert mask (soft-label), or one mask per head (multi-head; a
            missing mask is all 0 and flagged in ``available``). The network gets K outputs.
        validation: the same for the validation cases, or None to monitor the training loss.
        settings: network, optimiser and augmentation.
        out_dir: receives ``model.keras``, ``training_log.csv`` and the backup.
        seed: seeds initialisation, shuffling and augmentation.
        verbose: Keras's own progress (0 silent, 2 one line per epoch).
        log: receives one plain-text line per epoch.
        tensorboard_dir: if given, TensorBoard logs go there.
        checkpoint_seconds: least time between two checkpoints (model and backup); 0: every epoch.
        available: multi-head only: which experts annotated each training and validation image,
            ``(N, K)`` 0/1 arrays.
    """
    out_dir.mkdir(parents=True, exist_ok=True)
    seed_everything(seed)
    label = network_label(expert)
    train_available, validation_available = available if available is not None else (None, None)
    soft = settings.strategy == "soft-label"
    monitor = "val_loss" if validation is not None else "loss"
    state_path, backup_path = out_dir / BACKUP_STATE, out_dir / BACKUP_FILE
    first_epoch, best = 0, math.inf
    if state_path.is_file() and backup_path.is_file():
        state = json.loads(state_path.read_text())
        first_epoch, best = int(state["epoch"]), float(state["best"])
        model = keras.saving.load_model(backup_path)
        log(f"{label}: resuming from the backup after epoch {first_epoch} (best {monitor} {best:.4f})")
    else:
        model = build_model(settings, channels=train[0].shape[-1], outputs=train[1].shape[-1])
        compile_for(model, settings)
    parameters = model.count_params()
    rows = read_log(out_dir / LOG_FILE)[:first_epoch]  # rows past the backup are redone
    recorder = EpochRecorder(
        out_dir,
        monitor,
        rows,
        best,
        label,
        settings.epochs,
        log,
        patience=settings.patience,
        checkpoint_seconds=checkpoint_seconds,
    )
    # An interrupted training that had already stopped early has nothing left to do.
    already_stopped = bool(settings.patience and first_epoch and first_epoch - recorder.best_epoch >= settings.patience)
    callbacks: list[keras.callbacks.Callback] = [recorder]
    if tensorboard_dir is not None:
        callbacks.append(keras.callbacks.TensorBoard(log_dir=str(tensorboard_dir)))
    start = time.perf_counter()
    if first_epoch < settings.epochs and not already_stopped:
        stream = training_dataset(
            *train,
            settings.batch_size,
            seed,
            augmentation_of(settings),
            epochs=settings.epochs,
            first_epoch=first_epoch,
            available=train_available,
            binary=not soft,
        )
        model.fit(
            stream,
            steps_per_epoch=math.ceil(len(train[0]) / settings.batch_size),
            epochs=settings.epochs,
            initial_epoch=first_epoch,
            validation_data=(
                evaluation_dataset(
                    validation[0], with_availability(validation[1], validation_available), settings.batch_size
                )
                if validation is not None
                else None
            ),
            callbacks=callbacks,
            shuffle=False,  # the stream is shuffled by tf.data, from the seed
            verbose=verbose,
        )
    seconds = time.perf_counter() - start
    losses = [float(row[monitor]) for row in recorder.rows]
    best_index = int(np.argmin(losses))
    keras.backend.clear_session()
    return TrainedExpert(
        expert,
        out_dir / MODEL_FILE,
        best_index + 1,
        losses[best_index],
        monitor,
        len(losses),
        seconds,
        first_epoch,
        parameters,
        recorder.stopped_early or (settings.patience > 0 and len(losses) < settings.epochs),
    )


def finish_expert(out_dir: Path, result: TrainedExpert, result_file: str) -> None:
    """Mark an expert complete (``result.json``) and drop its resume backup."""
    write_atomic(out_dir / result_file, json.dumps(result.to_dict(), indent=2) + "\n")
    for name in (BACKUP_FILE, BACKUP_STATE):
        (out_dir / name).unlink(missing_ok=True)


def predict(model_path: Path, images: np.ndarray, batch_size: int) -> np.ndarray:
    """Sigmoid maps ``(N, S, S, K)`` of a saved model (K outputs) for images on the network's grid."""
    model = keras.saving.load_model(model_path)
    maps = model.predict(images, batch_size=batch_size, verbose=0)
    keras.backend.clear_session()
    return maps
