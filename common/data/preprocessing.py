"""Intensities to 0..1 (with CT windowing) and the round trip between a case's grid and the network's.

Two ways to fit a case's grid into the network's square input (``Settings.fit``):

- ``"crop"`` (the study's): an axis longer than the input is centre-cropped, a shorter one zero-padded
  (prostate 640 to 512 cropped, kidney 497 to 512 and tumour 240 to 256 padded); no voxel is resampled.
  The prediction is put back where it came from, and the cropped-off border of a case gets probability 0.
- ``"resample"``: an image larger than the input is resampled (scikit-image, aspect ratio kept) so that
  it fits, then padded; a smaller one is only padded. Needed when the input is much smaller than the
  images (the CPU-sized demo: 128 px), where a crop would keep only the middle of the image.

:func:`from_input` undoes either, so that predictions are scored on the case's own grid against its
original masks.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from skimage.transform import resize


def apply_ct_window(image: np.ndarray, window: tuple[float, float]) -> np.ndarray:
    """Clip Hounsfield units to ``window = (low, high)``; rescaling afterwards maps low..high to 0..1."""
    low, high = window
    if not low < high:
        raise ValueError(f"CT window must be (low, high) with low < high, got {window}")
    return np.clip(image, low, high)


def rescale_intensity(image: np.ndarray, bounds: np.ndarray | None = None) -> np.ndarray:
    """Each channel (the last axis) min-max scaled to 0..1 over the whole case (a constant channel gives 0).

    ``image`` is ``(rows, cols, channels)`` or a volume's ``(slices, rows, cols, channels)``: one scale per
    case, never per slice (:mod:`common.data.volumes` says why). ``bounds`` (``(2, channels)``: low, high)
    gives that scale when ``image`` is only some slices of the case.
    """
    image = image.astype(np.float32, copy=False)
    axes = tuple(range(image.ndim - 1))
    if bounds is None:
        low = image.min(axis=axes, keepdims=True)
        span = image.max(axis=axes, keepdims=True) - low
    else:
        low = np.asarray(bounds[0], dtype=np.float32)
        span = np.asarray(bounds[1], dtype=np.float32) - low
    scaled = np.where(span > 0, (image - low) / np.where(span > 0, span, 1), 0)
    return np.clip(scaled, 0.0, 1.0).astype(np.float32) if bounds is not None else scaled.astype(np.float32)


def normalise_image(
    image: np.ndarray, ct_window: tuple[float, float] | None = None, bounds: np.ndarray | None = None
) -> np.ndarray:
    """The study's intensity preprocessing: optional CT window (in HU), then 0..1 per channel over the case
    (``bounds``: the whole case's, for some of its slices)."""
    if ct_window is not None:
        image = apply_ct_window(image, ct_window)
    return rescale_intensity(image, bounds)


FITS = ("crop", "resample")


@dataclass(frozen=True)
class Geometry:
    """How a case's grid sits in the network's square input.

    The case is first resized to ``resized`` (equal to ``original`` unless it is resampled); then the
    ``extent`` rows and columns starting at ``source`` of it are copied to ``offset`` in the input:
    ``source`` is non-zero where an axis is centre-cropped, ``offset`` where it is padded.
    """

    original: tuple[int, int]
    resized: tuple[int, int]
    offset: tuple[int, int]
    size: int
    source: tuple[int, int] = (0, 0)
    extent: tuple[int, int] | None = None

    @classmethod
    def fit(cls, shape: tuple[int, int], size: int, mode: str = "resample") -> Geometry:
        """The geometry of ``shape`` in a ``size`` input, by ``mode`` ``"crop"`` or ``"resample"`` (see above)."""
        if mode not in FITS:
            raise ValueError(f"fit must be one of {', '.join(FITS)}, got {mode!r}")
        rows, cols = int(shape[0]), int(shape[1])
        if mode == "crop":
            extent = (min(rows, size), min(cols, size))
            source = ((rows - extent[0]) // 2, (cols - extent[1]) // 2)
            offset = ((size - extent[0]) // 2, (size - extent[1]) // 2)
            return cls(
                original=(rows, cols), resized=(rows, cols), offset=offset, size=size, source=source, extent=extent
            )
        scale = min(1.0, size / max(rows, cols))
        resized = (max(1, round(rows * scale)), max(1, round(cols * scale)))
        offset = ((size - resized[0]) // 2, (size - resized[1]) // 2)
        return cls(original=(rows, cols), resized=resized, offset=offset, size=size, extent=resized)

    @property
    def resamples(self) -> bool:
        return self.resized != self.original

    @property
    def crops(self) -> bool:
        return self.source != (0, 0) or self._extent != self.resized

    @property
    def _extent(self) -> tuple[int, int]:
        return self.extent if self.extent is not None else self.resized

    def _window(self) -> tuple[slice, slice]:
        """Where the copied part lies in the input."""
        (top, left), (rows, cols) = self.offset, self._extent
        return slice(top, top + rows), slice(left, left + cols)

    def _source_window(self) -> tuple[slice, slice]:
        """Where the copied part lies in the (resized) case."""
        (top, left), (rows, cols) = self.source, self._extent
        return slice(top, top + rows), slice(left, left + cols)


def to_input(array: np.ndarray, geometry: Geometry) -> np.ndarray:
    """Bring ``(rows, cols, channels)`` float data onto the network's ``(size, size, channels)`` grid."""
    if array.shape[:2] != geometry.original:
        raise ValueError(f"array of shape {array.shape[:2]} does not match the geometry's {geometry.original}")
    if geometry.resamples:
        array = resize(array, (*geometry.resized, array.shape[2]), order=1, anti_aliasing=True, preserve_range=True)
    out = np.zeros((geometry.size, geometry.size, array.shape[2]), dtype=np.float32)
    out[geometry._window()] = array[geometry._source_window()]
    return out


def mask_to_input(mask: np.ndarray, geometry: Geometry) -> np.ndarray:
    """A boolean ``(rows, cols)`` mask on the network's grid as float32 0/1 ``(size, size, 1)``."""
    resampled = to_input(mask[..., np.newaxis].astype(np.float32), geometry)
    return (resampled >= 0.5).astype(np.float32)


def from_input(prediction: np.ndarray, geometry: Geometry) -> np.ndarray:
    """A ``(size, size[, 1])`` probability map back on the case's ``(rows, cols)`` grid, in 0..1."""
    prediction = np.asarray(prediction, dtype=np.float32)
    if prediction.ndim == 3:
        prediction = prediction[..., 0]
    if prediction.shape != (geometry.size, geometry.size):
        raise ValueError(f"prediction of shape {prediction.shape} is not the input size {geometry.size}")
    on_case = np.zeros(geometry.resized, dtype=np.float32)  # a cropped-off border is predicted background
    on_case[geometry._source_window()] = prediction[geometry._window()]
    if geometry.resamples:
        on_case = resize(on_case, geometry.original, order=1, anti_aliasing=False, preserve_range=True)
    return np.clip(on_case, 0.0, 1.0).astype(np.float32)
