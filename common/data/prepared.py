"""A case made ready for the network: its image and masks on the network's grid, and its own grid kept.

Training and prediction work on the network's square grid (:mod:`common.data.preprocessing`); scoring
works on each case's own grid, so the held-out cases also keep their original masks and image.

A volume (:mod:`common.data.layout`) is prepared slice by slice into a stack, ``image`` ``(slices, S, S, 1)``
and each mask ``(slices, S, S, 1)``; :func:`slice_cases` cuts a prepared case into the network's 2D
samples (a 2D case is its own one sample) and :func:`input_slices` gives the stack a network predicts.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import nibabel as nib
import numpy as np

from common.data.cases import Case, LoadedCase
from common.data.preprocessing import Geometry, mask_to_input, normalise_image, to_input
from common.spec import Settings


@dataclass
class PreparedCase:
    """A case on the network's grid, with what is needed to score it on its own grid."""

    case: Case
    image: np.ndarray  # (S, S, C) float32 in 0..1; a volume's (slices, S, S, 1)
    masks: dict[int, np.ndarray]  # expert -> (S, S, 1) float32 0/1; a volume's (slices, S, S, 1)
    geometry: Geometry
    reference: nib.Nifti1Image  # the image's NIfTI (affine and header) that predictions reuse
    original_masks: np.ndarray | None = None  # (experts, rows, cols) bool, kept for scored cases only
    original_image: np.ndarray | None = None  # (rows, cols, channels) in 0..1, kept for scored cases only
    original_experts: list[int] = field(default_factory=list)  # the experts of original_masks, in order


def prepare_case(loaded: LoadedCase, settings: Settings, masks: bool = True) -> PreparedCase:
    """``loaded`` on the network's grid (``settings.input_size``, ``settings.fit``), with its masks unless
    ``masks`` is False (a case that is only predicted: resampling a mask is the costly part)."""
    volume = loaded.image.ndim == 4
    stack = loaded.image if volume else loaded.image[np.newaxis]
    geometry = Geometry.fit(stack.shape[1:3], settings.input_size, settings.fit)
    normalised = normalise_image(stack, settings.ct_window, loaded.bounds)
    image = np.stack([to_input(plane, geometry) for plane in normalised])
    on_grid = {}
    if masks:
        for expert, mask in loaded.masks.items():
            planes = mask if volume else mask[np.newaxis]
            on_grid[expert] = np.stack([mask_to_input(plane, geometry) for plane in planes])
    if not volume:
        image, on_grid = image[0], {e: m[0] for e, m in on_grid.items()}
    return PreparedCase(loaded.case, image, on_grid, geometry, loaded.nifti)


def is_volume(case: PreparedCase) -> bool:
    return case.image.ndim == 4


def slice_cases(case: PreparedCase, index: np.ndarray | None = None) -> list[PreparedCase]:
    """The network's 2D samples of a prepared case: itself for a 2D case; a volume's slices (``index``: only
    those), each with its masks, for training and validation."""
    if not is_volume(case):
        return [case]
    chosen = range(len(case.image)) if index is None else index
    return [
        PreparedCase(case.case, case.image[i], {e: m[i] for e, m in case.masks.items()}, case.geometry, case.reference)
        for i in chosen
    ]


def input_slices(case: PreparedCase) -> np.ndarray:
    """What a network predicts for a case: ``(slices, S, S, C)``, one slice for a 2D case."""
    return case.image if is_volume(case) else case.image[np.newaxis]


def scored_case(loaded: LoadedCase, settings: Settings) -> PreparedCase:
    """A held-out case as scoring and the plots need it: its masks and normalised image on its own grid.

    Nothing is put on the network's grid (the gather step reads the networks' maps, already on the
    case's grid), so ``image``, ``masks`` and ``geometry`` are left empty.
    """
    original = loaded.mask_stack() if loaded.masks else None
    normalised = normalise_image(loaded.image, settings.ct_window, loaded.bounds)
    return PreparedCase(loaded.case, None, {}, None, loaded.nifti, original, normalised, sorted(loaded.masks))
