"""The study-style baseline's input: numpy batches augmented in Python, as Keras's old ``ImageDataGenerator``.

The tuning section's baseline and the score section's study-style run feed their networks with
:func:`study_generator` (numpy and scipy only); the workers wrap it in ``tf.data``
(:func:`bench.benchmarking.worker.generator_stream`, :func:`bench.benchmarking.worker.study_training_dataset`).
"""

from __future__ import annotations

import math


def rotation_shift_flip_matrix(angle: float, shift_rows: float, shift_cols: float, shape: tuple[int, int]):
    """``(matrix, offset)`` for ``scipy.ndimage.affine_transform``: output pixel -> input pixel of a
    rotation by ``angle`` radians about the centre followed by a shift of ``(shift_rows, shift_cols)``."""
    import numpy as np

    centre = (np.array(shape, dtype=float) - 1) / 2
    cos, sin = math.cos(angle), math.sin(angle)
    inverse = np.array([[cos, sin], [-sin, cos]])  # the inverse of the forward rotation
    shift = np.array([shift_rows, shift_cols])
    offset = centre - inverse @ (centre + shift)
    return inverse, offset


def study_augment(image, mask, rng, rotation: float = 10.0, shift: float = 0.1, flip: bool = True):
    """One random transform, as Keras's old ``ImageDataGenerator`` drew it, applied to a numpy image and mask.

    Rotation uniform in ``[-rotation, rotation]`` degrees about the centre, shifts uniform in
    ``[-shift, shift]`` of the size, then a horizontal flip with probability 0.5 (when ``flip``); every
    channel of the image and the mask is warped with the same matrix (``scipy.ndimage``, bilinear,
    0 outside), and the mask is re-binarised at 0.5, as the project's in-graph augmentation does.
    """
    import numpy as np
    from scipy import ndimage

    rows, cols = image.shape[:2]
    angle = math.radians(rng.uniform(-rotation, rotation)) if rotation else 0.0
    shift_rows = rng.uniform(-shift, shift) * rows if shift else 0.0
    shift_cols = rng.uniform(-shift, shift) * cols if shift else 0.0
    flipped = bool(flip and rng.random() < 0.5)
    matrix, offset = rotation_shift_flip_matrix(angle, shift_rows, shift_cols, (rows, cols))

    def warp(array):
        out = np.empty_like(array, dtype=np.float32)
        for c in range(array.shape[-1]):
            out[..., c] = ndimage.affine_transform(
                array[..., c].astype(np.float32), matrix, offset=offset, order=1, mode="constant", cval=0.0
            )
        return out[:, ::-1] if flipped else out

    warped_mask = (warp(mask) >= 0.5).astype(mask.dtype)
    return np.ascontiguousarray(warp(image)), np.ascontiguousarray(warped_mask)


def study_generator(images, masks, batch_size: int, seed: int, rotation=10.0, shift=0.1, flip=True):
    """The study's input: endless epochs of shuffled numpy batches, each sample augmented in Python."""
    import numpy as np

    rng = np.random.default_rng(seed)
    count = len(images)
    while True:
        order = rng.permutation(count)
        for start in range(0, count, batch_size):
            pairs = [
                study_augment(images[i], masks[i], rng, rotation, shift, flip)
                for i in order[start : start + batch_size]
            ]
            yield np.stack([p[0] for p in pairs]), np.stack([p[1] for p in pairs])
