"""The network pool: one traced network reused from expert to expert must train exactly as a fresh one.

Each test trains tiny networks (32 px, depth 2, 4 filters, 2 epochs) with dropout, batch norm and
augmentation on, so that every piece of state a fresh network starts with (weights, batch-norm
statistics, dropout seed states, optimiser moments and step) matters for the comparison.
"""

import keras
import numpy as np
import pytest

from common.runs.folder import network_files
from common.spec import Settings
from common.training import trainer
from common.training.checkpoints import read_log
from common.training.networks import NetworkPool
from common.training.precision import dtype_policy

TINY = Settings(
    input_size=32,
    depth=2,
    base_filters=4,
    batch_size=2,
    learning_rate=1e-3,
    epochs=2,
    dropout="spatial",
    dropout_rate=0.3,
)


def data(count: int, seed: int) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    images = rng.random((count, 32, 32, 1)).astype(np.float32)
    return images, (images > 0.4 + 0.1 * seed).astype(np.float32)


@pytest.fixture
def pool(monkeypatch):
    """A fresh pool for the trainer in this test (the previous one back afterwards), set where the trainer
    reads the process's pool at call time: its module's ``NETWORKS``, imported from common.training.networks."""
    fresh = NetworkPool()
    monkeypatch.setattr(trainer, "NETWORKS", fresh)
    yield fresh
    fresh.release()


def train(expert, seed, out, settings=TINY, validation=True):
    return trainer.train_expert(
        expert,
        data(6, seed),
        data(2, seed + 10) if validation else None,
        settings,
        network_files(out),
        seed=seed,
        verbose=0,
        log=str,
        checkpoint_seconds=0,
    )


def trained_weights(result) -> list[np.ndarray]:
    model = keras.saving.load_model(result.model_path, compile=False)
    weights = model.get_weights()
    keras.backend.clear_session()
    return weights


def log_losses(out) -> list[float]:
    return [float(r[key]) for r in read_log(network_files(out).log) for key in ("loss", "val_loss")]


def test_reused_network_trains_exactly_as_a_fresh_one(tmp_path, pool):
    pool.enabled = False
    fresh = train(2, seed=2, out=tmp_path / "fresh")
    assert pool.model is None and pool.reused == 0  # disabled: nothing kept
    pool.enabled = True
    train(1, seed=1, out=tmp_path / "first")  # the pool now holds expert 1's trained network
    model = pool.model
    steps = (model.train_function, model.test_function)
    assert int(model.optimizer.iterations) == 6  # 2 epochs x 3 batches
    keras.backend.clear_session()  # as other code may call between trainings: the pooled network survives it
    reused = train(2, seed=2, out=tmp_path / "reused")
    assert pool.reused == 1 and pool.model is model
    assert (model.train_function, model.test_function) == steps  # traced once, used twice
    assert log_losses(tmp_path / "reused") == pytest.approx(log_losses(tmp_path / "fresh"), rel=1e-5)
    for a, b in zip(trained_weights(reused), trained_weights(fresh), strict=True):
        np.testing.assert_allclose(a, b, rtol=1e-4, atol=1e-6)
    assert reused.best_epoch == fresh.best_epoch


def test_next_network_starts_with_a_fresh_optimizer(pool):
    model = pool.network(TINY, 1, 1, "float32")
    optimizer = model.optimizer
    for variable in optimizer.variables:  # as if trained: every step, moment and the learning rate changed
        variable.assign(keras.ops.ones(variable.shape, variable.dtype) * 3)
    assert pool.network(TINY, 1, 1, "float32") is model
    assert int(optimizer.iterations) == 0
    assert float(optimizer.learning_rate) == pytest.approx(TINY.learning_rate)
    moments = [v for v in optimizer.variables if "momentum" in v.path or "velocity" in v.path]
    assert moments and all(not np.any(keras.ops.convert_to_numpy(v)) for v in moments)


@pytest.mark.parametrize(
    "change",
    [
        {"settings": TINY.replace(base_filters=8)},
        {"settings": TINY.replace(learning_rate=1e-2)},
        {"channels": 4},
        {"outputs": 3},
        {"policy": "mixed_bfloat16"},
    ],
)
def test_anything_else_replaces_the_pooled_network(pool, change):
    first = pool.network(TINY, 1, 1, "float32")
    asked = {"settings": TINY, "channels": 1, "outputs": 1, "policy": "float32", **change}
    with dtype_policy(asked["policy"]):
        second = pool.network(**asked)
        assert keras.config.dtype_policy().name == asked["policy"]  # replacing kept the policy in force
    assert second is not first and pool.reused == 0 and pool.model is second
    assert not pool.holds(TINY, 1, 1)
    expected = "bfloat16" if asked["policy"] == "mixed_bfloat16" else "float32"
    assert second.get_layer("enc1_conv1").compute_dtype == expected  # built under the policy asked for


def test_mixed_float16_networks_are_not_pooled(pool):
    pool.network(TINY, 1, 1, "float32")
    with dtype_policy("mixed_float16"):
        model = pool.network(TINY, 1, 1, "mixed_float16")
    assert isinstance(model.optimizer, keras.optimizers.LossScaleOptimizer)
    assert pool.model is None and not pool.holds(TINY, 1, 1)


def test_disabled_pool_builds_every_network(pool):
    pool.enabled = False
    first = pool.network(TINY, 1, 1, "float32")
    assert pool.network(TINY, 1, 1, "float32") is not first
    assert pool.model is None and pool.reused == 0 and not pool.holds(TINY, 1, 1)
