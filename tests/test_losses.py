"""SoftDiceLoss and dice_coefficient on tiny hand-computed cases, plus save/reload."""

import keras
import numpy as np
import pytest

from common.losses import SoftDiceLoss, dice_coefficient


def batch(*images):
    """2D images written as nested lists -> float32 (batch, rows, cols, 1)."""
    return np.asarray(images, dtype="float32")[..., None]


def loss_value(y_true, y_pred, smooth=1.0):
    return float(SoftDiceLoss(smooth=smooth)(y_true, y_pred))


CHECKER = (np.indices((16, 16)).sum(axis=0) % 2).astype("float32")

# (case, y_true, y_pred, smooth, expected loss), each worked out by hand.
LOSS_CASES = [
    # dice = (2*2 + 1) / (2 + 2 + 1) = 1
    ("perfect binary", batch([[1, 0], [0, 1]]), batch([[1, 0], [0, 1]]), 1.0, 0.0),
    # dice = (0 + 1) / (2 + 2 + 1) = 0.2
    ("all wrong 2x2", batch([[1, 0], [0, 1]]), batch([[0, 1], [1, 0]]), 1.0, 0.8),
    # 128 + 128 wrong pixels: dice = 1 / (128 + 128 + 1), loss = 256/257
    ("all wrong 16x16", batch(CHECKER), batch(1 - CHECKER), 1.0, 256 / 257),
    # sum(p*g) = 0.8 + 0.4 = 1.2, sum(p) = 1.4, sum(g) = 2: dice = (2.4 + 0.5) / (3.4 + 0.5)
    ("soft 2x2, smooth 0.5", batch([[1, 1], [0, 0]]), batch([[0.8, 0.4], [0.2, 0.0]]), 0.5, 1 - 2.9 / 3.9),
    # the same without smoothing: dice = 2.4 / 3.4
    ("soft 2x2, smooth 0", batch([[1, 1], [0, 0]]), batch([[0.8, 0.4], [0.2, 0.0]]), 0.0, 1 - 2.4 / 3.4),
    # both empty: dice = (0 + 1) / (0 + 0 + 1) = 1
    ("empty mask, empty prediction", batch([[0, 0], [0, 0]]), batch([[0, 0], [0, 0]]), 1.0, 0.0),
    # empty mask, p = 0.5 everywhere: dice = 1 / (2 + 1)
    ("empty mask, soft prediction", batch([[0, 0], [0, 0]]), batch([[0.5, 0.5], [0.5, 0.5]]), 1.0, 2 / 3),
]


@pytest.mark.parametrize(
    "y_true, y_pred, smooth, expected", [c[1:] for c in LOSS_CASES], ids=[c[0] for c in LOSS_CASES]
)
def test_soft_dice_hand_computed(y_true, y_pred, smooth, expected):
    assert loss_value(y_true, y_pred, smooth) == pytest.approx(expected, abs=1e-6)


def test_soft_dice_is_per_image_not_pooled():
    # image A perfect (loss 0); image B misses its only pixel (smooth 0: dice 0, loss 1).
    # Per image: mean(0, 1) = 0.5. Pooled over the batch (keras.losses.Dice's default):
    # sum(p*g) = 4, sum(p) + sum(g) = 4 + 5 = 9, loss = 1 - 8/9 = 1/9.
    y_true = batch([[1, 1], [1, 1]], [[1, 0], [0, 0]])
    y_pred = batch([[1, 1], [1, 1]], [[0, 0], [0, 0]])
    assert loss_value(y_true, y_pred, smooth=0.0) == pytest.approx(0.5, abs=1e-6)
    assert float(keras.losses.Dice()(y_true, y_pred)) == pytest.approx(1 / 9, abs=1e-4)


def test_soft_dice_returns_one_value_per_image():
    y_true = batch([[1, 1], [0, 0]], [[0, 0], [0, 0]], [[1, 0], [0, 1]])
    per_image = keras.ops.convert_to_numpy(SoftDiceLoss(smooth=1.0).call(y_true, y_true))
    assert per_image.shape == (3,)
    np.testing.assert_allclose(per_image, 0.0, atol=1e-6)


def test_soft_dice_empty_pair_without_smoothing_is_nan():
    # documented: smooth = 0 makes 0/0 for an empty mask with an empty prediction
    assert np.isnan(loss_value(batch([[0, 0], [0, 0]]), batch([[0, 0], [0, 0]]), smooth=0.0))


def test_soft_dice_sums_in_float32_for_float16_inputs():
    # 256 x 256 ones sum to 65536, beyond float16's largest value (65504): float16 sums give inf/inf.
    ones = keras.ops.ones((1, 256, 256, 1), dtype="float16")
    value = SoftDiceLoss(smooth=1.0).call(ones, ones)
    assert keras.backend.standardize_dtype(value.dtype) == "float32"
    assert float(value[0]) == pytest.approx(0.0, abs=1e-6)


@pytest.mark.parametrize(
    "true_shape, pred_shape",
    [((1, 2, 2, 1), (1, 2, 2)), ((1, 2, 2, 1), (1, 4, 4, 1)), ((2, 2, 2, 1), (1, 2, 2, 1))],
)
def test_soft_dice_shape_mismatch_names_both_shapes(true_shape, pred_shape):
    with pytest.raises(ValueError) as error:
        SoftDiceLoss()(np.zeros(true_shape, "float32"), np.zeros(pred_shape, "float32"))
    assert str(true_shape) in str(error.value) and str(pred_shape) in str(error.value)


@pytest.mark.parametrize("smooth", [-1e-3, -1.0, float("nan")])
def test_soft_dice_rejects_bad_smooth(smooth):
    with pytest.raises(ValueError, match="smooth must be >= 0"):
        SoftDiceLoss(smooth=smooth)


def test_soft_dice_config_round_trip():
    loss = SoftDiceLoss(smooth=0.25, name="dice_e1")
    config = loss.get_config()
    assert config["smooth"] == 0.25 and config["name"] == "dice_e1"
    clone = SoftDiceLoss.from_config(config)
    assert (clone.smooth, clone.name, clone.reduction) == (0.25, "dice_e1", loss.reduction)
    revived = keras.losses.deserialize(keras.losses.serialize(loss))
    assert isinstance(revived, SoftDiceLoss) and revived.smooth == 0.25


def test_registered_names():
    assert keras.saving.get_registered_name(SoftDiceLoss) == "qubiq>SoftDiceLoss"
    assert keras.saving.get_registered_name(dice_coefficient) == "qubiq>dice_coefficient"


# (case, y_true, y_pred, expected hard Dice per image)
METRIC_CASES = [
    ("perfect", batch([[1, 0], [0, 1]]), batch([[0.9, 0.1], [0.2, 0.7]]), [1.0]),
    ("both empty is 1", batch([[0, 0], [0, 0]]), batch([[0.1, 0.4], [0.0, 0.2]]), [1.0]),
    ("empty prediction", batch([[1, 0], [0, 0]]), batch([[0.1, 0.4], [0.0, 0.2]]), [0.0]),
    ("empty mask, prediction not", batch([[0, 0], [0, 0]]), batch([[0.6, 0.4], [0.0, 0.2]]), [0.0]),
    # prediction >= 0.5: [[1, 0], [1, 0]]: 2*1 / (2 + 2)
    ("half overlap", batch([[1, 1], [0, 0]]), batch([[0.9, 0.2], [0.6, 0.0]]), [0.5]),
    # 0.5 itself is foreground (>=, as in the QUBIQ score)
    ("threshold inclusive", batch([[1, 0], [0, 0]]), batch([[0.5, 0.49], [0.0, 0.0]]), [1.0]),
    ("per image", batch([[1, 0], [0, 0]], [[0, 0], [0, 0]]), batch([[1, 0], [0, 0]], [[1, 0], [0, 0]]), [1.0, 0.0]),
]


@pytest.mark.parametrize("y_true, y_pred, expected", [c[1:] for c in METRIC_CASES], ids=[c[0] for c in METRIC_CASES])
def test_dice_coefficient_hand_computed(y_true, y_pred, expected):
    got = keras.ops.convert_to_numpy(dice_coefficient(y_true, y_pred))
    np.testing.assert_allclose(got, expected, atol=1e-6)


def test_dice_coefficient_shape_mismatch():
    with pytest.raises(ValueError, match=r"\(1, 2, 2, 1\).*\(1, 2, 2\)"):
        dice_coefficient(np.zeros((1, 2, 2, 1), "float32"), np.zeros((1, 2, 2), "float32"))


def test_model_saved_with_loss_and_metric_reloads_without_custom_objects(tmp_path):
    keras.utils.set_random_seed(0)
    inputs = keras.Input((8, 8, 1))
    outputs = keras.layers.Conv2D(1, 3, padding="same", activation="sigmoid")(inputs)
    model = keras.Model(inputs, outputs)
    model.compile(optimizer="adam", loss=SoftDiceLoss(smooth=0.5), metrics=[dice_coefficient])
    rng = np.random.default_rng(0)
    x = rng.random((2, 8, 8, 1), dtype="float32")
    y = (rng.random((2, 8, 8, 1)) > 0.5).astype("float32")
    history = model.fit(x, y, epochs=1, verbose=0)
    assert "dice_coefficient" in history.history

    path = tmp_path / "model.keras"
    model.save(path)
    reloaded = keras.saving.load_model(path)

    np.testing.assert_array_equal(model.predict(x, verbose=0), reloaded.predict(x, verbose=0))
    assert isinstance(reloaded.loss, SoftDiceLoss)
    assert reloaded.loss.smooth == 0.5
    scores = reloaded.evaluate(x, y, verbose=0, return_dict=True)
    assert set(scores) >= {"loss", "dice_coefficient"}
