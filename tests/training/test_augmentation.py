"""One random transform for image and mask together, reproducible from the seed."""

import math

import numpy as np
import pytest
import tensorflow as tf

from common.training.augmentation import Augmentation, affine_transform, apply_transform, random_transform
from common.training.trainer import training_dataset

H, W = 6, 8
IMAGE = np.arange(H * W, dtype=np.float32).reshape(H, W, 1)
MASK = (IMAGE > 20).astype(np.float32)


def warp(angle=0.0, rows=0.0, cols=0.0, flip=False, image=IMAGE, mask=MASK):
    transform = affine_transform(
        tf.constant(angle), tf.constant(rows), tf.constant(cols), tf.constant(flip), image.shape[0], image.shape[1]
    )
    out_image, out_mask = apply_transform(tf.constant(image), tf.constant(mask), transform)
    return out_image.numpy(), out_mask.numpy()


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


def test_image_and_mask_get_the_same_random_transform():
    rng = np.random.default_rng(1)
    image = np.zeros((32, 32, 2), np.float32)
    image[8:20, 10:26, :] = 1.0
    image[..., 1] += rng.random((32, 32)) * 0.01
    mask = image[..., :1].copy()
    augmentation = Augmentation(rotation=10, shift=0.1, flip=True)
    for index in range(5):
        out_image, out_mask = random_transform(
            tf.constant(image), tf.constant(mask), tf.constant([7, index]), augmentation
        )
        assert np.array_equal((out_image.numpy()[..., 0] >= 0.5), out_mask.numpy()[..., 0].astype(bool))
        assert set(np.unique(out_mask.numpy())) <= {0.0, 1.0}


def test_same_seed_same_transform_other_seed_other():
    augmentation = Augmentation()
    image = tf.constant(np.random.default_rng(0).random((16, 16, 1)).astype(np.float32))
    mask = tf.zeros((16, 16, 1))
    a, _ = random_transform(image, mask, tf.constant([3, 4]), augmentation)
    b, _ = random_transform(image, mask, tf.constant([3, 4]), augmentation)
    c, _ = random_transform(image, mask, tf.constant([3, 5]), augmentation)
    assert np.array_equal(a.numpy(), b.numpy())
    assert not np.array_equal(a.numpy(), c.numpy())


@pytest.mark.parametrize("kwargs", [{"rotation": -1}, {"shift": 1.0}])
def test_bad_ranges(kwargs):
    with pytest.raises(ValueError):
        Augmentation(**kwargs)


def take(dataset, n):
    return [tuple(t.numpy() for t in batch) for batch in dataset.take(n)]


def test_training_stream_follows_the_seed_and_can_be_switched_off():
    rng = np.random.default_rng(0)
    images = rng.random((5, 16, 16, 1)).astype(np.float32)
    masks = (images > 0.5).astype(np.float32)
    on = Augmentation()
    first = take(training_dataset(images, masks, 2, seed=11, augmentation=on, epochs=2), 6)
    again = take(training_dataset(images, masks, 2, seed=11, augmentation=on, epochs=2), 6)
    other = take(training_dataset(images, masks, 2, seed=12, augmentation=on, epochs=2), 6)
    assert len(first) == 6  # 2 epochs of ceil(5 / 2) = 3 batches
    assert [len(b[0]) for b in first] == [2, 2, 1, 2, 2, 1]
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


def test_a_resumed_stream_continues_exactly():
    rng = np.random.default_rng(1)
    images = rng.random((5, 16, 16, 1)).astype(np.float32)
    masks = (images > 0.5).astype(np.float32)
    full = take(training_dataset(images, masks, 2, seed=3, augmentation=Augmentation(), epochs=4), 12)
    resumed = take(training_dataset(images, masks, 2, seed=3, augmentation=Augmentation(), epochs=4, first_epoch=2), 6)
    assert len(resumed) == 6
    for x, y in zip(full[6:], resumed, strict=True):
        assert np.array_equal(x[0], y[0]) and np.array_equal(x[1], y[1])
