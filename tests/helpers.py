"""Small builders of QUBIQ-like files for tests."""

from __future__ import annotations

from pathlib import Path

import nibabel as nib
import numpy as np


def write_nifti(path: Path, array: np.ndarray, affine: np.ndarray | None = None) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    nib.save(nib.Nifti1Image(np.asarray(array), np.eye(4) if affine is None else affine), str(path))
    return path


def write_case(folder: Path, image: np.ndarray, masks: dict[tuple[int, int], np.ndarray]) -> Path:
    """``folder/image.nii.gz`` and ``folder/taskTT_segEE.nii.gz`` for each ``(task, expert)``."""
    write_nifti(folder / "image.nii.gz", image)
    for (task, expert), mask in masks.items():
        write_nifti(folder / f"task{task:02d}_seg{expert:02d}.nii.gz", mask)
    return folder
