"""A case's array layout: a 2D image, or a volume of 2D slices. The one place that knows the difference.

The networks are 2D. A dataset of 2D images (the four 2020 sets) has one image per case; a dataset of
volumes (the 2021 release's pancreas sets) has a stack of slices per case, lying along a declared axis
of the stored array (``DatasetSpec.slice_axis``: first, in that release). Everything that reads a case,
cuts it into the network's slices, or writes a map back goes through a :class:`CaseLayout`, so the rest
of the pipeline handles "a case" and "its slices" without asking which kind it is:

- **canonical arrays**: an image is ``(rows, cols, channels)`` (2D) or ``(slices, rows, cols, 1)``
  (volume, slice axis moved first); a mask or a map ``(rows, cols)`` or ``(slices, rows, cols)``;
- :meth:`~CaseLayout.slices` gives the network's slices of a canonical array, ``(n, rows, cols, ...)``
  with ``n = 1`` for a 2D image, and :meth:`~CaseLayout.from_slices` puts a stack of them back;
- :meth:`~CaseLayout.to_file` and :meth:`~CaseLayout.from_file` turn a canonical map into the stored
  axis order and back, so a volume's map lies on its image's grid in any viewer.

A volume is told from a 2D image, and its slice axis from its in-plane axes, by shape: the two axes
other than the slice axis must equal the dataset's in-plane size (512 x 512). A 2D image where a volume
is expected, a volume where a 2D image is expected, and a volume whose axes do not fit are refused with
the file named and both readings stated (a copy whose axes a script permuted, to put slices last, is the
likely cause of the last).
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np

from common.errors import DataError


def _squeezed(shape: tuple[int, ...], keep: int) -> tuple[int, ...]:
    """``shape`` without trailing axes of length 1, never below ``keep`` axes (``640 x 640 x 1`` is 2D)."""
    dims = list(shape)
    while len(dims) > keep and dims[-1] == 1:
        dims.pop()
    return tuple(dims)


def _shown(shape: tuple[int, ...]) -> str:
    return " x ".join(map(str, shape))


class CaseLayout:
    """How a case's array is laid out (see the module's docstring); :func:`layout_of` gives a dataset's."""

    volumetric: bool = False

    def shape_problem(self, shape: tuple[int, ...]) -> str | None:
        """Why an image of stored ``shape`` cannot be this layout's case, or None (read from a header alone)."""
        raise NotImplementedError

    def in_plane(self, shape: tuple[int, ...]) -> tuple[int, int]:
        """The ``(rows, cols)`` of each slice of an image of stored ``shape`` (checked by :meth:`shape_problem`)."""
        raise NotImplementedError

    def depth(self, shape: tuple[int, ...]) -> int:
        """The slices of an image of stored ``shape`` (checked by :meth:`shape_problem`): 1 for a 2D image."""
        raise NotImplementedError

    def image(self, array: np.ndarray, path: Path) -> np.ndarray:
        """A stored image array in canonical form, float32; a misfit is refused naming ``path``."""
        raise NotImplementedError

    def mask(self, array: np.ndarray, path: Path) -> np.ndarray:
        """A stored mask array in canonical form (its dtype kept); a misfit is refused naming ``path``."""
        raise NotImplementedError

    def slices(self, array: np.ndarray) -> np.ndarray:
        """The network's slices of a canonical array: ``(n, rows, cols, ...)``."""
        raise NotImplementedError

    def from_slices(self, stack: np.ndarray) -> np.ndarray:
        """A canonical array from its slices (the inverse of :meth:`slices`)."""
        raise NotImplementedError

    def to_file(self, canonical: np.ndarray, reference_shape: tuple[int, ...]) -> np.ndarray:
        """A canonical map in the stored axis order of an image of ``reference_shape`` (its grid)."""
        raise NotImplementedError

    def from_file(self, array: np.ndarray, path: Path) -> np.ndarray:
        """A stored map (a prediction read back) in canonical form; a misfit is refused naming ``path``."""
        raise NotImplementedError

    def describe(self) -> str:
        """What a case is, for messages: ``2D images (rows x cols)``, ``volumes (slices x 512 x 512)``."""
        raise NotImplementedError


@dataclass(frozen=True)
class Planar(CaseLayout):
    """One 2D image per case, ``channels`` last (brain-tumour: 4 MRI sequences)."""

    channels: int = 1

    def shape_problem(self, shape: tuple[int, ...]) -> str | None:
        """The channel rule (:mod:`common.data.inputs` states it): trailing axes of length 1 are dropped, never
        below two; then ``rows x cols`` is one channel and ``rows x cols x K`` holds ``K`` channels exactly when
        ``K`` is the layout's; anything else is refused with both readings."""
        dims = _squeezed(tuple(shape), 2)
        shown = _shown(shape)
        expected = "rows x cols" + (f" x {self.channels} channels" if self.channels > 1 else " (one channel)")
        if len(dims) < 2:
            return f"array of shape {shown} is not an image; the run takes {expected}"
        if len(dims) == 2:
            if self.channels == 1:
                return None
            return f"a 2D image of one channel ({shown}); the run was trained on {expected}"
        if len(dims) == 3:
            if dims[2] == self.channels:
                return None
            if self.channels == 1:
                return (
                    f"a 3D array ({shown}): a volume of {dims[2]} slices, or an image of {dims[2]} channels; the run "
                    f"takes 2D images of one channel ({expected})"
                )
            return f"{dims[2]} values per pixel in the last axis ({shown}); the run was trained on {expected}"
        return f"a {len(dims)}-dimensional array ({shown}), not a 2D image; the run takes {expected}"

    def in_plane(self, shape: tuple[int, ...]) -> tuple[int, int]:
        return int(shape[0]), int(shape[1])

    def depth(self, shape: tuple[int, ...]) -> int:
        return 1

    def _fit(self, array: np.ndarray, path: Path) -> np.ndarray:
        problem = self.shape_problem(array.shape)
        if problem is not None:
            raise DataError(f"{path}: {problem}")
        array = array.reshape(_squeezed(array.shape, 2))
        return array[..., np.newaxis] if array.ndim == 2 else array

    def image(self, array: np.ndarray, path: Path) -> np.ndarray:
        return self._fit(array, path).astype(np.float32, copy=False)

    def mask(self, array: np.ndarray, path: Path) -> np.ndarray:
        return Planar(1)._fit(array, path)[..., 0]

    def slices(self, array: np.ndarray) -> np.ndarray:
        return array[np.newaxis]

    def from_slices(self, stack: np.ndarray) -> np.ndarray:
        if len(stack) != 1:
            raise ValueError(f"a 2D image is one slice, got {len(stack)}")
        return stack[0]

    def to_file(self, canonical: np.ndarray, reference_shape: tuple[int, ...]) -> np.ndarray:
        # a trailing singleton axis is kept (the map has the image's shape); channels last give a 2D map
        shape = tuple(reference_shape)
        out = shape if all(size == 1 for size in shape[2:]) else shape[:2]
        return canonical.reshape(out)

    def from_file(self, array: np.ndarray, path: Path) -> np.ndarray:
        dims = _squeezed(array.shape, 2)
        if len(dims) != 2:
            raise DataError(
                f"{path}: expected a 2D probability map (rows x cols, or rows x cols x 1), got shape {array.shape}"
            )
        return array.reshape(dims)

    def describe(self) -> str:
        return "2D images (rows x cols" + (f" x {self.channels} channels)" if self.channels > 1 else ")")


@dataclass(frozen=True)
class Volume(CaseLayout):
    """A stack of 2D slices per case, along ``slice_axis`` of the stored array, each ``in_plane`` in size."""

    slice_axis: int = 0
    in_plane_shape: tuple[int, int] = (512, 512)
    volumetric = True

    def shape_problem(self, shape: tuple[int, ...]) -> str | None:
        dims = _squeezed(tuple(shape), 3)
        if len(dims) == 2:
            return f"a 2D image ({_shown(shape)}) where a volume is expected: {self.describe()}"
        if len(dims) != 3:
            return f"a {len(dims)}-dimensional array ({_shown(shape)}); expected {self.describe()}"
        plane = tuple(d for axis, d in enumerate(dims) if axis != self.slice_axis)
        if plane != tuple(self.in_plane_shape):
            fits = [
                axis
                for axis in range(3)
                if tuple(d for a, d in enumerate(dims) if a != axis) == tuple(self.in_plane_shape)
            ]
            hint = (
                f"; its slices lie along axis {fits[0]} (the axes permuted?)"
                if fits
                else "; no axis leaves that in-plane size"
            )
            return (
                f"a volume of shape {_shown(shape)} does not fit: expected {self.describe()}, but the axes other "
                f"than axis {self.slice_axis} are {_shown(plane)}{hint}"
            )
        return None

    def in_plane(self, shape: tuple[int, ...]) -> tuple[int, int]:
        return tuple(self.in_plane_shape)

    def depth(self, shape: tuple[int, ...]) -> int:
        return int(shape[self.slice_axis])

    def _fit(self, array: np.ndarray, path: Path) -> np.ndarray:
        problem = self.shape_problem(array.shape)
        if problem is not None:
            raise DataError(f"{path}: {problem}")
        return np.moveaxis(array.reshape(_squeezed(array.shape, 3)), self.slice_axis, 0)

    def image(self, array: np.ndarray, path: Path) -> np.ndarray:
        return self._fit(array, path).astype(np.float32, copy=False)[..., np.newaxis]

    def mask(self, array: np.ndarray, path: Path) -> np.ndarray:
        return self._fit(array, path)

    def slices(self, array: np.ndarray) -> np.ndarray:
        return array

    def from_slices(self, stack: np.ndarray) -> np.ndarray:
        return np.asarray(stack)

    def to_file(self, canonical: np.ndarray, reference_shape: tuple[int, ...]) -> np.ndarray:
        stored = np.moveaxis(canonical, 0, self.slice_axis)
        shape = tuple(reference_shape)
        return stored.reshape(shape) if all(size == 1 for size in shape[3:]) else stored

    def from_file(self, array: np.ndarray, path: Path) -> np.ndarray:
        dims = _squeezed(array.shape, 3)
        if len(dims) != 3:
            raise DataError(f"{path}: expected a volume's probability map ({self.describe()}), got shape {array.shape}")
        return np.moveaxis(array.reshape(dims), self.slice_axis, 0)

    def describe(self) -> str:
        plane = [str(size) for size in self.in_plane_shape]
        plane.insert(self.slice_axis, "slices")
        return f"volumes ({' x '.join(plane)})"


def layout_of(spec) -> CaseLayout:
    """The layout of a dataset's cases (a :class:`common.spec.DatasetSpec`)."""
    if spec.slice_axis is None:
        return Planar(spec.channels)
    return Volume(spec.slice_axis, tuple(spec.image_shape))
