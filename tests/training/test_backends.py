"""What must hold on every Keras backend: the backend asked for, training, an exact resume, the refusals.

Marked ``backend``: CI runs these under TensorFlow, and in their own environments (no TensorFlow
installed) under JAX and PyTorch, with ``KERAS_BACKEND`` set (README, Backends).
"""

import math
import os

import keras
import numpy as np
import pytest

from common.runs.folder import network_files
from common.spec import ConfigError, Settings
from common.training import backend
from common.training import trainer as training

pytestmark = pytest.mark.backend

TINY = Settings(
    input_size=16,
    depth=2,
    base_filters=4,
    batch_size=2,
    learning_rate=1e-3,
    epochs=4,
    dropout="none",
    rotation=10.0,
    shift=0.1,
    flip=True,
)


def data(count: int, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    images = rng.random((count, 16, 16, 1)).astype(np.float32)
    return images, (images > 0.5).astype(np.float32)


def test_keras_runs_on_the_backend_asked_for():
    assert keras.backend.backend() == backend.requested() == os.environ.get("KERAS_BACKEND", "tensorflow")


def test_a_resumed_training_ends_exactly_where_an_uninterrupted_one_does(tmp_path):
    """Two epochs, a backup, two more from the backup: the same weights and losses as four in one go."""
    train, validation = data(5), data(2, 1)
    whole = training.Trainer(reuse_networks=False).train(
        1, train, validation, TINY, network_files(tmp_path / "whole"), seed=3, verbose=0, log=str, checkpoint_seconds=0
    )
    first = training.Trainer(reuse_networks=False).train(
        1,
        train,
        validation,
        TINY.replace(epochs=2),
        network_files(tmp_path / "parts"),
        seed=3,
        verbose=0,
        log=str,
        checkpoint_seconds=0,
    )
    lines: list[str] = []
    resumed = training.Trainer(reuse_networks=False).train(
        1, train, validation, TINY, network_files(tmp_path / "parts"), seed=3, verbose=0, log=lines.append,
        checkpoint_seconds=0,
    )  # fmt: skip
    assert first.epochs == 2 and resumed.resumed_from_epoch == 2 and resumed.epochs == 4
    assert any("resuming from the backup after epoch 2" in line for line in lines), lines
    assert math.isfinite(whole.best_loss)
    whole_log = training.read_log(network_files(tmp_path / "whole").log)
    parts_log = training.read_log(network_files(tmp_path / "parts").log)
    assert whole_log == parts_log
    a = keras.saving.load_model(network_files(tmp_path / "whole").backup).get_weights()
    b = keras.saving.load_model(network_files(tmp_path / "parts").backup).get_weights()
    for x, y in zip(a, b, strict=True):
        np.testing.assert_array_equal(x, y)
    keras.backend.clear_session()


def test_a_pooled_network_predicts_what_its_saved_file_does(tmp_path):
    """The pool's reset network (weights loaded into the traced one) and the file loaded afresh agree."""
    train, validation = data(4), data(2, 1)
    result = training.train_expert(
        1, train, validation, TINY.replace(epochs=1), network_files(tmp_path), seed=0, verbose=0, log=str
    )
    pooled = training.predict(result.model_path, train[0], batch_size=2, settings=TINY.replace(epochs=1))
    training.NETWORKS.release()
    loaded = training.predict(result.model_path, train[0], batch_size=2)
    assert pooled.shape == (4, 16, 16, 1) and pooled.dtype == np.float32
    np.testing.assert_allclose(pooled, loaded, atol=1e-6)


@pytest.mark.parametrize("other", ["jax", "torch"])
def test_tensorflow_only_options_are_refused_on_other_backends(monkeypatch, other):
    monkeypatch.setenv("KERAS_BACKEND", other)
    monkeypatch.setattr(backend.importlib.util, "find_spec", lambda name: object() if name == other else None)
    refusal = f"--distribute mirrored is TensorFlow's MirroredStrategy.*KERAS_BACKEND={other}"
    with pytest.raises(ConfigError, match=refusal):
        backend.check_options(distribute="mirrored")
    with pytest.raises(ConfigError, match="--tensorboard writes through TensorFlow's tf.summary"):
        backend.check_options(tensorboard=True)
    backend.check_options()  # nothing else is refused


def test_an_unknown_or_missing_backend_is_refused_by_name(monkeypatch):
    monkeypatch.setenv("KERAS_BACKEND", "theano")
    with pytest.raises(ConfigError, match="KERAS_BACKEND='theano' is not one of tensorflow, jax, torch"):
        backend.check_available()
    monkeypatch.setenv("KERAS_BACKEND", "jax")
    monkeypatch.setattr(backend.importlib.util, "find_spec", lambda name: None)
    with pytest.raises(ConfigError, match="pip install -r requirements-jax.txt"):
        backend.check_available()
