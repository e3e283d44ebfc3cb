"""Finding QUBIQ cases on disk and reading their NIfTI files (nibabel).

Cases are discovered by walking a dataset folder for ``image.nii.gz``, so copies with and without the
``Training/`` level both work. Masks are paired by their file names (``taskTT_segEE.nii.gz``) inside the
case folder, never by sorted position across folders.
"""

from __future__ import annotations

import re
import warnings
from dataclasses import dataclass, field
from pathlib import Path

import nibabel as nib
import numpy as np

from common.spec import SPLIT_FOLDERS, SPLITS, DatasetSpec

IMAGE_NAME = "image.nii.gz"
MASK_PATTERN = re.compile(r"^task(\d+)_seg(\d+)\.nii(\.gz)?$")


class DataError(ValueError):
    """A problem with the data on disk; the message names the file or folder."""


class MaskValueWarning(UserWarning):
    """A mask whose on-value is not 1 (it is still binarised as nonzero)."""


@dataclass(frozen=True)
class Case:
    """One case folder: its image and its expert masks, keyed by ``(task, expert)``."""

    case_id: str
    split: str
    folder: Path
    masks: dict[tuple[int, int], Path] = field(default_factory=dict)

    @property
    def image_path(self) -> Path:
        return self.folder / IMAGE_NAME

    def experts_for(self, task: int) -> list[int]:
        """The experts (1-based) that annotated ``task`` in this case, in order."""
        return sorted(e for (t, e) in self.masks if t == task)


def dataset_folder(root: Path, dataset: str, split: str) -> Path:
    """``<root>/<split folder>/<dataset>``, e.g. ``root/training_data_v2/kidney``."""
    if split not in SPLITS:
        raise ValueError(f"split must be one of {', '.join(SPLITS)}, got {split!r}")
    return Path(root) / SPLIT_FOLDERS[split][0] / dataset


def discover_cases(root: Path, dataset: str, split: str) -> list[Case]:
    """All cases of one split, sorted by case id.

    Raises:
        DataError: the data root or the dataset folder is missing, or holds no case.
    """
    root = Path(root)
    if not root.is_dir():
        raise DataError(
            f"data root {root} does not exist; pass --data-root (or set QUBIQ_DATA) to the folder that holds "
            f"training_data_v2/, validation_data_v2/ and test/, or use --demo"
        )
    if not any(root.iterdir()):
        raise DataError(
            f"data root {root} is empty; expected training_data_v2/, validation_data_v2/ and test/ "
            f"as distributed by QUBIQ (or use --demo)"
        )
    folder = dataset_folder(root, dataset, split)
    if not folder.is_dir():
        raise DataError(f"no {split} data for {dataset}: folder {folder} does not exist")
    cases = []
    seen: dict[str, Path] = {}
    for image in sorted(folder.rglob(IMAGE_NAME)):
        case_folder = image.parent
        case_id = case_folder.name
        if case_id in seen:
            raise DataError(f"case {case_id} appears twice: {seen[case_id]} and {case_folder}")
        seen[case_id] = case_folder
        masks: dict[tuple[int, int], Path] = {}
        for path in sorted(case_folder.iterdir()):
            match = MASK_PATTERN.match(path.name)
            if match:
                masks[(int(match.group(1)), int(match.group(2)))] = path
        cases.append(Case(case_id=case_id, split=split, folder=case_folder, masks=masks))
    orphans = sorted(
        {p.parent for p in folder.rglob("task*_seg*.nii*") if MASK_PATTERN.match(p.name)} - set(seen.values())
    )
    if orphans:
        raise DataError(
            f"case folder {orphans[0]} has masks but no {IMAGE_NAME}"
            + (f" (and {len(orphans) - 1} more such folder(s))" if len(orphans) > 1 else "")
        )
    if not cases:
        raise DataError(f"no case found in {folder}: expected case folders holding {IMAGE_NAME}")
    return sorted(cases, key=lambda c: natural_key(c.case_id))


def natural_key(text: str) -> list:
    return [int(part) if part.isdigit() else part for part in re.split(r"(\d+)", text)]


def read_nifti(path: Path) -> tuple[np.ndarray, nib.Nifti1Image]:
    """The stored array (scaling applied) and the NIfTI object; a corrupt file names itself."""
    try:
        nifti = nib.load(str(path))
        array = np.asanyarray(nifti.dataobj)
    except Exception as error:  # nibabel raises many kinds (ImageFileError, EOFError, zlib.error ...)
        raise DataError(f"cannot read {path}: {error}") from error
    return array, nifti


def load_image(path: Path, channels: int) -> tuple[np.ndarray, nib.Nifti1Image]:
    """An image as float32 ``(rows, cols, channels)`` and its NIfTI object (affine and header).

    Accepts 2D arrays, a trailing singleton axis (``640 x 640 x 1``) and channels last
    (``240 x 240 x 4``).
    """
    array, nifti = read_nifti(path)
    array = _to_2d(array.astype(np.float32, copy=False), path, channels)
    if not np.isfinite(array).all():
        raise DataError(f"{path}: image has {int((~np.isfinite(array)).sum())} NaN or infinite voxels")
    return array, nifti


def load_mask(path: Path) -> np.ndarray:
    """A mask as boolean ``(rows, cols)``: nonzero is foreground, whatever the dtype.

    A mask must hold two values at most, background 0 and one on-value: 0/1 is silent; another
    on-value (e.g. 0/255) is accepted with a warning naming the file; three or more values (a label map,
    a soft or resampled mask) are refused, since no threshold is obviously right for them.
    """
    array, _ = read_nifti(path)
    array = _to_2d(array, path, 1)[..., 0]
    if np.issubdtype(array.dtype, np.floating) and not np.isfinite(array).all():
        raise DataError(f"{path}: mask has NaN or infinite voxels")
    values = np.unique(array)
    nonzero = values[values != 0]
    if len(nonzero) > 1:
        shown = ", ".join(f"{v:g}" for v in values[:6]) + (", ..." if len(values) > 6 else "")
        raise DataError(f"{path}: expected a binary mask (0 and one on-value), found {len(values)} values: {shown}")
    if len(nonzero) == 1 and nonzero[0] != 1:
        warnings.warn(
            f"{path}: mask on-value is {nonzero[0]:g}, not 1; treating every nonzero voxel as foreground",
            MaskValueWarning,
            stacklevel=2,
        )
    return array != 0


def _to_2d(array: np.ndarray, path: Path, channels: int) -> np.ndarray:
    """Squeeze trailing singleton axes; return ``(rows, cols, channels)``."""
    shape = array.shape
    while array.ndim > 2 and array.shape[-1] == 1 and not (array.ndim == 3 and channels == 1):
        array = array[..., 0]
    if array.ndim == 2:
        array = array[..., np.newaxis]
    if array.ndim != 3 or array.shape[-1] != channels:
        raise DataError(
            f"{path}: expected a 2D array with {channels} channel(s) last "
            f"(rows x cols{' x ' + str(channels) if channels > 1 else ''}), got shape {shape}"
        )
    return array


@dataclass
class LoadedCase:
    """A case's arrays for one task: the image and the masks of the experts who drew it."""

    case: Case
    image: np.ndarray  # float32 (rows, cols, channels), as stored (before preprocessing)
    masks: dict[int, np.ndarray]  # expert -> bool (rows, cols)
    nifti: nib.Nifti1Image

    @property
    def case_id(self) -> str:
        return self.case.case_id

    @property
    def shape(self) -> tuple[int, int]:
        return self.image.shape[:2]

    def mask_stack(self) -> np.ndarray:
        """Masks of all its experts as bool ``(n_experts, rows, cols)``."""
        return np.stack([self.masks[e] for e in sorted(self.masks)])


def load_case(case: Case, spec: DatasetSpec, task: int, experts: list[int] | None = None) -> LoadedCase:
    """Read a case's image and the masks of ``task`` (only those of ``experts`` when given).

    A case may lack some experts' masks (one prostate case has 5 of 6); those are simply absent.
    """
    image, nifti = load_image(case.image_path, spec.channels)
    masks = {}
    for expert in case.experts_for(task):
        if experts is not None and expert not in experts:
            continue
        mask = load_mask(case.masks[(task, expert)])
        if mask.shape != image.shape[:2]:
            raise DataError(
                f"{case.masks[(task, expert)]}: mask shape {mask.shape} differs from the image's "
                f"{image.shape[:2]} ({case.image_path})"
            )
        masks[expert] = mask
    return LoadedCase(case=case, image=image, masks=masks, nifti=nifti)
