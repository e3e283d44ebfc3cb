"""Training one expert's network: the seeded stream, Keras callbacks, and resuming, on any Keras backend.

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

import contextlib
import csv
import io
import json
import math
import time
from collections.abc import Callable, Iterator
from dataclasses import asdict, dataclass
from pathlib import Path

import keras
import numpy as np

from common.spec import DISTRIBUTE_CHOICES, ConfigError, Settings
from common.storage import replaced_atomically, write_atomic
from common.strategies import strategy
from common.training import backend
from common.training import losses as _registered  # noqa: F401 - registers the custom losses, so saved networks load
from common.training.augmentation import Augmentation
from common.training.files import NetworkFiles
from common.training.inference import load_network
from common.training.models import build_unet, unet_arguments
from common.training.stream import (
    FollowEpoch,
    augmented_validation_dataset,
    epoch_images,
    evaluation_data,
    fit_input,
    training_dataset,
    with_availability,
)


def seed_everything(seed: int, deterministic: bool = False, log: Callable[[str], None] = print) -> None:
    """The one place that seeds Python, numpy and the Keras backend.

    With ``deterministic``, the backend's deterministic kernels are switched on too
    (:func:`common.training.backend.enable_determinism`): the same seed then gives the same weights on
    the same machine and software, at some cost in speed (see the README).
    """
    keras.utils.set_random_seed(seed)
    if deterministic:
        notice = backend.enable_determinism()
        if notice:
            log(notice)


#: /proc/cpuinfo flags of CPUs that compute bfloat16 in hardware (AVX512-BF16; AMX on Sapphire Rapids and later).
BF16_CPU_FLAGS = frozenset({"avx512_bf16", "amx_bf16"})


def cpu_supports_bf16(cpuinfo: Path = Path("/proc/cpuinfo")) -> bool:
    """Whether the CPU has bfloat16 instructions, from the ``flags`` lines of ``cpuinfo``.

    False when the file cannot be read (not Linux): without the instructions TensorFlow emulates
    bfloat16 arithmetic in software, which is slower than float32, so assuming no is the safe side.
    """
    try:
        text = cpuinfo.read_text()
    except OSError:
        return False
    flags: set[str] = set()
    for line in text.splitlines():
        if line.startswith("flags"):
            flags.update(line.partition(":")[2].split())
    return bool(flags & BF16_CPU_FLAGS)


def gpu_visible() -> bool:
    return backend.gpu_visible()


def precision_policy(settings: Settings, log: Callable[[str], None] = print) -> str:
    """The Keras dtype policy that ``settings.mixed_precision`` asks for on this machine.

    - off: ``"float32"``;
    - on, with a GPU visible: ``"mixed_float16"``, the 16-bit type of every GPU with tensor cores
      (Keras then wraps the optimiser in a ``LossScaleOptimizer``, since float16 gradients underflow);
    - on, on a CPU with bfloat16 instructions (``avx512_bf16`` or ``amx_bf16``): ``"mixed_bfloat16"``
      (float32's exponent range, so no loss scaling);
    - on, on another CPU: ``"float32"`` after a one-line notice, because emulated bfloat16 would be
      slower than the float32 it replaces.

    Under a mixed policy the weights stay float32 and the layers compute in 16 bits; the sigmoid
    output (``build_unet``) and the losses (``common.training.losses``) stay float32.
    """
    if not settings.mixed_precision:
        return "float32"
    if gpu_visible():
        return "mixed_float16"
    if cpu_supports_bf16():
        return "mixed_bfloat16"
    log("mixed precision: this CPU has no bfloat16 instructions (avx512_bf16 or amx_bf16); training in float32")
    return "float32"


@contextlib.contextmanager
def dtype_policy(name: str) -> Iterator[None]:
    """Keras's global dtype policy set to ``name`` inside the block, and the previous one restored after.

    Global because Keras reads it when a layer is created (building) and when a saved model's
    optimiser is rebuilt (loading a mixed_float16 model outside the policy drops its loss-scale
    optimiser's state); restored so that one network's precision never leaks into the next.
    """
    previous = keras.config.dtype_policy()
    keras.config.set_dtype_policy(name)
    try:
        yield
    finally:
        keras.config.set_dtype_policy(previous)


def distribution_strategy(distribute: str):
    """``tf.distribute.MirroredStrategy`` over every local GPU, or without GPUs over the local CPU
    logical devices; None for ``"none"`` or when there is only one device (the same as none).

    The CPU logical devices are one unless the process split its CPU with
    ``tf.config.set_logical_device_configuration`` before TensorFlow started (as the tests do).
    TensorFlow's alone: on another backend ``"mirrored"`` is refused (:func:`common.training.backend.check_options`).
    """
    if distribute not in DISTRIBUTE_CHOICES:
        raise ConfigError(f"--distribute must be one of {', '.join(DISTRIBUTE_CHOICES)}, got {distribute!r}")
    if distribute == "none":
        return None
    backend.check_options(distribute=distribute)
    import tensorflow as tf

    devices = tf.config.list_logical_devices("GPU") or tf.config.list_logical_devices("CPU")
    if len(devices) < 2:
        return None
    return tf.distribute.MirroredStrategy([device.name for device in devices])


def check_replicas(replicas: int, batch_size: int, train_count: int) -> None:
    """Refuse a batch size or a training set that cannot give every replica a share of every batch.

    Keras reads the first batch of each replica when it starts fitting and needs them equal, and a
    replica with an empty share fails; so the batch size must be a multiple of the replicas (each
    takes ``batch_size / replicas`` images), and there must be at least as many images as replicas.
    """
    if replicas < 2:
        return
    if batch_size % replicas:
        raise ConfigError(
            f"--distribute mirrored over {replicas} replicas: --batch-size {batch_size} is not a multiple of "
            f"{replicas} (the batch is split evenly across the replicas); use e.g. --batch-size {replicas}"
        )
    if train_count < replicas:
        raise ConfigError(
            f"--distribute mirrored over {replicas} replicas: only {train_count} training images; "
            "each replica needs at least one"
        )


def set_synchronized_batch_norm(model: keras.Model, synchronized: bool) -> None:
    """Batch statistics over the global batch (all replicas) or each replica's share.

    Synchronised when distributed, so that a mirrored training normalises with the statistics of the
    same ``batch_size`` images as an undistributed one (the replicas' losses then match it to float
    rounding); set on a loaded backup too, whose flag is that of the training that saved it.
    """
    for layer in model.layers:
        if isinstance(layer, keras.layers.BatchNormalization):
            layer.synchronized = synchronized


def build_model(settings: Settings, channels: int, outputs: int = 1) -> keras.Model:
    """The study's U-Net for ``settings`` (input ``input_size x input_size x channels``, ``outputs`` maps with
    the strategy's activation), or the strategy's own network (:meth:`common.strategies.Strategy.build`)."""
    own = strategy(settings.strategy).build(settings, channels, outputs)
    if own is not None:
        return own
    return build_unet(
        (settings.input_size, settings.input_size, channels),
        activation=strategy(settings.strategy).activation,
        outputs=outputs,
        **unet_arguments(settings),
    )


class NetworkPool:
    """One built, compiled and traced network, handed from one training to the next.

    Building a network takes a second; tracing its training and validation steps into
    TensorFlow graphs (and optimising them) takes 15 to 45 s on a 2-core CPU, for every new network,
    often as long as a demo network's whole training. The networks of a task's experts (and of its
    cross-validation folds) differ only in their weights and data: same architecture, loss and
    optimiser. So the pool keeps the last network and, for the next training with the same settings,
    gives it the exact state a freshly built one would have: a fresh network is built under the same
    seed and its variables (weights, batch-norm statistics, dropout seed states) are copied in, and
    the optimiser state is put back to the one recorded right after it was built (Adam: step 0,
    moments 0, the learning rate). Keras then reuses the traced steps, and the process holds one
    network instead of one per expert. Anything else (other settings, input channels, outputs or
    dtype policy) replaces the pooled network.

    Not used for a distributed training (its variables belong to the strategy), a resumed one (the
    backup brings its own network and optimiser state), or under ``mixed_float16`` (GPU mixed
    precision), whose loss-scale optimiser builds its state differently when built ahead of training
    and would then not match the backups it saves. ``enabled = False`` builds every
    network anew, as before (the benchmark's study-style baseline does).
    """

    def __init__(self, enabled: bool = True):
        self.enabled = enabled
        self.model: keras.Model | None = None
        self.key: tuple | None = None
        self._optimizer_state: list[np.ndarray] = []
        self.reused = 0  # how many networks were served by resetting the pooled one

    @staticmethod
    def key_of(settings: Settings, channels: int, outputs: int, policy: str) -> tuple:
        return (json.dumps(settings.to_dict(), sort_keys=True, default=str), channels, outputs, policy)

    def network(self, settings: Settings, channels: int, outputs: int, policy: str) -> keras.Model:
        """A compiled network as a fresh ``build_model`` + ``compile_for`` leaves it (call under the seed, policy)."""
        key = self.key_of(settings, channels, outputs, policy)
        if self.enabled and key != self.key:
            self.release()
        fresh = build_model(settings, channels=channels, outputs=outputs)
        if self.enabled and self.model is not None:
            for target, source in zip(self.model.variables, fresh.variables, strict=True):
                if tuple(target.shape) != tuple(source.shape):  # pragma: no cover - same settings, same layers
                    raise RuntimeError(f"pooled network mismatch: {target.path} {target.shape} vs {source.shape}")
                target.assign(source)
            for variable, value in zip(self.model.optimizer.variables, self._optimizer_state, strict=True):
                variable.assign(value)
            self.reused += 1
            return self.model
        compile_for(fresh, settings)
        if self.enabled and not isinstance(fresh.optimizer, keras.optimizers.LossScaleOptimizer):
            fresh.optimizer.build(fresh.trainable_variables)
            self._optimizer_state = [keras.ops.convert_to_numpy(variable) for variable in fresh.optimizer.variables]
            self.model, self.key = fresh, key
        return fresh

    def holds(self, settings: Settings, channels: int, outputs: int) -> bool:
        """Whether the pooled network was built for these settings (and their dtype policy)."""
        if not self.enabled or self.model is None:
            return False
        return self.key == self.key_of(settings, channels, outputs, precision_policy(settings, log=lambda _: None))

    def release(self) -> None:
        """Drop the pooled network and Keras's global state (but not the dtype policy in force)."""
        if self.model is not None:
            self.model, self.key, self._optimizer_state = None, None, []
            policy = keras.config.dtype_policy()  # clear_session() resets it to float32
            keras.backend.clear_session()
            keras.config.set_dtype_policy(policy)


#: The process's pool (see :class:`NetworkPool`); ``NETWORKS.enabled = False`` switches reuse off.
NETWORKS = NetworkPool()


def augmentation_of(settings: Settings) -> Augmentation | None:
    """The random transform's ranges, or None when augmentation is switched off."""
    if not settings.augment:
        return None
    return Augmentation(rotation=settings.rotation, shift=settings.shift, flip=settings.flip)


def save_model_atomic(model: keras.Model, path: Path) -> None:
    """``model.save`` into a temporary ``.keras`` file, fsync, then rename: never a truncated model file.

    As in :func:`common.reporting.write_atomic`: any failure removes the temporary file and leaves ``path``
    as it was, and an ``OSError`` (a full disk) becomes a :class:`~common.reporting.StorageError` naming it.
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
    kept_epoch: int = 0  # the epoch whose weights model.keras holds (the best, or the last); 0: before it was recorded
    keep: str = "best"

    def to_dict(self) -> dict:
        return {**asdict(self), "model_path": str(self.model_path)}


def compile_for(model: keras.Model, settings: Settings) -> None:
    """Adam with the strategy's loss and metrics (:meth:`common.strategies.Strategy.loss`)."""
    loss, metrics = strategy(settings.strategy).loss(settings.loss, settings.dice_smooth)
    # A weighted metric gets the sample weights, as the loss does: only the padded validation batches of a
    # mirrored training have any (evaluation_data), and without them it is the plain mean, same name.
    model.compile(
        optimizer=keras.optimizers.Adam(learning_rate=settings.learning_rate), loss=loss, weighted_metrics=metrics
    )


def output_channels(settings: Settings, targets: np.ndarray) -> int:
    """The network's output channels for ``targets`` ``(N, S, S, K)``: K, or as the strategy says."""
    return strategy(settings.strategy).output_channels(int(targets.shape[-1]))


def network_label(expert: int | str) -> str:
    return f"seg{expert:02d}" if isinstance(expert, int) else str(expert)


def validation_stream(
    validation: tuple[np.ndarray, np.ndarray] | None,
    available: np.ndarray | None,
    settings: Settings,
    seed: int,
    augmentation: Augmentation | None,
    first_epoch: int,
    binary: bool,
    replicas: int,
) -> tuple:
    """``model.fit``'s validation data and the callbacks it needs: none, the plain validation images, or
    (the study's way, ``--augment-validation on``) the validation images augmented anew each epoch."""
    if validation is None:
        return None, []
    if settings.augment_validation and augmentation is not None:
        data = augmented_validation_dataset(
            *validation,
            settings.batch_size,
            seed,
            augmentation,
            epochs=settings.epochs,
            first_epoch=first_epoch,
            available=available,
            binary=binary,
            replicas=replicas,
        )
        return data, [FollowEpoch(data)]
    return evaluation_data(validation[0], with_availability(validation[1], available), replicas), []


@dataclass(frozen=True)
class Trainer:
    """What trains one network, with its replaceable parts injected rather than patched.

    ``stream`` makes the training batches (default :func:`training_dataset`, the seeded per-epoch
    stream; it takes that function's arguments); ``reuse_networks`` lets the process's
    :data:`NETWORKS` pool hand the network on (off: each network built and traced anew, as the study
    did). The benchmark's study-style baseline is ``Trainer(stream=<a Python generator>,
    reuse_networks=False)``, passed to :func:`common.runs.pipeline.run_plan` as ``train=trainer.train``.
    """

    stream: Callable | None = None
    reuse_networks: bool = True

    def train(
        self,
        expert: int | str,
        train: tuple[np.ndarray, np.ndarray],
        validation: tuple[np.ndarray, np.ndarray] | None,
        settings: Settings,
        files: NetworkFiles,
        seed: int,
        verbose: int = 2,
        log: Callable[[str], None] = print,
        tensorboard_dir: Path | None = None,
        checkpoint_seconds: float = CHECKPOINT_SECONDS,
        available: tuple[np.ndarray, np.ndarray | None] | None = None,
        distribute: str = "none",
    ) -> TrainedExpert:
        """Train one network on one expert's masks; keep the weights with the best validation loss.

        If ``files`` hold a backup of an interrupted training, it continues from the backup's epoch
        with the saved weights, optimiser state and learning rate.

        With ``settings.mixed_precision`` the network is built (or its backup loaded) and trained under
        :func:`precision_policy`'s dtype policy, which is restored afterwards. With ``distribute``
        ``"mirrored"`` it is built and trained under :func:`distribution_strategy` (one replica per local
        GPU or CPU logical device): ``settings.batch_size`` is the global batch, split evenly across the
        replicas (:func:`check_replicas`), with batch normalisation over the whole batch.

        Args:
            expert: the expert's number, or a name for a network that learns from all experts (for names only).
            train: images ``(N, S, S, C)`` and targets ``(N, S, S, K)`` on the network's grid: one expert's
                masks (K = 1), the mean expert mask (soft-label), or one mask per head (multi-head; a
                missing mask is all 0 and flagged in ``available``), or what the strategy makes. The network
                gets the strategy's outputs for K (:meth:`common.strategies.Strategy.output_channels`).
            validation: the same for the validation cases, or None to monitor the training loss.
            settings: network, optimiser and augmentation.
            files: where the kept model, the per-epoch log and the backup go (:class:`NetworkFiles`).
            seed: seeds initialisation, shuffling and augmentation.
            verbose: Keras's own progress (0 silent, 2 one line per epoch).
            log: receives one plain-text line per epoch.
            tensorboard_dir: if given, TensorBoard logs go there.
            checkpoint_seconds: least time between two checkpoints (model and backup); 0: every epoch.
            available: multi-head only: which experts annotated each training and validation image,
                ``(N, K)`` 0/1 arrays.
            distribute: ``"none"`` or ``"mirrored"``: a runtime choice, not a setting. When the training
                images are a multiple of the replicas it changes the losses by float rounding only (see
                :func:`set_synchronized_batch_norm`); otherwise each epoch leaves out the remainder
                (:func:`training_dataset`).

        Raises:
            ConfigError: for ``"mirrored"`` with a batch size that is not a multiple of the replicas.
        """
        files.folder.mkdir(parents=True, exist_ok=True)
        label = network_label(expert)
        strategy = distribution_strategy(distribute)
        replicas = strategy.num_replicas_in_sync if strategy is not None else 1
        if distribute != "none":
            log(
                f"{label}: --distribute {distribute}: {replicas} replica(s)"
                + (f", {settings.batch_size // replicas} image(s) of each batch per replica" if replicas > 1 else "")
                + (" (one device: the same as --distribute none)" if replicas == 1 else "")
            )
        check_replicas(replicas, settings.batch_size, len(train[0]))
        policy = precision_policy(settings, log)
        if policy != "float32":
            log(f"{label}: mixed precision: Keras dtype policy {policy}")
        with dtype_policy(policy):
            with strategy.scope() if strategy is not None else contextlib.nullcontext():
                result = self._fit(
                    expert,
                    train,
                    validation,
                    settings,
                    files,
                    seed,
                    verbose,
                    log,
                    tensorboard_dir,
                    checkpoint_seconds,
                    available,
                    replicas,
                )
            if not NETWORKS.holds(settings, train[0].shape[-1], output_channels(settings, train[1])):
                keras.backend.clear_session()  # outside the strategy's scope: it resets the graph the scope is on
        return result

    def _fit(
        self,
        expert: int | str,
        train: tuple[np.ndarray, np.ndarray],
        validation: tuple[np.ndarray, np.ndarray] | None,
        settings: Settings,
        files: NetworkFiles,
        seed: int,
        verbose: int,
        log: Callable[[str], None],
        tensorboard_dir: Path | None,
        checkpoint_seconds: float,
        available: tuple[np.ndarray, np.ndarray | None] | None,
        replicas: int,
    ) -> TrainedExpert:
        """:func:`train_expert` once its dtype policy and distribution strategy are in place."""
        label = network_label(expert)
        seed_everything(seed)
        train_available, validation_available = available if available is not None else (None, None)
        binary = strategy(settings.strategy).binary_targets
        monitor = "val_loss" if validation is not None else "loss"
        state_path, backup_path = files.backup_state, files.backup
        first_epoch, best = 0, math.inf
        if state_path.is_file() and backup_path.is_file():
            state = json.loads(state_path.read_text())
            first_epoch, best = int(state["epoch"]), float(state["best"])
            model = load_saved(backup_path, files, compile=True)
            log(f"{label}: resuming from the backup after epoch {first_epoch} (best {monitor} {best:.4f})")
        elif replicas == 1 and self.reuse_networks:
            outputs = output_channels(settings, train[1])
            model = NETWORKS.network(settings, train[0].shape[-1], outputs, keras.config.dtype_policy().name)
        else:
            model = build_model(settings, channels=train[0].shape[-1], outputs=output_channels(settings, train[1]))
            compile_for(model, settings)
        set_synchronized_batch_norm(model, replicas > 1)
        parameters = model.count_params()
        rows = read_log(files.log)[:first_epoch]  # rows past the backup are redone
        recorder = EpochRecorder(
            files,
            monitor,
            rows,
            best,
            label,
            settings.epochs,
            log,
            patience=settings.patience,
            checkpoint_seconds=checkpoint_seconds,
            keep=settings.keep,
        )
        # An interrupted training that had already stopped early has nothing left to do.
        already_stopped = bool(
            settings.patience and first_epoch and first_epoch - recorder.best_epoch >= settings.patience
        )
        callbacks: list[keras.callbacks.Callback] = [recorder]
        if tensorboard_dir is not None:
            callbacks.append(keras.callbacks.TensorBoard(log_dir=str(tensorboard_dir)))
        start = time.perf_counter()
        if first_epoch < settings.epochs and not already_stopped:
            augmentation = augmentation_of(settings)
            stream = (self.stream or training_dataset)(
                *train,
                settings.batch_size,
                seed,
                augmentation,
                epochs=settings.epochs,
                first_epoch=first_epoch,
                available=train_available,
                binary=binary,
                replicas=replicas,
            )
            validation_data, followers = validation_stream(
                validation, validation_available, settings, seed, augmentation, first_epoch, binary, replicas
            )
            model.fit(
                fit_input(stream),
                steps_per_epoch=math.ceil(epoch_images(len(train[0]), replicas) / settings.batch_size),
                epochs=settings.epochs,
                initial_epoch=first_epoch,
                validation_data=fit_input(validation_data),
                validation_batch_size=settings.batch_size,
                callbacks=followers + callbacks,
                shuffle=False,  # the stream is shuffled by itself, from the seed
                verbose=verbose,
            )
        seconds = time.perf_counter() - start
        losses = [float(row[monitor]) for row in recorder.rows]
        best_index = int(np.argmin(losses))
        kept = best_index + 1 if settings.keep == "best" else len(losses)
        return TrainedExpert(
            expert,
            files.model,
            best_index + 1,
            losses[best_index],
            monitor,
            len(losses),
            seconds,
            first_epoch,
            parameters,
            recorder.stopped_early or (settings.patience > 0 and len(losses) < settings.epochs),
            kept,
            settings.keep,
        )


#: Train one network with the default parts (the seeded stream, the pooled network):
#: :meth:`Trainer.train` of ``Trainer()``.
train_expert = Trainer().train


def load_saved(path: Path, files: NetworkFiles, compile: bool) -> keras.Model:
    """A saved network (a resumed training's backup) in Keras's safe mode: a file that carries code refused as
    such, a truncated or corrupt one by name with how to train it anew (:meth:`NetworkFiles.unreadable`)."""
    return load_network(path, files.unreadable, compile=compile)
