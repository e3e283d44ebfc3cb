"""One random transform for image and mask together, reproducible from the seed, the same on every backend.

Marked ``backend``: CI runs this file under TensorFlow, JAX and PyTorch. The transforms are drawn by
numpy (the same numbers everywhere) and every backend's warp is held to one reference, scipy's bilinear
``map_coordinates`` (``grid-constant``: the fill value 0 takes part in the interpolation at the border).
"""

import math

import keras
import numpy as np
import pytest
import scipy.ndimage as ndi

from common.training.augmentation import (
    TRAINING,
    VALIDATION,
    Augmentation,
    affine_transform,
    apply_transforms,
    draw_transforms,
    sample_rng,
)
from common.training.stream import augmented_validation_dataset, fit_input, training_dataset

pytestmark = pytest.mark.backend

H, W = 6, 8
IMAGE = np.arange(H * W, dtype=np.float32).reshape(H, W, 1)
MASK = (IMAGE > 20).astype(np.float32)


def warp(angle=0.0, rows=0.0, cols=0.0, flip=False, image=IMAGE, mask=MASK):
    transform = affine_transform(angle, rows, cols, flip, image.shape[0], image.shape[1])
    out_image, out_mask = apply_transforms(image[np.newaxis], mask[np.newaxis], transform[np.newaxis])
    return out_image[0], out_mask[0]


def reference_warp(image: np.ndarray, transform: np.ndarray) -> np.ndarray:
    """scipy's bilinear warp of one ``(H, W)`` channel: output (x, y) reads (a0 x + a1 y + a2, b0 x + b1 y + b2)."""
    rows, cols = np.mgrid[0 : image.shape[0], 0 : image.shape[1]].astype(np.float64)
    a0, a1, a2, b0, b1, b2 = transform[:6]
    x_in, y_in = a0 * cols + a1 * rows + a2, b0 * cols + b1 * rows + b2
    return ndi.map_coordinates(image.astype(np.float64), [y_in, x_in], order=1, mode="grid-constant", cval=0.0)


def test_identity():
    image, mask = warp()
    assert np.array_equal(image, IMAGE) and np.array_equal(mask, MASK)


def test_horizontal_flip_is_exact():
    image, mask = warp(flip=True)
    assert np.array_equal(image, IMAGE[:, ::-1]) and np.array_equal(mask, MASK[:, ::-1])


def test_shift_moves_down_and_right_filling_with_zero():
    image, _ = warp(rows=1.0, cols=2.0)
    expected = np.zeros_like(IMAGE)
    expected[1:, 2:] = IMAGE[:-1, :-2]
    assert np.array_equal(image, expected)


def test_quarter_turn_about_the_centre():
    square = np.arange(16, dtype=np.float32).reshape(4, 4, 1)
    image, _ = warp(angle=math.pi / 2, image=square, mask=np.zeros_like(square))
    assert np.allclose(image[..., 0], np.rot90(square[..., 0], k=-1), atol=1e-4)


def test_every_backend_warps_as_the_reference():
    """Random rotations, shifts and flips of a random image: the backend's warp equals scipy's to float32 rounding."""
    rng = np.random.default_rng(0)
    images = rng.random((6, 20, 24, 2)).astype(np.float32)
    transforms = draw_transforms(5, range(6), Augmentation(rotation=10, shift=0.1, flip=True), 20, 24)
    warped, _ = apply_transforms(images, np.zeros_like(images[..., :1]), transforms)
    for sample in range(6):
        for channel in range(2):
            expected = reference_warp(images[sample, ..., channel], transforms[sample])
            np.testing.assert_allclose(warped[sample, ..., channel], expected, atol=1e-5)


def test_the_transforms_are_numpys_draws_from_the_seed():
    """Hand-computed from sample_rng: four uniform draws per sample, in their order, whatever the backend."""
    augmentation = Augmentation(rotation=10.0, shift=0.1, flip=True)
    rng = sample_rng(7, TRAINING, 3)
    angle, rows, cols = rng.uniform(-1.0, 1.0, size=3)
    flip = rng.random() < 0.5
    expected = affine_transform(angle * math.pi / 18, rows * 0.1 * 16, cols * 0.1 * 12, flip, 16, 12)
    np.testing.assert_array_equal(draw_transforms(7, [3], augmentation, 16, 12)[0], expected)
    other_stream = draw_transforms(7, [3], augmentation, 16, 12, stream=VALIDATION)
    assert not np.array_equal(other_stream[0], expected)


def random_transforms(images, masks, seed, positions, augmentation):
    """Each sample's transform drawn from ``(seed, TRAINING, position)`` and applied, as the stream does."""
    transforms = draw_transforms(seed, positions, augmentation, images.shape[1], images.shape[2])
    return apply_transforms(images, masks, transforms)


def test_image_and_mask_get_the_same_random_transform():
    rng = np.random.default_rng(1)
    image = np.zeros((5, 32, 32, 2), np.float32)
    image[:, 8:20, 10:26, :] = 1.0
    image[..., 1] += rng.random((5, 32, 32)) * 0.01
    mask = image[..., :1].copy()
    out_image, out_mask = random_transforms(image, mask, 7, range(5), Augmentation(rotation=10, shift=0.1, flip=True))
    assert np.array_equal(out_image[..., 0] >= 0.5, out_mask[..., 0].astype(bool))
    assert set(np.unique(out_mask)) <= {0.0, 1.0}


def test_same_seed_same_transform_other_seed_other():
    augmentation = Augmentation()
    image = np.random.default_rng(0).random((1, 16, 16, 1)).astype(np.float32)
    mask = np.zeros((1, 16, 16, 1), np.float32)
    a, _ = random_transforms(image, mask, 3, [4], augmentation)
    b, _ = random_transforms(image, mask, 3, [4], augmentation)
    c, _ = random_transforms(image, mask, 3, [5], augmentation)
    d, _ = random_transforms(image, mask, 4, [4], augmentation)
    assert np.array_equal(a, b)
    assert not np.array_equal(a, c) and not np.array_equal(a, d)


def test_a_negative_seed_is_a_seed_too():
    first, again = (draw_transforms(-1, [0], Augmentation(), 8, 8) for _ in range(2))
    assert np.array_equal(first, again)


@pytest.mark.parametrize("kwargs", [{"rotation": -1}, {"shift": 1.0}])
def test_bad_ranges(kwargs):
    with pytest.raises(ValueError):
        Augmentation(**kwargs)


def take(stream, n):
    return [stream[i] for i in range(n)]


def test_the_stream_is_a_keras_dataset_of_numpy_batches():
    images = np.zeros((5, 8, 8, 1), np.float32)
    stream = training_dataset(images, images, 2, seed=0, augmentation=Augmentation(), epochs=3)
    assert isinstance(stream, keras.utils.PyDataset) and len(stream) == 9  # 3 epochs of ceil(5 / 2)
    assert all(isinstance(part, np.ndarray) and part.dtype == np.float32 for part in stream[0])
    with pytest.raises(IndexError):
        stream[9]


def test_training_stream_follows_the_seed_and_can_be_switched_off():
    rng = np.random.default_rng(0)
    images = rng.random((5, 16, 16, 1)).astype(np.float32)
    masks = (images > 0.5).astype(np.float32)
    on = Augmentation()
    first = take(training_dataset(images, masks, 2, seed=11, augmentation=on, epochs=2), 6)
    again = take(training_dataset(images, masks, 2, seed=11, augmentation=on, epochs=2), 6)
    other = take(training_dataset(images, masks, 2, seed=12, augmentation=on, epochs=2), 6)
    assert [len(b[0]) for b in first] == [2, 2, 1, 2, 2, 1]  # 2 epochs of ceil(5 / 2) = 3 batches
    assert all(np.array_equal(x[0], y[0]) for x, y in zip(first, again, strict=True))
    assert not all(np.array_equal(x[0], y[0]) for x, y in zip(first, other, strict=True))
    off = take(training_dataset(images, masks, 5, seed=11, augmentation=None, epochs=1), 1)[0]
    # without augmentation an epoch is a permutation of the originals
    assert sorted(x.sum() for x in off[0]) == pytest.approx(sorted(x.sum() for x in images))


def test_each_epoch_has_its_own_order():
    images = np.arange(6, dtype=np.float32).reshape(6, 1, 1, 1) * np.ones((6, 4, 4, 1), np.float32)
    batches = take(training_dataset(images, images, 6, seed=0, augmentation=None, epochs=4), 4)
    orders = [tuple(b[0][:, 0, 0, 0]) for b in batches]
    assert all(sorted(o) == [0, 1, 2, 3, 4, 5] for o in orders)
    assert len(set(orders)) > 1
    expected = sample_rng(0, 2, 1).permutation(6)  # epoch 1's order: the ORDER stream's draw for (seed 0, epoch 1)
    assert orders[1] == tuple(float(i) for i in expected)


def test_a_resumed_stream_continues_exactly():
    rng = np.random.default_rng(1)
    images = rng.random((5, 16, 16, 1)).astype(np.float32)
    masks = (images > 0.5).astype(np.float32)
    full = take(training_dataset(images, masks, 2, seed=3, augmentation=Augmentation(), epochs=4), 12)
    resumed_stream = training_dataset(images, masks, 2, seed=3, augmentation=Augmentation(), epochs=4, first_epoch=2)
    resumed = take(resumed_stream, len(resumed_stream))
    assert len(resumed) == 6
    for x, y in zip(full[6:], resumed, strict=True):
        assert np.array_equal(x[0], y[0]) and np.array_equal(x[1], y[1])


def as_list(dataset):
    return list(dataset.as_numpy_iterator())


def assert_same_batches(stream, batches):
    assert len(batches) == len(stream)
    for k, batch in enumerate(batches):
        expected = stream[k]
        assert len(batch) == len(expected)
        for got, want in zip(batch, expected, strict=True):
            assert got.dtype == want.dtype and got.shape == want.shape
            np.testing.assert_array_equal(got, want)


tensorflow_only = pytest.mark.skipif(keras.backend.backend() != "tensorflow", reason="the tf.data feed is TensorFlow's")


@tensorflow_only
@pytest.mark.parametrize(
    "kwargs",
    [
        {},
        {"augmentation": None},
        {"binary": False},
        {"replicas": 2},  # each epoch leaves out N mod 2 images
        {"available": np.array([[1, 0], [1, 1], [0, 1], [1, 1], [1, 0], [1, 1], [0, 1]], np.float32)},
    ],
    ids=["plain", "no-augmentation", "soft", "replicas", "multi-head"],
)
def test_the_tensorflow_feed_is_the_stream_batch_by_batch(kwargs):
    """On TensorFlow ``model.fit`` reads :func:`fit_input`'s ``tf.data`` pipeline, not the PyDataset:
    the same order, transforms and warps, so the same batches bit for bit, across epochs and a resume."""
    rng = np.random.default_rng(4)
    images = rng.random((7, 12, 10, 1)).astype(np.float32)
    masks = (rng.random((7, 12, 10, 2)) > 0.5).astype(np.float32)
    settings = {"augmentation": Augmentation(), **kwargs}
    stream = training_dataset(images, masks, 3, seed=9, epochs=4, first_epoch=1, **settings)
    assert_same_batches(stream, as_list(fit_input(stream)))


@tensorflow_only
def test_the_tensorflow_feed_of_the_augmented_validation_follows_its_epoch():
    """The augmented validation is one epoch's batches, of the epoch ``FollowEpoch`` sets before Keras
    reads it anew; its padding for two replicas comes with the sample weights."""
    rng = np.random.default_rng(5)
    images = rng.random((5, 12, 12, 1)).astype(np.float32)
    masks = (images > 0.5).astype(np.float32)
    stream = augmented_validation_dataset(images, masks, 2, 3, Augmentation(), epochs=4, first_epoch=1, replicas=2)
    feed = fit_input(stream)
    epochs = {}
    for epoch in (1, 3, 2):
        stream.epoch = epoch
        epochs[epoch] = as_list(feed)
        assert_same_batches(stream, epochs[epoch])
    assert len(epochs[1][0]) == 3  # images, masks and the sample weights of the padded evaluation
    assert not np.array_equal(epochs[1][0][0], epochs[3][0][0])


def test_fit_input_passes_anything_else_through():
    arrays = (np.zeros((2, 4, 4, 1)), np.zeros((2, 4, 4, 1)))
    assert fit_input(arrays) is arrays
    stream = training_dataset(arrays[0], arrays[1], 2, seed=0, augmentation=None, epochs=1)
    fed = fit_input(stream)
    assert (fed is stream) == (keras.backend.backend() != "tensorflow")
