"""On-the-fly augmentation: one random affine transform applied to image and mask together.

The study used Keras's ImageDataGenerator with rotation 10 degrees, width/height shift 0.1 and
horizontal flip (none for kidney). Here each sample's transform is drawn by numpy from its own seed
``(seed, stream, position)`` (:func:`draw_transforms`), so the augmentation is a function of the run's
seed and the sample's place in the stream, the same numbers on every Keras backend, and a batch is
warped with one ``keras.ops.image.affine_transform`` call on the images and masks stacked together
(bilinear; a binary mask is re-binarised at 0.5; areas moved in from outside are filled with 0). That
op is TensorFlow's ``ImageProjectiveTransformV3`` on the TensorFlow backend and Keras's own bilinear
sampler on JAX and PyTorch; ``tests/training/test_augmentation.py`` holds all of them to one
reference (scipy's ``map_coordinates``).
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import keras
import numpy as np

#: The seed streams: which draw a seed ``(seed, stream, position)`` is for, so that no two overlap.
TRAINING, VALIDATION, ORDER = 0, 1, 2


@dataclass(frozen=True)
class Augmentation:
    """Ranges of the random transform: rotation in degrees, shift as a fraction of the size."""

    rotation: float = 10.0
    shift: float = 0.1
    flip: bool = True

    def __post_init__(self) -> None:
        if not 0 <= self.rotation <= 180:
            raise ValueError(f"rotation must be in [0, 180] degrees, got {self.rotation}")
        if not 0 <= self.shift < 1:
            raise ValueError(f"shift must be a fraction in [0, 1), got {self.shift}")

    @property
    def is_identity(self) -> bool:
        return self.rotation == 0 and self.shift == 0 and not self.flip


def sample_rng(seed: int, stream: int, position: int) -> np.random.Generator:
    """numpy's generator for one draw: a function of the three numbers alone (``SeedSequence`` entropy).

    ``SeedSequence`` takes non-negative integers; a negative run seed is taken modulo ``2**64``.
    """
    return np.random.default_rng([int(seed) % 2**64, int(stream), int(position)])


def affine_transform(angle, shift_rows, shift_cols, flip, height: int, width: int) -> np.ndarray:
    """The 8 projective parameters mapping output pixels to input pixels, one row per sample.

    The forward transform flips horizontally (when ``flip``), rotates by ``angle`` radians about the
    centre, then shifts by ``(shift_rows, shift_cols)`` pixels; this returns its inverse, as
    ``keras.ops.image.affine_transform`` expects (``[a0, a1, a2, b0, b1, b2, 0, 0]``: the output pixel
    ``(x, y)`` reads the input at ``(a0 x + a1 y + a2, b0 x + b1 y + b2)``). The arguments are scalars or
    arrays of one value per sample; the result is ``(8,)`` or ``(N, 8)`` float32.
    """
    angle, tx, ty, flip = np.broadcast_arrays(
        np.asarray(angle, np.float64), np.asarray(shift_cols, np.float64), np.asarray(shift_rows, np.float64), flip
    )
    cos, sin = np.cos(angle), np.sin(angle)
    cx, cy = (width - 1) / 2.0, (height - 1) / 2.0
    a0, a1 = cos, sin
    a2 = cx - cos * (tx + cx) - sin * (ty + cy)
    b0, b1 = -sin, cos
    b2 = cy + sin * (tx + cx) - cos * (ty + cy)
    flip = np.asarray(flip, bool)
    sign = np.where(flip, -1.0, 1.0)
    a0, a1 = sign * a0, sign * a1
    a2 = np.where(flip, (width - 1) - a2, a2)
    zero = np.zeros_like(cos)
    return np.stack([a0, a1, a2, b0, b1, b2, zero, zero], axis=-1).astype(np.float32)


def draw_transforms(
    seed: int, positions, augmentation: Augmentation, height: int, width: int, stream: int = TRAINING
) -> np.ndarray:
    """One transform per position, ``(N, 8)``: each drawn from :func:`sample_rng` ``(seed, stream, position)``.

    Four numbers per sample, in this order: the angle (uniform in +-rotation), the row and column
    shifts (uniform in +-shift times the size) and the flip (when allowed, with probability 1/2).
    """
    max_angle = augmentation.rotation * math.pi / 180.0
    draws = np.empty((len(positions), 4))
    for row, position in enumerate(positions):
        rng = sample_rng(seed, stream, position)
        draws[row] = rng.uniform(-1.0, 1.0, size=3).tolist() + [rng.random()]
    flip = np.logical_and(augmentation.flip, draws[:, 3] < 0.5)
    return affine_transform(
        draws[:, 0] * max_angle,
        draws[:, 1] * augmentation.shift * height,
        draws[:, 2] * augmentation.shift * width,
        flip,
        height,
        width,
    )


def warp(images, masks, transforms, binary: bool = True):
    """Warp ``images (N, H, W, C)`` and ``masks (N, H, W, K)`` with one ``transforms (N, 8)`` row per sample.

    One ``keras.ops.image.affine_transform`` call on the two stacked, on the backend in use; the inputs
    may be numpy arrays or the backend's tensors (TensorFlow's inside a ``tf.data`` map, see
    :func:`common.training.stream.fit_input`), and so are the results. A ``binary`` mask is re-binarised at
    0.5 after the bilinear warp; a soft target (the mean expert mask of the soft-label strategy) keeps its
    interpolated values. The results have the inputs' dtypes.
    """
    ops = keras.ops
    channels = images.shape[-1]
    stacked = ops.concatenate([images, ops.cast(masks, images.dtype)], axis=-1)
    warped = ops.image.affine_transform(
        stacked,
        ops.cast(transforms, "float32"),
        interpolation="bilinear",
        fill_mode="constant",
        fill_value=0.0,
        data_format="channels_last",
    )
    warped_masks = warped[..., channels:]
    if binary:
        warped_masks = ops.greater_equal(warped_masks, 0.5)
    return ops.cast(warped[..., :channels], images.dtype), ops.cast(warped_masks, masks.dtype)


def apply_transforms(
    images: np.ndarray, masks: np.ndarray, transforms: np.ndarray, binary: bool = True
) -> tuple[np.ndarray, np.ndarray]:
    """:func:`warp` on numpy arrays, returning numpy arrays of the inputs' dtypes."""
    warped_images, warped_masks = warp(images, masks, np.asarray(transforms, np.float32), binary)
    return keras.ops.convert_to_numpy(warped_images), keras.ops.convert_to_numpy(warped_masks)
