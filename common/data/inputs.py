"""Images to predict (``python -m common.predict``): found, named, and their headers checked before any work.

An input is one of:

- a folder of NIfTI files with any names (``*.nii``, ``*.nii.gz``): each file is an image, and its map is
  named after it (``scan 7.nii`` -> ``scan 7.nii.gz``); other entries of the folder (other files,
  sub-folders) are listed and skipped;
- a QUBIQ split or dataset folder, or one case folder: every folder holding ``image.nii.gz``, found the
  way the dataset scripts find cases (:func:`common.data.cases.cases_in_folder`: links followed, letter
  case forgiven, one case never counted twice); a case's map is ``<case>/taskTT.nii.gz``, the layout of a
  QUBIQ submission. A folder is read this way as soon as one ``image.nii.gz`` lies under it;
- one NIfTI file.

**Channels or slices.** A NIfTI array says nothing of whether its third axis holds channels (a brain-tumour
image, 240 x 240 x 4) or slices (a CT volume, 512 x 512 x 80). The rule, for a run trained on ``C``
channels: trailing axes of length 1 are dropped (``640 x 640 x 1`` is a 2D image), never below two axes;
then ``rows x cols`` is a one-channel image, and ``rows x cols x K`` holds ``K`` channels last exactly when
``K == C``. Anything else is refused, naming the file and both readings: ``rows x cols x K`` for a
one-channel run is a volume of ``K`` slices (or a ``K``-channel image); for a ``C``-channel run it has
``K`` values per pixel where ``C`` are expected; four or more axes are not a 2D image.
"""

from __future__ import annotations

import os
import warnings
from dataclasses import dataclass
from pathlib import Path

import nibabel as nib

from common.data.cases import IMAGE_NAME, DataError, cases_in_folder, natural_key
from common.data.layout import Planar

NIFTI_SUFFIXES = (".nii.gz", ".nii")


@dataclass(frozen=True)
class InputImage:
    """One image to predict and where its maps go.

    ``stem`` is the output's path relative to the output folder without its suffix: ``<name>`` for a file
    of a flat folder (or a single file), ``<case>/taskTT`` for a QUBIQ case; the ensemble's map is
    ``<stem>.nii.gz``.
    """

    name: str
    path: Path
    stem: str

    @property
    def output(self) -> str:
        return f"{self.stem}.nii.gz"


def nifti_name(path: Path) -> str | None:
    """The file's name without ``.nii.gz`` or ``.nii`` (any letter case), or None for another file."""
    lower = path.name.lower()
    for suffix in NIFTI_SUFFIXES:
        if lower.endswith(suffix) and len(lower) > len(suffix):
            return path.name[: -len(suffix)]
    return None


def holds_cases(folder: Path) -> bool:
    """Whether an ``image.nii.gz`` (any letter case) lies anywhere under ``folder`` (links followed)."""
    for _, _, files in os.walk(folder, followlinks=True):
        if any(name.lower() == IMAGE_NAME for name in files):
            return True
    return False


def find_inputs(path: Path, task: int) -> tuple[list[InputImage], list[str]]:
    """The images under ``path`` (see the module's docstring) and the entries skipped, each with why.

    Raises:
        DataError: ``path`` does not exist, is a file that is not NIfTI, or holds no image; a QUBIQ tree's
            refusals (two folders naming one case, a folder reached twice ...).
    """
    path = Path(path)
    if not path.exists():
        raise DataError(f"-i {path}: no such file or folder")
    if path.is_file():
        name = nifti_name(path)
        if name is None:
            raise DataError(f"-i {path}: not a NIfTI file (expected a name ending in .nii.gz or .nii)")
        return [InputImage(name, path, name)], []
    if holds_cases(path):
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            cases = cases_in_folder(path, "input")
        skipped = [str(w.message) for w in caught]
        inputs = [InputImage(c.case_id, c.image_path, f"{c.case_id}/task{task:02d}") for c in cases]
        return inputs, skipped
    inputs, skipped = [], []
    for entry in sorted(path.iterdir(), key=lambda p: natural_key(p.name)):
        name = nifti_name(entry)
        if entry.is_dir():
            skipped.append(f"{entry}: a folder without {IMAGE_NAME} under it; skipped")
        elif name is None or not entry.is_file():
            skipped.append(f"{entry}: not a NIfTI file (.nii.gz or .nii); skipped")
        else:
            inputs.append(InputImage(name, entry, name))
    if not inputs:
        raise DataError(
            f"-i {path}: no image to predict: expected NIfTI files (*.nii.gz, *.nii) or case folders holding "
            f"{IMAGE_NAME}" + (f" ({len(skipped)} other entries skipped)" if skipped else " (the folder is empty)")
        )
    return inputs, skipped


def image_grid(shape: tuple[int, ...], channels: int) -> tuple[int, int] | str:
    """The ``(rows, cols)`` of an image of array ``shape`` for a run of ``channels``, or why it does not fit.

    The channel rule of the module's docstring, on the header's shape alone (nothing is read); the rule
    itself is the 2D layout's (:class:`common.data.layout.Planar`), which the data reader applies too.
    """
    layout = Planar(channels)
    return layout.shape_problem(shape) or layout.in_plane(shape)


def read_header(path: Path) -> nib.Nifti1Image:
    """The NIfTI object of ``path`` with its header read (the data stays on disk until asked for)."""
    try:
        return nib.load(str(path))
    except Exception as error:  # noqa: BLE001 - nibabel raises many kinds (ImageFileError, EOFError, zlib.error ...)
        raise DataError(f"{path}: cannot be read as NIfTI ({type(error).__name__}: {str(error)[:200]})") from error
