"""The network a training starts from: built and compiled for its settings, or handed on by the process's pool.

One pooled network serves the networks of a run one after another (:class:`NetworkPool`), so that
their training steps are traced once per process instead of once per network.
"""

from __future__ import annotations

import json

import keras
import numpy as np

from common.spec import Settings
from common.strategies import strategy
from common.training.models import build_unet, unet_arguments
from common.training.precision import precision_policy


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


def compile_for(model: keras.Model, settings: Settings) -> None:
    """Adam with the strategy's loss and metrics (:meth:`common.strategies.Strategy.loss`)."""
    loss, metrics = strategy(settings.strategy).loss(settings.loss, settings.dice_smooth)
    # A weighted metric gets the sample weights, as the loss does: only the padded validation batches of a
    # mirrored training have any (evaluation_data), and without them it is the plain mean, same name.
    model.compile(
        optimizer=keras.optimizers.Adam(learning_rate=settings.learning_rate), loss=loss, weighted_metrics=metrics
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
