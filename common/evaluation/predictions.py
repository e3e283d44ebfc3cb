"""Probability maps as NIfTI files in a QUBIQ-like layout (numpy and nibabel only, no TensorFlow).

::

    <pred_root>/<dataset>/<case>/taskTT.nii.gz                      the ensemble's map of task TT
    <pred_root>/<dataset>/<case>/experts/taskTT_segEE.nii.gz        expert EE's network's map

Maps are float32 in [0, 1] on the case's own grid and reuse the image's affine and header, so that they
overlay the image in any viewer, and they are stored unscaled, so that reading one back gives exactly
the values written (and therefore exactly the same score). A volume's map is a volume on its image's
grid, in the image's axis order (:mod:`common.data.layout` turns it to and from the canonical order).
"""

from __future__ import annotations

import os
import re
import uuid
from pathlib import Path

import nibabel as nib
import numpy as np

from common.data.cases import DataError, mask_file_name, natural_key, read_nifti
from common.data.layout import CaseLayout, Planar
from common.storage import replaced_atomically

EXPERTS_SUBFOLDER = "experts"
ENSEMBLE_PATTERN = re.compile(r"^task(\d+)\.nii(\.gz)?$")


def prediction_path(pred_root: Path, dataset: str, case_id: str, task: int, expert: int | None = None) -> Path:
    """Where a case's map goes: the ensemble's (``expert=None``) or one expert's network's."""
    folder = Path(pred_root) / dataset / case_id
    if expert is None:
        return folder / f"task{task:02d}.nii.gz"
    return folder / EXPERTS_SUBFOLDER / mask_file_name(task, expert)


def output_path(pred_root: Path, dataset: str, case_id: str, task: int, network: str, output: int | str | None) -> Path:
    """Where one saved output of a network goes (an entry of ``Network.saved``, :mod:`common.strategies`):
    an expert's number is that expert's map, None the ensemble's map itself, and a name a file of the
    network's own: ``<case>/<network>/taskTT_<name>.nii.gz``."""
    if output is None or isinstance(output, int):
        return prediction_path(pred_root, dataset, case_id, task, output)
    return Path(pred_root) / dataset / case_id / network / f"task{task:02d}_{output}.nii.gz"


def _nifti_suffix(path: Path) -> str:
    for suffix in (".nii.gz", ".nii"):
        if path.name.endswith(suffix):
            return suffix
    raise ValueError(f"{path}: a prediction file must end in .nii.gz or .nii")


def written_shape(reference_shape: tuple[int, ...]) -> tuple[int, ...]:
    """The stored shape of a 2D map for an image of ``reference_shape``.

    ``(rows, cols)`` stays 2D; trailing singleton axes (``640 x 640 x 1``) are kept, so the map has the
    image's shape; channels last (``240 x 240 x 4``) give a 2D map.
    """
    if len(reference_shape) < 2:
        raise ValueError(f"reference image of shape {reference_shape} is not an image (need rows x cols)")
    return Planar(1).to_file(np.zeros(tuple(reference_shape[:2]), dtype=np.uint8), tuple(reference_shape)).shape


def _grid(reference_shape: tuple[int, ...], layout: CaseLayout) -> tuple[int, ...]:
    """The canonical grid of a map for an image of ``reference_shape``: ``(rows, cols)`` or ``(slices, rows, cols)``."""
    if not layout.volumetric:
        return tuple(reference_shape[:2])
    dims = list(reference_shape[:3])
    return (dims.pop(layout.slice_axis), *dims)


def write_prediction(
    path: Path, probability: np.ndarray, reference: nib.Nifti1Image, layout: CaseLayout | None = None
) -> Path:
    """Write a probability map as float32 with the reference image's affine and header.

    Args:
        path: the file to (re)place, ``.nii.gz`` or ``.nii``; its folders are created.
        probability: finite values in [0, 1] on the reference image's grid, canonical
            (:mod:`common.data.layout`): ``(rows, cols)``, or a volume's ``(slices, rows, cols)``.
        reference: the case's image (e.g. ``nib.load(image_path)``): its affine and a copy of its header
            are reused, with the data shape and dtype updated, scaling reset (values stored as-is) and
            the display range set to 0..1.
        layout: the cases' layout (default: 2D images); a volume's map is written in its image's axis order.

    A 2D map keeps a trailing singleton axis when the image has one; a multi-channel image's map is 2D
    (see :func:`written_shape`). Written to a temporary file in the same folder and renamed over
    ``path``, so an interruption leaves the old file or the new one, never a truncated one.

    Raises:
        ValueError: the map does not match the image's grid, or holds values outside [0, 1] or NaN.
    """
    path = Path(path)
    layout = layout or Planar(1)
    suffix = _nifti_suffix(path)
    probability = np.asarray(probability)
    grid = _grid(tuple(reference.shape), layout)
    if probability.shape != grid:
        raise ValueError(
            f"{path}: probability map of shape {probability.shape} does not match the image's grid {grid} "
            f"(image shape {tuple(reference.shape)})"
        )
    if not np.isfinite(probability).all():
        bad = int((~np.isfinite(probability)).sum())
        raise ValueError(f"{path}: probability map holds {bad} NaN or infinite values")
    if probability.size and (probability.min() < 0 or probability.max() > 1):
        raise ValueError(
            f"{path}: probability map must be within [0, 1]; found values in "
            f"[{probability.min():g}, {probability.max():g}]"
        )
    stored = layout.to_file(probability.astype(np.float32), tuple(reference.shape))

    image_class = type(reference) if isinstance(reference, nib.Nifti1Image) else nib.Nifti1Image
    header = image_class.header_class.from_header(reference.header)  # a copy, also from a non-NIfTI image
    pixdim = header["pixdim"].copy()
    header.set_data_shape(stored.shape)
    header["pixdim"] = pixdim  # set_data_shape resets the unused voxel sizes, which the qform still reads
    header.set_data_dtype(np.float32)
    header.set_slope_inter(None, None)  # stored as-is: what is read back is what was written
    header["cal_min"], header["cal_max"] = 0.0, 1.0  # the display range of a probability, not the image's
    affine = reference.affine if reference.affine is not None else reference.header.get_best_affine()
    image = image_class(stored, affine, header)

    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name[: -len(suffix)]}.{os.getpid()}-{uuid.uuid4().hex[:8]}.tmp{suffix}")
    with replaced_atomically(path, tmp):  # a full disk: no partial map, a StorageError naming it
        nib.save(image, str(tmp))
    return path


def read_prediction(path: Path, layout: CaseLayout | None = None) -> np.ndarray:
    """A probability map as float32, canonical: ``(rows, cols)`` (trailing singleton axes dropped), or with
    a volume ``layout`` ``(slices, rows, cols)``.

    Raises:
        DataError: the file cannot be read, or is not a map of the layout; the message names the file.
    """
    array, _ = read_nifti(path)
    return (layout or Planar(1)).from_file(array, path).astype(np.float32, copy=False)


def find_predictions(pred_dir: Path, dataset: str, task: int) -> dict[str, Path]:
    """Case id -> the ensemble map of ``task`` (``<case>/taskTT.nii.gz``), sorted by case id.

    ``pred_dir`` is either the root holding ``<dataset>/`` (a run's ``predictions/`` folder) or the
    ``<dataset>`` folder itself.

    Raises:
        DataError: the folder does not exist or holds no map of ``task``; a case has two (``.nii`` and
            ``.nii.gz``).
    """
    pred_dir = Path(pred_dir)
    if not pred_dir.is_dir():
        raise DataError(f"prediction folder {pred_dir} does not exist")
    folder = pred_dir / dataset if (pred_dir / dataset).is_dir() else pred_dir
    found: dict[str, Path] = {}
    for path in sorted(folder.glob("*/task*.nii*")):
        match = ENSEMBLE_PATTERN.match(path.name)
        if not match or int(match.group(1)) != task:
            continue
        case_id = path.parent.name
        if case_id in found:
            raise DataError(f"case {case_id} has two maps of task {task}: {found[case_id]} and {path}")
        found[case_id] = path
    if not found:
        raise DataError(
            f"no prediction of task {task} in {folder}: expected {folder}/<case>/task{task:02d}.nii.gz "
            f"(or {pred_dir}/{dataset}/<case>/task{task:02d}.nii.gz)"
        )
    return dict(sorted(found.items(), key=lambda item: natural_key(item[0])))
