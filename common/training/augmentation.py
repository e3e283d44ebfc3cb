"""On-the-fly augmentation: one random affine transform applied to image and mask together.

The study used Keras's ImageDataGenerator with rotation 10 degrees, width/height shift 0.1 and
horizontal flip (none for kidney). Here the same transform is drawn with stateless random ops from a
per-sample seed, so the augmentation stream follows from the run's seed, and applied in the
``tf.data`` pipeline with one projective-transform call on the image and mask stacked together
(bilinear; the mask is re-binarised at 0.5). Areas moved in from outside are filled with 0.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import tensorflow as tf


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


def affine_transform(
    angle: tf.Tensor, shift_rows: tf.Tensor, shift_cols: tf.Tensor, flip: tf.Tensor, height: int, width: int
) -> tf.Tensor:
    """The 8 projective parameters mapping output pixels to input pixels.

    The forward transform flips horizontally (when ``flip``), rotates by ``angle`` radians about the
    centre, then shifts by ``(shift_rows, shift_cols)`` pixels; this returns its inverse, as
    ``ImageProjectiveTransformV3`` expects.
    """
    cos, sin = tf.cos(angle), tf.sin(angle)
    cx, cy = (width - 1) / 2.0, (height - 1) / 2.0
    tx, ty = shift_cols, shift_rows
    a0, a1 = cos, sin
    a2 = cx - cos * (tx + cx) - sin * (ty + cy)
    b0, b1 = -sin, cos
    b2 = cy + sin * (tx + cx) - cos * (ty + cy)
    sign = tf.where(flip, -1.0, 1.0)
    a0, a1 = sign * a0, sign * a1
    a2 = tf.where(flip, (width - 1) - a2, a2)
    zero = tf.zeros_like(cos)
    return tf.stack([a0, a1, a2, b0, b1, b2, zero, zero])


def apply_transform(
    image: tf.Tensor, mask: tf.Tensor, transform: tf.Tensor, binary: bool = True
) -> tuple[tf.Tensor, tf.Tensor]:
    """Warp ``image (H, W, C)`` and ``mask (H, W, K)`` with the same ``transform``.

    A ``binary`` mask is re-binarised at 0.5 after the bilinear warp; a soft target (the mean expert
    mask of the soft-label strategy) keeps its interpolated values.
    """
    channels = tf.shape(image)[-1]
    stacked = tf.concat([image, tf.cast(mask, image.dtype)], axis=-1)[tf.newaxis]
    warped = tf.raw_ops.ImageProjectiveTransformV3(
        images=stacked,
        transforms=tf.cast(transform[tf.newaxis], tf.float32),
        output_shape=tf.shape(stacked)[1:3],
        fill_value=0.0,
        interpolation="BILINEAR",
        fill_mode="CONSTANT",
    )[0]
    warped_mask = warped[..., channels:]
    if binary:
        warped_mask = warped_mask >= 0.5
    return warped[..., :channels], tf.cast(warped_mask, mask.dtype)


def random_transform(
    image: tf.Tensor, mask: tf.Tensor, seed: tf.Tensor, augmentation: Augmentation, binary: bool = True
) -> tuple[tf.Tensor, tf.Tensor]:
    """Draw one transform from ``seed`` (a stateless seed, shape ``[2]``) and apply it to both."""
    seeds = tf.random.experimental.stateless_split(tf.cast(seed, tf.int64), num=4)
    height, width = image.shape[0], image.shape[1]
    max_angle = augmentation.rotation * math.pi / 180.0
    angle = tf.random.stateless_uniform([], seeds[0], -max_angle, max_angle)
    shift_rows = tf.random.stateless_uniform([], seeds[1], -augmentation.shift, augmentation.shift) * height
    shift_cols = tf.random.stateless_uniform([], seeds[2], -augmentation.shift, augmentation.shift) * width
    flip = tf.logical_and(augmentation.flip, tf.random.stateless_uniform([], seeds[3]) < 0.5)
    transform = affine_transform(angle, shift_rows, shift_cols, flip, height, width)
    return apply_transform(image, mask, transform, binary)
