"""``--distribute``: TensorFlow's ``MirroredStrategy`` over the local devices, the check that every replica gets a
share of every batch, and batch normalisation over the replicas' whole batch."""

from __future__ import annotations

import keras

from common.choices import DISTRIBUTE_CHOICES
from common.errors import ConfigError
from common.training import backend


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
