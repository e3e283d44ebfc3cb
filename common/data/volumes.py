"""Volumes as the networks see them: which slices train, one intensity scale per volume, the plotted slice.

The 2021 release's pancreas sets are CT volumes (slices x 512 x 512) with 2 raters; participants trained
2D networks on slices and stacked the maps back, and so does this project (:mod:`common.data.layout` reads
and writes volumes; this module chooses among their slices).

**Which slices train.** A volume of 36 to 194 slices holds the pancreas in a fraction of them; training on
every slice would spend most steps on slices with nothing to find, and the Dice loss of an all-background
slice is 0 for an empty prediction and 1 for any false positive, a signal that mostly teaches the network
to say nothing. So a training or validation volume gives the slices where any rater marked something,
plus ``margin`` unmarked slices on each side (``Settings.slice_margin``, default 5 as participants did):
the network still sees the gland's ends and the tissue just beyond them, where false positives are made.
``slice_margin = None`` (``--slice-margin all``) trains on every slice. A volume no rater marked gives no
slice under a margin (the data check warns of it).

**One intensity scale per volume.** The window and the min-max rescaling are computed over the whole
volume, not per slice: per slice, the same Hounsfield value would become a different input in every slice
(a slice at the field of view's edge, or one without bone, would be stretched), and the network would see
a volume's slices on different scales. The bounds are taken before the training slices are cut out, so a
slice means the same whether it trains or is predicted (:func:`intensity_bounds`).
"""

from __future__ import annotations

import numpy as np

from common.data.cases import LoadedCase
from common.data.preprocessing import apply_ct_window


def marked_slices(masks: dict[int, np.ndarray]) -> np.ndarray:
    """Per slice, whether any expert marked a voxel in it: bool ``(slices,)`` from masks ``(slices, rows, cols)``."""
    if not masks:
        return np.zeros(0, dtype=bool)
    return np.logical_or.reduce([mask.reshape(len(mask), -1).any(axis=1) for mask in masks.values()])


def training_slices(masks: dict[int, np.ndarray], margin: int | None, depth: int | None = None) -> np.ndarray:
    """The indices of the slices a volume trains (or validates) on, ascending.

    Args:
        masks: the experts' masks of one volume, bool ``(slices, rows, cols)``.
        margin: unmarked slices kept on each side of every marked one (None: every slice).
        depth: the volume's slice count, needed only when ``masks`` is empty.
    """
    depth = len(next(iter(masks.values()))) if masks else depth
    if depth is None:
        raise ValueError("training_slices: give depth for a volume without masks")
    if margin is None:
        return np.arange(depth)
    if margin < 0:
        raise ValueError(f"slice margin must be >= 0 or None, got {margin}")
    marked = np.flatnonzero(marked_slices(masks)) if masks else np.zeros(0, dtype=int)
    keep = np.zeros(depth, dtype=bool)
    for index in marked:
        keep[max(0, index - margin) : index + margin + 1] = True
    return np.flatnonzero(keep)


def intensity_bounds(image: np.ndarray, window: tuple[float, float] | None) -> np.ndarray:
    """Per channel, the ``(low, high)`` of a whole case after the CT window: ``(2, channels)`` float32.

    The min-max rescaling of :func:`common.data.preprocessing.normalise_image` uses these, so that every
    slice of a volume is on the volume's scale.
    """
    if window is not None:
        image = apply_ct_window(image, window)
    axes = tuple(range(image.ndim - 1))
    return np.stack([image.min(axis=axes), image.max(axis=axes)]).astype(np.float32)


def keep_slices(loaded: LoadedCase, margin: int | None, window: tuple[float, float] | None) -> LoadedCase:
    """A training volume reduced to its training slices, with its whole-volume intensity bounds kept.

    What the data check keeps of a volume that only trains (not predicted, not scored): its chosen slices
    of the image and of each mask, copied, so the rest of the volume is freed once read.
    """
    index = training_slices(loaded.masks, margin, depth=len(loaded.image))
    bounds = intensity_bounds(loaded.image, window)
    return LoadedCase(
        case=loaded.case,
        image=np.ascontiguousarray(loaded.image[index]),
        masks={e: np.ascontiguousarray(m[index]) for e, m in loaded.masks.items()},
        nifti=loaded.nifti,
        slice_index=index,
        bounds=bounds,
    )


def plot_slice(masks: np.ndarray) -> int:
    """The slice where the experts' consensus covers the most voxels (the sum of its mean mask); the first of
    equals, and the middle slice when no expert marked anything. ``masks``: ``(experts, slices, rows, cols)``."""
    masks = np.asarray(masks)
    coverage = masks.reshape(masks.shape[0], masks.shape[1], -1).sum(axis=(0, 2))
    if not coverage.any():
        return masks.shape[1] // 2
    return int(np.argmax(coverage))
