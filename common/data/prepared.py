"""A case made ready for the network: its image and masks on the network's grid, and its own grid kept.

Training and prediction work on the network's square grid (:mod:`common.data.preprocessing`); scoring
works on each case's own grid, so the held-out cases also keep their original masks and image.
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
    image: np.ndarray  # (S, S, C) float32 in 0..1
    masks: dict[int, np.ndarray]  # expert -> (S, S, 1) float32 0/1
    geometry: Geometry
    reference: nib.Nifti1Image  # the image's NIfTI (affine and header) that predictions reuse
    original_masks: np.ndarray | None = None  # (experts, rows, cols) bool, kept for scored cases only
    original_image: np.ndarray | None = None  # (rows, cols, channels) in 0..1, kept for scored cases only
    original_experts: list[int] = field(default_factory=list)  # the experts of original_masks, in order


def prepare_case(loaded: LoadedCase, settings: Settings, masks: bool = True) -> PreparedCase:
    """``loaded`` on the network's grid (``settings.input_size``, ``settings.fit``), with its masks unless
    ``masks`` is False (a case that is only predicted: resampling a mask is the costly part)."""
    geometry = Geometry.fit(loaded.shape, settings.input_size, settings.fit)
    image = to_input(normalise_image(loaded.image, settings.ct_window), geometry)
    on_grid = {e: mask_to_input(m, geometry) for e, m in loaded.masks.items()} if masks else {}
    return PreparedCase(loaded.case, image, on_grid, geometry, loaded.nifti)


def scored_case(loaded: LoadedCase, settings: Settings) -> PreparedCase:
    """A held-out case as scoring and the plots need it: its masks and normalised image on its own grid.

    Nothing is put on the network's grid (the gather step reads the networks' maps, already on the
    case's grid), so ``image``, ``masks`` and ``geometry`` are left empty.
    """
    original = loaded.mask_stack() if loaded.masks else None
    normalised = normalise_image(loaded.image, settings.ct_window)
    return PreparedCase(loaded.case, None, {}, None, loaded.nifti, original, normalised, sorted(loaded.masks))
