"""Training one expert's network: the seeded stream, Keras callbacks, and resuming, on any Keras backend.

The parts it puts together have modules of their own: the files a training leaves and resumes from
(:mod:`common.training.checkpoints`), the network it starts from (:mod:`common.training.networks`), its
dtype policy (:mod:`common.training.precision`) and its distribution over devices
(:mod:`common.training.distribution`).
"""

from __future__ import annotations

import contextlib
import math
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass
from pathlib import Path

import keras
import numpy as np

from common.spec import Settings
from common.strategies import expert_name, strategy
from common.training import backend
from common.training.augmentation import Augmentation
from common.training.checkpoints import CHECKPOINT_SECONDS, EpochRecorder, read_backup, read_log
from common.training.distribution import check_replicas, distribution_strategy, set_synchronized_batch_norm
from common.training.files import NetworkFiles
from common.training.networks import NETWORKS, build_model, compile_for
from common.training.precision import dtype_policy, precision_policy
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


def augmentation_of(settings: Settings) -> Augmentation | None:
    """The random transform's ranges, or None when augmentation is switched off."""
    if not settings.augment:
        return None
    return Augmentation(rotation=settings.rotation, shift=settings.shift, flip=settings.flip)


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


def output_channels(settings: Settings, targets: np.ndarray) -> int:
    """The network's output channels for ``targets`` ``(N, S, S, K)``: K, or as the strategy says."""
    return strategy(settings.strategy).output_channels(int(targets.shape[-1]))


def network_label(expert: int | str) -> str:
    return expert_name(expert) if isinstance(expert, int) else str(expert)


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
        first_epoch, best = 0, math.inf
        backup = read_backup(files)
        if backup is not None:
            first_epoch, best, model = backup
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
