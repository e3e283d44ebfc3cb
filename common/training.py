"""Training one expert's network: the tf.data pipeline, Keras callbacks, best weights by validation loss."""

from __future__ import annotations

import math
import time
from dataclasses import dataclass
from pathlib import Path

import keras
import numpy as np
import tensorflow as tf

from common.augmentation import Augmentation, random_transform
from common.losses import SoftDiceLoss, dice_coefficient
from common.models import build_unet
from common.spec import Settings

MODEL_FILE = "model.keras"
LOG_FILE = "training_log.csv"


def seed_everything(seed: int) -> None:
    """The one place that seeds Python, numpy and TensorFlow (and so Keras)."""
    keras.utils.set_random_seed(seed)


def build_model(settings: Settings, channels: int) -> keras.Model:
    """The study's U-Net for ``settings`` (input ``input_size x input_size x channels``)."""
    return build_unet(
        (settings.input_size, settings.input_size, channels),
        depth=settings.depth,
        base_filters=settings.base_filters,
        dropout=settings.dropout,
        dropout_rate=settings.dropout_rate,
        batch_norm=settings.batch_norm,
        convlstm=settings.convlstm,
    )


def augmentation_of(settings: Settings) -> Augmentation:
    return Augmentation(rotation=settings.rotation, shift=settings.shift, flip=settings.flip)


def training_dataset(images: np.ndarray, masks: np.ndarray, batch_size: int, seed: int,
                     augmentation: Augmentation | None) -> tf.data.Dataset:
    """An endless, shuffled, augmented stream of ``(image, mask)`` batches.

    The stream repeats so that each epoch reshuffles and every sample of every epoch gets its own
    augmentation seed ``(seed, sample index)``: the stream is a function of ``seed``.
    """
    dataset = tf.data.Dataset.from_tensor_slices((images, masks))
    dataset = dataset.shuffle(len(images), seed=seed, reshuffle_each_iteration=True).repeat()
    if augmentation is not None and not augmentation.is_identity:
        dataset = dataset.enumerate().map(
            lambda index, sample: random_transform(
                sample[0], sample[1], tf.stack([tf.constant(seed, tf.int64), index]), augmentation
            ),
            num_parallel_calls=tf.data.AUTOTUNE,
            deterministic=True,
        )
    return dataset.batch(batch_size).prefetch(tf.data.AUTOTUNE)


def evaluation_dataset(images: np.ndarray, masks: np.ndarray, batch_size: int) -> tf.data.Dataset:
    return tf.data.Dataset.from_tensor_slices((images, masks)).batch(batch_size).prefetch(tf.data.AUTOTUNE)


@dataclass
class TrainedExpert:
    """What training one expert's network left behind."""

    expert: int
    model_path: Path
    best_epoch: int
    best_loss: float
    monitor: str
    epochs: int
    seconds: float


def train_expert(expert: int, train: tuple[np.ndarray, np.ndarray], validation: tuple[np.ndarray, np.ndarray] | None,
                 settings: Settings, out_dir: Path, seed: int, verbose: int = 2) -> TrainedExpert:
    """Train one network on one expert's masks; keep the weights with the best validation loss.

    Args:
        expert: the expert's number (for names only).
        train: images ``(N, S, S, C)`` and masks ``(N, S, S, 1)`` on the network's grid.
        validation: the same for the validation cases, or None to monitor the training loss.
        settings: network, optimiser and augmentation.
        out_dir: receives ``model.keras`` (the best epoch) and ``training_log.csv``.
        seed: seeds initialisation, shuffling and augmentation.
    """
    out_dir.mkdir(parents=True, exist_ok=True)
    seed_everything(seed)
    model = build_model(settings, channels=train[0].shape[-1])
    model.compile(
        optimizer=keras.optimizers.Adam(learning_rate=settings.learning_rate),
        loss=SoftDiceLoss(),
        metrics=[dice_coefficient],
    )
    monitor = "val_loss" if validation is not None else "loss"
    model_path = out_dir / MODEL_FILE
    callbacks = [
        keras.callbacks.ModelCheckpoint(model_path, monitor=monitor, save_best_only=True, mode="min"),
        keras.callbacks.CSVLogger(out_dir / LOG_FILE),
    ]
    stream = training_dataset(*train, settings.batch_size, seed, augmentation_of(settings))
    start = time.perf_counter()
    history = model.fit(
        stream,
        steps_per_epoch=math.ceil(len(train[0]) / settings.batch_size),
        epochs=settings.epochs,
        validation_data=evaluation_dataset(*validation, settings.batch_size) if validation is not None else None,
        callbacks=callbacks,
        shuffle=False,  # the stream is shuffled by tf.data, from the seed
        verbose=verbose,
    )
    seconds = time.perf_counter() - start
    losses = history.history[monitor]
    best = int(np.argmin(losses))
    return TrainedExpert(expert, model_path, best + 1, float(losses[best]), monitor, len(losses), seconds)


def predict(model_path: Path, images: np.ndarray, batch_size: int) -> np.ndarray:
    """Sigmoid maps ``(N, S, S)`` of a saved model for images on the network's grid."""
    model = keras.saving.load_model(model_path)
    maps = model.predict(images, batch_size=batch_size, verbose=0)
    keras.backend.clear_session()
    return maps[..., 0]
