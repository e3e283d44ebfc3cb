"""SoftDiceLoss, SoftDiceBCELoss and dice_coefficient on tiny hand-computed cases, make_loss, save/reload."""

import math

import keras
import numpy as np
import pytest
from helpers import gradient

from common.choices import LOSS_NAMES
from common.training.losses import SoftDiceBCELoss, SoftDiceLoss, dice_coefficient, make_loss

pytestmark = pytest.mark.backend  # CI runs this file on TensorFlow, JAX and PyTorch


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


@pytest.mark.parametrize(
    "mask, prediction, expected",
    [
        ([[0, 0], [0, 0]], [[0, 0], [0, 0]], 1.0),  # 0 / max(0, 1e-7): finite, no gradient (the study's loss)
        ([[0, 0], [0, 0]], [[0.5, 0], [0, 0]], 1.0),  # an empty mask: 1 whatever the prediction
        ([[1, 0], [0, 0]], [[0.5, 0], [0, 0]], 1 - 2 * 0.5 / 1.5),  # 1 - 2*0.5/(1+0.5)
        ([[1, 1], [0, 0]], [[1, 1], [0, 0]], 0.0),
    ],
)
def test_soft_dice_without_smoothing_is_the_studys_plain_dice(mask, prediction, expected):
    assert loss_value(batch(mask), batch(prediction), smooth=0.0) == pytest.approx(expected, abs=1e-6)


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


# ---- SoftDiceBCELoss ----------------------------------------------------------------------------

LN2 = math.log(2.0)
# BCE of a wrong pixel at a clipped 0/1 prediction. A missed pixel (g = 1, p = 0 -> 1e-7) costs
# -ln(1e-7) = 7 ln 10 ~ 16.1181. A false positive (g = 0, p = 1 -> 1 - 1e-7) costs -ln(1 - p'), and
# 1 - 1e-7 rounds to 1 - 2**-23 in float32, so it costs 23 ln 2 ~ 15.9424, not 16.1181. A right pixel
# at a clipped 0/1 costs -ln(1 - 2**-23) ~ 1.2e-7, below the tolerances here.
MISS = 7 * math.log(10.0)
FALSE_POSITIVE = 23 * LN2


def dice_bce_value(y_true, y_pred, smooth=1.0, bce_weight=1.0):
    return float(SoftDiceBCELoss(smooth=smooth, bce_weight=bce_weight)(y_true, y_pred))


# (case, y_true, y_pred, smooth, bce_weight, expected loss), each worked out by hand:
# loss = soft Dice loss (as in LOSS_CASES) + bce_weight * mean over the 4 pixels of the BCE.
DICE_BCE_CASES = [
    # dice loss 0; every pixel right at a clipped 0/1: BCE ~1.2e-7
    ("perfect binary", batch([[1, 0], [0, 1]]), batch([[1, 0], [0, 1]]), 1.0, 1.0, 0.0),
    # sum(p*g) = 1, sum(p) = sum(g) = 2: dice = (2 + 1) / (4 + 1) = 0.6, loss 0.4; BCE ln 2 per pixel
    ("half right, p = 0.5", batch([[1, 1], [0, 0]]), batch([[0.5, 0.5], [0.5, 0.5]]), 1.0, 1.0, 0.4 + LN2),
    # the same with the BCE weighted by 0.5
    ("half right, bce_weight 0.5", batch([[1, 1], [0, 0]]), batch([[0.5, 0.5], [0.5, 0.5]]), 1.0, 0.5, 0.4 + LN2 / 2),
    # dice as above (sum(p*g) = 1, sums 2 and 2): loss 0.4; BCE: one miss, one false positive, two right
    (
        "half right, hard 0/1",
        batch([[1, 1], [0, 0]]),
        batch([[1, 0], [1, 0]]),
        1.0,
        1.0,
        0.4 + (MISS + FALSE_POSITIVE) / 4,
    ),
    # dice loss 1 - 2.9/3.9 (LOSS_CASES); BCE: -ln 0.8, -ln 0.4, -ln(1 - 0.2), ~0 -> (2 ln 1.25 + ln 2.5) / 4
    (
        "soft 2x2, smooth 0.5",
        batch([[1, 1], [0, 0]]),
        batch([[0.8, 0.4], [0.2, 0.0]]),
        0.5,
        1.0,
        1 - 2.9 / 3.9 + (2 * math.log(1.25) + math.log(2.5)) / 4,
    ),
    # both empty: dice = (0 + 1) / (0 + 0 + 1) = 1, loss 0; BCE ~1.2e-7
    ("empty mask, empty prediction", batch([[0, 0], [0, 0]]), batch([[0, 0], [0, 0]]), 1.0, 1.0, 0.0),
    # empty mask, p = 0.5: dice = 1 / (2 + 1), loss 2/3; BCE -ln(1 - 0.5) = ln 2 per pixel
    ("empty mask, p = 0.5", batch([[0, 0], [0, 0]]), batch([[0.5, 0.5], [0.5, 0.5]]), 1.0, 1.0, 2 / 3 + LN2),
]


@pytest.mark.parametrize(
    "y_true, y_pred, smooth, bce_weight, expected",
    [c[1:] for c in DICE_BCE_CASES],
    ids=[c[0] for c in DICE_BCE_CASES],
)
def test_soft_dice_bce_hand_computed(y_true, y_pred, smooth, bce_weight, expected):
    assert dice_bce_value(y_true, y_pred, smooth, bce_weight) == pytest.approx(expected, rel=1e-6, abs=1e-6)


def test_soft_dice_bce_is_the_mean_of_per_image_values():
    # image A: "half right, p = 0.5" (0.4 + ln 2); image B: "empty mask, empty prediction" (~0).
    y_true = batch([[1, 1], [0, 0]], [[0, 0], [0, 0]])
    y_pred = batch([[0.5, 0.5], [0.5, 0.5]], [[0, 0], [0, 0]])
    per_image = keras.ops.convert_to_numpy(SoftDiceBCELoss().call(y_true, y_pred))
    np.testing.assert_allclose(per_image, [0.4 + LN2, 0.0], atol=1e-6)
    assert dice_bce_value(y_true, y_pred) == pytest.approx((0.4 + LN2) / 2, abs=1e-6)


def random_batch(seed, shape=(3, 8, 8, 1), soft_targets=False):
    """Masks (binary, or soft in [0, 1]) and probabilities including exact 0s and 1s."""
    rng = np.random.default_rng(seed)
    y_true = rng.random(shape) if soft_targets else (rng.random(shape) > 0.6).astype("float32")
    y_pred = rng.random(shape)
    y_pred[..., :2, :] = 0.0
    y_pred[..., -2:, :] = 1.0
    return y_true.astype("float32"), y_pred.astype("float32")


@pytest.mark.parametrize("smooth", [0.5, 1.0])
def test_soft_dice_bce_with_zero_weight_is_soft_dice(smooth):
    y_true, y_pred = random_batch(1)
    got = keras.ops.convert_to_numpy(SoftDiceBCELoss(smooth=smooth, bce_weight=0.0).call(y_true, y_pred))
    want = keras.ops.convert_to_numpy(SoftDiceLoss(smooth=smooth).call(y_true, y_pred))
    assert got.shape == (3,)
    np.testing.assert_array_equal(got, want)


@pytest.mark.parametrize("soft_targets", [False, True])
def test_soft_dice_bce_adds_weighted_keras_binary_crossentropy(soft_targets):
    # independent check of the BCE term, clipping at exact 0/1 included: keras.losses.binary_crossentropy
    # (probabilities, clipped to [1e-7, 1 - 1e-7]) averages over the last axis; we average the rest.
    y_true, y_pred = random_batch(2, soft_targets=soft_targets)
    weight = 2.5
    combined = keras.ops.convert_to_numpy(SoftDiceBCELoss(bce_weight=weight).call(y_true, y_pred))
    dice = keras.ops.convert_to_numpy(SoftDiceLoss().call(y_true, y_pred))
    bce = keras.ops.convert_to_numpy(keras.losses.binary_crossentropy(y_true, y_pred)).mean(axis=(1, 2))
    assert bce.min() > 1.0  # the exact 0/1 rows make a large but finite BCE
    np.testing.assert_allclose(combined - dice, weight * bce, rtol=1e-5)


def test_soft_dice_bce_keeps_a_gradient_where_dice_saturates():
    # Empty 16 x 16 mask, p = 0.9 everywhere: S = sum(p) = 230.4. Dice loss S / (S + 1) has gradient
    # 1 / 231.4**2 ~ 1.9e-5 per pixel; the BCE mean adds 1 / (256 * (1 - 0.9)) = 1 / 25.6 per pixel.
    y_true = np.zeros((1, 16, 16, 1), np.float32)
    y_pred = np.full((1, 16, 16, 1), 0.9, np.float32)
    grads = {}
    for name, loss in [("dice", SoftDiceLoss()), ("dice+bce", SoftDiceBCELoss())]:
        grads[name] = gradient(lambda p, loss=loss: loss(y_true, p), y_pred)
    np.testing.assert_allclose(grads["dice"], 1 / 231.4**2, rtol=1e-4)
    np.testing.assert_allclose(grads["dice+bce"], 1 / 231.4**2 + 1 / 25.6, rtol=1e-4)


def test_soft_dice_bce_computes_in_float32_for_float16_inputs():
    # Empty mask, p = 1 everywhere on 256 x 256. In float16 sum(p) = 65536 overflows and 1 - 1e-7
    # rounds to 1 (so log(1 - p') = -inf). In float32: dice = 1 / (65536 + 1), and every pixel is a
    # clipped false positive costing 23 ln 2.
    zeros = keras.ops.zeros((1, 256, 256, 1), dtype="float16")
    ones = keras.ops.ones((1, 256, 256, 1), dtype="float16")
    value = SoftDiceBCELoss().call(zeros, ones)
    assert keras.backend.standardize_dtype(value.dtype) == "float32"
    assert float(value[0]) == pytest.approx(1 - 1 / 65537 + FALSE_POSITIVE, rel=1e-6)


@pytest.mark.parametrize(
    "true_shape, pred_shape",
    [((1, 2, 2, 1), (1, 2, 2)), ((1, 2, 2, 1), (1, 4, 4, 1)), ((2, 2, 2, 1), (1, 2, 2, 1))],
)
def test_soft_dice_bce_shape_mismatch_names_both_shapes(true_shape, pred_shape):
    with pytest.raises(ValueError, match="SoftDiceBCELoss") as error:
        SoftDiceBCELoss()(np.zeros(true_shape, "float32"), np.zeros(pred_shape, "float32"))
    assert str(true_shape) in str(error.value) and str(pred_shape) in str(error.value)


@pytest.mark.parametrize(
    "kwargs, argument",
    [
        ({"smooth": -1e-3}, "smooth"),
        ({"smooth": float("nan")}, "smooth"),
        ({"bce_weight": -1e-3}, "bce_weight"),
        ({"bce_weight": -1.0}, "bce_weight"),
        ({"bce_weight": float("nan")}, "bce_weight"),
    ],
)
def test_soft_dice_bce_rejects_bad_arguments(kwargs, argument):
    with pytest.raises(ValueError, match=f"SoftDiceBCELoss: {argument} must be >= 0"):
        SoftDiceBCELoss(**kwargs)


def test_soft_dice_bce_defaults_and_zero_arguments():
    loss = SoftDiceBCELoss()
    assert (loss.smooth, loss.bce_weight, loss.name) == (1.0, 1.0, "soft_dice_bce")
    zero = SoftDiceBCELoss(smooth=0, bce_weight=0)  # the boundary is allowed
    assert (zero.smooth, zero.bce_weight) == (0.0, 0.0)


def test_soft_dice_bce_config_round_trip():
    loss = SoftDiceBCELoss(smooth=0.25, bce_weight=0.5, name="dice_bce_e1")
    config = loss.get_config()
    assert (config["smooth"], config["bce_weight"], config["name"]) == (0.25, 0.5, "dice_bce_e1")
    clone = SoftDiceBCELoss.from_config(config)
    assert (clone.smooth, clone.bce_weight, clone.name, clone.reduction) == (0.25, 0.5, "dice_bce_e1", loss.reduction)
    revived = keras.losses.deserialize(keras.losses.serialize(loss))
    assert isinstance(revived, SoftDiceBCELoss) and (revived.smooth, revived.bce_weight) == (0.25, 0.5)
    assert keras.saving.get_registered_name(SoftDiceBCELoss) == "qubiq>SoftDiceBCELoss"


# ---- make_loss ----------------------------------------------------------------------------------


@pytest.mark.parametrize("name, cls", [("dice", SoftDiceLoss), ("dice+bce", SoftDiceBCELoss)])
def test_make_loss(name, cls):
    loss = make_loss(name)
    assert type(loss) is cls
    assert loss.get_config() == cls().get_config()  # the defaults
    assert make_loss(name) is not loss  # a fresh instance per call


def test_make_loss_knows_every_value_of_the_loss_switch():
    assert LOSS_NAMES == ("dice", "dice+bce")
    assert [type(make_loss(name)) for name in LOSS_NAMES] == [SoftDiceLoss, SoftDiceBCELoss]


@pytest.mark.parametrize("name", ["bce", "Dice", "dice + bce", ""])
def test_make_loss_unknown_name(name):
    with pytest.raises(ValueError) as error:
        make_loss(name)
    message = str(error.value)
    assert repr(name) in message and "'dice'" in message and "'dice+bce'" in message


def test_model_with_soft_dice_bce_reloads_without_custom_objects(tmp_path):
    keras.utils.set_random_seed(0)
    inputs = keras.Input((4, 4, 1))
    outputs = keras.layers.Conv2D(1, 1, activation="sigmoid")(inputs)
    model = keras.Model(inputs, outputs)
    model.compile(optimizer="adam", loss=SoftDiceBCELoss(smooth=0.5, bce_weight=0.25))
    rng = np.random.default_rng(0)
    x = rng.normal(size=(2, 4, 4, 1)).astype("float32")
    y = (rng.random((2, 4, 4, 1)) > 0.5).astype("float32")
    model.fit(x, y, epochs=1, verbose=0)  # builds the optimizer, so that it is saved and reloaded too
    before = model.evaluate(x, y, verbose=0, return_dict=True)["loss"]
    prediction = model.predict(x, verbose=0)
    assert before == pytest.approx(dice_bce_value(y, prediction, smooth=0.5, bce_weight=0.25), rel=1e-6)
    # the BCE term is really in the compiled loss: it differs from the Dice part alone
    assert abs(before - loss_value(y, prediction, smooth=0.5)) > 0.05

    path = tmp_path / "model.keras"
    model.save(path)
    reloaded = keras.saving.load_model(path)

    assert isinstance(reloaded.loss, SoftDiceBCELoss)
    assert (reloaded.loss.smooth, reloaded.loss.bce_weight) == (0.5, 0.25)
    after = reloaded.evaluate(x, y, verbose=0, return_dict=True)["loss"]
    assert after == pytest.approx(before, rel=1e-6)
