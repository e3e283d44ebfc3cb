"""build_unet: shapes, layer make-up per option, the study's parameter counts, bad arguments."""

from collections import Counter

import keras
import numpy as np
import pytest

from common.training.models import build_unet

pytestmark = pytest.mark.backend  # CI runs this file on TensorFlow, JAX and PyTorch

TINY = dict(depth=2, base_filters=4)


def layer_types(model):
    """Exact class names (SpatialDropout2D is a subclass of Dropout, so isinstance would mix them)."""
    return Counter(type(layer).__name__ for layer in model.layers)


@pytest.mark.parametrize("convlstm", [False, True], ids=["plain", "convlstm"])
@pytest.mark.parametrize("channels", [1, 4])
def test_output_shape_and_range(convlstm, channels):
    model = build_unet((32, 32, channels), convlstm=convlstm, **TINY)
    x = np.random.default_rng(0).normal(size=(2, 32, 32, channels)).astype("float32") * 5
    y = keras.ops.convert_to_numpy(model(x, training=False))
    assert model.output_shape == (None, 32, 32, 1)
    assert y.shape == (2, 32, 32, 1)
    assert y.dtype == np.float32
    assert 0.0 <= y.min() and y.max() <= 1.0
    assert y.std() > 0  # a live network, not a constant


def test_non_square_input():
    model = build_unet((32, 64, 1), convlstm=True, **TINY)
    assert model.output_shape == (None, 32, 64, 1)


# (case, options, expected counts of layer classes); Conv2D counts two per block plus the output.
LAYER_CASES = [
    (
        "depth 2, spatial, batch norm",
        dict(depth=2, dropout="spatial"),
        dict(
            MaxPooling2D=2,
            Conv2DTranspose=2,
            ConvLSTM2D=0,
            SpatialDropout2D=4,
            Dropout=0,
            BatchNormalization=10,
            Conv2D=11,
        ),
    ),
    (
        "depth 3, convlstm, standard dropout",
        dict(depth=3, dropout="standard", convlstm=True),
        dict(
            MaxPooling2D=3,
            Conv2DTranspose=3,
            ConvLSTM2D=3,
            SpatialDropout2D=0,
            Dropout=6,
            BatchNormalization=14,
            Conv2D=15,
        ),
    ),
    (
        "depth 2, no dropout, no batch norm",
        dict(depth=2, dropout="none", batch_norm=False),
        dict(
            MaxPooling2D=2,
            Conv2DTranspose=2,
            ConvLSTM2D=0,
            SpatialDropout2D=0,
            Dropout=0,
            BatchNormalization=0,
            Conv2D=11,
        ),
    ),
    (
        "spatial with rate 0 means none",
        dict(depth=2, dropout="spatial", dropout_rate=0.0),
        dict(MaxPooling2D=2, Conv2DTranspose=2, SpatialDropout2D=0, Dropout=0),
    ),
]


@pytest.mark.parametrize("options, expected", [c[1:] for c in LAYER_CASES], ids=[c[0] for c in LAYER_CASES])
def test_layer_make_up(options, expected):
    counts = layer_types(build_unet((32, 32, 1), base_filters=4, **options))
    assert {name: counts[name] for name in expected} == expected


def test_dropout_rate_is_passed_on():
    model = build_unet((32, 32, 1), dropout_rate=0.2, **TINY)
    rates = {layer.rate for layer in model.layers if isinstance(layer, keras.layers.Dropout)}
    assert rates == {0.2}


def test_layer_names_and_filters_follow_the_design():
    model = build_unet((32, 32, 1), depth=3, base_filters=4, convlstm=True)
    for name in (
        "enc1_conv1",
        "enc1_bn1",
        "enc1_relu1",
        "enc1_pool",
        "enc1_drop",
        "bottleneck_conv2",
        "dec1_up",
        "dec1_merge",
        "dec1_convlstm",
        "dec1_drop",
        "dec3_conv2",
        "probability",
    ):
        model.get_layer(name)
    # encoder 4, 8, 16; bottleneck 32; dec1 is the deepest stage and returns to 16 filters
    assert [model.get_layer(f"enc{i}_conv1").filters for i in (1, 2, 3)] == [4, 8, 16]
    assert model.get_layer("bottleneck_conv1").filters == 32
    assert [model.get_layer(f"dec{i}_up").filters for i in (1, 2, 3)] == [16, 8, 4]
    assert [model.get_layer(f"dec{i}_conv1").filters for i in (1, 2, 3)] == [16, 8, 4]
    # BCDU-Net merge: a 2-step sequence (skip, upsampled) into a ConvLSTM2D with half the filters
    assert model.get_layer("dec1_merge").output.shape == (None, 2, 8, 8, 16)
    assert [model.get_layer(f"dec{i}_convlstm").filters for i in (1, 2, 3)] == [8, 4, 2]
    assert model.get_layer("dec1_convlstm").return_sequences is False


def test_convlstm_sequence_is_skip_then_upsampled():
    # BCDU-Net order: the encoder's feature map is the first step, the upsampled tensor the second
    model = build_unet((32, 32, 1), convlstm=True, **TINY)
    probe = keras.Model(
        model.input,
        [model.get_layer(n).output for n in ("dec1_merge", "enc2_relu2", "dec1_up")],
    )
    x = np.random.default_rng(1).normal(size=(1, 32, 32, 1)).astype("float32")
    sequence, skip, upsampled = (keras.ops.convert_to_numpy(t) for t in probe(x, training=False))
    np.testing.assert_array_equal(sequence[:, 0], skip)
    np.testing.assert_array_equal(sequence[:, 1], upsampled)


def test_plain_merge_concatenates_skip_and_upsampled():
    model = build_unet((32, 32, 1), **TINY)  # levels of 4 and 8 filters
    assert model.get_layer("dec1_merge").output.shape == (None, 16, 16, 8 + 8)
    assert model.get_layer("dec2_merge").output.shape == (None, 32, 32, 4 + 4)


@pytest.fixture
def mixed_precision():
    previous = keras.config.dtype_policy()
    keras.config.set_dtype_policy("mixed_float16")
    yield
    keras.config.set_dtype_policy(previous)


def test_output_layer_is_float32_under_mixed_precision(mixed_precision):
    model = build_unet((32, 32, 1), **TINY)
    assert model.get_layer("enc1_conv1").compute_dtype == "float16"
    assert model.get_layer("probability").compute_dtype == "float32"
    assert keras.backend.standardize_dtype(model.output.dtype) == "float32"


def test_convlstm_adds_parameters():
    plain = build_unet((32, 32, 1), **TINY).count_params()
    convlstm = build_unet((32, 32, 1), convlstm=True, **TINY).count_params()
    assert convlstm > plain


# QUBIQ.md: the study's deep U-Net has about 8.7 M parameters, its ConvLSTM version about 9.8 M.
# Exact counts (batch-norm moving statistics included) lock the design against accidental change.
@pytest.mark.parametrize(
    "convlstm, study_count, exact_count",
    [(False, 8.7e6, 8_660_305), (True, 9.8e6, 9_839_793)],
    ids=["plain", "convlstm"],
)
def test_study_size_parameter_counts(convlstm, study_count, exact_count):
    model = build_unet((256, 256, 1), depth=5, base_filters=16, convlstm=convlstm)
    assert model.count_params() == pytest.approx(study_count, rel=0.10)
    assert model.count_params() == exact_count


# (case, arguments, message pattern)
BAD_ARGUMENTS = [
    ("size not divisible", dict(input_shape=(250, 256, 1), depth=5), r"height 250 .* 2\*\*depth = 32"),
    ("width not divisible", dict(input_shape=(32, 48, 1), depth=5), r"width 48 .* 32"),
    ("unknown dropout", dict(input_shape=(32, 32, 1), dropout="gaussian"), "dropout must be one of"),
    ("rate 1", dict(input_shape=(32, 32, 1), dropout_rate=1.0), r"dropout_rate must be in \[0, 1\), got 1.0"),
    ("negative rate", dict(input_shape=(32, 32, 1), dropout_rate=-0.1), r"dropout_rate must be in \[0, 1\)"),
    ("depth 0", dict(input_shape=(32, 32, 1), depth=0), "depth must be >= 1, got 0"),
    ("base filters 0", dict(input_shape=(32, 32, 1), base_filters=0), "base_filters must be >= 1"),
    ("no channel axis", dict(input_shape=(32, 32)), r"input_shape must be \(height, width, channels\)"),
    ("zero channels", dict(input_shape=(32, 32, 0)), r"input_shape must be \(height, width, channels\)"),
]


@pytest.mark.parametrize("arguments, pattern", [c[1:] for c in BAD_ARGUMENTS], ids=[c[0] for c in BAD_ARGUMENTS])
def test_bad_arguments(arguments, pattern):
    with pytest.raises(ValueError, match=pattern):
        build_unet(**arguments)
