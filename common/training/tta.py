"""Test-time augmentation: the views of an image a network predicts (numpy only, no backend).

A :class:`TestTimeAugmentation` is a tuple of views, each an involution (applied again, it undoes
itself), so a view's map is put back by the same function. ``none`` is the image alone; ``flip`` adds its
horizontal mirror (the flip the training's augmentation draws, :mod:`common.training.augmentation`), and
a network's map is the mean of the image's map and the mirrored view's map mirrored back
(:class:`common.training.inference.Predictor`). Registered by name in :data:`TTA` (``--tta``).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import numpy as np


def identity(images: np.ndarray) -> np.ndarray:
    return images


def mirror(images: np.ndarray) -> np.ndarray:
    """``(N, rows, cols, C)`` mirrored left to right (columns reversed): its own inverse."""
    return images[:, :, ::-1, :]


@dataclass(frozen=True)
class TestTimeAugmentation:
    """The views of an image a network predicts, each an involution (applied again, it undoes itself)."""

    name: str
    views: tuple[Callable[[np.ndarray], np.ndarray], ...]
    description: str


#: The test-time augmentations by name (``python -m common.predict --tta``).
TTA: dict[str, TestTimeAugmentation] = {
    t.name: t
    for t in (
        TestTimeAugmentation("none", (identity,), "the image as it is"),
        TestTimeAugmentation("flip", (identity, mirror), "the mean of the image's map and its horizontal mirror's"),
    )
}
