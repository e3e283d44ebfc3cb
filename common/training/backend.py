"""The Keras backend a process trains on: TensorFlow (the default), JAX or PyTorch.

Keras 3 picks its backend once, when it is first imported, from ``KERAS_BACKEND`` (or
``~/.keras/keras.json``). The networks, losses, augmentation and training stream are written on
``keras`` and ``keras.ops`` and run on all three; what a backend does differently is asked here, in
one place: whether a GPU is visible, how deterministic kernels are switched on, and which runtime
options exist. Two options are TensorFlow's alone and are refused elsewhere before anything trains:

- ``--distribute mirrored`` is ``tf.distribute.MirroredStrategy``; JAX's counterpart would be
  ``keras.distribution.DataParallel`` and PyTorch's ``DistributedDataParallel``, neither wired in here;
- ``--tensorboard`` writes through ``tf.summary`` (Keras's ``TensorBoard`` callback needs TensorFlow).

Nothing here imports a backend's own package at module import: the TensorFlow-free gather step and
scorer import this module's neighbours without pulling in any backend.
"""

from __future__ import annotations

import importlib.util
import os

from common.spec import ConfigError

BACKENDS = ("tensorflow", "jax", "torch")


def name() -> str:
    """The backend Keras runs on in this process (imports Keras, and so the backend)."""
    import keras

    return keras.backend.backend()


def requested() -> str:
    """The backend Keras will choose, read without importing it: ``KERAS_BACKEND``, else Keras's config file."""
    chosen = os.environ.get("KERAS_BACKEND")
    if chosen:
        return chosen
    import json
    from pathlib import Path

    config = Path(os.environ.get("KERAS_HOME", Path.home() / ".keras")) / "keras.json"
    try:
        return json.loads(config.read_text()).get("backend", "tensorflow")
    except (OSError, ValueError):
        return "tensorflow"


def check_available() -> str:
    """The requested backend, refused by name when it is unknown or its package is not installed."""
    chosen = requested()
    if chosen not in BACKENDS:
        raise ConfigError(f"KERAS_BACKEND={chosen!r} is not one of {', '.join(BACKENDS)}")
    if importlib.util.find_spec(chosen) is None:
        hint = {"tensorflow": "requirements.txt", "jax": "requirements-jax.txt", "torch": "requirements-torch.txt"}
        raise ConfigError(
            f"KERAS_BACKEND={chosen} but the package {chosen!r} is not installed; "
            f"install it with: pip install -r {hint[chosen]}"
        )
    return chosen


def check_options(distribute: str = "none", tensorboard: bool = False) -> None:
    """Refuse, before any training, the runtime options the requested backend does not have."""
    chosen = check_available()
    if distribute != "none" and chosen != "tensorflow":
        raise ConfigError(
            f"--distribute {distribute} is TensorFlow's MirroredStrategy and this run is on KERAS_BACKEND={chosen}; "
            "run with KERAS_BACKEND=tensorflow, or without --distribute (JAX's keras.distribution.DataParallel "
            "is not wired into this project)"
        )
    if tensorboard and importlib.util.find_spec("tensorflow") is None:
        raise ConfigError(
            "--tensorboard writes through TensorFlow's tf.summary, and TensorFlow is not installed; "
            "install it (pip install -r requirements.txt) or leave out --tensorboard"
        )


def gpu_visible() -> bool:
    """Whether the backend in use sees a GPU (it computes there then)."""
    backend = name()
    if backend == "tensorflow":
        import tensorflow as tf

        return bool(tf.config.list_physical_devices("GPU"))
    if backend == "jax":
        import jax

        return any(device.platform == "gpu" for device in jax.devices())
    import torch

    return torch.cuda.is_available()


def enable_determinism() -> str | None:
    """Switch the backend's deterministic kernels on; a notice when the backend cannot do it from here.

    TensorFlow: ``enable_op_determinism``. PyTorch: ``use_deterministic_algorithms`` (cuDNN's autotuner
    off). JAX is deterministic on the CPU; on a GPU its XLA flag must be set before JAX starts, so this
    returns a notice when ``XLA_FLAGS`` lacks ``--xla_gpu_deterministic_ops=true``.
    """
    backend = name()
    if backend == "tensorflow":
        import tensorflow as tf

        tf.config.experimental.enable_op_determinism()
        return None
    if backend == "torch":
        import torch

        torch.use_deterministic_algorithms(True, warn_only=True)
        torch.backends.cudnn.benchmark = False
        return None
    if gpu_visible() and "--xla_gpu_deterministic_ops=true" not in os.environ.get("XLA_FLAGS", ""):
        return (
            "--deterministic on JAX with a GPU: set XLA_FLAGS=--xla_gpu_deterministic_ops=true before starting; "
            "training goes on with XLA's default (faster, not bit-reproducible) GPU kernels"
        )
    return None
