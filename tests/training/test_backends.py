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
from common.training.checkpoints import read_log
from common.training.inference import Predictor
from common.training.tta import TTA

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
    whole_log = read_log(network_files(tmp_path / "whole").log)
    parts_log = read_log(network_files(tmp_path / "parts").log)
    assert whole_log == parts_log
    a = keras.saving.load_model(network_files(tmp_path / "whole").backup).get_weights()
    b = keras.saving.load_model(network_files(tmp_path / "parts").backup).get_weights()
    for x, y in zip(a, b, strict=True):
        np.testing.assert_array_equal(x, y)
    keras.backend.clear_session()


def test_a_predictor_given_another_networks_weights_predicts_what_that_file_does(tmp_path):
    """The Predictor loads the first network whole and puts the next one's weights into it: its maps are
    those of the second file loaded afresh; with flips, the mean of the image's map and its mirror's."""
    train, validation = data(4), data(2, 1)
    result = training.train_expert(
        1, train, validation, TINY.replace(epochs=1), network_files(tmp_path), seed=0, verbose=0, log=str
    )
    other = keras.saving.load_model(result.model_path)
    other.set_weights([w * 0.9 for w in other.get_weights()])
    other.save(tmp_path / "other.keras")
    alone = keras.saving.load_model(tmp_path / "other.keras").predict(train[0], verbose=0)

    predictor = Predictor(2)
    first, second = predictor.load(result.model_path), predictor.load(tmp_path / "other.keras")
    assert predictor.built == 1 and (first.outputs, first.channels) == (1, 1)
    maps = predictor.predict(second, train[0])
    assert maps.shape == (4, 16, 16, 1) and maps.dtype == np.float32
    np.testing.assert_allclose(maps, alone, atol=1e-6)
    assert not np.allclose(predictor.predict(first, train[0]), alone, atol=1e-3)

    flipped = Predictor(2, TTA["flip"])
    mirrored = keras.saving.load_model(tmp_path / "other.keras").predict(train[0][:, :, ::-1], verbose=0)[:, :, ::-1]
    np.testing.assert_allclose(
        flipped.predict(flipped.load(tmp_path / "other.keras"), train[0]), (alone + mirrored) / 2, atol=1e-6
    )


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
